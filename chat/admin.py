"""Threads in the admin: a searchable list, and a read-only monitor of each thread.

The monitor shows what was said and done: messages in order, the tool calls with their
arguments, results, durations and errors, and the runs that produced them. Everything stored
in a message was written by a person, a model or a tool, so it is only ever shown escaped.
"""

import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, Max, OuterRef

from .models import Message, Thread

# chat sits below agents, so the Run model is reached through Thread.runs, not imported.
Run = Thread._meta.get_field("runs").related_model


class ModelAdmin(admin.ModelAdmin):
    """Django's ModelAdmin, refusing an action on ids that are not ids of this model.

    Django filters `pk__in=<posted ids>` unchecked, so a forged "abc" was a 500.
    """

    def response_action(self, request, queryset):
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                self.model._meta.pk.to_python(value)
        except ValidationError:
            self.message_user(request, "Those are not ids of items in this list; nothing was done.", messages.ERROR)
            return None
        return super().response_action(request, queryset)


class FailedRunsFilter(admin.SimpleListFilter):
    title = "failed runs"
    parameter_name = "failed_runs"

    def lookups(self, request, model_admin):
        return [("yes", "Has failed runs"), ("no", "No failed runs")]

    def queryset(self, request, queryset):
        failed = Exists(Run.objects.filter(thread=OuterRef("pk"), status=Run.Status.FAILED))
        if self.value() == "yes":
            return queryset.filter(failed)
        if self.value() == "no":
            return queryset.exclude(failed)
        return queryset


@admin.register(Thread)
class ThreadAdmin(ModelAdmin):
    """Threads are written by the chat, never here: no adding or editing, deleting is allowed."""

    list_display = ("__str__", "default_agent", "status", "message_count", "last_activity", "created_at")
    list_filter = ("status", "default_agent", "created_at", FailedRunsFilter)
    search_fields = ("title", "messages__content")
    list_select_related = ("default_agent",)
    fields = ("title", "owner", "status", "default_agent", "forked_from_thread", "forked_from_message", "created_at", "updated_at")
    change_form_template = "admin/chat/thread/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            message_total=Count("messages", distinct=True), last_message_at=Max("messages__created_at")
        )

    @admin.display(description="Messages", ordering="message_total")
    def message_count(self, obj):
        return obj.message_total

    @admin.display(description="Last activity", ordering="last_message_at")
    def last_activity(self, obj):
        return max(filter(None, [obj.last_message_at, obj.updated_at]))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        thread = self.get_object(request, object_id)
        if thread is not None:
            extra_context = {**(extra_context or {}), **_monitor(thread)}
        return super().change_view(request, object_id, form_url, extra_context)


def _monitor(thread: Thread) -> dict:
    """The thread's messages (with their tool calls resolved) and runs, ready to render."""
    messages = list(thread.messages.select_related("agent").order_by("turn", "id"))
    calls = {}
    rows = []
    for message in messages:
        row = {"message": message, "calls": []}
        for call in message.tool_calls or []:
            # Stored in the OpenAI wire shape; a malformed entry is shown as far as it goes.
            call = call if isinstance(call, dict) else {}
            fn = call.get("function") if isinstance(call.get("function"), dict) else {}
            entry = {"id": str(call.get("id", "")), "name": str(fn.get("name", "")),
                     "arguments": _pretty_json(fn.get("arguments", ""))}  # fmt: skip
            row["calls"].append(entry)
            calls[entry["id"]] = entry
        rows.append(row)
    for row in rows:
        message = row["message"]
        if message.role == Message.Role.TOOL:
            row["call"] = calls.get(message.tool_call_id)
    runs = thread.runs.select_related("agent").order_by("id")
    return {"monitor_rows": rows, "monitor_runs": runs}


def _pretty_json(text) -> str:
    """Arguments as the model wrote them, indented when they are valid JSON. Plain text."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text or "")


@admin.register(Message)
class MessageAdmin(ModelAdmin):
    list_display = ("id", "thread", "turn", "role", "agent", "source", "status", "created_at")
    list_filter = ("role", "status", "source")
    search_fields = ("content",)
    list_select_related = ("thread", "agent")
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request):
        return False
