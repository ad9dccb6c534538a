"""Reads and writes a running stack's database for the benchmarks, through the ORM.

Run by the benchmark with the stack's environment (bench.stack.Stack.bench_command):
    python -m bench.fixtures threads N       creates N empty threads; prints their ids (JSON)
    python -m bench.fixtures runs ID...      prints each run's timestamps and reply (JSON)
    python -m bench.fixtures agent SLUG      prints the agent's system prompt and temperature (JSON)
    python -m bench.fixtures setting NAME    prints a setting's value (JSON)
"""

from __future__ import annotations

import json
import os
import sys

import django


def threads(count: int) -> list[int]:
    from chat.login import owner_get
    from chat.services import thread_create

    owner = owner_get()
    return [thread_create(owner=owner, title=f"bench {n}").pk for n in range(count)]


def runs(run_ids: list[int]) -> dict[int, dict]:
    """Wall-clock timestamps (epoch seconds) and the assistant text of the run's turn."""
    from agents.models import Run
    from chat.models import Message

    found = {}
    for run in Run.objects.filter(pk__in=run_ids).select_related("user_message"):
        replies = Message.objects.filter(
            thread_id=run.thread_id, turn=run.user_message.turn, role=Message.Role.ASSISTANT
        ).order_by("id")
        found[run.pk] = {
            "status": run.status,
            "error": run.error,
            **{name: _epoch(getattr(run, name)) for name in ("accepted_at", "started_at", "first_token_at", "finished_at")},
            "reply": "".join(m.content for m in replies),
            "completion_tokens": run.completion_tokens,
        }
    return found


def agent(slug: str) -> dict:
    from agents.models import Agent

    found = Agent.objects.get(slug=slug)
    return {"system_prompt": found.system_prompt, "temperature": found.temperature}


def _epoch(value):
    return value.timestamp() if value is not None else None


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    command, args = argv[0], argv[1:]
    if command == "setting":
        from django.conf import settings

        result = getattr(settings, args[0])
    elif command == "agent":
        result = agent(args[0])
    elif command == "threads":
        result = threads(int(args[0]))
    else:
        result = runs([int(a) for a in args])
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
