"""The capped tool loop: a plain function over a model client, tools, messages and `emit`.

It writes nothing to the database. Everything that happens is reported through
`emit(event_type, data)`; a service listens and persists (agents.services.runs).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .llm import Completion, LLMClient, LLMError, TextDelta
from .tools import ToolCallRequest, ToolResult, ToolSet, for_model

Emit = Callable[[str, dict], None]


# The same call (tool and arguments) made this many times in one run stops the loop.
REPEAT_LIMIT = 3
ONE_QUESTION = "Ask one question at a time; only the first was put to the user."


@dataclass
class LoopResult:
    # "answered", "round_cap", "repeated_call" (Run.StopReason values) or "waiting" (paused
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
) -> LoopResult:
    """Calls the model, runs the tools it asks for, and repeats until it answers in text.

    Bounded three ways, each ending the run with a stated reason rather than an exception:
    `max_rounds` model calls that asked for tools ("round_cap"); the same tool call asked
    for a REPEAT_LIMIT-th time ("repeated_call", not run); a pausing tool (ask_user) whose
    question waits for the user ("waiting"). Tool failures are results, so they never end the
    loop. Several calls in one answer run in parallel; results are appended in call order.
    A resumed run passes the `rounds_done` and `calls_done` (name, arguments) of its earlier
    part, so the bounds hold across the pause. `messages` is extended in place.
    Raises LLMError when the model call fails (the caller records the failure).
    """
    result = LoopResult(stop_reason="answered", rounds=rounds_done)
    seen = Counter(_call_key(name, args) for name, args in calls_done or [])
    schemas = tools.schemas()
    while True:
        completion = _model_turn(client, model, messages, schemas, temperature, max_tokens, emit)
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


def _call_key(name: str, arguments: str) -> tuple[str, str]:
    try:
        return name, json.dumps(json.loads(arguments or "{}"), sort_keys=True)
    except ValueError:
        return name, arguments


def _model_turn(client, model, messages, schemas, temperature, max_tokens, emit) -> Completion:
    emit("message.started", {})
    completion = None
    for item in client.stream(
        model=model, messages=messages, tools=schemas, temperature=temperature, max_tokens=max_tokens
    ):
        if isinstance(item, TextDelta):
            emit("message.streamed", {"delta": item.text})
        else:
            completion = item
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
