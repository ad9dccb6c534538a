"""N conversations started at once, each in its own thread and socket, against a backend that
streams 200 tokens at 50 tokens/s to each (4 s per answer, nearly all of it waiting).

The baseline is the same N streams started at once straight at the backend, so the figure
is what the stack adds at that load, not what a Python test double does with N streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

from . import direct
from .client import Exchange, connect, converse, subscribe
from .figures import Row, Spread
from .memory import PeakSampler, cpu_seconds

TTFT_SECONDS = 0.1
TOKENS_PER_SECOND = 50
TOKENS = 200
P95_TARGET_SECONDS = 0.250
TARGET_CONVERSATIONS = 50


def at_once(stack, backend, *, conversations: int, workers: int) -> dict:
    backend.pace(ttft_seconds=TTFT_SECONDS, tokens_per_second=TOKENS_PER_SECOND)
    text = " ".join(f"c{n}" for n in range(TOKENS - 1))  # "Echo:" + these = TOKENS tokens
    baseline = direct.streams_at_once(direct.client_for(backend.url), [text] * conversations)
    threads = json.loads(stack.bench_command("fixtures", "threads", str(conversations)))
    # Enough for every wave of `workers` runs to finish one after the other, and a margin.
    timeout = (conversations / workers + 2) * (TOKENS / TOKENS_PER_SECOND + TTFT_SECONDS) + 30

    async def tabs():
        sockets = [await connect(stack) for _ in threads]
        try:
            for ws, thread in zip(sockets, threads):
                await subscribe(ws, thread)
            exchanges = [Exchange(thread=t, text=text) for t in threads]
            return await asyncio.gather(*(converse(ws, e, timeout=timeout) for ws, e in zip(sockets, exchanges)))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    cpu_before, wall_before = cpu_seconds(stack), time.monotonic()
    with PeakSampler(stack) as memory:
        exchanges = asyncio.run(tabs())
    cpu = {role: used - cpu_before.get(role, 0.0) for role, used in cpu_seconds(stack).items()}
    wall = time.monotonic() - wall_before
    stored = json.loads(stack.bench_command("fixtures", "runs", *(str(e.run) for e in exchanges if e.run)))
    complete = sum(e.finished and e.text_received == stored[str(e.run)]["reply"] == f"Echo: {text}" for e in exchanges)
    # For the ones that did not complete: did the run end in the database (delivery lagged) or not?
    unfinished = Counter(stored[str(e.run)]["status"] if e.run else "not accepted" for e in exchanges if not e.finished)
    ttfts = [e.since_sent("message.streamed") for e in exchanges if e.at("message.streamed")]
    direct_p50 = Spread.of([s.ttft for s in baseline]).p50
    runs = [(e, stored[str(e.run)]) for e in exchanges if e.run and stored[str(e.run)]["first_token_at"] and e.at("message.streamed")]
    hops = {
        "sent → stored": Spread.of([r["accepted_at"] - e.sent_at for e, r in runs]),
        "stored → claimed": Spread.of([r["started_at"] - r["accepted_at"] for e, r in runs]),
        "claimed → first token in the worker": Spread.of([r["first_token_at"] - r["started_at"] for e, r in runs]),
        "first token → client": Spread.of([e.at("message.streamed") - r["first_token_at"] for e, r in runs]),
    }
    return {
        "conversations": conversations, "workers": workers, "complete": complete,
        "direct": Spread.of([s.ttft for s in baseline]), "e2e": Spread.of(ttfts),
        "added": Spread.of([t - direct_p50 for t in ttfts]),
        "exchanges": exchanges, "memory": memory.peak,
        "errors": sorted({e.error for e in exchanges if e.error}), "unfinished": dict(unfinished),
        "cpu": cpu, "wall": wall, "hops": hops, "frames": sum(len(e.frames) for e in exchanges),
    }


def rows(result: dict, *, section: str) -> list[Row]:
    n, workers, added = result["conversations"], result["workers"], result["added"]
    label = f"N={n}, GATEWAY_WORKERS={workers}"
    target = n == TARGET_CONVERSATIONS
    note = f"e2e {result['e2e'].ms()}; direct at N={n}: p50 {result['direct'].p50 * 1000:.0f} ms"
    if result["errors"]:
        note += f"; errors: {'; '.join(result['errors'])[:200]}; runs of the unfinished ones in the database: {result['unfinished']}"
    note += "; hops p50/p95: " + ", ".join(f"{name} {h.p50 * 1000:,.0f}/{h.p95 * 1000:,.0f} ms" for name, h in result["hops"].items())
    cpu = ", ".join(f"{role} {seconds:.1f} s" for role, seconds in result["cpu"].items())
    cpu_note = f"CPU used over {result['wall']:.1f} s wall: {cpu}; {result['frames']:,} frames delivered"
    return [
        Row(section, f"{label}: conversations complete and intact", f"{result['complete']}/{n}", "all", result["complete"] == n),
        Row(section, f"{label}: added TTFT", f"p50 {added.p50 * 1000:,.0f} ms, p95 {added.p95 * 1000:,.0f} ms, max {added.max * 1000:,.0f} ms",
            f"p95 ≤ {P95_TARGET_SECONDS * 1000:.0f} ms" if target else "", added.p95 <= P95_TARGET_SECONDS if target else None, note),
        Row(section, f"{label}: peak memory of the stack under load", result["memory"]["whole stack"].text(),
            note=", ".join(f"{role} {u.text()}" for role, u in result["memory"].items() if role != "whole stack")),
        Row(section, f"{label}: CPU", cpu_note),
    ]


def breaking_point(results: list[dict]) -> str:
    """The largest N that met the p95 target, and the smallest that did not."""
    met = [r["conversations"] for r in results if r["added"].p95 <= P95_TARGET_SECONDS and r["complete"] == r["conversations"]]
    missed = [r["conversations"] for r in results if r["conversations"] not in met]
    return (f"p95 ≤ {P95_TARGET_SECONDS * 1000:.0f} ms up to N={max(met)}" if met else "p95 target missed at every N tried") + (
        f", missed from N={min(missed)}" if missed else "")
