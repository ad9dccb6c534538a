"""The loop is a plain function: driven here by an in-test model that implements LLMClient."""

import copy
import json
import threading
import time
from pathlib import Path

import pytest

from agents.llm import Completion, LLMError, TextDelta, ToolCall
from agents.loop import loop_run
from agents.tools import RESULT_CHARS_FOR_MODEL, Tool, ToolScope, ToolSet, registry
from tests.doubles.openai_server import tokenize

SCOPE = ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=Path("/nonexistent"))


class ScriptedModel:
    """An LLMClient answering from a list: text, or a list of (tool name, arguments) calls."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list[list[dict]] = []  # the messages of every call, as they were then

    def stream(self, *, model, messages, tools, temperature, max_tokens):
        self.seen.append(copy.deepcopy(messages))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            for token in tokenize(answer):
                yield TextDelta(token)
            yield Completion(content=answer, finish_reason="stop", prompt_tokens=10, completion_tokens=2)
            return
        calls = [ToolCall(id=f"call_{len(self.seen)}_{i}", name=n, arguments=json.dumps(a)) for i, (n, a) in enumerate(answer)]
        yield Completion(content="", tool_calls=calls, finish_reason="tool_calls", prompt_tokens=10, completion_tokens=5)


class Notebook:
    """A real tool for these tests: it writes down what it is given."""

    def __init__(self):
        self.notes: list[str] = []
        self.tool = Tool(
            name="note",
            description="Write a note.",
            parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            read_only=False,
            build=lambda scope: self._write,
        )

    def _write(self, text: str):
        self.notes.append(text)
        return f"noted {text}"


def _run(model, tools, *, max_rounds=5):
    events = []
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "go"}]
    result = loop_run(
        client=model, model="m", messages=messages, tools=tools, max_rounds=max_rounds,
        temperature=0.0, max_tokens=100, emit=lambda event, data: events.append((event, data)),
    )
    return result, messages, events


def test_it_answers_without_tools_in_one_round():
    model = ScriptedModel(["Hello there"])

    result, messages, events = _run(model, ToolSet([], SCOPE))

    assert (result.stop_reason, result.rounds, result.prompt_tokens, result.completion_tokens) == ("answered", 1, 10, 2)
    assert messages[-1] == {"role": "assistant", "content": "Hello there"}
    assert [e for e, _ in events] == ["message.started", "message.streamed", "message.streamed", "message.completed"]
    assert "".join(d["delta"] for e, d in events if e == "message.streamed") == "Hello there"


def test_several_tool_calls_in_one_answer_run_in_call_order_and_their_results_are_appended():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": "first"}), ("note", {"text": "second"})], "Both noted."])

    result, messages, events = _run(model, ToolSet([notebook.tool], SCOPE))

    assert notebook.notes == ["first", "second"]
    assert messages[2]["tool_calls"] == [
        {"id": "call_1_0", "type": "function", "function": {"name": "note", "arguments": '{"text": "first"}'}},
        {"id": "call_1_1", "type": "function", "function": {"name": "note", "arguments": '{"text": "second"}'}},
    ]
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "call_1_0", "content": "noted first"},
        {"role": "tool", "tool_call_id": "call_1_1", "content": "noted second"},
        {"role": "assistant", "content": "Both noted."},
    ]
    assert model.seen[1] == messages[:5]  # the second call saw both results
    assert [d["call_id"] for e, d in events if e == "tool.finished"] == ["call_1_0", "call_1_1"]
    assert (result.stop_reason, result.rounds, result.completion_tokens) == ("answered", 2, 7)


def test_a_tool_error_goes_back_to_the_model_as_data_and_the_loop_continues():
    model = ScriptedModel([[("calculator", {"expression": "1/0"})], "Cannot divide by zero."])

    result, messages, events = _run(model, ToolSet([registry()["calculator"]], SCOPE))

    assert messages[3] == {"role": "tool", "tool_call_id": "call_1_0", "content": '{"error": "Division by zero."}'}
    finished = next(d for e, d in events if e == "tool.finished")
    assert finished["is_error"] is True
    assert result.stop_reason == "answered"
    assert messages[-1]["content"] == "Cannot divide by zero."


def test_an_unknown_tool_is_answered_with_an_error_and_nothing_runs():
    notebook = Notebook()
    model = ScriptedModel([[("delete_everything", {"text": "x"})], "Sorry."])

    result, messages, _ = _run(model, ToolSet([notebook.tool], SCOPE))

    assert notebook.notes == []
    assert json.loads(messages[3]["content"]) == {
        "error": "There is no tool named 'delete_everything' here; it was not run. Tools you can call: note."
    }
    assert result.stop_reason == "answered"


def test_a_model_that_keeps_calling_tools_stops_at_the_round_cap():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": str(n)})] for n in range(10)])

    result, messages, _ = _run(model, ToolSet([notebook.tool], SCOPE), max_rounds=3)

    assert (result.stop_reason, result.rounds) == ("round_cap", 3)
    assert len(model.seen) == 3
    assert notebook.notes == ["0", "1", "2"]
    assert messages[-1]["role"] == "tool"  # every call made was answered


def test_a_failing_model_call_raises_llm_error_after_the_rounds_so_far():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": "a"})], LLMError("The model server answered 500.", retryable=True)])

    with pytest.raises(LLMError, match="500"):
        _run(model, ToolSet([notebook.tool], SCOPE))

    assert notebook.notes == ["a"]


def test_a_stream_without_a_final_completion_is_an_error():
    class Truncated:
        def stream(self, **kwargs):
            yield TextDelta("half an ans")

    with pytest.raises(LLMError, match="without a final chunk"):
        _run(Truncated(), ToolSet([], SCOPE))


def _waiting_tool(name, barrier: threading.Barrier | None = None, sleep: float = 0.0, timeout: float = 5.0) -> Tool:
    def build(scope):
        def fn():
            if barrier is not None:
                barrier.wait()  # raises BrokenBarrierError unless the other call runs at the same time
            time.sleep(sleep)
            return f"{name} done"

        return fn

    return Tool(name=name, description=name, parameters={"type": "object", "properties": {}}, read_only=True, build=build, timeout_seconds=timeout)


def test_calls_of_one_answer_run_at_the_same_time_and_results_keep_call_order():
    barrier = threading.Barrier(2, timeout=5)
    tools = ToolSet([_waiting_tool("slow", barrier, sleep=0.2), _waiting_tool("fast", barrier)], SCOPE)
    model = ScriptedModel([[("slow", {}), ("fast", {})], "Both."])

    result, messages, events = _run(model, tools)

    # Had they run one after the other, the first would have waited at the barrier alone and failed.
    assert [m["content"] for m in messages[3:5]] == ["slow done", "fast done"]
    assert [d["name"] for e, d in events if e == "tool.finished"] == ["slow", "fast"]
    assert [e for e, _ in events].index("tool.finished") > max(i for i, (e, _) in enumerate(events) if e == "tool.called")
    assert result.stop_reason == "answered"


def test_a_call_that_outlives_its_timeout_is_answered_with_an_error_and_the_loop_goes_on():
    tools = ToolSet([_waiting_tool("stuck", sleep=2, timeout=0.1)], SCOPE)
    model = ScriptedModel([[("stuck", {})], "It timed out."])

    result, messages, events = _run(model, tools)

    assert json.loads(messages[3]["content"]) == {"error": "The tool 'stuck' did not finish within 0.1 seconds."}
    assert next(d for e, d in events if e == "tool.finished")["is_error"] is True
    assert result.stop_reason == "answered"


def test_schema_violations_never_reach_the_tool():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": 5}), ("note", {})], "Fixed."])

    _, messages, _ = _run(model, ToolSet([notebook.tool], SCOPE))

    assert notebook.notes == []
    assert "Invalid arguments: text: 5 is not of type 'string'" in json.loads(messages[3]["content"])["error"]
    assert "'text' is a required property" in json.loads(messages[4]["content"])["error"]


def test_a_long_result_is_cut_for_the_model_but_reported_whole():
    long_tool = Tool(
        name="dump", description="", parameters={"type": "object", "properties": {}}, read_only=True,
        build=lambda scope: lambda: "x" * (RESULT_CHARS_FOR_MODEL + 500),
    )
    model = ScriptedModel([[("dump", {})], "Long."])

    _, messages, events = _run(model, ToolSet([long_tool], SCOPE))

    sent = messages[3]["content"]
    assert sent.startswith("x" * RESULT_CHARS_FOR_MODEL) and sent.endswith(f"first {RESULT_CHARS_FOR_MODEL:,} shown]")
    assert len(next(d for e, d in events if e == "tool.finished")["content"]) == RESULT_CHARS_FOR_MODEL + 500


def test_the_same_call_a_third_time_stops_the_loop_before_running_it():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": "same"})]] * 3 + ["never"])

    result, _, _ = _run(model, ToolSet([notebook.tool], SCOPE), max_rounds=10)

    assert (result.stop_reason, result.rounds) == ("repeated_call", 3)
    assert notebook.notes == ["same", "same"]


def test_calls_made_before_a_pause_count_towards_the_repeat_bound():
    notebook = Notebook()
    model = ScriptedModel([[("note", {"text": "same"})], "never"])

    events = []
    result = loop_run(
        client=model, model="m", messages=[{"role": "user", "content": "go"}], tools=ToolSet([notebook.tool], SCOPE),
        max_rounds=10, temperature=0.0, max_tokens=100, emit=lambda e, d: events.append(e),
        rounds_done=2, calls_done=[("note", '{"text":  "same"}'), ("note", '{"text": "same"}')],
    )

    assert (result.stop_reason, result.rounds) == ("repeated_call", 3)
    assert notebook.notes == []


def test_ask_user_pauses_the_loop_with_the_question_and_leaves_the_call_open():
    notebook = Notebook()
    tools = ToolSet([notebook.tool, registry()["ask_user"]], SCOPE)
    model = ScriptedModel([[("note", {"text": "draft"}), ("ask_user", {"question": "Which city?"})]])

    result, messages, events = _run(model, tools)

    assert (result.stop_reason, result.question, result.waiting_call_id) == ("waiting", "Which city?", "call_1_1")
    assert notebook.notes == ["draft"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["call_1_0"]
    assert [d["call_id"] for e, d in events if e == "tool.finished"] == ["call_1_0"]


def test_an_empty_question_is_an_error_result_not_a_pause():
    model = ScriptedModel([[("ask_user", {"question": "  "})], "Never mind."])

    result, messages, _ = _run(model, ToolSet([registry()["ask_user"]], SCOPE))

    assert result.stop_reason == "answered"
    assert "The question is empty" in json.loads(messages[3]["content"])["error"]


def test_a_second_question_in_one_answer_is_refused_and_only_the_first_pauses():
    tools = ToolSet([registry()["ask_user"]], SCOPE)
    model = ScriptedModel([[("ask_user", {"question": "City?"}), ("ask_user", {"question": "Date?"})]])

    result, messages, _ = _run(model, tools)

    assert (result.stop_reason, result.question, result.waiting_call_id) == ("waiting", "City?", "call_1_0")
    assert json.loads(messages[-1]["content"]) == {"error": "Ask one question at a time; only the first was put to the user."}


def test_a_call_waiting_for_a_free_slot_gets_its_whole_timeout():
    # Five calls, four at a time: the fifth starts when the first four are done and must not
    # have spent its time waiting (it would be reported as timed out, yet run).
    ran = []

    def build(scope):
        def fn(n):
            time.sleep(0.3)
            ran.append(n)
            return "ok"

        return fn

    params = {"type": "object", "properties": {"n": {"type": "integer"}}}
    slow = Tool(name="slow", description="", parameters=params, read_only=False, build=build, timeout_seconds=0.5)
    model = ScriptedModel([[("slow", {"n": n}) for n in range(5)], "Done."])

    _, messages, _ = _run(model, ToolSet([slow], SCOPE))

    assert [m["content"] for m in messages if m["role"] == "tool"] == ["ok"] * 5
    assert len(ran) == 5


def test_a_skill_activation_is_sent_whole_however_long():
    body = "step\n" * (RESULT_CHARS_FOR_MODEL // 2)
    skill_tool = Tool(
        name="activate_skill", description="", parameters={"type": "object", "properties": {}}, read_only=True,
        build=lambda scope: lambda: body,
    )
    model = ScriptedModel([[("activate_skill", {})], "Read it."])

    _, messages, _ = _run(model, ToolSet([skill_tool], SCOPE))

    assert messages[3]["content"] == body
