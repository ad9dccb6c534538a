from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from chat.admin import ModelAdmin

from .forms import AgentForm, AgentImportForm, ProviderForm
from .models import Agent, Provider, Run
from .models_list import agent_model_warnings
from .portability import (
    AgentImportError,
    agent_export_text,
    agent_save,
    agents_export_text,
    agents_import,
)
from .providers import provider_api_key_status, provider_save
from .skills import skills_discover

EXPORT_CONTENT_TYPES = {"json": "application/json", "yaml": "application/yaml"}


@admin.register(Agent)
class AgentAdmin(ModelAdmin):
    form = AgentForm
    list_display = (
        "name", "slug", "provider_shown", "model_shown", "is_default", "round_cap", "tool_count", "skill_count", "updated_at",
    )  # fmt: skip
    list_select_related = ("provider",)
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    actions = ["export_json", "export_yaml"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "is_default")}),
        ("Model", {"fields": ("provider", "model", "fallback_model", "system_prompt", "temperature", "max_tool_rounds")}),
        ("Tools", {"fields": ("enabled_tools",)}),
        ("Skills", {"fields": ("enabled_skills",)}),
    )

    @admin.display(description="Provider", ordering="provider__name")
    def provider_shown(self, obj):
        return obj.provider or "default"

    @admin.display(description="Model", ordering="model")
    def model_shown(self, obj):
        return obj.model or f"default ({settings.LLM_MODEL})"

    @admin.display(description="Round cap", ordering="max_tool_rounds")
    def round_cap(self, obj):
        return obj.max_tool_rounds

    @admin.display(description="Tools")
    def tool_count(self, obj):
        return len(obj.enabled_tools or [])

    @admin.display(description="Skills")
    def skill_count(self, obj):
        return len(obj.enabled_skills or [])

    def save_model(self, request, obj, form, change):
        agent_save(agent=obj)
        for warning in agent_model_warnings(agent=obj):
            self.message_user(request, warning, messages.WARNING)

    # --- export -----------------------------------------------------------------------------

    @admin.action(description="Export selected agents as JSON")
    def export_json(self, request, queryset):
        return self._export(queryset, "json")

    @admin.action(description="Export selected agents as YAML")
    def export_yaml(self, request, queryset):
        return self._export(queryset, "yaml")

    def _export(self, queryset, fmt):
        agents = list(queryset.select_related("provider").order_by("slug"))
        if len(agents) == 1:
            text, filename = agent_export_text(agent=agents[0], fmt=fmt), f"{agents[0].slug}.{fmt}"
        else:
            text, filename = agents_export_text(agents=agents, fmt=fmt), f"agents.{fmt}"
        response = HttpResponse(text, content_type=f"{EXPORT_CONTENT_TYPES[fmt]}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    # --- extra pages ------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("skills/", view(self.skills_view), name="agents_agent_skills"),
            path("import/", view(self.import_view), name="agents_agent_import"),
        ] + super().get_urls()

    def _context(self, request, title):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title}

    def import_view(self, request):
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        form = AgentImportForm(request.POST or None, request.FILES or None)
        problems = []
        if request.method == "POST" and form.is_valid():
            try:
                agents = agents_import(text=form.cleaned_data["text"])
            except AgentImportError as exc:
                problems = [line.removeprefix("- ") for line in str(exc).splitlines()]
            else:
                names = ", ".join(a.name for a in agents)
                self.message_user(request, f"Imported {len(agents)} agent{'s' if len(agents) != 1 else ''}: {names}.")
                for agent in agents:
                    for warning in agent_model_warnings(agent=agent):
                        self.message_user(request, f"{agent.name}: {warning}", messages.WARNING)
                return redirect("admin:agents_agent_changelist")
        context = {**self._context(request, "Import agents"), "form": form, "problems": problems}
        return TemplateResponse(request, "admin/agents/agent/import.html", context)

    def skills_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        discovery = skills_discover()
        enabled_by: dict[str, list[Agent]] = {}
        for agent in Agent.objects.order_by("name"):
            for name in agent.enabled_skills or []:
                enabled_by.setdefault(name, []).append(agent)
        rows = [
            {"skill": s, "agents": enabled_by.get(name, []), "metadata": sorted(s.metadata.items()), "files": s.files()}
            for name, s in discovery.skills.items()
        ]
        missing = [{"name": n, "agents": a} for n, a in sorted(enabled_by.items()) if n not in discovery.skills]
        context = {
            **self._context(request, "Skills"),
            "rows": rows,
            "problems": discovery.problems,
            "missing": missing,
            "skills_dirs": settings.SKILLS_DIRS,
        }
        return TemplateResponse(request, "admin/agents/agent/skills.html", context)


@admin.register(Provider)
class ProviderAdmin(ModelAdmin):
    """Providers and their API keys. A key is typed in and never shown again: the pages say
    only whether one is stored (agents/providers.py keeps it encrypted)."""

    form = ProviderForm
    list_display = ("name", "slug", "base_url", "api_key_shown", "agent_count", "updated_at")
    search_fields = ("name", "slug", "base_url")
    prepopulated_fields = {"slug": ("name",)}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(agents_using=Count("agents"))

    # As Django's UserAdmin does for passwords: an error report never shows the typed key.
    @method_decorator(sensitive_post_parameters("api_key"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_fieldsets(self, request, obj=None):
        key_fields = ("api_key", "clear_api_key") if obj is not None and obj.api_key_encrypted else ("api_key",)
        return ((None, {"fields": ("name", "slug", "base_url")}), ("API key", {"fields": key_fields}))

    @admin.display(description="API key")
    def api_key_shown(self, obj):
        return provider_api_key_status(provider=obj)

    @admin.display(description="Agents", ordering="agents_using")
    def agent_count(self, obj):
        return obj.agents_using

    def save_model(self, request, obj, form, change):
        provider_save(provider=obj, api_key=form.api_key_change())


@admin.register(Run)
class RunAdmin(ModelAdmin):
    """Read-only: runs are written by the workers."""

    list_display = ("id", "thread_link", "agent", "status", "stop_reason_label", "rounds", "source", "accepted_at", "finished_at")
    list_filter = ("status", "stop_reason", "source", "agent")
    search_fields = ("error", "thread__title")
    list_select_related = ("thread", "agent")
    readonly_fields = ["thread_link", "stop_reason_label"] + [f.name for f in Run._meta.fields]

    @admin.display(description="Stop reason", ordering="stop_reason")
    def stop_reason_label(self, obj):
        return obj.get_stop_reason_display() or "—"

    @admin.display(description="Thread", ordering="thread")
    def thread_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:chat_thread_change", args=[obj.thread_id]), obj.thread)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
