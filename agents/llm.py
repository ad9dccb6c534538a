"""The one interface to language models.

Everything above it speaks `LLMClient.stream()` and sees only `TextDelta`, `Completion` and
`LLMError`. The implementation for OpenAI-compatible servers is agents/openai_client.py, the
only module that imports `openai`; it is imported only when a model is called, so the web
process never loads the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model wrote it; may be malformed

    def wire(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Completion:
    """The end of one model answer: its full text, any tool calls, and token usage."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMError(Exception):
    """A model call failed. `retryable` says whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class LLMClient(Protocol):
    def stream(
        self, *, model: str, messages: list[dict], tools: list[dict], temperature: float, max_tokens: int
    ) -> Iterator[TextDelta | Completion]:
        """Yields text deltas as they arrive, then exactly one Completion.

        Raises LLMError for any failure, before or during the stream.
        """
        ...


def client_for(agent) -> tuple[LLMClient, str]:
    """The client and model name for `agent`'s next model call (agent may be None: defaults).

    The client passes every call through the circuit breaker of its provider and model
    (agents.breaker). While the agent's own model's breaker is open and the agent names a
    fallback model, the fallback is used instead, through its own breaker. Model strings are
    passed through whole: llama-swap and Ollama model names often contain a slash.
    """
    from .breaker import GuardedClient, breaker_is_open, breaker_key
    from .openai_client import cached_client
    from .providers import backend_for

    backend = backend_for(agent)  # raises ProviderError (an LLMError) for an unreadable key
    model = (agent.model if agent else "") or settings.LLM_MODEL
    fallback = agent.fallback_model if agent else ""
    if fallback and fallback != model and breaker_is_open(breaker_key(backend.key, model)):
        model = fallback
    client = cached_client(
        backend.base_url, backend.api_key, settings.LLM_TIMEOUT_SECONDS, settings.LLM_MAX_RETRIES, settings.LLM_STALL_SECONDS
    )
    return GuardedClient(client, key=breaker_key(backend.key, model), label=f"The model {model!r} at {backend.name}"), model

