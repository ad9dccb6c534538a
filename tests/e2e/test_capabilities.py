"""Agents' capabilities as a person uses them: the admin's tool switches and a question the
agent asks, in a real Chromium against daphne, a real qcluster and the scripted model.

The scripted model calls the calculator for "calc: <expression>" only when it is offered
(like a real model), and asks the user the rest of "ask: <question>" with ask_user.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from agents.models import Agent, Run

from .test_chat import last_turn, send, wait_until_answered

pytestmark = pytest.mark.browser


def test_a_tool_switched_on_in_the_admin_is_used_by_the_agent_in_the_next_answer(page: Page, stack):
    page.locator("#agent-select").select_option("brief")
    send(page, "calc: 6*7")
    wait_until_answered(page, turns=1)
    expect(last_turn(page).locator(".msg-body")).to_have_text("I have no calculator tool. Echo: calc: 6*7")
    expect(last_turn(page).locator("details.chip")).to_have_count(0)
    chat_url = page.url

    brief = Agent.objects.get(slug="brief")
    page.goto(f"{stack.base_url}/admin/agents/agent/{brief.pk}/change/")
    page.locator('input[name="enabled_tools"][value="calculator"]').check()
    page.locator('input[name="_save"]').click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert Agent.objects.get(slug="brief").enabled_tools == ["calculator"]

    page.goto(chat_url)
    send(page, "calc: 6*7")
    wait_until_answered(page, turns=2)
    chip = last_turn(page).locator("details.chip")
    expect(chip.locator(".chip-name")).to_have_text("calculator")
    expect(chip).to_have_class(re.compile(r"\bchip-done\b"))
    expect(last_turn(page).locator(".msg-body.prose")).to_contain_text('"result": 42')


def test_the_agent_asks_a_question_and_the_answer_lets_it_finish(page: Page):
    send(page, "ask: Which city should I book?")

    question = last_turn(page).locator(".question")
    expect(question.locator(".question-ask")).to_contain_text("Which city should I book?", timeout=15_000)
    expect(last_turn(page).locator(".run-waiting")).to_contain_text("waiting for your answer")
    run = Run.objects.get()
    assert run.status == Run.Status.WAITING

    send(page, "Rome")

    expect(question.locator(".question-answer")).to_contain_text("Rome", timeout=15_000)
    expect(last_turn(page).locator(".msg-body.prose")).to_have_text("The result is Rome.", timeout=15_000)
    expect(page.locator("#turns > .turn")).to_have_count(1)
    expect(page.locator("#turns .msg-user")).to_have_count(1)
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (Run.Status.DONE, Run.StopReason.ANSWERED)
