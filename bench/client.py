"""A chat client speaking the websocket protocol (chat/consumers.py) as the browser does.

Every frame is stamped with the wall clock on arrival, so it can be set against the Run row's
timestamps written by the web and worker processes on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import websockets

TERMINAL = ("run.finished", "run.failed")


@dataclass
class Exchange:
    """One message sent and the frames that answered it."""

    thread: int | None
    text: str
    agent: str | None = None  # None: the thread's default agent
    sent_at: float = 0.0
    run: int | None = None
    frames: list[tuple[float, dict]] = field(default_factory=list)  # frames of this run (and its accept)
    error: str = ""

    def at(self, frame_type: str) -> float | None:
        """When the first frame of this type arrived (wall clock), or None if none did."""
        return next((t for t, f in self.frames if f["type"] == frame_type), None)

    def since_sent(self, frame_type: str) -> float | None:
        at = self.at(frame_type)
        return None if at is None else at - self.sent_at

    @property
    def deltas(self) -> list[tuple[float, str]]:
        return [(t, f["delta"]) for t, f in self.frames if f["type"] == "message.streamed"]

    @property
    def text_received(self) -> str:
        return "".join(d for _, d in self.deltas)

    def busiest_second(self) -> int:
        """The most `message.streamed` frames that arrived within any one second."""
        times = [t for t, _ in self.deltas]
        best = first = 0
        for last, at in enumerate(times):
            while at - times[first] >= 1.0:
                first += 1
            best = max(best, last - first + 1)
        return best

    def gaps(self) -> list[float]:
        """Seconds between consecutive streamed frames, from the second frame on (the first goes
        out at once by design; the rest are coalesced)."""
        times = [t for t, _ in self.deltas]
        return [b - a for a, b in zip(times[1:], times[2:])]

    @property
    def finished(self) -> bool:
        return any(f["type"] == "run.finished" for _, f in self.frames)


async def connect(stack) -> websockets.ClientConnection:
    # daphne refuses a websocket with no or a foreign Origin (AllowedHostsOriginValidator).
    return await websockets.connect(
        stack.ws_url, origin=stack.url, additional_headers={"Cookie": f"sessionid={stack.session_cookie}"},
        max_size=None, open_timeout=30, ping_interval=None,
    )


async def subscribe(ws, thread: int) -> None:
    await ws.send(json.dumps({"type": "subscribe", "thread": thread}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "subscribed" and frame["thread"] == thread:
            return
        if frame["type"] == "error":
            raise RuntimeError(f"subscribe {thread}: {frame['error']}")


async def converse(ws, exchange: Exchange, *, timeout: float) -> Exchange:
    """Sends `exchange.text` and collects this run's frames until its terminal event.

    A timeout or protocol error is recorded in `exchange.error` rather than raised, so one
    stuck conversation does not hide the figures of the others.
    """
    ref = f"bench-{id(exchange)}"
    early: list[tuple[float, dict]] = []  # events that may arrive before message.accepted names the run
    exchange.sent_at = time.time()
    await ws.send(json.dumps(
        {"type": "message.send", "thread": exchange.thread, "agent": exchange.agent, "text": exchange.text, "ref": ref}
    ))
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await ws.recv()
                now = time.time()
                frame = json.loads(raw)
                if frame["type"] == "error":
                    exchange.error = frame["error"]
                    return exchange
                if frame["type"] == "message.accepted" and frame.get("ref") == ref:
                    exchange.run, exchange.thread = frame["run"], frame["thread"]
                    exchange.frames = [(now, frame)] + [(t, f) for t, f in early if f.get("run") == exchange.run]
                elif exchange.run is None:
                    early.append((now, frame))
                elif frame.get("run") == exchange.run:
                    exchange.frames.append((now, frame))
                    if frame["type"] in TERMINAL:
                        return exchange
    except TimeoutError:
        exchange.error = f"no terminal event within {timeout:.0f} s"
    return exchange


async def conversation(stack, thread: int | None, text: str, *, agent: str | None = None, timeout: float) -> Exchange:
    """One browser tab: connect, subscribe to the thread (if it exists), send, read to the end."""
    async with await connect(stack) as ws:
        if thread is not None:
            await subscribe(ws, thread)
        return await converse(ws, Exchange(thread=thread, text=text, agent=agent), timeout=timeout)
