from django.contrib import admin

from .models import Agent, Run


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "model", "is_default", "max_tool_rounds", "updated_at")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "is_default")}),
        ("Model", {"fields": ("model", "system_prompt", "temperature", "max_tool_rounds")}),
        ("Capabilities", {"fields": ("enabled_tools", "enabled_skills")}),
    )


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "thread", "agent", "status", "stop_reason", "rounds", "source", "accepted_at", "finished_at")
    list_filter = ("status", "stop_reason", "source", "agent")
    search_fields = ("error", "thread__title")
    list_select_related = ("thread", "agent")
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request):
        return False
