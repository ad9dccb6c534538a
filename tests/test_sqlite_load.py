"""The embedded stack on SQLite (daphne, qcluster, the embedded Redis, a scripted model) under
a short burst of chat and page traffic: no `database is locked` in any process's log, no
message lost, every run ended. A small run of the benchmark (bench/sqlite_load.py); it checks
counts, never timings."""

from __future__ import annotations

from bench import sqlite_load
from bench.backend import Backend
from bench.stack import Stack


def test_web_workers_and_scheduler_share_sqlite_without_lock_errors_or_lost_messages():
    backend = Backend()
    try:
        with Stack(name="sqlite-test", llm_url=backend.url, workers=2) as stack:
            result = sqlite_load.load(stack, backend, seconds=4, clients=6, pages=2)
    finally:
        backend.stop()

    assert result["sent"] >= 6 and result["accepted"] == result["sent"], result["refused"]
    assert sqlite_load.lock_errors(result) == 0, result["lock_lines"]
    assert sum(result["operational_error_lines"].values()) == 0, result["operational_error_lines"]
    assert (result["lost"], result["socket_errors"], result["unanswered"]) == (0, 0, 0)
    assert result["not_terminal"] == 0 and result["runs"].get("failed", 0) == 0, result["run_errors"]
    assert result["runs"]["done"] == result["sent"]
    assert not result["page_errors"] and result["tasks_failed"] == 0
