"""One conversation at a time through the whole stack, set against the direct call.

Added TTFT: a websocket client sends `message.send` and waits for the first
`message.streamed` frame; the backend's own TTFT (the openai SDK straight at the same
scripted server, in the same run) is subtracted. Each hop is read from the frames the client
sees, the Run row's timestamps and the backend's request log, all on one wall clock.

Streaming: a backend that streams 2 000 tokens as fast as it can; every token must arrive, in
order (the joined deltas equal the stored reply).
"""

from __future__ import annotations

import asyncio
import json

from . import direct
from .client import Exchange, conversation
from .figures import Row, Spread

TTFT_SECONDS = 0.1
TTFT_SAMPLES = 30
NEW_THREAD_SAMPLES = 10
# Long enough for several coalesced frames even at tens of thousands of tokens/s, short
# enough to stay under GATEWAY_MAX_MESSAGE_CHARS (the backend echoes the message).
STREAM_TOKENS = 8000
STREAM_SAMPLES = 5
TIMEOUT_SECONDS = 30


def warm_up(stack, backend, *, workers: int, section: str) -> list[Row]:
    """One run per worker process at once, so each has imported the LLM client and opened its
    connection before anything is measured. Reports those first runs' TTFT: what the first
    message after a start costs."""
    backend.pace(ttft_seconds=TTFT_SECONDS, tokens_per_second=20)
    threads = json.loads(stack.bench_command("fixtures", "threads", str(workers)))

    async def at_once():
        return await asyncio.gather(*(conversation(stack, t, "warm up please", timeout=60) for t in threads))

    exchanges = asyncio.run(at_once())
    ttfts = [e.since_sent("message.streamed") for e in exchanges if e.at("message.streamed")]
    if len(ttfts) < len(exchanges):
        raise RuntimeError(f"warm-up: {len(exchanges) - len(ttfts)} of {len(exchanges)} conversations got no token")
    return [Row(section, f"TTFT of each worker's first run after a start ({workers} at once, backend "
                f"{TTFT_SECONDS * 1000:.0f} ms)", Spread.of(ttfts).ms())]


def ttft_samples(stack, backend, *, samples: int = TTFT_SAMPLES) -> dict:
    """Direct and end-to-end TTFT, alternating, plus every hop of each end-to-end sample."""
    backend.pace(ttft_seconds=TTFT_SECONDS, tokens_per_second=None)
    threads = json.loads(stack.bench_command("fixtures", "threads", str(samples)))
    client = direct.client_for(backend.url)

    async def alternate():
        direct_ttfts, exchanges = [], []
        for n, thread in enumerate(threads):
            direct_ttfts.append((await asyncio.to_thread(direct.stream, client, f"direct {n}")).ttft)
            exchanges.append(await conversation(stack, thread, f"sample {n}", timeout=TIMEOUT_SECONDS))
        return direct_ttfts, exchanges

    direct_ttfts, exchanges = asyncio.run(alternate())
    failed = [e for e in exchanges if e.error or e.at("message.streamed") is None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {samples} conversations failed: {failed[0].error or 'no token'}")
    rows = json.loads(stack.bench_command("fixtures", "runs", *(str(e.run) for e in exchanges)))
    arrivals = backend.arrivals()
    hops = [_hops(e, rows[str(e.run)], arrivals[e.text]) for e in exchanges]
    return {"direct": Spread.of(direct_ttfts), "e2e": Spread.of([h["e2e"] for h in hops]), "hops": hops}


def _hops(e: Exchange, run: dict, request_at: float) -> dict[str, float]:
    """Seconds spent in each hop of one message, in the order the message travels."""
    return {
        "e2e": e.since_sent("message.streamed"),
        "send → message.accepted frame": e.since_sent("message.accepted"),
        "send → run.queued frame": e.since_sent("run.queued"),
        "send → run.started frame": e.since_sent("run.started"),
        "send → run stored (accepted_at)": run["accepted_at"] - e.sent_at,
        "run stored → claimed by a worker (started_at)": run["started_at"] - run["accepted_at"],
        "claimed → request at the backend": request_at - run["started_at"],
        "request → first token in the worker (first_token_at)": run["first_token_at"] - request_at,
        "first token in the worker → frame at the client": e.at("message.streamed") - run["first_token_at"],
    }


def ttft_rows(figures: dict, *, section: str, label: str, p50_target: float | None, p95_target: float | None) -> list[Row]:
    base = figures["direct"].p50
    added = Spread.of([h["e2e"] - base for h in figures["hops"]])
    e2e = figures["e2e"]
    ratio = f"{e2e.p50 / base:.2f}× direct at p50, {e2e.p95 / base:.2f}× at p95"
    rows = [
        Row(section, f"direct TTFT ({label}, backend {TTFT_SECONDS * 1000:.0f} ms, n={figures['direct'].n})", figures["direct"].ms()),
        Row(section, f"end-to-end TTFT ({label}, n={e2e.n})", e2e.ms(), note=ratio),
    ]
    if p50_target is not None:
        rows.append(Row(section, f"added TTFT p50 ({label})", f"{added.p50 * 1000:.1f} ms", f"≤ {p50_target * 1000:.0f} ms", added.p50 <= p50_target))
        rows.append(Row(section, f"added TTFT p95 ({label})", f"{added.p95 * 1000:.1f} ms (max {added.max * 1000:.1f} ms)",
                        f"≤ {p95_target * 1000:.0f} ms", added.p95 <= p95_target))
    else:
        rows.append(Row(section, f"added TTFT ({label})", added.ms()))
    return rows


def hop_table(figures: dict) -> list[tuple[str, Spread]]:
    names = [n for n in figures["hops"][0] if n != "e2e"]
    return [(name, Spread.of([h[name] for h in figures["hops"] if h[name] is not None])) for name in names]


def new_thread_rows(stack, backend, *, section: str) -> list[Row]:
    """The /new/ page's first message: `thread: null`, so the socket joins the thread's group
    only after the run exists. Counts the frames that never reach the client."""
    backend.pace(ttft_seconds=TTFT_SECONDS, tokens_per_second=None)

    async def send_all():
        return [await conversation(stack, None, f"new thread {n}", timeout=TIMEOUT_SECONDS) for n in range(NEW_THREAD_SAMPLES)]

    exchanges = asyncio.run(send_all())
    rows = json.loads(stack.bench_command("fixtures", "runs", *(str(e.run) for e in exchanges if e.run)))
    missing = {kind: sum(e.at(kind) is None for e in exchanges) for kind in ("run.queued", "run.started", "message.streamed")}
    cut = sum(e.text_received != rows[str(e.run)]["reply"] for e in exchanges if e.run)
    figure = ", ".join(f"{kind} missing in {count}/{len(exchanges)}" for kind, count in missing.items())
    ok = missing["run.started"] == 0 and missing["message.streamed"] == 0 and cut == 0
    return [Row(section, "first message of a new thread: frames lost", f"{figure}; streamed text incomplete in {cut}",
                "every frame delivered", ok and missing["run.queued"] == 0)]


def streaming(stack, backend, *, section: str) -> list[Row]:
    backend.pace(ttft_seconds=0.0, tokens_per_second=None)
    words = " ".join(f"w{n}" for n in range(STREAM_TOKENS - 1))  # "Echo:" + these = STREAM_TOKENS tokens
    threads = json.loads(stack.bench_command("fixtures", "threads", str(STREAM_SAMPLES)))
    client = direct.client_for(backend.url)

    async def alternate():
        pairs = []
        for thread in threads:
            pairs.append((await asyncio.to_thread(direct.stream, client, words),
                          await conversation(stack, thread, words, timeout=TIMEOUT_SECONDS)))
        return pairs

    pairs = asyncio.run(alternate())
    raw_rate = Spread.of([direct.stream_raw_rate(client, words) for _ in range(STREAM_SAMPLES)])
    stored = json.loads(stack.bench_command("fixtures", "runs", *(str(e.run) for _, e in pairs if e.run)))
    expected = f"Echo: {words}"
    intact = sum(e.finished and e.text_received == stored[str(e.run)]["reply"] == expected for _, e in pairs)
    direct_rate = Spread.of([d.tokens / d.duration for d, _ in pairs])
    rates = [STREAM_TOKENS / (e.deltas[-1][0] - e.deltas[0][0]) for _, e in pairs if len(e.deltas) >= 2]
    rate = Spread.of(rates)
    return [
        Row(section, f"direct stream rate, openai SDK ({STREAM_TOKENS} tokens, n={len(pairs)})", f"p50 {direct_rate.p50:,.0f} tokens/s"),
        Row(section, "direct stream rate, same transport parsed with json.loads (the backend's own limit)",
            f"p50 {raw_rate.p50:,.0f} tokens/s", note="the gap to the SDK figure is the SDK building a model per chunk"),
        Row(section, "tokens/s delivered to the client (first → last delta)",
            f"p50 {rate.p50:,.0f}, worst {min(rates, default=0):,.0f} tokens/s ({rate.p50 / direct_rate.p50:.2f}× direct)",
            "≥ 10 000 tokens/s", bool(rates) and min(rates) >= 10_000),
        Row(section, "every token delivered, in order", f"{intact}/{len(pairs)} streams intact", "all", intact == len(pairs)),
        frame_rate_row([e for _, e in pairs], section=section, label=f"unpaced, {STREAM_TOKENS} tokens"),
    ]


def frame_rate_row(exchanges: list[Exchange], *, section: str, label: str) -> Row:
    """Frames per second as a browser tab feels them: the most frames in any one second."""
    busiest = max(e.busiest_second() for e in exchanges)
    all_gaps = [g for e in exchanges for g in e.gaps()]
    gaps = Spread.of(all_gaps)
    shortest = min(all_gaps, default=float("nan"))
    frames = [len(e.deltas) for e in exchanges]
    return Row(section, f"websocket frames/s per stream ({label}): most in any one second", f"{busiest}",
               "≤ 30", busiest <= 30, f"{min(frames)}–{max(frames)} frames per stream; gap between frames "
               f"p50 {gaps.p50 * 1000:.0f} ms, shortest {shortest * 1000:.1f} ms")
