"""The scripted server must speak the protocol exactly, or every test above it proves nothing."""

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from agents.llm import LLMError, TextDelta
from agents.openai_client import OpenAICompatibleClient
from tests.doubles.openai_server import ScriptedOpenAIServer, tokenize


def _client(server, **kwargs) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(base_url=server.url, api_key="test-key", timeout=10, max_retries=0, **kwargs)


CALCULATOR = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]


def _stream(server, text="hi", messages=None, tools=CALCULATOR):
    messages = messages or [{"role": "user", "content": text}]
    return list(_client(server).stream(model="m", messages=messages, tools=tools, temperature=0.0, max_tokens=50))


def _post(server, body: dict) -> tuple[int, bytes]:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _get(server, path: str) -> tuple[int, dict]:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data


def _sse_payloads(raw: bytes) -> list:
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as s:
        yield s


def test_tokens_keep_their_spaces():
    assert tokenize("Echo:  hello world ") == ["Echo:", "  hello", " world", " "]
    assert "".join(tokenize("a\n\nb c")) == "a\n\nb c"


def test_it_streams_a_scripted_text_as_word_tokens():
    with ScriptedOpenAIServer(script=["Hello there, world"]) as server:
        items = _stream(server)

    assert items[:-1] == [TextDelta("Hello"), TextDelta(" there,"), TextDelta(" world")]
    assert items[-1].content == "Hello there, world"
    assert items[-1].finish_reason == "stop"
    assert items[-1].completion_tokens == 3


def test_it_records_the_exact_request_body(server):
    _stream(server, "hi", tools=[])

    assert server.requests == [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
            "max_tokens": 50,
        }
    ]


def test_the_stream_is_openai_shaped_sse_ending_in_done(server):
    status, raw = _post(server, {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                                 "messages": [{"role": "user", "content": "one two"}]})

    payloads = _sse_payloads(raw)
    assert status == 200
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: one two"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_without_include_usage_there_is_no_usage_chunk(server):
    _, raw = _post(server, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})

    chunks = [json.loads(p) for p in _sse_payloads(raw)[:-1]]
    assert all(c["choices"] for c in chunks)


def test_without_stream_it_answers_one_chat_completion(server):
    status, raw = _post(server, {"model": "m", "messages": [{"role": "user", "content": "calc: 6*7"}], "tools": CALCULATOR})

    body = json.loads(raw)
    assert status == 200
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1_0", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}
    ]


def test_scripted_tool_calls_arrive_whole_and_in_order():
    script = [{"tool_calls": [
        {"name": "calculator", "arguments": {"expression": "2 + 2"}},
        {"name": "search", "arguments": {"query": "a long enough query to be split"}},
    ]}]
    with ScriptedOpenAIServer(script=script) as server:
        (completion,) = _stream(server)

    assert completion.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("call_1_0", "calculator", {"expression": "2 + 2"}),
        ("call_1_1", "search", {"query": "a long enough query to be split"}),
    ]


def test_rules_echo_calculate_read_back_and_loop(server):
    assert _stream(server, "hello")[-1].content == "Echo: hello"
    (calc,) = _stream(server, "please calc:  3 * 4 ")
    assert [(c.name, json.loads(c.arguments)) for c in calc.tool_calls] == [("calculator", {"expression": "3 * 4"})]
    after_tool = [
        {"role": "user", "content": "calc: 3*4"},
        {"role": "assistant", "content": "", "tool_calls": [calc.tool_calls[0].wire()]},
        {"role": "tool", "tool_call_id": calc.tool_calls[0].id, "content": "12"},
    ]
    assert _stream(server, messages=after_tool)[-1].content == "The result is 12."
    assert _stream(server, "calc: 1+1", tools=[])[-1].content == "I have no calculator tool. Echo: calc: 1+1"
    looping = [{"role": "user", "content": "loop forever"}, *after_tool[1:]]
    (again,) = _stream(server, messages=looping)
    assert [json.loads(c.arguments) for c in again.tool_calls] == [{"expression": "1+1"}]


def test_a_scripted_error_is_an_http_error_with_its_body_and_headers():
    script = [{"status": 429, "body": {"error": {"message": "slow down"}}, "headers": {"Retry-After": "7"}}]
    with ScriptedOpenAIServer(script=script) as server:
        parts = urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps({"stream": True}))
        response = conn.getresponse()

        assert response.status == 429
        assert response.getheader("Retry-After") == "7"
        assert json.loads(response.read()) == {"error": {"message": "slow down"}}


def test_the_adapter_reports_a_scripted_500_as_a_retryable_error():
    with ScriptedOpenAIServer(script=[{"status": 500, "body": {"error": {"message": "boom"}}}]) as server:
        with pytest.raises(LLMError) as caught:
            _stream(server)

    assert str(caught.value) == "The model server answered 500: boom"
    assert caught.value.retryable


def test_an_exhausted_script_fails_loudly():
    with ScriptedOpenAIServer(script=[]) as server:
        status, raw = _post(server, {"messages": []})

    assert status == 500
    assert "script exhausted" in raw.decode()


def test_a_cut_stream_sends_n_tokens_then_breaks_the_connection():
    with ScriptedOpenAIServer(script=[{"cut_after_tokens": 2, "text": "one two three four"}]) as server:
        received = []
        with pytest.raises(LLMError):
            for item in _client(server).stream(model="m", messages=[], tools=[], temperature=0, max_tokens=9):
                received.append(item)

    assert received == [TextDelta("one"), TextDelta(" two")]


def test_it_waits_for_the_first_token_then_paces_the_rest():
    with ScriptedOpenAIServer(ttft_seconds=0.2, tokens_per_second=50, script=["a b c d e f g h i j k"]) as server:
        started = time.monotonic()
        stream = _client(server).stream(model="m", messages=[], tools=[], temperature=0, max_tokens=9)
        next(stream)
        first = time.monotonic() - started
        rest = list(stream)
        total = time.monotonic() - started

    assert 0.2 <= first < 1.0
    assert len(rest) == 11  # ten more deltas and the completion
    assert total - first >= 10 / 50 * 0.9


def test_fifty_concurrent_streams_each_get_their_own_answer(server):
    results: dict[int, str] = {}

    def ask(n: int):
        results[n] = _stream(server, f"question {n}")[-1].content

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)

    assert results == {n: f"Echo: question {n}" for n in range(50)}
    assert len(server.requests) == 50


def test_a_client_hanging_up_mid_stream_leaves_no_traceback(capfd):
    with ScriptedOpenAIServer(tokens_per_second=200, script=["word " * 200, "still here"]) as server:
        parts = urlsplit(server.url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        body = json.dumps({"stream": True, "messages": []}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert b"200 OK" in sock.recv(4096)
        sock.close()
        time.sleep(0.1)  # let the server write into the closed socket

        assert _stream(server)[-1].content == "still here"
    assert "Traceback" not in capfd.readouterr().err


def test_models_and_health_endpoints(server):
    assert _get(server, "/health") == (200, {"status": "ok"})
    status, models = _get(server, "/v1/models")
    assert status == 200
    assert [m["id"] for m in models["data"]] == ["scripted"]


def test_stop_returns_promptly_during_a_slow_stream():
    server = ScriptedOpenAIServer(ttft_seconds=30, script=["never sent"]).start()
    outcome = []

    def ask():
        try:
            outcome.append(_stream(server))
        except LLMError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    time.sleep(0.2)

    started = time.monotonic()
    server.stop()
    thread.join(timeout=5)

    assert time.monotonic() - started < 2
    assert [type(o) for o in outcome] == [LLMError]  # the client saw the answer break off
