"""A dropped socket and lost events, in a real Chromium against the real stack.

The page's websocket goes through Playwright's WebSocket routing, which passes every frame on
between the page and daphne, so a test can cut the connection mid-answer or hold frames back
(as channels-redis does when it drops events to a full channel).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from playwright.sync_api import Page, expect

from agents.models import Run
from chat.models import Message

from .test_chat import REPLY_TIMEOUT_MS, send

pytestmark = pytest.mark.browser

# About seven seconds of streaming at the stack's 20 tokens/s: time to cut and reconnect.
LONG_TEXT = " ".join(f"word{n}" for n in range(140))
# Events whose arrival re-reads the finished turn; held back, the streamed text stays on show.
FINISHING = {"message.completed", "run.finished"}


@pytest.fixture(autouse=True)
def _no_replay_logs(redis_server):
    # Run ids come back after a rolled-back test; its log must not look like this test's.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{get_channel_layer().prefix}:replay:*"):
        client.delete(key)
    client.close()


class Sockets:
    """Routes the page's chat sockets through Playwright, passing frames from the server on
    unless their type is held back."""

    def __init__(self, page: Page, hold_back: set[str]):
        self.page = page
        self.hold_back = hold_back
        self.open: list[tuple] = []  # (page side, server side) of each connection, in order
        page.route_web_socket(re.compile(r"/ws/chat/$"), self._route)

    def _route(self, ws) -> None:
        server = ws.connect_to_server()

        def from_server(message):
            if isinstance(message, str) and json.loads(message).get("type") in self.hold_back:
                return
            ws.send(message)

        server.on_message(from_server)
        self.open.append((ws, server))

    def cut(self) -> None:
        """Drops the current connection on both sides, as a network failure would."""
        ws, server = self.open[-1]
        server.close()
        ws.close(code=4000, reason="cut by the test")

    def wait_for(self, count: int) -> None:
        _wait(self.page, f"{count} socket connections", lambda: len(self.open) >= count)


def _wait(page: Page, what: str, check, timeout: float = REPLY_TIMEOUT_MS / 1000):
    # Waits through Playwright, so its events (new sockets, frames) are handled meanwhile.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def _answered(page: Page) -> Message:
    run = _wait(page, "the run to end", lambda: Run.objects.filter(status__in=Run.TERMINAL).first())
    assert run.status == Run.Status.DONE
    return Message.objects.get(run=run, role=Message.Role.ASSISTANT)


def test_a_socket_cut_mid_answer_resumes_with_no_word_missing_or_repeated(page: Page):
    sockets = Sockets(page, hold_back=FINISHING)
    page.reload()
    sockets.wait_for(1)
    stream = page.locator("#turns [data-stream-for]")

    send(page, LONG_TEXT)
    expect(stream).to_contain_text("word3", timeout=REPLY_TIMEOUT_MS)
    sockets.cut()
    before = stream.text_content()

    sockets.wait_for(2)
    reply = _answered(page)
    assert reply.content == f"Echo: {LONG_TEXT}"
    assert before and reply.content.startswith(before) and len(before) < len(reply.content)
    # Everything the page shows was streamed to it, over two sockets: the server's finishing
    # events were held back, so nothing re-read the finished message from the database.
    expect(stream).to_have_text(reply.content)
    expect(page.locator('#turns .msg-assistant[data-status="streaming"]')).to_have_count(1)


def test_a_page_reloaded_mid_answer_shows_the_answer_from_its_first_word(page: Page):
    sockets = Sockets(page, hold_back=FINISHING)
    page.reload()
    stream = page.locator("#turns [data-stream-for]")
    send(page, LONG_TEXT)
    expect(stream).to_contain_text("word3", timeout=REPLY_TIMEOUT_MS)

    page.reload()

    sockets.wait_for(2)
    reply = _answered(page)
    # The server rendered the turn as still being written; the page resumed the run from its
    # start, so the text is whole rather than "… " and whatever came after the reload.
    expect(stream).to_have_text(reply.content)


def test_a_lost_final_event_is_recovered_by_the_watchdog(page: Page):
    Sockets(page, hold_back=FINISHING)  # the socket stays up; the end of the run never reaches it
    page.clock.install()
    page.reload()
    turn = page.locator("#turns > .turn").last

    send(page, "are you done?")
    reply = _answered(page)
    # Nothing has told the page the answer ended: it still shows the reply being written.
    expect(turn).to_have_attribute("data-open", "1")
    expect(turn.locator('.msg-assistant[data-status="streaming"]')).to_have_count(1)

    page.clock.fast_forward("00:20")

    expect(turn).to_have_attribute("data-open", "0")
    expect(turn.locator(".msg-assistant .msg-body.prose")).to_have_text(reply.content)
    expect(turn.locator('.msg-assistant[data-status="streaming"], .typing')).to_have_count(0)
