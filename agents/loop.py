"""The capped tool loop: a plain function over a model client, tools, messages and `emit`.

It writes nothing to the database. Everything that happens is reported through
`emit(event_type, data)`; a service listens and persists (agents.services.runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .llm import Completion, LLMClient, LLMError, TextDelta
from .tools import ToolSet

Emit = Callable[[str, dict], None]


@dataclass
class LoopResult:
    stop_reason: str  # "answered" or "round_cap" (Run.StopReason values)
    rounds: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


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
) -> LoopResult:
    """Calls the model, runs the tools it asks for, and repeats until it answers in text.

    Stops after `max_rounds` model calls that asked for tools ("round_cap"): a stuck model
    ends the run with a stated reason rather than an exception. Tool failures are results,
    so they never end the loop. `messages` is extended in place with every new message.
    Raises LLMError when the model call fails (the caller records the failure).
    """
    result = LoopResult(stop_reason="answered", rounds=0)
    schemas = tools.schemas()
    while True:
        completion = _model_turn(client, model, messages, schemas, temperature, max_tokens, emit)
        result.rounds += 1
        result.prompt_tokens += completion.prompt_tokens
        result.completion_tokens += completion.completion_tokens
        if not completion.tool_calls:
            return result
        for call in completion.tool_calls:
            emit("tool.called", {"call_id": call.id, "name": call.name, "arguments": call.arguments})
            outcome = tools.call(call.name, call.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
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
        if result.rounds >= max_rounds:
            result.stop_reason = "round_cap"
            return result


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
