"""Agents and runs: choosing who answers, claiming queued work, executing a run to its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat.models import Message, Thread

from . import llm
from .history import history_for_run
from .loop import loop_run
from .models import Agent, Run
from .tools import ToolScope, ToolSet

log = logging.getLogger(__name__)

Publish = Callable[[str, dict], None]
# How much of a tool's arguments and result a live event carries; the database has it all.
EVENT_PREVIEW_CHARS = 2000
LEASE_RENEW_SECONDS = 15


def agent_default() -> Agent | None:
    """The agent that answers when nobody chose one: the one marked default, else the first."""
    return Agent.objects.order_by("-is_default", "id").first()


STARTER_AGENTS = [
    {
        "slug": "assistant",
        "name": "Assistant",
        "description": "General help. Uses the calculator for arithmetic.",
        "system_prompt": "You are a helpful assistant. Answer clearly and concisely; use markdown where it helps. "
        "Use the calculator tool for any arithmetic instead of working it out yourself.",
        "enabled_tools": ["calculator"],
        "is_default": True,
    },
    {
        "slug": "brief",
        "name": "Brief",
        "description": "Answers in one or two sentences.",
        "system_prompt": "Answer in at most two short sentences. No lists, no preamble.",
        "enabled_tools": [],
        "temperature": 0.3,
    },
]


def agents_seed() -> list[Agent]:
    """Creates the starter agents when there are no agents at all. Returns those created."""
    if Agent.objects.exists():
        return []
    return [Agent.objects.create(**spec) for spec in STARTER_AGENTS]


def run_claim_next(*, thread_id: int) -> Run | None:
    """Marks the thread's oldest queued run as running and returns it.

    Returns None if another run of the thread is running (one at a time per thread, in
    order) or nothing is queued. Safe to call twice for the same work: the thread row lock
    (PostgreSQL) or the write lock (SQLite IMMEDIATE) makes the check-and-set atomic.
    """
    with transaction.atomic():
        Thread.objects.select_for_update().filter(pk=thread_id).first()
        runs = Run.objects.filter(thread_id=thread_id).select_related("agent", "thread", "user_message")
        if runs.filter(status=Run.Status.RUNNING).exists():
            return None
        run = runs.filter(status=Run.Status.QUEUED).order_by("id").first()
        if run is None:
            return None
        run.status = Run.Status.RUNNING
        run.started_at = timezone.now()
        run.lease_expires_at = run.started_at + lease_duration()
        run.attempts += 1
        run.save(update_fields=["status", "started_at", "lease_expires_at", "attempts"])
    return run


def lease_duration() -> timedelta:
    # Longer than the longest silence a healthy run can have: the model's own timeout
    # (waiting for a first token on a slow CPU) plus a margin.
    return timedelta(seconds=settings.LLM_TIMEOUT_SECONDS + 60)


WORKER_LOST_ERROR = "The worker stopped while answering (it was restarted or crashed). Retry to ask again."


def runs_expire() -> list[Run]:
    """Fails running runs whose lease has expired, and returns them.

    Each is moved with a conditional update, so a run that its worker finished meanwhile
    is left alone. A partial assistant message of such a run is marked failed.
    """
    now = timezone.now()
    expired = []
    for run in Run.objects.filter(status=Run.Status.RUNNING, lease_expires_at__lt=now):
        updated = Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, lease_expires_at__lt=now).update(
            status=Run.Status.FAILED, stop_reason=Run.StopReason.ERROR, error=WORKER_LOST_ERROR, finished_at=now
        )
        if updated:
            run.messages.filter(status=Message.Status.STREAMING).update(status=Message.Status.FAILED, completed_at=now)
            run.refresh_from_db()
            expired.append(run)
    return expired


def run_has_queued(*, thread_id: int) -> bool:
    return Run.objects.filter(thread_id=thread_id, status=Run.Status.QUEUED).exists()


def run_execute(*, run: Run, publish: Publish, client: llm.LLMClient | None = None) -> Run:
    """Runs a claimed run to exactly one terminal state (done or failed) and returns it.

    Never raises for model or tool failures: they end the run as "failed" with a readable
    error, keeping whatever text was already streamed. Every step is published through
    `publish(event_type, data)` after it is stored.
    """
    recorder = _RunRecorder(run, publish)
    publish("run.started", {"agent": run.agent.slug if run.agent else None, "turn": run.user_message.turn})
    try:
        agent = run.agent or agent_default()
        if agent is None:
            raise llm.LLMError("No agent is configured. Add one in the admin.", retryable=False)
        if client is None:
            client, model = llm.client_for(agent.model)
        else:
            model = agent.model or settings.LLM_MODEL
        tools = ToolSet.for_names(
            agent.enabled_tools,
            ToolScope(owner_id=run.thread.owner_id, thread_id=run.thread_id, agent_id=agent.pk),
        )
        result = loop_run(
            client=client,
            model=model,
            messages=history_for_run(run, agent),
            tools=tools,
            max_rounds=agent.max_tool_rounds,
            temperature=agent.temperature,
            max_tokens=settings.LLM_MAX_TOKENS,
            emit=recorder,
        )
    except llm.LLMError as exc:
        return recorder.fail(str(exc))
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        return recorder.fail(f"Internal error ({type(exc).__name__}). The details are in the server log.")
    return recorder.finish(result)


class _RunRecorder:
    """Listens to the loop's events, stores each step, then publishes it with its ids."""

    def __init__(self, run: Run, publish: Publish):
        self.run = run
        self.publish = publish
        self.message: Message | None = None  # the assistant message being streamed
        self.partial: list[str] = []
        self.first_token_at = None
        self.rounds = 0
        self._lease_renewed = time.monotonic()

    def __call__(self, event: str, data: dict) -> None:
        self._renew_lease()
        handler = getattr(self, "on_" + event.replace(".", "_"), None)
        if handler is not None:
            data = handler(data)
        self.publish(event, data)

    def _renew_lease(self) -> None:
        # At most every LEASE_RENEW_SECONDS, so a fast stream costs a handful of writes.
        if time.monotonic() - self._lease_renewed < LEASE_RENEW_SECONDS:
            return
        self._lease_renewed = time.monotonic()
        Run.objects.filter(pk=self.run.pk, status=Run.Status.RUNNING).update(
            lease_expires_at=timezone.now() + lease_duration()
        )

    def _new_message(self, **fields) -> Message:
        return Message.objects.create(
            thread_id=self.run.thread_id,
            run_id=self.run.pk,
            turn=self.run.user_message.turn,
            agent_id=self.run.agent_id,
            source=self.run.source,
            **fields,
        )

    def on_message_started(self, data):
        self.rounds += 1
        self.partial = []
        self.message = self._new_message(role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
        return {**data, "message_id": self.message.pk}

    def on_message_streamed(self, data):
        if self.first_token_at is None:
            self.first_token_at = timezone.now()
        self.partial.append(data["delta"])
        return {**data, "message_id": self.message.pk}

    def on_message_completed(self, data):
        message = self.message
        message.content = data["content"]
        message.tool_calls = data["tool_calls"]
        message.status = Message.Status.COMPLETE
        message.completed_at = timezone.now()
        message.save(update_fields=["content", "tool_calls", "status", "completed_at"])
        self.message = None
        return {"message_id": message.pk, "has_tool_calls": bool(data["tool_calls"])}

    def on_tool_called(self, data):
        return {**data, "arguments": data["arguments"][:EVENT_PREVIEW_CHARS]}

    def on_tool_finished(self, data):
        message = self._new_message(
            role=Message.Role.TOOL,
            content=data["content"],
            tool_call_id=data["call_id"],
            tool_name=data["name"][:64],
            is_error=data["is_error"],
            completed_at=timezone.now(),
        )
        return {**data, "content": data["content"][:EVENT_PREVIEW_CHARS], "message_id": message.pk}

    def _end(self, **fields) -> bool:
        """Moves the run from running to its terminal state; False if it already left running."""
        fields.update(finished_at=timezone.now(), first_token_at=self.first_token_at)
        updated = Run.objects.filter(pk=self.run.pk, status=Run.Status.RUNNING).update(**fields)
        self.run.refresh_from_db()
        return updated == 1

    def finish(self, result) -> Run:
        if self._end(
            status=Run.Status.DONE,
            stop_reason=result.stop_reason,
            rounds=result.rounds,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        ):
            self.publish(
                "run.finished",
                {"status": "done", "stop_reason": result.stop_reason, "stop_label": self.run.get_stop_reason_display(), "rounds": result.rounds},
            )
        return self.run

    def fail(self, error: str) -> Run:
        if self.message is not None:
            # Keep what the user already saw; mark it so nobody mistakes it for a whole answer.
            self.message.content = "".join(self.partial)
            self.message.status = Message.Status.FAILED
            self.message.completed_at = timezone.now()
            self.message.save(update_fields=["content", "status", "completed_at"])
        if self._end(status=Run.Status.FAILED, stop_reason=Run.StopReason.ERROR, error=error, rounds=self.rounds):
            self.publish(
                "run.failed",
                {"status": "failed", "error": error, "message_id": self.message.pk if self.message else None},
            )
        return self.run
