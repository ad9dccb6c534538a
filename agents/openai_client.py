"""LLMClient for any server speaking OpenAI's chat completions (llama.cpp, Ollama, vLLM...).

The only module that imports `openai`. Retries live in one layer: the SDK's own (connection
errors, 408/409/429/5xx before the body starts, honouring Retry-After); nothing here retries
again, and nothing is retried once the answer has started, so text already shown is never
generated twice. Every failure leaves as an LLMError.

Two clocks bound a call. `timeout` is how long the server may stay silent before the answer
starts (a slow CPU model reading a long prompt). Once it has started, `stall_seconds` is
how long it may go without sending an event: silence, or only keep-alive comments, for
longer ends the call as stalled (the stall watchdog).
"""

from __future__ import annotations

import functools
import json
import secrets
import time
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

    def add(self, delta: dict) -> None:
        index = delta.get("index") or 0
        call_id = delta.get("id") or ""
        current = self._by_index.get(index)
        if current is None or (call_id and current["id"] and call_id != current["id"]):
            current = {"id": call_id, "name": "", "arguments": ""}
            self._by_index[index] = current
            self.calls.append(current)
        if call_id and not current["id"]:
            current["id"] = call_id
        function = delta.get("function") or {}
        if function.get("name"):
            current["name"] += function["name"]
        if function.get("arguments"):
            current["arguments"] += function["arguments"]

    def result(self) -> list[ToolCall]:
        return [
            # A server that sends no ids gets unique ones: ids repeated across rounds would pair
            # a later call with an earlier result in the stored history.
            ToolCall(id=c["id"] or f"call_{secrets.token_hex(8)}", name=c["name"], arguments=c["arguments"] or "{}")
            for c in self.calls
        ]


class OpenAICompatibleClient:
    """LLMClient for any server speaking OpenAI's chat completions."""

    def __init__(self, *, base_url: str, api_key: str, timeout: float, max_retries: int, stall_seconds: float | None = None):
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._stall_seconds = stall_seconds or timeout

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
        except httpx2.ReadTimeout as exc:
            raise LLMError(_stalled_message(self._stall_seconds), retryable=True) from exc
        except (httpx2.TransportError, openai.APIError) as exc:
            # Raised once the body has started: the SDK does not retry these.
            raise LLMError(f"The model's answer was cut off ({type(exc).__name__}).", retryable=True) from exc
        except json.JSONDecodeError as exc:
            raise LLMError("The model server sent a malformed stream.", retryable=True) from exc

    def _stream(self, kwargs) -> Iterator[TextDelta | Completion]:
        # The SDK still makes the request (auth, retries before the body, status errors), but
        # the chunks are read as JSON rather than through its typed stream: building a pydantic
        # model per chunk capped a stream at ~8 000 tokens/s (docs/BENCHMARKS.md).
        text: list[str] = []
        calls = _ToolCallAccumulator()
        finish_reason = ""
        prompt_tokens = completion_tokens = 0
        with self._client.chat.completions.with_streaming_response.create(**kwargs) as response:
            # Vendor quirk, relied on and tested: httpcore reads the request's read timeout when
            # the body starts, so from here on a silent socket fails after stall_seconds.
            timeouts = response.http_response.request.extensions.get("timeout")
            if isinstance(timeouts, dict):
                timeouts["read"] = self._stall_seconds
            for chunk in _sse_json(_watched(response.iter_lines(), self._stall_seconds)):
                if chunk.get("error"):
                    raise LLMError(f"The model server reported an error: {_error_text(chunk['error'])}", retryable=True)
                usage = chunk.get("usage") or {}
                if usage:
                    prompt_tokens = usage.get("prompt_tokens") or 0
                    completion_tokens = usage.get("completion_tokens") or 0
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        text.append(content)
                        yield TextDelta(content)
                    for tc in delta.get("tool_calls") or []:
                        calls.add(tc)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        yield Completion(
            content="".join(text),
            tool_calls=calls.result(),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def _watched(lines, stall_seconds: float) -> Iterator[str]:
    """The lines, ending the stream once `stall_seconds` pass without a `data:` line: a server
    that sends only keep-alive comments is as stuck as one that sends nothing."""
    last_data = time.monotonic()
    for line in lines:
        if line.startswith("data:"):
            last_data = time.monotonic()
        elif time.monotonic() - last_data > stall_seconds:
            raise LLMError(_stalled_message(stall_seconds), retryable=True)
        yield line


def _stalled_message(stall_seconds: float) -> str:
    return f"The model stopped sending its answer (nothing for {stall_seconds:g} s), so it was ended."


def _sse_json(lines) -> Iterator[dict]:
    """The JSON objects of a server-sent-events body, up to `data: [DONE]`.

    Comments, `event:` and `id:` lines are skipped; several `data:` lines form one event.
    Raises json.JSONDecodeError for malformed data.
    """
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
            continue
        if line or not data:
            continue
        payload = "\n".join(data)
        data = []
        if payload == "[DONE]":
            return
        yield json.loads(payload)
    if data and "\n".join(data) != "[DONE]":
        yield json.loads("\n".join(data))


def _error_text(error) -> str:
    if isinstance(error, dict):
        return str(error.get("message", ""))[:300]
    return str(error)[:300]


def _status_message(exc: openai.APIStatusError) -> str:
    # The body may echo the request; keep only the server's own short message.
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    detail = _error_text(error) if isinstance(error, (dict, str)) else ""
    return f"The model server answered {exc.status_code}" + (f": {detail}" if detail else ".")


@functools.lru_cache(maxsize=8)
def cached_client(base_url: str, api_key: str, timeout: float, max_retries: int, stall_seconds: float) -> OpenAICompatibleClient:
    # One client per backend and process: it keeps its HTTP connections open between runs.
    return OpenAICompatibleClient(
        base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, stall_seconds=stall_seconds
    )
