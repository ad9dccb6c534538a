"""The per-run replay log: what the publisher writes to Redis, and what a resuming client gets."""

import itertools
import os

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from agents.models import Run
from gateway import replay
from gateway.events import RunPublisher, publish_run_expired, sender
from gateway.replay import REPLAY_SECONDS, events_after, replay_read

THREAD_ID = 4343
# Run ids no database hands out, one per test, so no test reads another's log.
_run_ids = itertools.count(10**9 + os.getpid() * 1000)


def _events(*specs, run=7, thread=THREAD_ID):
    """Events as a worker publishes them: (type, seq[, message_id])."""
    events = []
    for spec in specs:
        kind, seq, *message = spec
        event = {"type": kind, "thread": thread, "run": run, "seq": seq}
        if message:
            event["message_id"] = message[0]
        events.append(event)
    return events


def _seqs(events):
    return None if events is None else [(e["type"], e["seq"]) for e in events]


ONE_EXECUTION = _events(
    ("run.queued", 0, 10), ("run.started", 1), ("message.started", 2, 11), ("message.streamed", 3, 11),
    ("message.streamed", 4, 11), ("message.streamed", 5, 11), ("message.completed", 6, 11), ("run.finished", 7),
)


# --- Which events follow a client's last one --------------------------------------------------


def test_a_client_gets_exactly_the_events_after_the_last_one_it_saw_in_order():
    assert _seqs(events_after(ONE_EXECUTION, after=3, message_id=11)) == [
        ("message.streamed", 4), ("message.streamed", 5), ("message.completed", 6), ("run.finished", 7),
    ]


def test_a_client_that_missed_nothing_gets_nothing():
    assert events_after(ONE_EXECUTION, after=7, message_id=None) == []


def test_an_expired_log_cannot_answer():
    assert events_after([], after=3, message_id=11) is None
    assert events_after([], after=None, message_id=None) is None


def test_a_log_trimmed_past_the_clients_event_cannot_answer():
    assert events_after(ONE_EXECUTION[4:], after=2, message_id=11) is None


def test_a_hole_in_the_log_after_the_clients_event_cannot_answer():
    holed = ONE_EXECUTION[:4] + ONE_EXECUTION[5:]  # seq 4 never reached the log

    assert events_after(holed, after=3, message_id=11) is None


def test_a_seq_from_an_earlier_execution_of_a_requeued_run_resumes_that_execution():
    # The worker died after seq 4; the sweeper queued the run again and a new worker counts
    # from 1 with a new message (12). A client last saw seq 4 of the first execution.
    second = _events(
        ("run.queued", 0, 10), ("run.started", 1), ("message.started", 2, 12), ("message.streamed", 3, 12),
        ("message.streamed", 4, 12), ("message.streamed", 5, 12),
    )
    log = ONE_EXECUTION[:5] + second

    from_first = events_after(log, after=4, message_id=11)
    from_second = events_after(log, after=4, message_id=12)

    assert _seqs(from_first) == _seqs(second)
    assert _seqs(from_second) == [("message.streamed", 5)]


def test_from_the_start_means_the_latest_execution_from_its_queued_event():
    second = _events(("run.queued", 0, 10), ("run.started", 1), ("message.started", 2, 12))

    assert _seqs(events_after(ONE_EXECUTION[:5] + second, after=None, message_id=None)) == _seqs(second)
    assert _seqs(events_after(ONE_EXECUTION[1:3], after=None, message_id=None)) == [("run.started", 1), ("message.started", 2)]
    assert events_after(ONE_EXECUTION[3:], after=None, message_id=None) is None  # its start is gone


def test_a_queued_event_that_landed_among_the_workers_events_is_a_hole():
    # run.queued is sent by the web process, run.started by the worker: the log can get them
    # in the other order, and then it cannot tell whether anything between was lost.
    log = [ONE_EXECUTION[1], ONE_EXECUTION[0], *ONE_EXECUTION[2:]]

    assert events_after(log, after=None, message_id=None) is None


def test_the_sweepers_final_event_without_a_seq_is_passed_on():
    expired = {"type": "run.failed", "thread": THREAD_ID, "run": 7, "seq": None, "status": "failed"}

    assert _seqs(events_after([*ONE_EXECUTION[:4], expired], after=3, message_id=11)) == [("run.failed", None)]


# --- What the publisher writes --------------------------------------------------------------


@pytest.fixture
def run_id():
    return next(_run_ids)


def _read(run_id, thread_id=THREAD_ID):
    return async_to_sync(replay_read)(thread_id=thread_id, run_id=run_id)


def test_every_published_event_is_logged_in_order_as_sent(run_id):
    publisher = RunPublisher(thread_id=THREAD_ID, run_id=run_id, flush_seconds=0)
    publisher("run.started", {"agent": "assistant", "turn": 1})
    publisher("message.streamed", {"delta": "Hi", "message_id": 11})
    publisher("run.finished", {"status": "done"})
    publisher.close()

    assert _read(run_id) == [
        {"type": "run.started", "thread": THREAD_ID, "run": run_id, "seq": 1, "agent": "assistant", "turn": 1},
        {"type": "message.streamed", "thread": THREAD_ID, "run": run_id, "seq": 2, "delta": "Hi", "message_id": 11},
        {"type": "run.finished", "thread": THREAD_ID, "run": run_id, "seq": 3, "status": "done"},
    ]


def test_the_log_expires_after_the_replay_window_and_keeps_the_newest_events(run_id, monkeypatch):
    monkeypatch.setattr(replay, "REPLAY_MAX_EVENTS", 3)
    publisher = RunPublisher(thread_id=THREAD_ID, run_id=run_id, flush_seconds=0)
    for n in range(5):
        publisher("tool.called", {"call_id": f"c{n}"})
    publisher.close()

    assert [e["seq"] for e in _read(run_id)] == [3, 4, 5]
    key = f"{get_channel_layer().prefix}:replay:{run_id}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert 0 < client.ttl(key) <= REPLAY_SECONDS
    finally:
        client.close()


def test_the_sweepers_failure_is_logged_too(run_id):
    run = Run(pk=run_id, thread_id=THREAD_ID, status=Run.Status.FAILED, error="The worker stopped.")  # never saved

    publish_run_expired(run)
    sender().flush()

    assert _read(run_id) == [{
        "type": "run.failed", "thread": THREAD_ID, "run": run_id, "seq": None,
        "status": "failed", "error": "The worker stopped.", "message_id": None,
    }]


def test_a_log_shows_only_events_of_the_thread_asked_for(run_id):
    publisher = RunPublisher(thread_id=THREAD_ID, run_id=run_id, flush_seconds=0)
    publisher("run.started", {})
    publisher.close()

    assert _read(run_id, thread_id=THREAD_ID + 1) == []
