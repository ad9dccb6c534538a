"""`python -m bench`: every benchmark against the real stack; writes docs/BENCHMARKS.md.

Each block starts the processes it needs and ends them (and removes its data/bench-* dir)
however it ends. A block that fails or would not fit in the time left is reported as such
and the others still run; the whole run stays under TOTAL_SECONDS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import concurrency, footprint, pipeline, real_model, report, sqlite_load
from .backend import Backend
from .figures import Row, Spread
from .stack import BASE_DIR, Stack, bench_env

TOTAL_SECONDS = 540  # the whole run in under 10 minutes, cleanup and the report included
HARD_STOP_SECONDS = 570  # a block still running then is interrupted (its `with` blocks clean up)
CONVERSATIONS = (10, 20, 50)
MANY_WORKERS = 50  # one worker process per conversation at the largest N

TTFT, STREAM, CONC, FOOT, DOMAIN, BROKER, MODEL, LOAD = (
    "1 TTFT", "2 streaming", "3 concurrency", "4 footprint", "5 domain", "6 broker", "7 real model", sqlite_load.SECTION)


class OutOfTime(Exception):
    pass


def _out_of_time(*_):
    raise OutOfTime(f"interrupted at the {HARD_STOP_SECONDS} s hard stop")


class Run:
    def __init__(self):
        self.started = time.monotonic()
        self.rows: list[Row] = []
        self.hops: dict[str, list[tuple[str, Spread]]] = {}

    def left(self) -> float:
        return TOTAL_SECONDS - (time.monotonic() - self.started)

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            print(row.line(), flush=True)
        self.rows += rows

    def add_hops(self, label: str, table: list[tuple[str, Spread]]) -> None:
        print(f"hops ({label}):", flush=True)
        for name, spread in table:
            print(f"  {name}: {spread.ms()}", flush=True)
        self.hops[label] = table

    def block(self, section: str, name: str, needs_seconds: float, body) -> None:
        """Runs `body()` (which adds its own rows) unless time is short; records a failure as a row."""
        if self.left() < needs_seconds:
            self.add([Row(section, name, f"skipped: {self.left():.0f} s left of the time budget, it needs ~{needs_seconds:.0f} s")])
            return
        print(f"--- {name} ({self.left():.0f} s left)", flush=True)
        try:
            body()
        except Exception as exc:  # one broken block must not hide the others' figures
            self.add([Row(section, name, f"failed: {type(exc).__name__}: {str(exc)[:300]}")])


def main_stack(run: Run, backend: Backend) -> None:
    """The default configuration (Redis broker, default workers): sections 1-4."""
    with Stack(name="redis", llm_url=backend.url) as stack:
        workers = json.loads(stack.bench_command("fixtures", "setting", "GATEWAY_WORKERS"))
        run.add(footprint.start_rows(stack.timings, section=FOOT, label="the bench's own start, fresh data dir"))
        run.add(footprint.idle_rows(stack, section=FOOT, label=f"after start ({workers} workers)"))
        run.add(pipeline.warm_up(stack, backend, workers=workers, section=TTFT))
        figures = pipeline.ttft_samples(stack, backend)
        run.add(pipeline.ttft_rows(figures, section=TTFT, label="Redis broker", p50_target=0.020, p95_target=0.060))
        run.add_hops("Redis broker", pipeline.hop_table(figures))
        run.add(pipeline.new_thread_rows(stack, backend, section=TTFT))
        run.add(pipeline.streaming(stack, backend, section=STREAM))
        results = []
        # As many conversations as workers, and one more: where the queue starts.
        for n in (workers, workers + 1, *CONVERSATIONS):
            results.append(concurrency.at_once(stack, backend, conversations=n, workers=workers))
            run.add(concurrency.rows(results[-1], section=CONC))
        run.add([pipeline.frame_rate_row(results[-1]["exchanges"], section=STREAM,
                                         label=f"{concurrency.TOKENS_PER_SECOND} tokens/s, N={CONVERSATIONS[-1]}")])
        run.add([Row(CONC, f"GATEWAY_WORKERS={workers} (default): p95 target", concurrency.breaking_point(results))])
        run.add(footprint.idle_rows(stack, section=FOOT, label=f"after serving ({workers} workers)"))
        stack.restart()
        run.add(footprint.start_rows(stack.timings, section=FOOT, label="the bench's own restart, existing data"))


def launch(run: Run, backend: Backend) -> None:
    run.add(footprint.launch_rows(backend.url, section=FOOT))


def many_workers(run: Run, backend: Backend) -> None:
    with Stack(name="workers", llm_url=backend.url, workers=MANY_WORKERS) as stack:
        run.add(footprint.start_rows(stack.timings, section=CONC, label=f"GATEWAY_WORKERS={MANY_WORKERS}: cold start"))
        pipeline.warm_up(stack, backend, workers=MANY_WORKERS, section=CONC)
        results = []
        for n in CONVERSATIONS:
            results.append(concurrency.at_once(stack, backend, conversations=n, workers=MANY_WORKERS))
            run.add(concurrency.rows(results[-1], section=CONC))
        run.add([Row(CONC, f"GATEWAY_WORKERS={MANY_WORKERS}: p95 target", concurrency.breaking_point(results))])
        run.add(footprint.idle_rows(stack, section=CONC, label=f"after serving ({MANY_WORKERS} workers)", judged=False))


def orm_broker(run: Run, backend: Backend) -> None:
    with Stack(name="orm", llm_url=backend.url, broker="orm") as stack:
        workers = json.loads(stack.bench_command("fixtures", "setting", "GATEWAY_WORKERS"))
        pipeline.warm_up(stack, backend, workers=workers, section=BROKER)
        figures = pipeline.ttft_samples(stack, backend)
        run.add(pipeline.ttft_rows(figures, section=BROKER, label="ORM broker", p50_target=None, p95_target=None))
        run.add_hops("ORM broker", pipeline.hop_table(figures))


def domain(run: Run, backend: Backend) -> None:
    data = tempfile.mkdtemp(prefix="bench-domain-", dir=BASE_DIR / "data")
    try:
        done = subprocess.run([sys.executable, "-m", "bench.domain", "--json"], cwd=BASE_DIR, env=bench_env(DATA_DIR=data),
                              capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-500:])
    found = json.loads(done.stdout.splitlines()[-1])
    fork, search = Spread.of(found["fork"]), Spread.of(found["search"])
    rows = [Row(DOMAIN, "fork of a 10 000-message thread", fork.ms(), "p50 ≤ 1 s", fork.p50 <= 1.0)]
    if isinstance(found["page"], str):
        rows.append(Row(DOMAIN, "page of a 2 000-message thread (GET /threads/<id>/)", found["page"]))
    else:
        page = Spread.of(found["page"])
        rows.append(Row(DOMAIN, "page of a 2 000-message thread (GET /threads/<id>/, in process)", page.ms(),
                        "p50 ≤ 500 ms (ours)", page.p50 <= 0.5))
    rows.append(Row(DOMAIN, f"search over {found['searched']:,} messages (content__icontains: count + first 100)",
                    search.ms(), "p50 ≤ 200 ms (ours)", search.p50 <= 0.2))
    run.add(rows)


def sqlite_under_load(run: Run, backend: Backend) -> None:
    """The default stack on SQLite under sustained chat and page traffic (bench/sqlite_load.py)."""
    with Stack(name="sqlite", llm_url=backend.url) as stack:
        run.add(sqlite_load.rows(sqlite_load.load(stack, backend), section=LOAD))


def model(run: Run, backend: Backend) -> None:
    why = real_model.unavailable()
    if why:
        print(f"skipped: no local model ({why})", flush=True)
        run.add([Row(MODEL, "local model end to end vs direct", f"skipped: no local model ({why})")])
        return
    run.add(real_model.compare(section=MODEL))


BLOCKS = {
    "default": (FOOT, "default stack (sections 1-4)", 200, main_stack),
    "orm": (BROKER, "ORM broker", 45, orm_broker),
    "launch": (FOOT, "make run to the login URL", 30, launch),
    "workers": (CONC, f"{MANY_WORKERS} workers", 120, many_workers),
    "domain": (DOMAIN, "domain", 45, domain),
    "sqlite": (LOAD, "SQLite under load", sqlite_load.SECONDS + 60, sqlite_under_load),
    "model": (MODEL, "real model", 90, model),
}


def main() -> None:
    """`python -m bench [BLOCK...]`: every block in BLOCKS, or only those named (then nothing is written)."""
    chosen = sys.argv[1:] or list(BLOCKS)
    # Ctrl-C and SIGTERM unwind through the `with` blocks, so every process started here ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(HARD_STOP_SECONDS)
    info = {**report.machine(), "load_start": report.load()}
    run = Run()
    backend = Backend()
    try:
        for name in chosen:
            section, title, needs_seconds, body = BLOCKS[name]
            run.block(section, title, needs_seconds, lambda body=body: body(run, backend))
    finally:
        signal.alarm(0)
        backend.stop()
    info["load_end"] = report.load()
    took = time.monotonic() - run.started
    if chosen != list(BLOCKS):
        print(f"done in {took / 60:.1f} min; docs/BENCHMARKS.md is written only by a full run", flush=True)
        return
    rows = sorted(run.rows, key=lambda r: r.section)  # stable: each section keeps its own order
    path = report.write(rows, run.hops, info, took)
    print(f"wrote {os.path.relpath(path)} in {took / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
