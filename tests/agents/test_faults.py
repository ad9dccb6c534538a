"""Fault injection: every way a model backend fails, driven through the real pipeline.

Each test stores a user message the way the web and Telegram do (gateway.message_submit),
claims and executes its run with the production client (agents.llm.client_for: the openai
SDK behind the circuit breaker) against a scripted OpenAI-compatible server, and checks the
outcome a user would see: exactly one terminal state and one terminal event, the message
kept, partial text kept and marked failed, and a readable error. Process kills of a real
qcluster are in tests/e2e/test_recovery.py.
"""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from agents.breaker import breaker_is_open, breaker_key
from agents.models import Run
from agents.services import run_claim_next, run_execute
from chat.models import Message, Source
from gateway.services import message_submit, run_retry
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.llm_backend import closed_port_url, use_llm_server

pytestmark = pytest.mark.django_db

TEXT = "one two three four five six seven eight"
TERMINAL_EVENTS = {"run.finished", "run.failed", "run.waiting"}


class Published(list):
    def __call__(self, event_type, data):
        self.append((event_type, data))

    def terminal(self) -> list[str]:
        return [t for t, _ in self if t in TERMINAL_EVENTS]


def _ask(owner, agent, text="hello", thread_id=None) -> Run:
    submission = message_submit(owner=owner, text=text, source=Source.WEB, thread_id=thread_id, agent_slug=agent.slug)
    return submission.run


def _execute(run: Run) -> tuple[Run, Published]:
    claimed = run_claim_next(thread_id=run.thread_id)
    assert claimed is not None and claimed.pk == run.pk
    published = Published()
    run_execute(run=claimed, publish=published)
    run.refresh_from_db()
    return run, published


def _answer_once(owner, agent, text="hello") -> tuple[Run, Published]:
    return _execute(_ask(owner, agent, text))


def _assert_one_failure(run: Run, published: Published, error_part: str) -> None:
    assert run.status == Run.Status.FAILED and error_part in run.error
    assert published.terminal() == ["run.failed"]
    # The question is never lost, whatever the model did.
    assert Message.objects.filter(thread=run.thread, role=Message.Role.USER).count() == 1


def _assistant(run: Run) -> Message:
    return run.messages.get(role=Message.Role.ASSISTANT)


@pytest.fixture
def scripted(settings):
    """Starts a scripted server as the backend: scripted(items, retries=0, **settings)."""
    servers = []

    def start(script, retries=0, **overrides):
        server = ScriptedOpenAIServer(script=script).start()
        servers.append(server)
        use_llm_server(settings, server)
        settings.LLM_MAX_RETRIES = retries
        for name, value in overrides.items():
            setattr(settings, name, value)
        return server

    yield start
    for server in servers:
        server.stop()


# --- Errors before the answer starts: the SDK's retries are the one retry layer -------------


def test_a_429_is_retried_after_the_servers_retry_after(scripted, owner, agent):
    server = scripted([{"status": 429, "headers": {"Retry-After": "1"}}, TEXT], retries=2)
    started = time.monotonic()

    run, published = _answer_once(owner, agent)

    assert run.status == Run.Status.DONE and _assistant(run).content == TEXT
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.75  # waited as told (the SDK allows 25 % jitter)
    assert published.terminal() == ["run.finished"]


def test_a_5xx_is_retried_by_the_sdk_and_the_answer_arrives(scripted, owner, agent):
    server = scripted([{"status": 503}, TEXT], retries=1)

    run, _ = _answer_once(owner, agent)

    assert run.status == Run.Status.DONE and len(server.requests) == 2


def test_a_5xx_after_the_retries_fails_the_run_with_the_status(scripted, owner, agent):
    server = scripted([{"status": 500, "body": {"error": {"message": "boom"}}}] * 2, retries=1)

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "answered 500: boom")
    assert len(server.requests) == 2  # one call plus the SDK's one retry, nothing more


def test_a_refused_connection_fails_the_run_readably(settings, owner, agent):
    settings.LLM_BASE_URL, settings.LLM_MAX_RETRIES = closed_port_url(), 0

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "Could not reach the model server")


def test_a_server_that_hangs_before_its_headers_times_out(scripted, owner, agent):
    scripted([{"hang_seconds": 5, "text": TEXT}], LLM_TIMEOUT_SECONDS=0.5)

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "did not answer in time")
    assert not run.messages.filter(role=Message.Role.ASSISTANT).exclude(content="").exists()


# --- Errors once the answer has started: kept, marked, never silently re-generated --------


def test_a_stream_cut_in_the_middle_keeps_the_partial_text_and_is_not_retried(scripted, owner, agent):
    server = scripted([{"cut_after_tokens": 3, "text": TEXT}], retries=2)

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "cut off")
    reply = _assistant(run)
    assert (reply.status, reply.content) == (Message.Status.FAILED, "one two three")
    assert len(server.requests) == 1  # text was shown: the SDK must not generate it again


def test_a_silent_stall_is_ended_by_the_watchdog_not_by_the_long_timeout(scripted, owner, agent):
    scripted(
        [{"stall_after_tokens": 2, "stall_seconds": 20, "text": TEXT}],
        LLM_TIMEOUT_SECONDS=15, LLM_STALL_SECONDS=0.5,
    )
    started = time.monotonic()

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "stopped sending its answer")
    assert time.monotonic() - started < 15  # the stall clock ended it, not the first-token timeout
    assert (_assistant(run).status, _assistant(run).content) == (Message.Status.FAILED, "one two")


def test_a_stream_of_keep_alives_only_counts_as_stalled(scripted, owner, agent):
    scripted(
        [{"stall_after_tokens": 2, "stall_seconds": 20, "keepalive": True, "text": TEXT}],
        LLM_TIMEOUT_SECONDS=15, LLM_STALL_SECONDS=0.6,
    )

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "stopped sending its answer")


def test_a_short_pause_within_the_stall_limit_is_fine(scripted, owner, agent):
    scripted([{"stall_after_tokens": 2, "stall_seconds": 0.3, "keepalive": True, "text": TEXT}], LLM_STALL_SECONDS=5)

    run, _ = _answer_once(owner, agent)

    assert run.status == Run.Status.DONE and _assistant(run).content == TEXT


def test_malformed_server_sent_events_fail_the_run_and_keep_the_text(scripted, owner, agent):
    scripted([{"malformed_after_tokens": 4, "text": TEXT}])

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "malformed stream")
    assert _assistant(run).content == "one two three four"


def test_malformed_tool_call_arguments_go_back_to_the_model_as_an_error(scripted, owner, agent):
    server = scripted([
        {"tool_calls": [{"name": "calculator", "raw_arguments": '{"expression": 1+'}]},
        "Sorry, let me say it plainly: 2.",
    ])

    run, published = _answer_once(owner, agent, "calc: 1+1")

    assert run.status == Run.Status.DONE and published.terminal() == ["run.finished"]
    result = run.messages.get(role=Message.Role.TOOL)
    assert result.is_error and "not valid JSON" in result.content
    assert server.requests[1]["messages"][-1]["role"] == "tool"  # the model was told


# --- The user's retry -----------------------------------------------------------------------


def test_retrying_a_failed_run_answers_the_same_message_and_keeps_the_broken_attempt(scripted, owner, agent):
    scripted([{"cut_after_tokens": 2, "text": TEXT}, TEXT])
    failed, _ = _answer_once(owner, agent)

    retry, published = _execute(run_retry(owner=owner, run_id=failed.pk))

    assert retry.status == Run.Status.DONE and retry.user_message_id == failed.user_message_id
    assert _assistant(retry).content == TEXT
    assert _assistant(failed).status == Message.Status.FAILED  # still on record, still marked
    assert Message.objects.filter(thread=failed.thread, role=Message.Role.USER).count() == 1


def test_a_failure_after_a_tool_call_is_retried_from_the_stored_result(scripted, owner, agent):
    server = scripted([
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"cut_after_tokens": 2, "text": "The answer is 42."},
        "The answer is 42.",
    ])
    failed, _ = _answer_once(owner, agent, "calc: 6*7")

    retry, _ = _execute(run_retry(owner=owner, run_id=failed.pk))

    assert retry.status == Run.Status.DONE
    # The tool ran once; the retry sent its stored result instead of asking for it again.
    assert Message.objects.filter(thread=failed.thread, role=Message.Role.TOOL).count() == 1
    assert [m["role"] for m in server.requests[2]["messages"]][-2:] == ["assistant", "tool"]
    assert json.loads(server.requests[2]["messages"][-1]["content"])["result"] == 42


# --- The circuit breaker --------------------------------------------------------------------


def _failing(n):
    return [{"status": 500, "body": {"error": {"message": "down"}}}] * n


def test_five_failures_open_the_breaker_and_later_runs_fail_at_once(scripted, owner, agent, settings):
    server = scripted(_failing(5) + [TEXT])

    runs = [_answer_once(owner, agent)[0] for _ in range(5)]
    assert all(r.status == Run.Status.FAILED for r in runs)
    assert "paused for" in runs[-1].error and "down" in runs[-1].error

    run, published = _answer_once(owner, agent)

    _assert_one_failure(run, published, "paused for")
    assert len(server.requests) == 5  # the sixth never reached the server
    assert breaker_is_open(breaker_key("default", settings.LLM_MODEL))


def test_after_the_open_period_one_probe_closes_the_breaker_again(scripted, owner, agent, settings):
    server = scripted(_failing(5) + [TEXT, TEXT], LLM_BREAKER_OPEN_SECONDS=2)
    for _ in range(5):
        _answer_once(owner, agent)
    assert breaker_is_open(breaker_key("default", settings.LLM_MODEL))

    time.sleep(2.1)
    probe, _ = _answer_once(owner, agent)
    after, _ = _answer_once(owner, agent)

    assert (probe.status, after.status) == (Run.Status.DONE, Run.Status.DONE)
    assert len(server.requests) == 7


def test_a_failed_probe_opens_the_breaker_for_another_period(scripted, owner, agent, settings):
    server = scripted(_failing(6) + [TEXT], LLM_BREAKER_OPEN_SECONDS=2)
    for _ in range(5):
        _answer_once(owner, agent)

    time.sleep(2.1)
    probe, _ = _answer_once(owner, agent)
    refused, _ = _answer_once(owner, agent)

    assert probe.status == Run.Status.FAILED and len(server.requests) == 6
    assert "paused for" in refused.error and len(server.requests) == 6


def test_failures_spread_beyond_the_window_do_not_open_the_breaker(scripted, owner, agent, settings):
    scripted(_failing(5) + [TEXT], LLM_BREAKER_WINDOW_SECONDS=1)
    for _ in range(4):
        _answer_once(owner, agent)

    time.sleep(1.2)
    late, _ = _answer_once(owner, agent)

    assert "paused" not in late.error
    assert not breaker_is_open(breaker_key("default", settings.LLM_MODEL))


def test_a_rejected_request_does_not_count_against_the_backend(scripted, owner, agent, settings):
    too_long = {"status": 400, "body": {"error": {"message": "context too long"}}}
    scripted([too_long] * 6)

    runs = [_answer_once(owner, agent)[0] for _ in range(6)]

    assert all("context too long" in r.error and "paused" not in r.error for r in runs)


def test_an_agent_with_a_fallback_model_uses_it_while_its_breaker_is_open(scripted, owner, agent, settings, client):
    agent.fallback_model = "small-model"
    agent.save()
    server = scripted(_failing(5) + ["From the small model."])
    for _ in range(5):
        _answer_once(owner, agent)

    run, _ = _answer_once(owner, agent)

    assert run.status == Run.Status.DONE and _assistant(run).content == "From the small model."
    assert server.requests[-1]["model"] == "small-model"
    assert [r["model"] for r in server.requests[:5]] == [settings.LLM_MODEL] * 5
    assert run.model == "small-model"
    client.force_login(owner)
    page = client.get(reverse("chat:turn", args=[run.thread_id, run.user_message.turn])).content.decode()
    assert "Answered by the fallback model small-model" in page


# --- Per-run budgets ------------------------------------------------------------------------


def test_the_token_budget_stops_a_tool_loop_with_a_stated_reason(llm_server, owner, agent, settings):
    settings.GATEWAY_RUN_MAX_TOKENS = 40
    agent.max_tool_rounds = 50
    agent.save()

    run, published = _answer_once(owner, agent, "loop forever")

    assert (run.status, run.stop_reason) == (Run.Status.DONE, Run.StopReason.BUDGET)
    assert 1 <= run.rounds < 50
    assert published.terminal() == ["run.finished"]


def test_the_time_budget_ends_an_answer_still_streaming(settings, owner, agent):
    settings.GATEWAY_RUN_TIMEOUT_SECONDS = 0.5
    with ScriptedOpenAIServer(tokens_per_second=10) as server:
        use_llm_server(settings, server)
        run, published = _answer_once(owner, agent, " ".join(["word"] * 100))

    _assert_one_failure(run, published, "time budget (0.5 s)")
    reply = _assistant(run)
    assert reply.status == Message.Status.FAILED and reply.content.startswith("Echo: ")


# --- Odd output -----------------------------------------------------------------------------


def test_nul_characters_from_the_model_and_a_tool_are_stored_without_them(scripted, owner, agent):
    # PostgreSQL text and jsonb refuse NUL; CI runs this file on PostgreSQL too.
    scripted([
        {"tool_calls": [{"name": "calculator", "raw_arguments": '{"expression": "1+1\\u0000"}'}], "text": "a\x00b"},
        "Two\x00.",
    ])

    run, published = _answer_once(owner, agent, "calc: 1+1")

    assert run.status == Run.Status.DONE and published.terminal() == ["run.finished"]
    replies = list(run.messages.filter(role=Message.Role.ASSISTANT).order_by("id"))
    assert [m.content for m in replies] == ["ab", "Two."]
    assert "\x00" not in replies[0].tool_calls[0]["function"]["arguments"]
