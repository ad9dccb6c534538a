"""Lifecycle events of a run, published to the thread's channel-layer group.

Every event is a dict {"type", "thread", "run", "seq", ...}. `seq` counts up per run so a
client can tell when it missed something; the database stays the source of truth.
Streamed text is coalesced: the first delta goes out at once, later ones are merged into
one frame per GATEWAY_STREAM_FLUSH_SECONDS. Each event is appended to its run's replay log
(gateway/replay.py) before it is sent, so a client that reconnects can ask for what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from channels.layers import get_channel_layer
from django.conf import settings

from . import deliveries
from .replay import replay_append

log = logging.getLogger(__name__)

GROUP_PREFIX = "thread-"


def thread_group(thread_id: int) -> str:
    return f"{GROUP_PREFIX}{thread_id}"


class _LayerSender:
    """One event loop in a daemon thread per process, sending channel-layer messages in order.

    Sync code (workers, sync consumers) would otherwise call async_to_sync per message,
    which builds a new loop and a new Redis connection each time.
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._run, name="channel-layer-sender", daemon=True).start()
        self._ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self._queue = asyncio.Queue()
        self.loop.create_task(self._drain())
        self._ready.set()
        self.loop.run_forever()

    async def _drain(self):
        layer = get_channel_layer()
        while True:
            group, message, replay, done = await self._queue.get()
            try:
                if replay:
                    await self._log(message["event"])
                if group is not None:
                    await layer.group_send(group, message)
            except Exception:
                # A lost live event is recoverable (clients re-read the thread); a dead sender is not.
                log.exception("could not publish to %s", group)
            finally:
                if done is not None:
                    done.set()

    @staticmethod
    async def _log(event: dict) -> None:
        # Logged before it is sent: a client that joins the group and then reads the log
        # finds every event in the log, or arriving live, or both (see chat/consumers.py).
        try:
            await replay_append(event)
        except Exception:
            # A missing entry is a hole, and a hole sends a resuming client to the database.
            log.exception("could not log event %s of run %s for replay", event.get("seq"), event.get("run"))

    def send_event(self, event: dict) -> None:
        """Appends a run event to its run's replay log, then sends it to its thread's group."""
        message = {"type": "run.event", "event": event}  # dispatched to the consumer's run_event()
        self.loop.call_soon_threadsafe(self._queue.put_nowait, (thread_group(event["thread"]), message, True, None))

    def call_later(self, delay: float, callback) -> None:
        self.loop.call_soon_threadsafe(self.loop.call_later, delay, callback)

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything sent so far has been handed to the channel layer."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(self._queue.put_nowait, (None, None, False, done))
        return done.wait(timeout)


_sender: _LayerSender | None = None
_sender_lock = threading.Lock()


def sender() -> _LayerSender:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = _LayerSender()
        return _sender


def publish_run_queued(run) -> None:
    """Announces a newly stored run. Call on commit."""
    event = {
        "type": "run.queued", "thread": run.thread_id, "run": run.pk, "seq": 0,
        "message_id": run.user_message_id, "turn": run.user_message.turn,
        "agent": run.agent.slug if run.agent else None,
    }
    sender().send_event(event)


def publish_run_expired(run) -> None:
    """Announces a run ended by the sweeper. Its worker's sequence is lost with the worker,
    so the event carries seq null: clients treat it as final and re-read the turn."""
    event = {
        "type": "run.failed", "thread": run.thread_id, "run": run.pk, "seq": None,
        "status": "failed", "error": run.error, "message_id": None,
    }
    sender().send_event(event)
    deliveries.deliver(run.source, event)


class RunPublisher:
    """The `publish(event_type, data)` callable for one run, as the worker executes it."""

    def __init__(self, *, thread_id: int, run_id: int, source: str = "web", flush_seconds: float | None = None):
        self.thread_id = thread_id
        self.run_id = run_id
        self.source = source
        self.flush_seconds = settings.GATEWAY_STREAM_FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self._seq = 0
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._pending_message_id = None
        self._last_flush = 0.0
        self._timer_armed = False
        self._sender = sender()

    def __call__(self, event_type: str, data: dict) -> None:
        with self._lock:
            if event_type == "message.streamed":
                self._add_delta(data)
                return
            self._flush_locked()
            event = self._send_locked(event_type, data)
        deliveries.deliver(self.source, event)

    def _add_delta(self, data: dict) -> None:
        self._pending.append(data["delta"])
        self._pending_message_id = data.get("message_id")
        now = time.monotonic()
        if self._timer_armed:
            # The timer flushes; flushing here as well when it runs late (a busy loop) would
            # send two frames back to back.
            return
        if now - self._last_flush >= self.flush_seconds:
            self._flush_locked()
        else:
            self._timer_armed = True
            self._sender.call_later(self._last_flush + self.flush_seconds - now, self._timer_fired)

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer_armed = False
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        self._last_flush = time.monotonic()
        self._send_locked("message.streamed", {"delta": text, "message_id": self._pending_message_id})

    def _send_locked(self, event_type: str, data: dict) -> dict:
        self._seq += 1
        event = {"type": event_type, "thread": self.thread_id, "run": self.run_id, "seq": self._seq, **data}
        self._sender.send_event(event)
        return event

    def close(self) -> None:
        """Sends any text still held back and waits briefly for the sends to go out."""
        with self._lock:
            self._flush_locked()
        self._sender.flush()
