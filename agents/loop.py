"""The capped tool loop: a plain function over a model client, tools, messages and `emit`.

It writes nothing to the database. Everything that happens is reported through
`emit(event_type, data)`; a service listens and persists (agents.services.runs).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .llm import Completion, LLMClient, LLMError, TextDelta
from .tools import ToolCallRequest, ToolResult, ToolSet, for_model

Emit = Callable[[str, dict], None]


# The same call (tool and arguments) made this many times in one run stops the loop.
REPEAT_LIMIT = 3
ONE_QUESTION = "Ask one question at a time; only the first was put to the user."


class OverTime(Exception):
    """The run's wall-time budget ran out while the model was answering."""


@dataclass(frozen=True)
class Budget:
    """Per-run limits beyond the round cap: a monotonic-clock deadline and total tokens."""

    deadline: float | None = None
    max_tokens: int | None = None
    seconds: float = 0  # the budget the deadline came from, for messages

    @classmethod
    def starting_now(cls, *, seconds: float, max_tokens: int) -> Budget:
        return cls(deadline=time.monotonic() + seconds, max_tokens=max_tokens, seconds=seconds)

    def over_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


@dataclass
class LoopResult:
    # "answered", "round_cap", "repeated_call", "budget" (Run.StopReason values) or "waiting" (paused
    # on a tool that asks the user; `waiting_call_id` and `question` say for what).
    stop_reason: str
    rounds: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    waiting_call_id: str = ""
    question: str = ""


def loop_run(
    *,
    client: LLMClient,
    model: str,
    messages: list[dict],
    tools: ToolSet,
    max_rounds: int,
    temperature: float,
    max_tokens: int,
    emit: Emit,
    rounds_done: int = 0,
    calls_done: list[tuple[str, str]] | None = None,
    budget: Budget | None = None,
) -> LoopResult:
    """Calls the model, runs the tools it asks for, and repeats until it answers in text.

    Bounded four ways, each ending the run with a stated reason rather than an exception:
    `max_rounds` model calls that asked for tools ("round_cap"); the same tool call asked
    for a REPEAT_LIMIT-th time ("repeated_call", not run); the `budget`'s time or tokens used
    up before another model call ("budget"); a pausing tool (ask_user) whose question waits
    for the user ("waiting"). Running out of time in the middle of an answer raises OverTime
    (the caller fails the run, keeping the partial text). Tool failures are results, so they never end the
    loop. Several calls in one answer run in parallel; results are appended in call order.
    A resumed run passes the `rounds_done` and `calls_done` (name, arguments) of its earlier
    part, so the bounds hold across the pause. `messages` is extended in place.
    Raises LLMError when the model call fails (the caller records the failure).
    """
    result = LoopResult(stop_reason="answered", rounds=rounds_done)
    seen = Counter(_call_key(name, args) for name, args in calls_done or [])
    schemas = tools.schemas()
    budget = budget or Budget()
    while True:
        completion = _model_turn(client, model, messages, schemas, temperature, max_tokens, emit, budget)
        result.rounds += 1
        result.prompt_tokens += completion.prompt_tokens
        result.completion_tokens += completion.completion_tokens
        if not completion.tool_calls:
            return result
        keys = [_call_key(c.name, c.arguments) for c in completion.tool_calls]
        seen.update(keys)
        if any(seen[k] >= REPEAT_LIMIT for k in keys):
            result.stop_reason = "repeated_call"
            return result
        for call in completion.tool_calls:
            if not tools.pauses(call.name):  # a question is announced by run.waiting instead
                emit("tool.called", {"call_id": call.id, "name": call.name, "arguments": call.arguments})
        outcomes = tools.call_many([ToolCallRequest(c.id, c.name, c.arguments) for c in completion.tool_calls])
        for call, outcome in zip(completion.tool_calls, outcomes, strict=True):
            if tools.pauses(call.name) and not outcome.is_error:
                if not result.waiting_call_id:
                    # The answer comes from the user's next message; the call stays open till then.
                    result.waiting_call_id, result.question = call.id, json.loads(outcome.content)["question"]
                    continue
                outcome = ToolResult.failure(ONE_QUESTION, outcome.duration_ms)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": for_model(outcome.content, call.name)})
            emit(
                "tool.finished",
                {
                    "call_id": call.id,
                    "name": call.name,
                    "content": outcome.content,
                    "is_error": outcome.is_error,
                    "duration_ms": outcome.duration_ms,
                },
            )
        if result.waiting_call_id:
            result.stop_reason = "waiting"
            return result
        if result.rounds >= max_rounds:
            result.stop_reason = "round_cap"
            return result
        used = result.prompt_tokens + result.completion_tokens
        if budget.over_time() or (budget.max_tokens is not None and used >= budget.max_tokens):
            result.stop_reason = "budget"
            return result


def _call_key(name: str, arguments: str) -> tuple[str, str]:
    try:
        return name, json.dumps(json.loads(arguments or "{}"), sort_keys=True)
    except ValueError:
        return name, arguments


def _model_turn(client, model, messages, schemas, temperature, max_tokens, emit, budget) -> Completion:
    emit("message.started", {})
    completion = None
    stream = client.stream(model=model, messages=messages, tools=schemas, temperature=temperature, max_tokens=max_tokens)
    try:
        for item in stream:
            if isinstance(item, TextDelta):
                emit("message.streamed", {"delta": item.text})
                if budget.over_time():
                    raise OverTime(f"The run used up its time budget ({budget.seconds:g} s) while the model was answering.")
            else:
                completion = item
    finally:
        stream.close()  # at once, so the connection and the breaker are released now, not at GC
    if completion is None:
        raise LLMError("The model's answer ended without a final chunk.", retryable=True)
    tool_calls = [c.wire() for c in completion.tool_calls]
    messages.append({"role": "assistant", "content": completion.content, **({"tool_calls": tool_calls} if tool_calls else {})})
    emit(
        "message.completed",
        {
            "content": completion.content,
            "tool_calls": tool_calls,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        },
    )
    return completion
