"""RunPublisher on the real Redis channel layer: order, seq, and how text is coalesced."""

import time

import pytest

from gateway import deliveries
from gateway.events import RunPublisher, thread_group
from tests.group_events import collect_group_events, ends_with

THREAD_ID = 4242  # events need no rows: the group is named after the id


def _publish(steps, *, flush_seconds=0.04, source="web"):
    def action():
        publisher = RunPublisher(thread_id=THREAD_ID, run_id=7, source=source, flush_seconds=flush_seconds)
        for step in steps:
            step(publisher)
        publisher.close()

    _, events = collect_group_events(thread_group(THREAD_ID), action, until=ends_with("run.finished"))
    return events


def _event(event_type, **data):
    return lambda publisher: publisher(event_type, data)


def _delta(text, message_id=11):
    return lambda publisher: publisher("message.streamed", {"delta": text, "message_id": message_id})


def test_events_reach_the_thread_group_in_order_with_increasing_seq():
    events = _publish([
        _event("run.started", agent="assistant", turn=1),
        _event("message.started", message_id=11),
        _delta("Hello"),
        _event("message.completed", message_id=11, has_tool_calls=False),
        _event("run.finished", status="done", stop_reason="answered", stop_label="Answered", rounds=1),
    ])

    assert [(e["type"], e["seq"]) for e in events] == [
        ("run.started", 1), ("message.started", 2), ("message.streamed", 3), ("message.completed", 4), ("run.finished", 5),
    ]
    assert events[0] == {"type": "run.started", "thread": THREAD_ID, "run": 7, "seq": 1, "agent": "assistant", "turn": 1}
    assert events[2] == {"type": "message.streamed", "thread": THREAD_ID, "run": 7, "seq": 3, "message_id": 11, "delta": "Hello"}


def test_many_tiny_deltas_become_few_frames_with_the_same_text_and_the_first_goes_out_at_once():
    words = [f"w{n} " for n in range(300)]
    elapsed = []

    def stream(publisher):
        started = time.monotonic()
        for word in words:
            publisher("message.streamed", {"delta": word, "message_id": 11})
            time.sleep(0.001)
        elapsed.append(time.monotonic() - started)

    events = _publish([stream, _event("run.finished", status="done")], flush_seconds=0.05)

    frames = [e for e in events if e["type"] == "message.streamed"]
    assert "".join(f["delta"] for f in frames) == "".join(words)
    assert frames[0]["delta"] == "w0 "
    # At most one frame per interval (plus the first, and the rest flushed before run.finished).
    assert len(frames) <= elapsed[0] / 0.05 + 2
    assert len(frames) < len(words) / 3
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_text_held_back_is_sent_before_the_next_event():
    events = _publish([_delta("a"), _delta("b"), _delta("c"), _event("run.finished", status="done")], flush_seconds=10)

    assert [(e["type"], e.get("delta")) for e in events] == [
        ("message.streamed", "a"), ("message.streamed", "bc"), ("run.finished", None),
    ]


def test_trailing_text_is_flushed_by_the_timer_without_another_event():
    def action():
        publisher = RunPublisher(thread_id=THREAD_ID, run_id=7, flush_seconds=0.05)
        publisher("message.streamed", {"delta": "first", "message_id": 11})
        publisher("message.streamed", {"delta": " second", "message_id": 11})
        return publisher  # not closed: only the timer can send " second"

    _, events = collect_group_events(thread_group(THREAD_ID), action, until=lambda events: len(events) == 2, timeout=2)

    assert [e["delta"] for e in events] == ["first", " second"]


def test_a_channel_registered_for_the_source_receives_every_event_but_the_deltas():
    delivered = []
    deliveries.register("telegram", delivered.append)
    try:
        publisher = RunPublisher(thread_id=THREAD_ID, run_id=7, source="telegram", flush_seconds=0)
        publisher("run.started", {"agent": "assistant", "turn": 1})
        publisher("message.streamed", {"delta": "Hi", "message_id": 11})
        publisher("run.finished", {"status": "done"})
        publisher.close()
    finally:
        deliveries.unregister("telegram")

    assert [(e["type"], e["seq"]) for e in delivered] == [("run.started", 1), ("run.finished", 3)]


def test_a_failing_delivery_does_not_stop_the_run_events(caplog):
    def broken(event):
        raise RuntimeError("bot API down")

    deliveries.register("telegram", broken)
    try:
        events = _publish([_event("run.started"), _event("run.finished", status="done")], source="telegram")
    finally:
        deliveries.unregister("telegram")

    assert [e["type"] for e in events] == ["run.started", "run.finished"]
    assert [r.getMessage() for r in caplog.records] == ["delivery to telegram failed for run 7"] * 2


@pytest.fixture(autouse=True)
def _no_deliveries_left_behind():
    yield
    deliveries.unregister("telegram")
