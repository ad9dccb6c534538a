"""The chat websocket: the browser subscribes to threads and sends messages through it.

A thin edge: it parses frames, calls the gateway, and forwards run events from the thread's
channel-layer group. No model calls and no conversation state live here.

Client → server frames (JSON objects):
  {"type": "subscribe", "thread": 12}
  {"type": "resume", "thread": 12, "runs": [{"run": 40, "after": 7, "message_id": 95}, ...]}
  {"type": "message.send", "thread": 12 | null, "agent": "assistant", "text": "...", "ref": "c1"}
Server → client frames: run events (see docs/ARCHITECTURE.md), and
  {"type": "subscribed", "thread": 12}
  {"type": "run.resync", "thread": 12, "run": 40, "turn": 3}
  {"type": "message.accepted", "ref", "thread", "message_id", "run", "turn", "created_thread", "url"}
  {"type": "error", "error": "...", "ref": ...}

"resume" is "subscribe" for a client that was following runs when its socket dropped: for
each run it names the last event it saw (`after`: its seq, `message_id`: its message_id or
null; `after` null means "from the start of the run's latest execution", for a page loaded
mid-run). The reply is, per run in the order given, the events that followed (from the run's
replay log, gateway/replay.py), or one "run.resync" when they can no longer all be had (the
client re-reads that turn from the server); then "subscribed". The thread's group is joined
before the logs are read, so every event is in a log or arrives live after the reply, or
both: the client drops events whose seq it has seen. Only runs of the client's own thread can
be resumed; a frame naming any other is an error and nothing is sent or joined.

Close codes: 4401 not logged in; 4403 signed out because the login was rotated
(`manage.py login_url --rotate`). The page stops reconnecting on either.
"""

from __future__ import annotations

import json
import logging

from asgiref.sync import async_to_sync
from channels.generic.websocket import JsonWebsocketConsumer
from django.contrib.auth import HASH_SESSION_KEY
from django.urls import reverse

from gateway.events import thread_group
from gateway.replay import events_after, replay_read, run_turns_get
from gateway.services import SubmissionRejected, message_submit

from .login import owner_sessions_group, session_is_current
from .models import Source, Thread
from .selectors import thread_get

log = logging.getLogger(__name__)

# Large enough for the biggest accepted message (GATEWAY_MAX_MESSAGE_CHARS of UTF-8) plus
# the envelope; anything bigger is answered with an error and never parsed.
MAX_FRAME_BYTES = 256 * 1024
MAX_SUBSCRIPTIONS = 50
# Runs of one thread are answered one at a time, so a client follows one or two at once.
MAX_RESUME_RUNS = 20
RESUME_FORMAT_ERROR = 'A resume frame needs "runs": a list of {"run", "after", "message_id"}.'
CLOSE_UNAUTHENTICATED = 4401
CLOSE_SIGNED_OUT = 4403
SIGNED_OUT_ERROR = "Signed out: the login link was rotated."


class ChatConsumer(JsonWebsocketConsumer):
    def connect(self):
        self.user = self.scope.get("user")
        self.groups_joined: set[str] = set()
        if self.user is None or not self.user.is_authenticated:
            # Accepted, then closed: a socket refused during the handshake reaches the browser
            # as code 1006, and the page could not tell "signed out" from "server down".
            self.accept()
            self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.session_hash = self.scope["session"].get(HASH_SESSION_KEY)
        # Not in groups_joined: thread subscriptions are capped and evicted, this one is not.
        # A rotation between the middleware's check and this join is caught on the next frame.
        self.sessions_group = owner_sessions_group(self.user.pk)
        async_to_sync(self.channel_layer.group_add)(self.sessions_group, self.channel_name)
        self.accept()

    def disconnect(self, code):
        for group in [*getattr(self, "groups_joined", ()), getattr(self, "sessions_group", None)]:
            if group:
                async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    def session_ended(self, message):
        """The owner's login was rotated: every session, this one included, has ended."""
        self._sign_out()

    def receive(self, text_data=None, bytes_data=None):
        if not self.user.is_authenticated:
            return  # refused at connect; a frame that raced the close is dropped
        # The group message can be lost (channels_redis drops to full channels): re-check.
        if not session_is_current(user_id=self.user.pk, session_hash=self.session_hash):
            return self._sign_out()
        # Bad frames get an error frame; the socket stays open for the next good one.
        if text_data is None:
            return self._error("Send JSON text frames.")
        if len(text_data.encode("utf-8", "replace")) > MAX_FRAME_BYTES:
            return self._error(f"Frame too large (limit {MAX_FRAME_BYTES // 1024} KB).")
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested deeper than Python goes
            return self._error("That frame is not valid JSON.")
        if not isinstance(content, dict):
            return self._error("A frame must be a JSON object with a \"type\".")
        handlers = {"subscribe": self._subscribe, "resume": self._resume, "message.send": self._send_message}
        kind = content.get("type")
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return self._error(f"Unknown frame type {str(kind)[:40]!r}.", content.get("ref"))
        handler(content)

    def _subscribe(self, content):
        thread = self._own_thread(content.get("thread"))
        if thread is None:
            return self._error("That thread does not exist.", content.get("ref"))
        self._join(thread.pk)
        self.send_json({"type": "subscribed", "thread": thread.pk})

    def _resume(self, content):
        ref = content.get("ref")
        thread = self._own_thread(content.get("thread"))
        if thread is None:
            return self._error("That thread does not exist.", ref)
        positions = _resume_positions(content.get("runs"))
        if positions is None:
            return self._error(RESUME_FORMAT_ERROR, ref)
        turns = run_turns_get(thread_id=thread.pk, run_ids=[run for run, _, _ in positions])
        if any(run not in turns for run, _, _ in positions):
            return self._error("That run does not exist.", ref)
        # Joined first, read second: an event published in between is in the log and live.
        self._join(thread.pk)
        for run, after, message_id in positions:
            log = async_to_sync(replay_read)(thread_id=thread.pk, run_id=run)
            events = events_after(log, after=after, message_id=message_id)
            if events is None:
                self.send_json({"type": "run.resync", "thread": thread.pk, "run": run, "turn": turns[run]})
                continue
            for event in events:
                self.send_json(event)
        self.send_json({"type": "subscribed", "thread": thread.pk})

    def _send_message(self, content):
        ref = content.get("ref")
        try:
            submission = message_submit(
                owner=self.user,
                text=content.get("text"),
                source=Source.WEB,
                thread_id=content.get("thread"),
                agent_slug=content.get("agent"),
                on_thread=lambda thread: self._join(thread.pk),
            )
        except SubmissionRejected as exc:
            return self._error(str(exc), ref)
        thread = submission.thread
        self.send_json(
            {
                "type": "message.accepted",
                "ref": ref,
                "thread": thread.pk,
                "message_id": submission.message.pk,
                "run": submission.run.pk,
                "turn": submission.message.turn,
                "created_thread": submission.created_thread,
                "url": reverse("chat:thread", args=[thread.pk]),
            }
        )

    def run_event(self, message):
        """A run event from the thread's group, passed on as it is."""
        self.send_json(message["event"])

    def _own_thread(self, thread_id) -> Thread | None:
        if isinstance(thread_id, bool):  # JSON true would otherwise read as thread 1
            return None
        try:
            return thread_get(owner=self.user, thread_id=int(thread_id))
        except (Thread.DoesNotExist, TypeError, ValueError, OverflowError):  # 1e309 is inf
            return None

    def _join(self, thread_id: int) -> None:
        group = thread_group(thread_id)
        if group in self.groups_joined:
            return
        if len(self.groups_joined) >= MAX_SUBSCRIPTIONS:
            oldest = next(iter(self.groups_joined))
            async_to_sync(self.channel_layer.group_discard)(oldest, self.channel_name)
            self.groups_joined.discard(oldest)
        async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        self.groups_joined.add(group)

    def _sign_out(self):
        self._error(SIGNED_OUT_ERROR)
        self.close(code=CLOSE_SIGNED_OUT)

    def _error(self, error: str, ref=None):
        self.send_json({"type": "error", "error": error, "ref": ref if isinstance(ref, (str, int)) else None})


def _resume_positions(runs) -> list[tuple[int, int | None, int | None]] | None:
    """[(run, after, message_id)] from a resume frame's "runs", or None if malformed."""
    if not isinstance(runs, list) or not 0 < len(runs) <= MAX_RESUME_RUNS:
        return None
    positions = []
    for item in runs:
        if not isinstance(item, dict):
            return None
        run, after, message_id = item.get("run"), item.get("after"), item.get("message_id")
        if not _is_int(run, minimum=1) or not (after is None or _is_int(after, minimum=0)):
            return None
        if not (message_id is None or _is_int(message_id, minimum=1)):
            return None
        positions.append((run, after, message_id))
    return positions


def _is_int(value, *, minimum: int) -> bool:
    # JSON true would otherwise pass as the integer 1.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
