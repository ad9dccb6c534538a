"""The baseline: the same scripted backend called directly with the openai SDK, as a worker
does (one client per process, connections kept open), but with no queue, database or socket."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai

SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class Stream:
    ttft: float  # seconds from the request to the first content token
    duration: float  # seconds from the first content token to the last
    tokens: int
    text: str


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="bench", timeout=120, max_retries=0)


def stream(client: openai.OpenAI, text: str, *, model: str = "scripted", max_tokens: int = 4096) -> Stream:
    started = time.perf_counter()
    first = last = None
    parts = []
    response = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True}, max_tokens=max_tokens,
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
    )
    with response:
        for chunk in response:
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    last = time.perf_counter()
                    first = first or last
                    parts.append(choice.delta.content)
    if first is None:
        raise RuntimeError("the backend streamed no text")
    return Stream(ttft=first - started, duration=last - first, tokens=len(parts), text="".join(parts))


def stream_raw_rate(client: openai.OpenAI, text: str) -> float:
    """Tokens/s of the same stream read through the SDK's transport but parsed with json.loads
    instead of the SDK's response models: what the backend and the wire can do."""
    stamps = []
    with client.chat.completions.with_streaming_response.create(
        model="scripted", stream=True, messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def streams_at_once(client: openai.OpenAI, texts: list[str]) -> list[Stream]:
    """All the streams started together, one thread each (the backend's own behaviour at that load)."""
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        return list(pool.map(lambda text: stream(client, text), texts))
