"""LLMClient for any server speaking OpenAI's chat completions (llama.cpp, Ollama, vLLM...).

The only module that imports `openai`. Retries live in one layer: the SDK's own (connection
errors, 408/409/429/5xx before the body starts, honouring Retry-After); nothing here retries
again. Every failure leaves as an LLMError.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import httpx2
import openai

from .llm import Completion, LLMError, TextDelta, ToolCall


class _ToolCallAccumulator:
    """Joins streamed tool-call fragments into whole calls.

    Local servers stream tool calls imperfectly: llama.cpp gives every call index 0, so a new
    call is recognised by a new id as well as by a new index.
    """

    def __init__(self):
        self.calls: list[dict] = []
        self._by_index: dict[int, dict] = {}

    def add(self, delta) -> None:
        index = delta.index if delta.index is not None else 0
        current = self._by_index.get(index)
        if current is None or (delta.id and current["id"] and delta.id != current["id"]):
            current = {"id": delta.id or "", "name": "", "arguments": ""}
            self._by_index[index] = current
            self.calls.append(current)
        if delta.id and not current["id"]:
            current["id"] = delta.id
        if delta.function is not None:
            if delta.function.name:
                current["name"] += delta.function.name
            if delta.function.arguments:
                current["arguments"] += delta.function.arguments

    def result(self) -> list[ToolCall]:
        return [
            ToolCall(id=c["id"] or f"call_{n}", name=c["name"], arguments=c["arguments"] or "{}")
            for n, c in enumerate(self.calls)
        ]


class OpenAICompatibleClient:
    """LLMClient for any server speaking OpenAI's chat completions."""

    def __init__(self, *, base_url: str, api_key: str, timeout: float, max_retries: int):
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def stream(self, *, model, messages, tools, temperature, max_tokens):
        kwargs = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if tools:
            kwargs["tools"] = tools
        try:
            yield from self._stream(kwargs)
        except openai.APIStatusError as exc:
            raise LLMError(_status_message(exc), retryable=exc.status_code in (408, 409, 429) or exc.status_code >= 500) from exc
        except openai.APITimeoutError as exc:
            raise LLMError("The model server did not answer in time.", retryable=True) from exc
        except openai.APIConnectionError as exc:
            raise LLMError("Could not reach the model server.", retryable=True) from exc
        except (httpx2.TransportError, openai.APIError) as exc:
            # Raised once the body has started: the SDK does not retry these.
            raise LLMError(f"The model's answer was cut off ({type(exc).__name__}).", retryable=True) from exc
        except json.JSONDecodeError as exc:
            raise LLMError("The model server sent a malformed stream.", retryable=True) from exc

    def _stream(self, kwargs) -> Iterator[TextDelta | Completion]:
        stream = self._client.chat.completions.create(**kwargs)
        text: list[str] = []
        calls = _ToolCallAccumulator()
        finish_reason = ""
        prompt_tokens = completion_tokens = 0
        with stream:
            for chunk in _chunks(stream):
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens or 0
                    completion_tokens = chunk.usage.completion_tokens or 0
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        text.append(delta.content)
                        yield TextDelta(delta.content)
                    for tc in (delta.tool_calls if delta is not None else None) or []:
                        calls.add(tc)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        yield Completion(
            content="".join(text),
            tool_calls=calls.result(),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def _chunks(stream) -> Iterator:
    """The stream's chunks. This SDK reports a body broken off midway as APIConnectionError,
    the same as a server it never reached; here the server did answer, so say it was cut off."""
    try:
        yield from stream
    except openai.APITimeoutError:
        raise
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise LLMError(f"The model's answer was cut off ({type(cause).__name__}).", retryable=True) from exc


def _status_message(exc: openai.APIStatusError) -> str:
    # The body may echo the request; keep only the server's own short message.
    detail = ""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    if isinstance(error, dict):
        detail = str(error.get("message", ""))[:300]
    elif isinstance(error, str):
        detail = error[:300]
    return f"The model server answered {exc.status_code}" + (f": {detail}" if detail else ".")


@functools.lru_cache(maxsize=8)
def cached_client(base_url: str, api_key: str, timeout: float, max_retries: int) -> OpenAICompatibleClient:
    # One client per backend and process: it keeps its HTTP connections open between runs.
    return OpenAICompatibleClient(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
