"""Stores a run's steps as the loop reports them, then publishes each with its ids.

The loop (agents.loop) writes nothing; this listener turns its events into Message rows and
the Run's terminal state, renews the run's lease as it goes, and hands every event on to
`publish` (the gateway's event stream) only after it is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.models import Message

from .models import Run

Publish = Callable[[str, dict], None]
# How much of a tool's arguments and result a live event carries; the database has it all.
EVENT_PREVIEW_CHARS = 2000
LEASE_RENEW_SECONDS = 15


def lease_duration() -> timedelta:
    # Longer than the longest silence a healthy run can have: the model's own timeout
    # (waiting for a first token on a slow CPU) plus a margin; GATEWAY_LEASE_SECONDS overrides.
    seconds = settings.GATEWAY_LEASE_SECONDS or settings.LLM_TIMEOUT_SECONDS + 60
    return timedelta(seconds=seconds)


def _renew_every_seconds() -> float:
    return min(LEASE_RENEW_SECONDS, lease_duration().total_seconds() / 3)


INTERRUPTED_RESULT = json.dumps({
    "error": "This call was interrupted (the worker stopped while it ran), so it may or may not have "
    "taken effect. Check before calling it again."
})


def tool_calls_interrupt(*, run: Run) -> int:
    """Answers the run's tool calls that were under way (pending rows) as interrupted.

    Used when their worker died or the run failed around them: the model is told the call
    may or may not have happened, and it is never run again under the same call id.
    Returns how many calls it answered.
    """
    return run.messages.filter(role=Message.Role.TOOL, status=Message.Status.STREAMING).update(
        status=Message.Status.COMPLETE, is_error=True, content=INTERRUPTED_RESULT, completed_at=timezone.now()
    )


class RunInterrupted(BaseException):
    """Raised through the loop (by the `publish` callable, after a step is stored) when the
    worker is stopping and the run must be handed back rather than finished.

    A BaseException, like KeyboardInterrupt: no `except Exception` on the way (a tool, the
    loop, run_execute's own handler) may turn a stop into a failed run. run_execute catches
    it and calls RunRecorder.release().
    """


def _storable(value):
    """`value` without NUL characters, which PostgreSQL text and jsonb refuse: a model or a
    fetched page can produce them, and the step must still be stored."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


class RunRecorder:
    """Listens to the loop's events, stores each step, then publishes it with its ids."""

    def __init__(self, run: Run, publish: Publish):
        self.run = run
        self.publish = publish
        self.message: Message | None = None  # the assistant message being streamed
        self.partial: list[str] = []
        self.first_token_at = None
        self.rounds = 0
        self.pending: dict[str, Message] = {}  # tool result rows of calls under way, by call id
        self._lease_renewed = time.monotonic()

    def __call__(self, event: str, data: dict) -> None:
        self._renew_lease()
        data = _storable(data)
        handler = getattr(self, "on_" + event.replace(".", "_"), None)
        if handler is not None:
            data = handler(data)
        self.publish(event, data)

    def _renew_lease(self) -> None:
        # At most every LEASE_RENEW_SECONDS (a third of a short lease), so a fast stream costs
        # a handful of writes, not one per token.
        if time.monotonic() - self._lease_renewed < _renew_every_seconds():
            return
        self._lease_renewed = time.monotonic()
        Run.objects.filter(pk=self.run.pk, status=Run.Status.RUNNING).update(
            lease_expires_at=timezone.now() + lease_duration()
        )
        if self.message is not None and self.partial:
            # Checkpoint the text streamed so far: if this worker dies, what the user already
            # saw survives (marked failed by recovery) instead of vanishing on reload.
            Message.objects.filter(pk=self.message.pk).update(content="".join(self.partial))

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
        # The result row exists (pending) before the tool runs: if the worker dies meanwhile,
        # recovery finds it and answers it as interrupted instead of running the call again,
        # so a tool that changes things runs at most once per call (the call id is the key).
        self.pending[data["call_id"]] = self._new_message(
            role=Message.Role.TOOL,
            status=Message.Status.STREAMING,
            tool_call_id=data["call_id"],
            tool_name=data["name"][:64],
        )
        return {**data, "arguments": data["arguments"][:EVENT_PREVIEW_CHARS]}

    def on_tool_finished(self, data):
        message = self.pending.pop(data["call_id"], None) or self._new_message(
            role=Message.Role.TOOL, tool_call_id=data["call_id"], tool_name=data["name"][:64]
        )
        message.content = data["content"]
        message.is_error = data["is_error"]
        message.duration_ms = data["duration_ms"]
        message.status = Message.Status.COMPLETE
        message.completed_at = timezone.now()
        message.save(update_fields=["content", "is_error", "duration_ms", "status", "completed_at"])
        return {**data, "content": data["content"][:EVENT_PREVIEW_CHARS], "message_id": message.pk}

    def _end(self, **fields) -> bool:
        """Moves the run from running to its next state; False if it already left running."""
        if fields["status"] != Run.Status.WAITING:
            fields["finished_at"] = timezone.now()
        if self.run.first_token_at is None:
            fields["first_token_at"] = self.first_token_at
        updated = Run.objects.filter(pk=self.run.pk, status=Run.Status.RUNNING).update(**fields)
        self.run.refresh_from_db()
        return updated == 1

    def finish(self, result) -> Run:
        """Ends the run as done: answered, or stopped by one of the loop's bounds."""
        if self._end(
            status=Run.Status.DONE,
            stop_reason=result.stop_reason,
            rounds=result.rounds,
            prompt_tokens=self.run.prompt_tokens + result.prompt_tokens,
            completion_tokens=self.run.completion_tokens + result.completion_tokens,
        ):
            self.publish(
                "run.finished",
                {"status": "done", "stop_reason": result.stop_reason, "stop_label": self.run.get_stop_reason_display(), "rounds": result.rounds},
            )
        return self.run

    def wait(self, result) -> Run:
        """Pauses the run on a question for the user; their next message resumes it."""
        if self._end(
            status=Run.Status.WAITING,
            waiting_call_id=result.waiting_call_id,
            lease_expires_at=None,
            rounds=result.rounds,
            prompt_tokens=self.run.prompt_tokens + result.prompt_tokens,
            completion_tokens=self.run.completion_tokens + result.completion_tokens,
        ):
            self.publish("run.waiting", {"status": "waiting", "question": result.question, "call_id": result.waiting_call_id})
        return self.run

    def release(self) -> Run:
        """Hands the run back to the queue because its worker is stopping; returns it.

        Not a crash, so this start is not counted: GATEWAY_MAX_ATTEMPTS gives up on runs whose
        worker keeps dying, and an orderly stop is not that. The rest is what the sweeper does
        for a dead worker's run: the text streamed so far stays on its message, marked failed;
        tool calls under way are answered as interrupted (never run twice); status queued,
        lease cleared. Rounds completed so far are counted, so the round cap holds across the
        stop. A run that already left running is left as it is. Publishes nothing: the caller
        announces run.queued (seq 0) and wakes the thread's queue.
        """
        now = timezone.now()
        with transaction.atomic():
            rounds = self.rounds - (1 if self.message is not None else 0)
            released = Run.objects.filter(pk=self.run.pk, status=Run.Status.RUNNING).update(
                status=Run.Status.QUEUED, lease_expires_at=None, attempts=F("attempts") - 1,
                rounds=self.run.rounds + rounds,
            )
            if released:
                if self.message is not None:
                    self.message.content = "".join(self.partial)
                    self.message.status = Message.Status.FAILED
                    self.message.completed_at = now
                    self.message.save(update_fields=["content", "status", "completed_at"])
                tool_calls_interrupt(run=self.run)
        self.message = None
        self.run.refresh_from_db()
        return self.run

    def fail(self, error: str) -> Run:
        if self.message is not None:
            # Keep what the user already saw; mark it so nobody mistakes it for a whole answer.
            self.message.content = "".join(self.partial)
            self.message.status = Message.Status.FAILED
            self.message.completed_at = timezone.now()
            self.message.save(update_fields=["content", "status", "completed_at"])
        tool_calls_interrupt(run=self.run)
        if self._end(status=Run.Status.FAILED, stop_reason=Run.StopReason.ERROR, error=error, rounds=self.run.rounds + self.rounds):
            self.publish(
                "run.failed",
                {"status": "failed", "error": error, "message_id": self.message.pk if self.message else None},
            )
        return self.run
