"""The loop is a plain function: driven here by an in-test model that implements LLMClient."""

import copy
import json
from pathlib import Path

import pytest

from agents.llm import Completion, LLMError, TextDelta, ToolCall
from agents.loop import loop_run
from agents.tools import Tool, ToolScope, ToolSet, registry
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
