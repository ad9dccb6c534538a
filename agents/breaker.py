"""Circuit breakers for model backends, shared by every worker process through Redis.

One breaker per provider and model: a server can fail to load one model (out of memory) and
serve another, which is exactly when an agent's fallback model helps. LLM_BREAKER_FAILURES
failed calls within LLM_BREAKER_WINDOW_SECONDS, with no success between them, open it; while
open, calls fail at once with a readable reason instead of each run waiting out timeouts and
retries. After LLM_BREAKER_OPEN_SECONDS the next call is let through as a probe (half-open):
success closes the breaker, failure opens it for another period.

Only failures that say the backend is unwell count (LLMError.retryable: refused, timeouts,
5xx, 429, broken streams). A request the server rejects (400, context too long) proves it is
up. State lives in Redis (pybreaker's CircuitRedisStorage), so all workers see one breaker;
if Redis cannot be reached, pybreaker treats the breaker as closed.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pybreaker
import redis
from django.conf import settings

from .llm import Completion, LLMClient, LLMError, TextDelta


class _WindowedRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker counts consecutive failures forever; here the count also lapses
    LLM_BREAKER_WINDOW_SECONDS after the first failure it holds."""

    def increment_counter(self) -> None:
        key = self._namespace("fail_counter")
        try:
            if self._redis.incr(key) == 1:
                self._redis.expire(key, max(1, int(settings.LLM_BREAKER_WINDOW_SECONDS)))
        except redis.RedisError:
            self.logger.exception("RedisError")


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def breaker_for(key: str) -> pybreaker.CircuitBreaker:
    """The breaker for `key` (see `breaker_key`). Cheap: state is read from Redis per call."""
    return _breaker(key, settings.REDIS_PREFIX, settings.LLM_BREAKER_FAILURES, settings.LLM_BREAKER_OPEN_SECONDS)


@functools.lru_cache(maxsize=64)
def _breaker(key: str, prefix: str, failures: int, open_seconds: float) -> pybreaker.CircuitBreaker:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]  # model names may hold any character
    storage = _WindowedRedisStorage(pybreaker.STATE_CLOSED, _redis(), namespace=f"{prefix}:breaker:{digest}")
    return pybreaker.CircuitBreaker(
        fail_max=failures,
        reset_timeout=open_seconds,
        state_storage=storage,
        name=key,
        # A stream its reader stops early (a budget, a shutdown) is not the backend's fault.
        exclude=[GeneratorExit, lambda exc: isinstance(exc, LLMError) and not exc.retryable],
    )


def breaker_key(backend_key: str, model: str) -> str:
    return f"{backend_key}|{model}"


def breaker_is_open(key: str) -> bool:
    """True while calls through `key` would be refused (open and not yet due for a probe)."""
    breaker = breaker_for(key)
    return breaker.current_state == pybreaker.STATE_OPEN and _reopens_at(breaker) > datetime.now(UTC)


def _reopens_at(breaker: pybreaker.CircuitBreaker) -> datetime:
    opened_at = breaker._state_storage.opened_at or datetime.now(UTC)  # pybreaker has no public getter
    return opened_at + timedelta(seconds=breaker.reset_timeout)


class GuardedClient:
    """An LLMClient that passes calls through a breaker; `label` names the backend in errors."""

    def __init__(self, client: LLMClient, *, key: str, label: str):
        self.client = client
        self.key = key
        self.label = label

    def stream(self, **kwargs) -> Iterator[TextDelta | Completion]:
        breaker = breaker_for(self.key)
        try:
            with breaker.calling():
                yield from self.client.stream(**kwargs)
        except pybreaker.CircuitBreakerError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, LLMError) else None
            raise LLMError(self._open_message(breaker, cause), retryable=True) from exc

    def _open_message(self, breaker, cause: LLMError | None) -> str:
        seconds = max(1, math.ceil((_reopens_at(breaker) - datetime.now(UTC)).total_seconds()))
        reason = f"{cause} " if cause else ""
        return (
            f"{reason}{self.label} has failed {breaker.fail_max} times within "
            f"{settings.LLM_BREAKER_WINDOW_SECONDS:g} s, so it is paused for {seconds} s: retry after that, "
            "or give this agent a fallback model in the admin."
        )
