"""Domain figures: forking a long thread, rendering a long thread's page, searching all messages.
Prints p50/p95/max; never fails on a slow machine.

Run with `make bench` (or `DATA_DIR=data/bench .venv/bin/python -m bench.domain`). It works on
a throw-away SQLite file (or DATABASE_URL) in DATA_DIR, never on your chat data.
`--json` prints the figures as one JSON object instead (what `python -m bench` reads).
"""

from __future__ import annotations

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "data", "bench"))
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402

from bench.figures import figures  # noqa: E402
from chat.login import owner_get  # noqa: E402
from chat.models import Message  # noqa: E402
from chat.services import thread_create, thread_fork  # noqa: E402

THREAD_MESSAGES = 10_000
PAGE_MESSAGES = 2_000
SEARCH_MESSAGES = 100_000
SEARCH_NEEDLES = 25  # messages holding the word searched for, spread through the table
REPEATS = 7


def _thread_with(n: int, *, needle_every: int = 0):
    thread = thread_create(owner=owner_get(), title="bench")
    rows = []
    for i in range(n):
        role = Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT
        content = f"message {i} " + "lorem ipsum " * 20
        if needle_every and i % needle_every == needle_every // 2:
            content += " Quokka"
        rows.append(Message(thread=thread, turn=i // 2 + 1, role=role, content=content))
    with transaction.atomic():
        Message.objects.bulk_create(rows, batch_size=1000)
    return thread


def _timed(action, repeats: int = REPEATS) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def bench_fork() -> list[float]:
    thread = _thread_with(THREAD_MESSAGES)
    last = thread.messages.order_by("-turn", "-id").first()
    return _timed(lambda: thread_fork(thread=thread, at_message=last))


def bench_page() -> list[float] | str:
    """GET /threads/<id>/ logged in (view, selectors, markdown, templates; no network).
    Returns the reason instead when the page cannot be rendered yet."""
    thread = _thread_with(PAGE_MESSAGES)
    try:
        url = reverse("chat:thread", args=[thread.pk])
    except NoReverseMatch:
        return "skipped: there is no thread page (chat:thread) yet"
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(owner_get())

    def get():
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")

    try:
        get()  # templates compiled, markdown parser built: what every later request finds
    except Exception as exc:  # the page is being written by another engineer; report, don't crash
        return f"skipped: the thread page does not render yet ({type(exc).__name__}: {str(exc)[:120]})"
    return _timed(get)


def bench_search() -> tuple[list[float], int]:
    """`content__icontains`, as the admin's message search does: a count and the first page."""
    per_thread = 10_000
    for _ in range(SEARCH_MESSAGES // per_thread):
        _thread_with(per_thread, needle_every=SEARCH_MESSAGES // SEARCH_NEEDLES)
    found = Message.objects.filter(content__icontains="quokka")

    def search():
        found.count()
        list(found.order_by("-id")[:100])

    return _timed(search), Message.objects.count()


def results() -> dict:
    call_command("migrate", verbosity=0)
    page = bench_page()
    search, searched = bench_search()
    return {"fork": bench_fork(), "page": page, "search": search, "searched": searched}


def main() -> None:
    found = results()
    if "--json" in sys.argv:
        print(json.dumps(found))
        return
    print(f"fork of a {THREAD_MESSAGES:,}-message thread ({REPEATS} runs): {figures(found['fork'])} (target: well under 1 s)")
    page = found["page"]
    print(f"page of a {PAGE_MESSAGES:,}-message thread: {page if isinstance(page, str) else figures(page)}")
    print(f"search over {found['searched']:,} messages: {figures(found['search'])}")


if __name__ == "__main__":
    main()
