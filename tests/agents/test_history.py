import pytest

from agents.history import DEFAULT_SYSTEM_PROMPT, history_for_run
from chat.models import Message
from tests.factories import AgentFactory, MessageFactory, RunFactory, ThreadFactory

pytestmark = pytest.mark.django_db


def _call(call_id: str, expression: str = "1+1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "calculator", "arguments": f'{{"expression": "{expression}"}}'}}


def test_it_starts_with_the_agents_system_prompt_and_replays_the_thread_in_order():
    thread = ThreadFactory()
    MessageFactory(thread=thread, content="calc: 1+1")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="", tool_calls=[_call("c1")])
    MessageFactory(thread=thread, role=Message.Role.TOOL, content="2", tool_call_id="c1")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="It is 2.")
    run = RunFactory(thread=thread, user_message__content="thanks")

    history = history_for_run(run, thread.default_agent)

    assert history == [
        {"role": "system", "content": thread.default_agent.system_prompt},
        {"role": "user", "content": "calc: 1+1"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
        {"role": "assistant", "content": "It is 2."},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_calls_without_a_result_are_dropped_and_so_are_results_without_a_call():
    thread = ThreadFactory()
    run = RunFactory(thread=thread, user_message__content="two sums")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="Working.", tool_calls=[_call("c1"), _call("c2")])
    MessageFactory(thread=thread, role=Message.Role.TOOL, content="2", tool_call_id="c1")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="", tool_calls=[_call("c3")])  # never answered
    MessageFactory(thread=thread, role=Message.Role.TOOL, content="orphan", tool_call_id="c9")

    history = history_for_run(run, thread.default_agent)

    assert history[1:] == [
        {"role": "user", "content": "two sums"},
        {"role": "assistant", "content": "Working.", "tool_calls": [_call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
    ]


def test_later_turns_typed_ahead_are_left_out():
    thread = ThreadFactory()
    run = RunFactory(thread=thread, user_message__content="first")
    MessageFactory(thread=thread, content="second, typed while the first was answered")

    history = history_for_run(run, thread.default_agent)

    assert [m["content"] for m in history[1:]] == ["first"]


def test_a_newly_chosen_agent_sees_the_whole_thread_including_other_agents_replies():
    first_agent, second_agent = AgentFactory(system_prompt="You are terse."), AgentFactory(system_prompt="You are kind.")
    thread = ThreadFactory(default_agent=first_agent)
    MessageFactory(thread=thread, content="hi", agent=first_agent)
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="Hi.", agent=first_agent)
    run = RunFactory(thread=thread, agent=second_agent, user_message__content="and you?", user_message__agent=second_agent)

    history = history_for_run(run, second_agent)

    assert history == [
        {"role": "system", "content": "You are kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "and you?"},
    ]


def test_an_agent_without_a_prompt_gets_the_default_one():
    agent = AgentFactory(system_prompt="")
    run = RunFactory(thread__default_agent=agent)

    assert history_for_run(run, agent)[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_a_failed_partial_answer_is_left_out_so_a_retry_answers_the_question_afresh():
    thread = ThreadFactory()
    failed = RunFactory(thread=thread, user_message__content="tell me a story", status="failed")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="Once upon a", status=Message.Status.FAILED)
    retry = RunFactory(thread=thread, user_message=failed.user_message)

    history = history_for_run(retry, thread.default_agent)

    # A trailing assistant message would be continued as a prefix by llama.cpp-style servers.
    assert history[1:] == [{"role": "user", "content": "tell me a story"}]
