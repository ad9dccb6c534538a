"""SQLite under load: web, workers and the scheduler writing one SQLite file for a sustained
run, then counting `database is locked` errors, runs that never ended and lost messages.

    python -m bench.sqlite_load [--seconds 60] [--clients 20] [--pages 4] [--workers N]

Starts the embedded stack on SQLite (bench.stack.Stack: WAL, IMMEDIATE transactions, the
embedded Redis, daphne, qcluster with its scheduler, whose every-minute sweeper schedule fires
during a run of a minute or more) and the scripted model (bench.backend). For `seconds`:

- `clients` browser tabs, each with its own websocket and thread, send a message, wait for its
  terminal event and send the next; every third message asks for the calculator, so its run
  also stores a tool call, its result and a second round;
- `pages` loaders fetch the home page, a thread page and the admin's run list, in turn;
- the worker processes write each run's steps and the django-q2 monitor each task's result.

Then it waits for the runs in flight, and reads the logs and the database: lines mentioning
`database is locked` or `OperationalError` in every process's log, runs not done or failed,
messages a client sent that are not stored (refused, lost with a socket, or missing from the
table), pages that failed. A benchmark: it prints figures and never fails on a slow machine;
tests/test_sqlite_load.py runs a small one and asserts the counts are zero.

`python -m bench.sqlite_load census` (with a stack's environment) prints the database's side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import websockets

from . import report
from .client import Exchange, connect, converse
from .figures import Row, Spread
from .memory import cpu_seconds

SECTION = "8 SQLite load"
SECONDS = 60
CLIENTS = 20
PAGE_LOADERS = 4
TTFT_SECONDS = 0.05
TOKENS_PER_SECOND = 200
EXCHANGE_TIMEOUT_SECONDS = 60
DRAIN_SECONDS = 60
LOCK_MARKERS = ("database is locked", "OperationalError")


def load(stack, backend, *, seconds: float = SECONDS, clients: int = CLIENTS, pages: int = PAGE_LOADERS) -> dict:
    """Drives `stack` for `seconds`, waits for what is in flight, and returns the figures."""
    backend.pace(ttft_seconds=TTFT_SECONDS, tokens_per_second=TOKENS_PER_SECOND)
    load_before = report.load()
    cpu_before, started = cpu_seconds(stack), time.monotonic()
    tabs, loads = asyncio.run(_drive(stack, seconds, clients, pages))
    wall = time.monotonic() - started
    cpu = {role: used - cpu_before.get(role, 0.0) for role, used in cpu_seconds(stack).items()}
    census = _census_when_settled(stack)
    exchanges = [e for tab in tabs for e in tab["exchanges"]]
    accepted = {e.frames[0][1]["message_id"] for e in exchanges if e.run}
    stored = set(census["user_message_ids"])
    logs = {path.name: path.read_text(errors="replace") for path in sorted(stack.dir.glob("*.log"))}
    return {
        "seconds": seconds, "clients": clients, "pages": pages, "wall": wall, "cpu": cpu,
        "sent": len(exchanges),
        "accepted": len(accepted),
        "refused": Counter(e.error for e in exchanges if e.error and not e.run),
        "socket_errors": sum(tab["socket_errors"] for tab in tabs),
        "lost": len(exchanges) - len(accepted & stored),
        "unanswered": sum(not e.finished for e in exchanges if e.run),
        "runs": census["runs"],
        "not_terminal": census["not_terminal"],
        "run_errors": census["run_errors"],
        "sweeps": census["sweeps"],
        "queued": Spread.of(census["queued_seconds"]),
        "in_worker": Spread.of(census["worker_seconds"]),
        "load_average": (load_before, report.load()),
        "tasks_failed": census["tasks_failed"],
        "lock_lines": {name: _count(text, LOCK_MARKERS[0]) for name, text in logs.items()},
        "operational_error_lines": {name: _count(text, LOCK_MARKERS[1]) for name, text in logs.items()},
        "tracebacks": {name: _count(text, "Traceback (most recent call last)") for name, text in logs.items()},
        "accept": Spread.of([e.since_sent("message.accepted") for e in exchanges if e.at("message.accepted")]),
        "first_token": Spread.of([e.since_sent("message.streamed") for e in exchanges if e.at("message.streamed")]),
        "answered": Spread.of([e.since_sent("run.finished") for e in exchanges if e.finished]),
        "pages_loaded": {path: Spread.of(times) for path, times in loads["times"].items()},
        "page_errors": loads["errors"],
    }


def lock_errors(result: dict) -> int:
    """Log lines that mention a locked database, over every process's log."""
    return sum(result["lock_lines"].values())


async def _drive(stack, seconds: float, clients: int, pages: int):
    deadline = time.monotonic() + seconds
    threads: list[int] = []
    tabs = [asyncio.create_task(_tab(stack, n, deadline, threads)) for n in range(clients)]
    loads = {"times": {}, "errors": Counter()}
    loaders = [asyncio.create_task(_page_loader(stack, deadline, threads, loads)) for _ in range(pages)]
    results = await asyncio.gather(*tabs)
    await asyncio.gather(*loaders)
    return results, loads


async def _tab(stack, number: int, deadline: float, threads: list[int]) -> dict:
    """One browser tab: one socket and one thread of its own, a message after the other until
    the deadline. A socket that drops is counted and replaced, as the page reconnects."""
    exchanges: list[Exchange] = []
    socket_errors = 0
    thread = ws = None
    try:
        for n in itertools.count():
            if time.monotonic() >= deadline:
                break
            text = f"calc: {number} + {n}" if n % 3 == 2 else f"tab {number} message {n}: " + " ".join(f"w{i}" for i in range(20))
            exchange = Exchange(thread=thread, text=text, agent="assistant")
            exchanges.append(exchange)
            try:
                ws = ws or await connect(stack)
                await converse(ws, exchange, timeout=EXCHANGE_TIMEOUT_SECONDS)
            except (OSError, websockets.WebSocketException) as exc:
                socket_errors += 1
                exchange.error = exchange.error or f"socket: {type(exc).__name__}"
                ws = None
            if thread is None and exchange.thread is not None:
                thread = exchange.thread
                threads.append(thread)
    finally:
        if ws is not None:
            await ws.close()
    return {"exchanges": exchanges, "socket_errors": socket_errors}


async def _page_loader(stack, deadline: float, threads: list[int], loads: dict) -> None:
    paths = itertools.cycle(["/", "thread", "/admin/agents/run/"])
    while time.monotonic() < deadline:
        path = next(paths)
        if path == "thread":
            if not threads:
                await asyncio.sleep(0.05)
                continue
            path = f"/threads/{random.choice(threads)}/"
        started = time.monotonic()
        status = await asyncio.to_thread(_get, stack, path)
        label = "/threads/<id>/" if path.startswith("/threads/") else path
        loads["times"].setdefault(label, []).append(time.monotonic() - started)
        if status != 200:
            loads["errors"][f"{label} {status}"] += 1


def _get(stack, path: str) -> int | str:
    request = urllib.request.Request(stack.url + path, headers={"Cookie": f"sessionid={stack.session_cookie}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(exc).__name__


def _census_when_settled(stack) -> dict:
    """The database's side, once no run is queued or running (or DRAIN_SECONDS have passed)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        census = json.loads(stack.bench_command("sqlite_load", "census"))
        if not census["not_terminal"] or time.monotonic() > deadline:
            return census
        time.sleep(1)


def _count(text: str, marker: str) -> int:
    return sum(marker in line for line in text.splitlines())


def census() -> dict:
    from django_q.models import Task

    from agents.models import Run
    from chat.models import Message

    runs = Counter(Run.objects.values_list("status", flat=True))
    ended = Run.objects.filter(status__in=Run.TERMINAL, started_at__isnull=False)
    times = list(ended.values_list("accepted_at", "started_at", "finished_at"))
    return {
        "runs": dict(runs),
        "queued_seconds": [(started - accepted).total_seconds() for accepted, started, _ in times],
        "worker_seconds": [(finished - started).total_seconds() for _, started, finished in times],
        "not_terminal": runs["queued"] + runs["running"],
        "run_errors": dict(Counter(Run.objects.filter(status=Run.Status.FAILED).values_list("error", flat=True))),
        "user_message_ids": list(Message.objects.filter(role=Message.Role.USER).values_list("id", flat=True)),
        "sweeps": Task.objects.filter(func="gateway.tasks.runs_sweep").count(),
        "tasks_failed": Task.objects.filter(success=False).count(),
    }


def rows(result: dict, *, section: str = SECTION) -> list[Row]:
    label = f"{result['seconds']:.0f} s, {result['clients']} tabs + {result['pages']} page loaders"
    runs = result["runs"]
    locks = lock_errors(result)
    errors = sum(result["operational_error_lines"].values())
    pages = "; ".join(f"{path} {spread.ms()} (n={spread.n})" for path, spread in result["pages_loaded"].items())
    refused = sum(result["refused"].values())
    return [
        Row(section, f"SQLite, {label}: messages sent, runs done / failed",
            f"{result['sent']:,} sent, {runs.get('done', 0):,} done, {runs.get('failed', 0):,} failed",
            note=f"{result['sent'] / result['seconds']:.1f} messages/s; sweeper runs {result['sweeps']}; "
            f"django-q2 tasks failed {result['tasks_failed']}" + (f"; run errors: {result['run_errors']}" if result["run_errors"] else "")),
        Row(section, f"SQLite, {label}: `database is locked` in the logs", f"{locks}", "0", locks == 0,
            f"OperationalError lines {errors}; tracebacks "
            + ", ".join(f"{name} {count}" for name, count in result["tracebacks"].items())),
        Row(section, f"SQLite, {label}: user messages lost", f"{result['lost']}", "0", result["lost"] == 0,
            f"refused {refused}, socket errors {result['socket_errors']}, accepted but unanswered {result['unanswered']}"),
        Row(section, f"SQLite, {label}: runs left queued or running", f"{result['not_terminal']}", "0", result["not_terminal"] == 0),
        Row(section, f"SQLite, {label}: send → accepted / first token / answered",
            f"accepted p50 {result['accept'].p50 * 1000:,.0f} ms, p95 {result['accept'].p95 * 1000:,.0f} ms; "
            f"first token p50 {result['first_token'].p50 * 1000:,.0f} ms, p95 {result['first_token'].p95 * 1000:,.0f} ms; "
            f"answered p50 {result['answered'].p50 * 1000:,.0f} ms, p95 {result['answered'].p95 * 1000:,.0f} ms",
            note=f"more tabs than worker processes, each sending again once answered: waiting in the queue "
            f"p50 {result['queued'].p50 * 1000:,.0f} ms, p95 {result['queued'].p95 * 1000:,.0f} ms; claimed → ended in the worker "
            f"p50 {result['in_worker'].p50 * 1000:,.0f} ms, p95 {result['in_worker'].p95 * 1000:,.0f} ms (model: "
            f"{TTFT_SECONDS * 1000:.0f} ms to the first token, {TOKENS_PER_SECOND} tokens/s); load average "
            f"{result['load_average'][0]} before, {result['load_average'][1]} after; CPU over {result['wall']:.0f} s: "
            + ", ".join(f"{role} {used:.1f} s" for role, used in result["cpu"].items())),
        Row(section, f"SQLite, {label}: page loads", f"{sum(s.n for s in result['pages_loaded'].values()):,} pages, "
            f"{sum(result['page_errors'].values())} failed", "none failed", not result["page_errors"], pages),
    ]


def main(argv: list[str]) -> None:
    if argv[:1] == ["census"]:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()
        print(json.dumps(census()))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--pages", type=int, default=PAGE_LOADERS)
    parser.add_argument("--workers", type=int, default=None, help="GATEWAY_WORKERS (default: the setting's default)")
    args = parser.parse_args(argv)
    from .backend import Backend
    from .stack import Stack

    backend = Backend()
    try:
        with Stack(name="sqlite", llm_url=backend.url, workers=args.workers) as stack:
            result = load(stack, backend, seconds=args.seconds, clients=args.clients, pages=args.pages)
    finally:
        backend.stop()
    for row in rows(result):
        print(row.line(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
