"""What the web page shows for a turn: the user message and everything produced to answer it.

Part of the web edge (like views.py and consumers.py), so it may read agents' runs. The
thread page is a list of these turns and the live page re-fetches one turn at a time, so a
reload and a live page render the same HTML from the same function.

Assistant and tool messages name the run that wrote them. Messages with no run (copies in a
fork: runs stay with the original thread) form an attempt with no run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import groupby

from agents.models import Run

from .models import Message, Thread


@dataclass
class ToolCallView:
    call_id: str
    name: str
    arguments: str
    # The tool's result message, or for ask_user the user's answer (a user message).
    result: Message | None = None
    # The run is no longer running: a call without a result was never made (a loop bound).
    run_ended: bool = False

    @property
    def state(self) -> str:
        if self.result is None:
            return "skipped" if self.run_ended else "running"
        if self.result.status == Message.Status.STREAMING:  # stored before the tool runs
            return "running"
        return "error" if self.result.is_error else "done"

    @property
    def is_question(self) -> bool:
        return self.name == "ask_user"

    @property
    def question(self) -> str:
        try:
            value = json.loads(self.arguments or "{}").get("question", "")
        except (ValueError, AttributeError):
            return ""
        return value if isinstance(value, str) else ""


@dataclass
class Reply:
    """One assistant message and the tool calls it asked for."""

    message: Message
    tool_calls: list[ToolCallView] = field(default_factory=list)
    # A later model round of the same answer (after its tool calls): shown without a header.
    continues: bool = False
    continued: bool = False  # the next reply continues this one: actions go at the end only


@dataclass
class Attempt:
    """One run of the turn (or None for history with no run) and the replies it produced."""

    run: Run | None
    replies: list[Reply] = field(default_factory=list)
    # Tool results whose call is not in the turn: shown on their own rather than lost.
    stray_results: list[Message] = field(default_factory=list)
    is_latest: bool = False

    @property
    def is_open(self) -> bool:
        return self.run is not None and self.run.status in (Run.Status.QUEUED, Run.Status.RUNNING)

    @property
    def is_waiting(self) -> bool:
        return self.run is not None and self.run.status == Run.Status.WAITING

    @property
    def hit_loop_bound(self) -> bool:
        """Stopped by a bound (round cap, repeated call, budget): the reason is shown under the reply."""
        return self.run is not None and self.run.stop_reason in (
            Run.StopReason.ROUND_CAP, Run.StopReason.REPEATED_CALL, Run.StopReason.BUDGET
        )

    @property
    def used_fallback(self) -> bool:
        """Answered by the agent's fallback model, because its own model's breaker was open."""
        agent = self.run.agent if self.run is not None else None
        return bool(agent and agent.fallback_model and self.run.model == agent.fallback_model != agent.model)

    @property
    def can_retry(self) -> bool:
        # gateway.services.run_retry refuses any run but the newest failed one.
        return self.is_latest and self.run is not None and self.run.status == Run.Status.FAILED


@dataclass
class Turn:
    thread: Thread
    number: int
    user_message: Message | None
    attempts: list[Attempt]

    @property
    def latest_run(self) -> Run | None:
        return self.attempts[-1].run if self.attempts else None

    @property
    def is_open(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].is_open

    @property
    def run_ids(self) -> str:
        return " ".join(str(a.run.pk) for a in self.attempts if a.run is not None)


def turn_list(*, thread: Thread) -> list[Turn]:
    """Every turn of the thread, oldest first, in two queries."""
    messages = thread.messages.select_related("agent").order_by("turn", "id")
    runs = thread.runs.select_related("agent", "user_message").order_by("id")
    runs_by_turn: dict[int, list[Run]] = {}
    for run in runs:
        runs_by_turn.setdefault(run.user_message.turn, []).append(run)
    return [
        _build(thread, number, list(rows), runs_by_turn.get(number, []))
        for number, rows in groupby(messages, key=lambda m: m.turn)
    ]


def turn_get(*, thread: Thread, number: int) -> Turn | None:
    """One turn of the thread, or None if it has no messages."""
    rows = list(thread.messages.select_related("agent").filter(turn=number).order_by("id"))
    if not rows:
        return None
    runs = list(thread.runs.select_related("agent").filter(user_message__turn=number).order_by("id"))
    return _build(thread, number, rows, runs)


def _build(thread: Thread, number: int, rows: list[Message], runs: list[Run]) -> Turn:
    user_message = next((m for m in rows if m.role == Message.Role.USER and not m.tool_call_id), None)
    # Tool results, and the user's answers to ask_user (user messages carrying the call id).
    results = {m.tool_call_id: m for m in rows if m.tool_call_id and m.role in (Message.Role.TOOL, Message.Role.USER)}
    called = {call.get("id") for m in rows if m.role == Message.Role.ASSISTANT for call in (m.tool_calls or [])}
    attempts = [Attempt(run=None)] + [Attempt(run=run) for run in runs]
    for message in rows:
        if message.role not in (Message.Role.ASSISTANT, Message.Role.TOOL):
            continue
        attempt = _attempt_for(message, attempts)
        if message.role == Message.Role.ASSISTANT:
            _add_reply(attempt, message, results, run_ended=attempt.run is None or attempt.run.status in Run.TERMINAL)
        elif message.tool_call_id not in called:
            attempt.stray_results.append(message)
    if not attempts[0].replies and not attempts[0].stray_results:
        attempts.pop(0)
    if attempts:
        attempts[-1].is_latest = True
    return Turn(thread=thread, number=number, user_message=user_message, attempts=attempts)


def _add_reply(attempt: Attempt, message: Message, results: dict[str, Message], *, run_ended: bool) -> None:
    if message.status == Message.Status.FAILED and not message.content and not message.tool_calls:
        return  # a reply that failed before its first word: the run's error says it all
    reply = _reply(message, results, run_ended)
    previous = attempt.replies[-1].message if attempt.replies else None
    reply.continues = (
        previous is not None
        and previous.agent_id == message.agent_id
        and Message.Status.FAILED not in (previous.status, message.status)
    )
    if reply.continues:
        attempt.replies[-1].continued = True
    attempt.replies.append(reply)


def _attempt_for(message: Message, attempts: list[Attempt]) -> Attempt:
    for attempt in attempts[1:]:
        if attempt.run.pk == message.run_id:
            return attempt
    return attempts[0]


def _reply(message: Message, results: dict[str, Message], run_ended: bool) -> Reply:
    calls = []
    for call in message.tool_calls or []:
        function = call.get("function") or {}
        call_id = call.get("id") or ""
        calls.append(
            ToolCallView(
                call_id=call_id,
                name=function.get("name") or "tool",
                arguments=function.get("arguments") or "",
                result=results.get(call_id),
                run_ended=run_ended,
            )
        )
    return Reply(message=message, tool_calls=calls)

