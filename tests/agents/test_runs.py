"""Claiming and executing runs, end to end against a real HTTP model server."""


import pytest

from agents.models import Agent, Run
from agents.services import agent_default, agents_seed, run_claim_next, run_execute
from agents.skills import skills_discover
from agents.tools import registry
from chat.models import Message
from tests.llm_backend import closed_port_url, use_llm_server
from tests.doubles.openai_server import ScriptedOpenAIServer, tokenize
from tests.factories import AgentFactory, RunFactory, ThreadFactory

pytestmark = pytest.mark.django_db


class Published(list):
    """The publish callable: keeps (event type, data) in order."""

    def __call__(self, event_type, data):
        self.append((event_type, data))

    def types(self) -> list[str]:
        return [t for t, _ in self]


def _claimed(**run_fields) -> Run:
    run = RunFactory(**run_fields)
    return run_claim_next(thread_id=run.thread_id)


# --- run_claim_next ------------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_run_of_the_thread():
    thread = ThreadFactory()
    first, second = RunFactory(thread=thread), RunFactory(thread=thread)

    claimed = run_claim_next(thread_id=thread.pk)

    assert claimed == first
    first.refresh_from_db()
    assert (first.status, first.attempts) == (Run.Status.RUNNING, 1)
    assert first.started_at is not None
    assert Run.objects.get(pk=second.pk).status == Run.Status.QUEUED


def test_a_second_claim_finds_nothing_while_a_run_of_the_thread_is_running():
    thread = ThreadFactory()
    RunFactory(thread=thread), RunFactory(thread=thread)
    run_claim_next(thread_id=thread.pk)

    assert run_claim_next(thread_id=thread.pk) is None
    assert Run.objects.filter(thread=thread, status=Run.Status.RUNNING).count() == 1


def test_runs_of_different_threads_are_claimed_independently():
    busy, other = RunFactory(), RunFactory()
    run_claim_next(thread_id=busy.thread_id)

    assert run_claim_next(thread_id=other.thread_id) == other


def test_claim_returns_none_when_nothing_is_queued():
    run = RunFactory(status=Run.Status.DONE)

    assert run_claim_next(thread_id=run.thread_id) is None


# --- run_execute against the scripted server ---------------------------------------------


def test_a_plain_answer_is_stored_and_the_run_is_done(llm_server, settings):
    run = _claimed(user_message__content="hello there")
    published = Published()

    run = run_execute(run=run, publish=published)

    assert (run.status, run.stop_reason, run.rounds, run.error) == ("done", "answered", 1, "")
    assert run.started_at <= run.first_token_at <= run.finished_at
    answer = Message.objects.get(thread=run.thread, role=Message.Role.ASSISTANT)
    assert (answer.content, answer.status, answer.turn, answer.agent) == ("Echo: hello there", "complete", 1, run.agent)
    assert answer.completed_at is not None
    request = llm_server.requests[0]
    assert request["model"] == settings.LLM_MODEL
    assert request["messages"] == [
        {"role": "system", "content": run.agent.system_prompt},
        {"role": "user", "content": "hello there"},
    ]
    assert (request["temperature"], request["max_tokens"]) == (run.agent.temperature, settings.LLM_MAX_TOKENS)
    # Usage as the server counted it: words of the prompt, tokens of the answer.
    assert (run.prompt_tokens, run.completion_tokens) == (sum(len(tokenize(m["content"])) for m in request["messages"]), 3)
    assert published.types() == [
        "run.started", "message.started", "message.streamed", "message.streamed", "message.streamed",
        "message.completed", "run.finished",
    ]
    assert published[-1][1] == {"status": "done", "stop_reason": "answered", "stop_label": "Answered", "rounds": 1}


def test_a_tool_round_stores_the_call_the_result_and_the_final_answer(llm_server):
    run = _claimed(user_message__content="calc: 6*7")
    published = Published()

    run = run_execute(run=run, publish=published)

    rows = list(run.thread.messages.values_list("role", "content", "tool_call_id", "is_error", "status"))
    result = '{"expression": "6*7", "result": 42}'
    assert rows == [
        ("user", "calc: 6*7", "", False, "complete"),
        ("assistant", "", "", False, "complete"),
        ("tool", result, "call_1_0", False, "complete"),
        ("assistant", f"The result is {result}.", "", False, "complete"),
    ]
    call_message = run.thread.messages.get(role="assistant", content="")
    assert call_message.tool_calls == [
        {"id": "call_1_0", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}
    ]
    assert (run.status, run.rounds) == ("done", 2)
    first, second = llm_server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    assert second["messages"][-2:] == [
        {"role": "assistant", "content": "", "tool_calls": call_message.tool_calls},
        {"role": "tool", "tool_call_id": "call_1_0", "content": result},
    ]
    finished = next(data for event, data in published if event == "tool.finished")
    assert finished["message_id"] == run.thread.messages.get(role="tool").pk


def test_a_model_that_never_stops_calling_tools_ends_at_the_round_cap(llm_server):
    run = _claimed(agent=AgentFactory(max_tool_rounds=3), user_message__content="loop forever")

    run = run_execute(run=run, publish=Published())

    assert (run.status, run.stop_reason, run.rounds) == ("done", "round_cap", 3)
    assert len(llm_server.requests) == 3
    assert run.thread.messages.filter(role="tool").count() == 3


def test_the_same_call_asked_for_a_third_time_stops_the_run_without_running_it(llm_server):
    run = _claimed(agent=AgentFactory(max_tool_rounds=10), user_message__content="repeat forever")
    published = Published()

    run = run_execute(run=run, publish=published)

    assert (run.status, run.stop_reason, run.rounds) == ("done", "repeated_call", 3)
    assert run.get_stop_reason_display() == "Stopped: the same tool call was repeated 3 times"
    assert run.thread.messages.filter(role="tool").count() == 2  # the third was not run
    assert published[-1][1]["stop_label"] == run.get_stop_reason_display()


def test_a_server_error_fails_the_run_with_a_readable_error_and_keeps_the_users_message(settings):
    script = [{"status": 500, "body": {"error": {"message": "model crashed"}}}]
    with ScriptedOpenAIServer(script=script) as server:
        use_llm_server(settings, server)
        run = _claimed(user_message__content="hello")
        published = Published()

        run = run_execute(run=run, publish=published)

    assert (run.status, run.stop_reason) == ("failed", "error")
    assert run.error == "The model server answered 500: model crashed"
    assert run.finished_at is not None
    assert Message.objects.get(pk=run.user_message_id).content == "hello"
    assert published[-1][0] == "run.failed"
    assert published[-1][1]["error"] == run.error


def test_an_unreachable_server_fails_the_run(settings):
    settings.LLM_BASE_URL = closed_port_url()
    settings.LLM_MAX_RETRIES = 0
    run = _claimed(user_message__content="hello")

    run = run_execute(run=run, publish=Published())

    assert run.status == "failed"
    assert run.error == "Could not reach the model server."
    assert run.thread.messages.filter(role="user", content="hello").exists()


def test_a_stream_cut_midway_keeps_the_partial_text_on_a_failed_message(settings):
    with ScriptedOpenAIServer(script=[{"cut_after_tokens": 3, "text": "one two three four five"}]) as server:
        use_llm_server(settings, server)
        run = _claimed()
        published = Published()

        run = run_execute(run=run, publish=published)

    partial = Message.objects.get(thread=run.thread, role=Message.Role.ASSISTANT)
    assert (partial.content, partial.status) == ("one two three", "failed")
    assert run.status == "failed"
    assert run.error == "The model's answer was cut off (RemoteProtocolError)."
    assert run.rounds == 1
    assert published[-1] == ("run.failed", {"status": "failed", "error": run.error, "message_id": partial.pk})


def test_a_run_that_already_ended_is_not_ended_again(llm_server):
    run = _claimed()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, error="cancelled")
    published = Published()

    run = run_execute(run=run, publish=published)

    assert (run.status, run.error) == ("failed", "cancelled")
    assert "run.finished" not in published.types()


def test_a_run_without_an_agent_uses_the_default_agent(llm_server):
    default = AgentFactory(is_default=True, system_prompt="Default speaking.")
    run = _claimed(agent=None, thread__default_agent=None)

    run = run_execute(run=run, publish=Published())

    assert run.status == "done"
    assert llm_server.requests[0]["messages"][0]["content"] == "Default speaking."
    assert agent_default() == default


def test_a_run_with_no_agents_at_all_fails_saying_so(llm_server):
    run = _claimed(agent=None, thread__default_agent=None)
    Agent.objects.all().delete()

    run = run_execute(run=run, publish=Published())

    assert run.status == "failed"
    assert run.error == "No agent is configured. Add one in the admin."
    assert llm_server.requests == []


def test_starter_agents_are_seeded_once():
    created = agents_seed()

    assert [a.slug for a in created] == ["assistant", "scribe", "brief"]
    assert agents_seed() == []
    assert agent_default().slug == "assistant"


def test_starter_agents_name_only_registered_tools_and_shipped_skills(settings):
    settings.SKILLS_DIRS = settings.SKILLS_DIRS[:1]  # the project's own, not the developer's
    created = agents_seed()

    shipped = skills_discover()
    assert shipped.problems == []
    for agent in created:
        assert set(agent.enabled_tools) <= set(registry()), agent.slug
        assert set(agent.enabled_skills) <= set(shipped.skills), agent.slug
        assert "shell" not in agent.enabled_tools
