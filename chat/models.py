"""Threads and their messages: the conversation record every channel reads and writes."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Source(models.TextChoices):
    """Where a message came from (and so where its answer goes)."""

    WEB = "web", "Web"
    TELEGRAM = "telegram", "Telegram"
    CLI = "cli", "CLI"
    SCHEDULE = "schedule", "Schedule"


class Thread(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Referenced by label, not imported: chat sits below agents.
    default_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    forked_from_thread = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    forked_from_message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self):
        return self.title or f"Thread {self.pk}"

    @property
    def group_name(self) -> str:
        """The channel-layer group that carries this thread's live events."""
        return f"thread-{self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        TOOL = "tool", "Tool"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    # Messages are ordered by (turn, id). A turn is one user message and everything produced
    # to answer it, so a reply that is still running keeps its tool rounds next to its
    # question even when the user has already sent the next message.
    turn = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The run that wrote this message (assistant and tool messages); empty for user messages
    # and for copies in a fork, whose runs stay with the original thread.
    run = models.ForeignKey("agents.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.WEB)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # Stored in the OpenAI wire shape so a thread replays to the model exactly.
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_id = models.CharField(max_length=128, blank=True)
    tool_name = models.CharField(max_length=64, blank=True)
    is_error = models.BooleanField(default=False)
    # How long the tool call took (tool messages only).
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # A default rather than auto_now_add, so that a fork keeps the original times.
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["turn", "id"]
        indexes = [models.Index(fields=["thread", "turn", "id"])]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"


class LoginToken(models.Model):
    """A one-time login link. Only a hash is stored; the token itself is printed once."""

    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
