"""The openai adapter (agents.openai_client.OpenAICompatibleClient) against answers recorded from the
real llama.cpp server with the shipped model (tests/cassettes/*.yaml).

Replayed offline with record_mode="none": a request that differs from the recorded one (method,
path or JSON body) fails the test instead of reaching the network. `make cassettes`
(scripts/record_cassettes.py) starts the embedded model and runs this file with LLM_RECORD=1,
which re-records every cassette from scratch with record_mode="all".
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import vcr
from django.conf import settings

from agents.llm import Completion, LLMError, TextDelta
from agents.openai_client import OpenAICompatibleClient
from agents.tools.calculator import TOOL as CALCULATOR
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.llm_backend import closed_port_url

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
RECORDING = os.environ.get("LLM_RECORD") == "1"
# Part of every recorded request body, so fixed here rather than taken from LLM_MODEL.
MODEL = "qwen2.5-coder-0.5b-instruct"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _same_json_body(r1, r2) -> None:
    # The SDK's JSON key order and spacing are not part of the protocol.
    assert json.loads(r1.body or b"null") == json.loads(r2.body or b"null")


recorder = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="all" if RECORDING else "none",
    # Not the host: recordings come from whatever port the model ran on.
    match_on=["method", "path", "json_body"],
    filter_headers=["authorization"],
    decode_compressed_response=True,
)
recorder.register_matcher("json_body", _same_json_body)


@contextmanager
def cassette(name: str):
    path = CASSETTES / f"{name}.yaml"
    if RECORDING:
        path.unlink(missing_ok=True)  # "all" would otherwise append to the old recording
    with recorder.use_cassette(path.name) as tape:
        yield tape
    if not RECORDING:
        assert tape.all_played, f"{path.name} has interactions this test no longer makes"


def client(base_url: str | None = None) -> OpenAICompatibleClient:
    # Replays never leave the process, so the address only matters when recording.
    base_url = base_url or (settings.LLM_BASE_URL if RECORDING else "http://127.0.0.1:8081/v1")
    return OpenAICompatibleClient(base_url=base_url, api_key="test-key", timeout=60, max_retries=0)


def stream(messages: list[dict], *, tools: list[dict] = (), base_url: str | None = None) -> list:
    return list(
        client(base_url).stream(model=MODEL, messages=messages, tools=list(tools), temperature=0.0, max_tokens=120)
    )


def test_a_plain_answer_streams_text_then_one_completion_with_usage():
    with cassette("plain_answer") as tape:
        items = stream([SYSTEM, {"role": "user", "content": "In one short sentence: what is a hearth?"}])

    *deltas, completion = items
    assert len(deltas) > 3 and all(isinstance(d, TextDelta) for d in deltas)
    assert isinstance(completion, Completion)
    assert completion.content == "".join(d.text for d in deltas)
    assert "hearth" in completion.content.lower()
    assert completion.tool_calls == []
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens > 10
    assert completion.completion_tokens >= len(deltas)  # the end-of-turn token counts too
    sent = json.loads(tape.requests[0].body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "tools" not in sent
    assert "authorization" not in {k.lower() for k in tape.requests[0].headers}


def test_a_tool_call_streams_as_one_call_with_json_arguments():
    with cassette("tool_call") as tape:
        items = stream(
            [SYSTEM, {"role": "user", "content": "What is 17.5 * 4 / 3? Use the calculator."}],
            tools=[CALCULATOR.schema()],
        )

    assert len(items) == 1, "the model asked for the tool without any text"
    (completion,) = items
    assert completion.finish_reason == "tool_calls"
    assert [call.name for call in completion.tool_calls] == ["calculator"]
    call = completion.tool_calls[0]
    assert call.id
    assert json.loads(call.arguments) == {"expression": "(17.5 * 4) / 3"}
    assert json.loads(tape.requests[0].body)["tools"] == [CALCULATOR.schema()]


def test_a_tool_result_in_the_history_leads_to_a_text_answer():
    # The wire form of an earlier call and its result, as the loop sends them back.
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "(17.5 * 4) / 3"}'}}
    messages = [
        SYSTEM,
        {"role": "user", "content": "What is 17.5 * 4 / 3? Use the calculator."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"expression": "(17.5 * 4) / 3", "result": 23.333333333333332}'},
    ]
    with cassette("tool_result"):
        *deltas, completion = stream(messages, tools=[CALCULATOR.schema()])

    # The server accepted the history, and the template's nudge after <tool_response> made
    # the 0.5B model answer instead of calling the calculator again.
    assert completion.tool_calls == [] and completion.finish_reason == "stop"
    assert completion.content == "".join(d.text for d in deltas)
    assert "23.33" in completion.content
    assert completion.prompt_tokens > 200


def test_a_request_longer_than_the_context_is_a_permanent_error():
    too_long = {"role": "user", "content": "word " * 9000}  # the server's slots hold 8192 tokens
    with cassette("context_exceeded"):
        with pytest.raises(LLMError) as raised:
            stream([SYSTEM, too_long])

    assert raised.value.retryable is False
    assert str(raised.value).startswith("The model server answered 400: request (")
    assert "exceeds the available context size" in str(raised.value)


def test_a_server_error_is_retryable():
    overloaded = {"status": 503, "body": {"error": {"message": "Loading model", "type": "unavailable_error"}}}
    with ScriptedOpenAIServer(script=[overloaded]) as server:
        with pytest.raises(LLMError) as raised:
            stream([SYSTEM, {"role": "user", "content": "hi"}], base_url=server.url)

    assert raised.value.retryable is True
    assert str(raised.value) == "The model server answered 503: Loading model"


def test_an_unreachable_server_is_retryable():
    with pytest.raises(LLMError) as raised:
        stream([SYSTEM, {"role": "user", "content": "hi"}], base_url=closed_port_url())

    assert raised.value.retryable is True
    assert str(raised.value) == "Could not reach the model server."
