"""What a person sees in the chat page, in a real Chromium against the real stack.

The scripted model (tests/doubles/openai_server.py) echoes "Echo: <text>", answers
"calc: <expression>" with a real calculator tool call, and streams at 20 tokens/s.
"""

from __future__ import annotations

import difflib
import re
import time

import pytest
from playwright.sync_api import Page, expect

from agents.models import Run
from chat.models import Message, Thread

pytestmark = pytest.mark.browser

REPLY_TIMEOUT_MS = 15_000
LONG_TEXT = (
    "Tell me a story about a small fire that kept a whole house warm through a long winter, "
    "one ember at a time, while the snow piled up against the door and nobody went hungry"
)


def send(page: Page, text: str) -> None:
    page.locator("#composer-text").fill(text)
    page.locator("#composer-text").press("Enter")


def last_turn(page: Page):
    return page.locator("#turns > .turn").last


def wait_until_answered(page: Page, turns: int) -> None:
    expect(page.locator("#turns > .turn")).to_have_count(turns)
    expect(page.locator('#turns > .turn[data-open="1"]')).to_have_count(0, timeout=REPLY_TIMEOUT_MS)


def turn_html(page: Page) -> list[str]:
    """Each turn's HTML with the per-render CSRF masks and htmx's passing swap classes
    (htmx-settling etc., present for a moment after each re-fetch) removed, whitespace collapsed."""
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
    html = page.locator("#turns > .turn").evaluate_all("turns => turns.map(t => t.outerHTML)")
    html = [re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", h) for h in html]
    html = [re.sub(r" ?\bhtmx-(?:added|settling|swapping|request)\b", "", h) for h in html]
    return [re.sub(r"\s+", " ", h).strip() for h in html]


def test_a_reply_streams_in_pieces_then_shows_as_markdown_with_the_agents_name(page: Page):
    expect(page).to_have_url(re.compile(r"/new/$"))

    send(page, f"**{LONG_TEXT}**")

    # Text grows while the model writes: several different partial texts, each extending the last.
    stream = page.locator("#turns [data-stream-for]")
    expect(stream).not_to_be_empty(timeout=REPLY_TIMEOUT_MS)
    seen: list[str] = []
    while texts := stream.evaluate_all("nodes => nodes.map(n => n.textContent)"):
        if texts[0] and (not seen or texts[0] != seen[-1]):
            seen.append(texts[0])
        time.sleep(0.05)
    assert len(seen) >= 3, seen
    assert all(later.startswith(earlier) for earlier, later in zip(seen, seen[1:])), seen
    assert seen[0] != f"Echo: **{LONG_TEXT}**"

    # Then the finished answer, rendered by the server from markdown.
    reply = last_turn(page).locator(".msg-assistant")
    expect(reply.locator(".msg-body.prose strong")).to_have_text(LONG_TEXT)
    expect(reply.locator(".agent-name")).to_have_text("Assistant")
    # The composer emptied once the message was accepted; the new thread got its own URL.
    expect(page.locator("#composer-text")).to_have_value("")
    thread = Thread.objects.get()
    expect(page).to_have_url(re.compile(rf"/threads/{thread.pk}/$"))
    expect(page.locator("#thread-list .thread-link.is-active")).to_contain_text("Tell me a story")


def test_a_calculator_question_shows_a_tool_chip_and_the_answer(page: Page):
    send(page, "calc: 6*7")

    wait_until_answered(page, turns=1)
    turn = last_turn(page)
    chip = turn.locator("details.chip")
    expect(chip).to_have_count(1)
    expect(chip.locator(".chip-name")).to_have_text("calculator")
    expect(chip).to_have_class(re.compile(r"\bchip-done\b"))
    chip.locator("summary").click()
    expect(chip.locator(".chip-body")).to_contain_text('"expression": "6*7"')
    expect(chip.locator(".chip-body")).to_contain_text("42")
    expect(turn.locator(".msg-body.prose")).to_contain_text("The result is")


def test_switching_the_agent_labels_the_next_reply_and_a_reload_renders_the_same(page: Page):
    send(page, "first question")
    wait_until_answered(page, turns=1)

    page.locator("#agent-select").select_option("brief")
    send(page, "second question")
    wait_until_answered(page, turns=2)

    names = page.locator("#turns .msg-assistant .agent-name")
    expect(names).to_have_text(["Assistant", "Brief"])
    live = turn_html(page)
    page.reload()
    expect(page.locator("#turns .msg-user .bubble")).to_have_text(["first question", "second question"])
    expect(page.locator("#turns .msg-assistant .msg-body")).to_have_text(["Echo: first question", "Echo: second question"])
    expect(page.locator("#agent-select")).to_have_value("brief")
    reloaded = turn_html(page)
    assert reloaded == live, "\n".join(difflib.unified_diff(live, reloaded, "live", "reloaded", lineterm=""))


def test_forking_at_a_message_lands_in_a_fork_with_the_history_up_to_it(page: Page):
    send(page, "one")
    wait_until_answered(page, turns=1)
    send(page, "two")
    wait_until_answered(page, turns=2)
    original = Thread.objects.get()

    first_reply = page.locator("#turn-1 .msg-assistant")
    first_reply.hover()
    first_reply.get_by_role("button", name="Fork").click()

    page.wait_for_url(lambda url: re.search(r"/threads/\d+/$", url) and f"/threads/{original.pk}/" not in url)
    fork = Thread.objects.exclude(pk=original.pk).get()
    expect(page).to_have_url(re.compile(rf"/threads/{fork.pk}/$"))
    expect(page.locator("#fork-note")).to_contain_text("Forked from")
    expect(page.locator("#fork-note a").first).to_have_attribute("href", f"/threads/{original.pk}/")
    expect(page.locator("#turns .msg-user .bubble")).to_have_text(["one"])
    expect(page.locator("#turns .msg-assistant .msg-body")).to_have_text(["Echo: one"])
    expect(page.locator(f'#thread-list [data-thread-id="{fork.pk}"] .fork-mark')).to_be_visible()

    # The fork goes on by itself; the original is untouched.
    send(page, "three")
    wait_until_answered(page, turns=2)
    expect(page.locator("#turns .msg-assistant .msg-body").last).to_have_text("Echo: three")
    assert list(original.messages.filter(role="user").values_list("content", flat=True)) == ["one", "two"]


def test_an_empty_message_is_refused_visibly_and_nothing_is_lost(page: Page):
    send(page, "keep me")
    wait_until_answered(page, turns=1)

    send(page, "   \n  ")

    expect(page.locator("#composer-error")).to_have_text("Type a message first: it is empty.")
    expect(page.locator("#composer-text")).to_have_value("   \n  ")
    expect(page.locator("#turns > .turn")).to_have_count(1)
    expect(page.locator("#turns .msg-user .bubble")).to_have_text(["keep me"])
    assert Message.objects.filter(role="user").count() == 1


def test_with_the_model_down_the_run_fails_visibly_and_retry_answers(page: Page, stack):
    stack.model.stop()
    try:
        send(page, "are you there?")

        turn = last_turn(page)
        expect(turn.locator(".run-error")).to_contain_text("This reply failed.", timeout=REPLY_TIMEOUT_MS)
        expect(turn.locator(".msg-user .bubble")).to_have_text("are you there?")
        retry = turn.get_by_role("button", name="Retry")
        expect(retry).to_be_visible()
        assert Run.objects.get().status == Run.Status.FAILED
    finally:
        stack.model.start()

    retry.click()

    expect(last_turn(page).locator(".msg-assistant .msg-body.prose")).to_have_text(
        "Echo: are you there?", timeout=REPLY_TIMEOUT_MS
    )
    expect(last_turn(page).locator(".run-error")).to_contain_text("An earlier attempt failed.")
    expect(last_turn(page).get_by_role("button", name="Retry")).to_have_count(0)
    assert list(Run.objects.values_list("status", flat=True)) == ["failed", "done"]
