"""Agents (what answers) and runs (one answer being produced, start to terminal state)."""

from django.db import models


class Agent(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    # "provider/model", or a bare model name for the default provider (LLM_BASE_URL).
    model = models.CharField(max_length=200, blank=True, help_text="Empty means the default LLM_MODEL.")
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
