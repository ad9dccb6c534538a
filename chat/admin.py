from django.contrib import admin

from .models import Message, Thread


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("turn", "role", "agent", "status", "content", "tool_name", "is_error", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("__str__", "default_agent", "status", "forked_from_thread", "updated_at")
    list_filter = ("status", "default_agent")
    search_fields = ("title", "messages__content")
    readonly_fields = ("forked_from_thread", "forked_from_message", "created_at", "updated_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "thread", "turn", "role", "agent", "source", "status", "created_at")
    list_filter = ("role", "status", "source")
    search_fields = ("content",)
    list_select_related = ("thread", "agent")
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request):
        return False
