"""The shipped llama.cpp model (config/embedded_llm.py) end to end vs called directly.

Both sides send the same request: the "brief" agent's system prompt (it has no tools, so no
tool schemas lengthen the prompt), its temperature and the same max_tokens; each message is
different ("... (d3)" direct, "... (e3)" end to end) so llama.cpp's prompt cache helps both
sides alike: with the shared system prompt only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from .client import conversation
from .figures import Row, Spread
from .stack import BASE_DIR, Stack, answers, bench_env, end_process, free_port, uninterrupted

SAMPLES = 5
SAMPLING_SECONDS = 60  # stop taking pairs after this long (CPU generation is slow on 2 shared cores)
MAX_TOKENS = 32
START_TIMEOUT_SECONDS = 180
AGENT = "brief"
MODEL = "qwen2.5-coder-0.5b-instruct"  # settings.LLM_MODEL's default, the server's alias
QUESTIONS = ["What is a kettle for?", "Why is the sky blue?", "What does a compass do?",
             "Why do cats purr?", "What is bread made of?", "How does a bicycle stay up?"]


class LocalModel:
    """`python -m config.embedded_llm` on a free port, with the model assembled in a bench dir."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-llm-", dir=BASE_DIR / "data"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = 0.0

    def __enter__(self) -> LocalModel:
        env = bench_env(DATA_DIR=str(self.dir), LLM_PORT=str(self.port))
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "config.embedded_llm"], cwd=BASE_DIR, env=env,
                                     stdout=(self.dir / "llm.log").open("wb"), stderr=subprocess.STDOUT)
        while time.monotonic() - started < START_TIMEOUT_SECONDS:
            if self.proc.poll() is not None:
                log = (self.dir / "llm.log").read_text(errors="replace")[-500:]
                self.__exit__()
                raise RuntimeError(f"the local model server exited: {log.strip()}")
            if answers(f"http://127.0.0.1:{self.port}/health"):
                self.ready_seconds = time.monotonic() - started
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"the local model server did not answer within {START_TIMEOUT_SECONDS} s")

    def __exit__(self, *exc_info) -> None:
        with uninterrupted():
            end_process(self.proc, grace=15.0)
            shutil.rmtree(self.dir, ignore_errors=True)


def unavailable() -> str:
    """Why the local model cannot run here, or "" if it can."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (the `.[llm]` extra)"
    if not (BASE_DIR / "config" / "embedded_llm.py").exists():
        return "config/embedded_llm.py does not exist yet"
    return ""


def _direct(client: openai.OpenAI, agent: dict, question: str) -> tuple[float, float]:
    """(TTFT, tokens/s after the first token) for one streamed answer."""
    started = time.perf_counter()
    stamps = []
    response = client.chat.completions.create(
        model=MODEL, stream=True, max_tokens=MAX_TOKENS, temperature=agent["temperature"],
        messages=[{"role": "system", "content": agent["system_prompt"]}, {"role": "user", "content": question}],
    )
    with response:
        for chunk in response:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
    return stamps[0] - started, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _warm_up(stack) -> None:
    """One run per worker process at once: a worker's first run imports the LLM client
    (~0.25 s on a quiet machine), which is the start-up cost section 1 reports, not this one."""
    workers = json.loads(stack.bench_command("fixtures", "setting", "GATEWAY_WORKERS"))
    threads = json.loads(stack.bench_command("fixtures", "threads", str(workers)))

    async def at_once():
        await asyncio.gather(*(conversation(stack, t, "Say hi.", agent=AGENT, timeout=120) for t in threads))

    asyncio.run(at_once())


def compare(*, section: str) -> list[Row]:
    with LocalModel() as model, Stack(name="llm", llm_url=model.url, extra_env={"LLM_MAX_TOKENS": str(MAX_TOKENS)}) as stack:
        agent = json.loads(stack.bench_command("fixtures", "agent", AGENT))
        client = openai.OpenAI(base_url=model.url, api_key="bench", timeout=120, max_retries=0)
        _warm_up(stack)
        threads = json.loads(stack.bench_command("fixtures", "threads", str(SAMPLES + 1)))
        direct, exchanges = [], []
        deadline = time.monotonic() + SAMPLING_SECONDS
        for n, thread in enumerate(threads):
            if n > 1 and time.monotonic() > deadline:
                break
            question = QUESTIONS[n % len(QUESTIONS)]
            # Whichever side goes second finds more of the question in llama.cpp's prompt
            # cache, so the order alternates.
            if n % 2:
                exchange = asyncio.run(conversation(stack, thread, f"{question} (e{n})", agent=AGENT, timeout=120))
                sample = _direct(client, agent, f"{question} (d{n})")
            else:
                sample = _direct(client, agent, f"{question} (d{n})")
                exchange = asyncio.run(conversation(stack, thread, f"{question} (e{n})", agent=AGENT, timeout=120))
            if exchange.error or len(exchange.deltas) < 2:
                raise RuntimeError(f"end-to-end run failed: {exchange.error or 'too few tokens'}")
            if n > 0:  # the first of each side opens connections and warms llama.cpp's caches
                direct.append(sample)
                exchanges.append(exchange)
        stored = json.loads(stack.bench_command("fixtures", "runs", *(str(e.run) for e in exchanges)))
    # The client sees coalesced frames, so its token count is the model's own (usage).
    rates = [(stored[str(e.run)]["completion_tokens"] - 1) / (e.deltas[-1][0] - e.deltas[0][0]) for e in exchanges]
    d_ttft, e_ttft = Spread.of([t for t, _ in direct]), Spread.of([e.since_sent("message.streamed") for e in exchanges])
    d_rate, e_rate = Spread.of([r for _, r in direct]), Spread.of(rates)
    # The stack's own share, outside the model call: send → claimed by a worker, and the
    # first token's trip from the worker to the client. The rest is llama.cpp, whose prompt
    # cache and slot state make its TTFT vary far more than the stack does.
    own = Spread.of([(stored[str(e.run)]["started_at"] - e.sent_at) + (e.at("message.streamed") - stored[str(e.run)]["first_token_at"])
                     for e in exchanges])
    return [
        Row(section, "local model server start (model assembled and verified in a fresh dir)", f"{model.ready_seconds:.1f} s"),
        Row(section, f"direct TTFT (n={d_ttft.n}, up to {MAX_TOKENS} tokens)", d_ttft.ms()),
        Row(section, f"end-to-end TTFT (n={e_ttft.n})", e_ttft.ms(),
            note=f"{e_ttft.p50 / d_ttft.p50:.2f}× direct at p50; added p50 {(e_ttft.p50 - d_ttft.p50) * 1000:.0f} ms"),
        Row(section, "the stack's own part of end-to-end TTFT (send → claimed, first token → client)", own.ms()),
        Row(section, "direct generation rate (first → last token)", f"p50 {d_rate.p50:.1f} tokens/s"),
        Row(section, "end-to-end generation rate at the client (first → last delta)", f"p50 {e_rate.p50:.1f} tokens/s",
            note=f"{e_rate.p50 / d_rate.p50:.2f}× direct"),
    ]
