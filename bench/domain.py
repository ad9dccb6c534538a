"""Domain figures: forking a long thread. Prints p50/p95/max; never fails on a slow machine.

Run with `make bench` (or `DATA_DIR=data/bench .venv/bin/python -m bench.domain`). It works on
a throw-away SQLite file (or DATABASE_URL) in DATA_DIR, never on your chat data.
"""

from __future__ import annotations

import os
import statistics
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "data", "bench"))
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from chat.login import owner_get  # noqa: E402
from chat.models import Message  # noqa: E402
from chat.services import thread_create, thread_fork  # noqa: E402

THREAD_MESSAGES = 10_000
REPEATS = 7


def _thread_with(n: int):
    thread = thread_create(owner=owner_get(), title="bench")
    rows = []
    for i in range(n):
        role = Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT
        rows.append(Message(thread=thread, turn=i // 2 + 1, role=role, content=f"message {i} " + "lorem ipsum " * 20))
    with transaction.atomic():
        Message.objects.bulk_create(rows, batch_size=1000)
    return thread


def figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def bench_fork() -> list[float]:
    thread = _thread_with(THREAD_MESSAGES)
    last = thread.messages.order_by("-turn", "-id").first()
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        thread_fork(thread=thread, at_message=last)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    call_command("migrate", verbosity=0)
    samples = bench_fork()
    print(f"fork of a {THREAD_MESSAGES:,}-message thread ({REPEATS} runs): {figures(samples)} (target: well under 1 s)")


if __name__ == "__main__":
    main()
