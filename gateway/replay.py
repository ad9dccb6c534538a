"""A short replay log per run, so a client whose socket dropped gets exactly what it missed.

The publisher appends every run event here just before it sends it to the thread's group
(gateway/events.py). A client that reconnects names, for each run it was following, the last
event it saw: its `seq` and its `message_id`. `events_after` returns the events that followed,
or None when the log cannot prove it holds all of them (expired, trimmed, a hole): the
client then re-reads the turn from the database, which is the truth either way.

Why the message id as well as the seq: a run that is queued again (the sweeper took it back
from a dead worker, or an ask_user answer resumed it) counts from 1 again, so a seq alone can
name an event of an earlier execution. Every execution writes new assistant messages, so an
event's (seq, message_id) pair names one execution; events without a message id (run.started,
tool.called) come at points where no text is streaming, so resuming from the latest such
event with that seq leaves no streamed text half-known.

The log is a Redis list per run on the channel layer's own Redis, under its prefix (so test
runs, and installations sharing a server, stay apart): capped at REPLAY_MAX_EVENTS, and kept
REPLAY_SECONDS after the run's last event. The in-process cache cannot do this: it is
per process, and events are written by workers and read by the web process.
"""

from __future__ import annotations

import json

from channels.layers import get_channel_layer

from agents.models import Run

# Long enough for a phone to come back from a tunnel or a laptop from a short sleep; a client
# away for longer re-reads its turns, which loses nothing but the streamed text in between.
REPLAY_SECONDS = 300
# Streamed text is merged to ~25 frames a second, so this is a few minutes of one answer.
REPLAY_MAX_EVENTS = 5000


def _key(layer, run_id: int) -> str:
    return f"{layer.prefix}:replay:{run_id}"


def _connection(layer, key: str):
    # channels-redis keeps one pool per event loop; the key picks the shard like its own keys.
    return layer.connection(layer.consistent_hash(key))


async def replay_append(event: dict) -> None:
    """Appends a run event to its run's log and keeps the log for REPLAY_SECONDS more.

    Raises what Redis raises; the caller sends the event to the group all the same (a
    missing entry is a hole, and a hole makes a resuming client re-read its turn).
    """
    layer = get_channel_layer()
    key = _key(layer, event["run"])
    async with _connection(layer, key).pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps(event, separators=(",", ":")))
        pipe.ltrim(key, -REPLAY_MAX_EVENTS, -1)
        pipe.expire(key, REPLAY_SECONDS)
        await pipe.execute()


async def replay_read(*, thread_id: int, run_id: int) -> list[dict]:
    """The run's logged events, oldest first; [] when there are none (or they expired).

    Only events of `thread_id` are returned: a log that outlived its database (a test
    database, a deleted SQLite file) must not show a new run another thread's events.
    """
    layer = get_channel_layer()
    key = _key(layer, run_id)
    events = [json.loads(raw) for raw in await _connection(layer, key).lrange(key, 0, -1)]
    return [event for event in events if event.get("thread") == thread_id]


def events_after(log: list[dict], *, after: int | None, message_id: int | None) -> list[dict] | None:
    """The events of `log` that followed the event (seq `after`, `message_id`), in order.

    `after` None asks for the run's latest execution from its start (a page loaded mid-run).
    Returns None when the log cannot show everything that followed: the event is not in it
    (expired, trimmed), or the seqs after it skip a number (an append was lost, or a late
    run.queued from the web process landed among a worker's events). A run.queued (seq 0)
    starts the count again; a seq of null (the sweeper's run.failed) is final and sent as is.
    """
    if not log:
        return None
    if after is None:
        starts = [i for i, event in enumerate(log) if event.get("seq") == 0]
        start, expected = (starts[-1], 0) if starts else (0, 1)
    else:
        matches = [i for i, e in enumerate(log) if e.get("seq") == after and e.get("message_id") == message_id]
        if not matches:
            return None
        start, expected = matches[-1] + 1, after + 1
    rest = log[start:]
    for event in rest:
        seq = event.get("seq")
        if seq is None:
            continue
        if seq == 0:
            expected = 1
        elif seq != expected:
            return None
        else:
            expected += 1
    return rest


def run_turns_get(*, thread_id: int, run_ids: list[int]) -> dict[int, int]:
    """{run id: turn number} for those of `run_ids` that are runs of the thread; others are
    left out, so a caller that checked the thread's owner knows every run it gets is theirs."""
    runs = Run.objects.filter(thread_id=thread_id, pk__in=run_ids).values_list("pk", "user_message__turn")
    return dict(runs)
