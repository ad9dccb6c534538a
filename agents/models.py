"""Agents (what answers), the providers they call, and runs (one answer being produced, start
to terminal state)."""

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models


def validate_base_url(value: str) -> None:
    """An http(s) address with a host, no credentials, query or fragment.

    Not Django's URLValidator: it refuses host names without a dot, and a model server on the
    home network is often just `http://gpubox:8080/v1` or a compose service name.
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValidationError("Enter an address like https://api.example.com/v1.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("Enter an http:// or https:// address with a host, like https://api.example.com/v1.")
    if parts.username is not None or parts.password is not None:
        # The address is shown in the admin and in error messages; a key belongs in the key field.
        raise ValidationError("Leave credentials out of the address; put the key in the API key field.")
    if parts.query or parts.fragment:
        raise ValidationError("The address cannot have a ?query or #fragment: request paths are added to it.")


class Provider(models.Model):
    """An OpenAI-compatible server an agent can answer through, instead of the default one
    from settings (LLM_BASE_URL, LLM_API_KEY).

    The API key is kept only as a Fernet token (agents/providers.py encrypts and decrypts it):
    this row, its repr, a database dump and an export never hold the key itself.
    """

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=64, unique=True, help_text="How agent files name this provider.")
    base_url = models.CharField(
        "base URL", max_length=500, validators=[validate_base_url],
        help_text="The OpenAI-compatible endpoint, ending in /v1 for most servers.",
    )  # fmt: skip
    # The Fernet token of the API key; "" when the provider needs none. Named for what it holds
    # so that nobody mistakes it for the key.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Agent(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    # PROTECT, not SET_NULL: deleting a provider must not quietly move its agents to the default
    # server, which may be another company's (the conversations would follow) and would not
    # know their model names. The admin lists the agents that still use it instead.
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="agents",
        help_text="Empty means the default model server (LLM_BASE_URL).",
    )  # fmt: skip
    # Passed to the backend as it is, slashes included (llama-swap and Ollama names have them).
    model = models.CharField(
        max_length=200, blank=True, help_text="Empty means the default LLM_MODEL (default model server only)."
    )
    fallback_model = models.CharField(
        max_length=200, blank=True,
        help_text="Used while the circuit breaker of the agent's model is open; on the same provider. Empty means none.",
    )  # fmt: skip
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=0.7)
    max_tool_rounds = models.PositiveSmallIntegerField(default=10)
    enabled_tools = models.JSONField(default=list, blank=True)
    enabled_skills = models.JSONField(default=list, blank=True)
    is_default = models.BooleanField(default=False, help_text="Answers new threads unless another is chosen.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self):
        return self.name


class Run(models.Model):
    """One user message being answered. Ends in exactly one terminal state: done or failed."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        # Paused on ask_user: the user's next message in the thread answers and resumes it.
        WAITING = "waiting", "Waiting for your answer"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    TERMINAL = (Status.DONE, Status.FAILED)

    class StopReason(models.TextChoices):
        ANSWERED = "answered", "Answered"
        ROUND_CAP = "round_cap", "Stopped: round cap reached"
        REPEATED_CALL = "repeated_call", "Stopped: the same tool call was repeated 3 times"
        BUDGET = "budget", "Stopped: the run's time or token budget was used up"
        ERROR = "error", "Error"

    thread = models.ForeignKey("chat.Thread", on_delete=models.CASCADE, related_name="runs")
    # A message can have several runs: a failed one and its retries.
    user_message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="runs")
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stop_reason = models.CharField(max_length=16, choices=StopReason.choices, blank=True)
    # Where the request came from and how to reach it again (e.g. a Telegram chat id), so any
    # channel, or a scheduled job, can submit work and be answered without new fields here.
    source = models.CharField(max_length=16, default="web")
    channel = models.JSONField(default=dict, blank=True)
    # The model this run called last, as sent: the agent's own, or its fallback while the
    # circuit breaker of its own was open.
    model = models.CharField(max_length=200, blank=True)
    rounds = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # While waiting: the ask_user tool call the user's next message answers.
    waiting_call_id = models.CharField(max_length=128, blank=True)
    # A running run belongs to its worker until this time; the worker renews it as it goes.
    # Past it, the worker is presumed dead and the sweeper ends the run (gateway.tasks).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["thread", "status"])]

    def __str__(self):
        return f"Run {self.pk} ({self.status})"
