"""A real HTTP server speaking OpenAI's chat-completions protocol, with scripted answers.

Used by the unit tests (through the real `agents.openai_client.OpenAICompatibleClient`), the browser
tests and benchmarks. It binds 127.0.0.1 on a free port and serves from a daemon thread:

    with ScriptedOpenAIServer(script=["Hello there", {"tool_calls": [...]}]) as server:
        client = OpenAICompatibleClient(base_url=server.url, api_key="x", timeout=5, max_retries=0)
        ...
        assert server.requests[0]["messages"][-1] == {"role": "user", "content": "hi"}

Replies. With `script`, each chat-completions request pops the next item:
  "text"                                            streamed as word-ish tokens (spaces kept)
  {"tool_calls": [{"name": ..., "arguments": {...}}], "text": "optional"}
  {"status": 500, "body": {...}, "headers": {...}}  an HTTP error
  {"cut_after_tokens": N, "text": "..."}            N tokens, then the connection is dropped
  {"hang_seconds": S, "text": "..."}                nothing at all (not even headers) for S seconds
  {"stall_after_tokens": N, "stall_seconds": S,     N tokens, then S seconds of silence (or of
   "keepalive": bool, "text": "..."}                 SSE comments only, with keepalive), then the rest
  {"malformed_after_tokens": N, "text": "..."}      N tokens, then an event that is not JSON
  {"tool_calls": [{"name": ..., "raw_arguments": "{not json"}]}   arguments sent verbatim
An exhausted script answers 500 "script exhausted", so a test that calls the model more often
than it planned fails loudly. Note the openai SDK retries 5xx and dropped connections by
itself (max_retries): each retry pops another item.

Without a script, the LAST message decides (see `_rule_reply`): a tool result is read back,
"calc:" asks for the calculator if it is offered, "ask:" asks the user (ask_user) the rest of
the text, "loop forever" always asks for the calculator (new arguments each time),
"repeat forever" always makes the same call, anything else is echoed.

Run standalone for manual or browser runs: `python -m tests.doubles.openai_server --port 8081`.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_NAME = "scripted"
# Errors a client hanging up mid-answer produces; they are expected, never worth a traceback.
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def tokenize(text: str) -> list[str]:
    """Word-ish tokens that keep their leading whitespace, so "".join(tokens) == text."""
    return re.findall(r"\s*\S+|\s+", text)


class ScriptedOpenAIServer:
    def __init__(
        self, *, ttft_seconds: float = 0.0, tokens_per_second: float | None = None, script: list | None = None
    ):
        self.ttft_seconds = ttft_seconds
        self.tokens_per_second = tokens_per_second
        self.script = list(script) if script is not None else None
        self.requests: list[dict] = []
        self.url = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> ScriptedOpenAIServer:
        handler = type("BoundHandler", (_Handler,), {"double": self})
        self._httpd = _HTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops accepting, then drops open connections so no handler thread outlives the server."""
        if self._httpd is None:
            return
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- called from handler threads ---------------------------------------------------------

    def _record(self, body: dict) -> tuple[int, object]:
        """Stores the request and picks its reply; returns (request number from 1, reply)."""
        with self._lock:
            self.requests.append(body)
            number = len(self.requests)
            if self.script is None:
                return number, _rule_reply(body.get("messages") or [], _offered(body))
            if not self.script:
                return number, {"status": 500, "body": {"error": {"message": "ScriptedOpenAIServer: script exhausted", "type": "server_error"}}}
            return number, self.script.pop(0)

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(conn)


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _offered(body: dict) -> set[str]:
    return {(t.get("function") or {}).get("name") for t in body.get("tools") or [] if isinstance(t, dict)}


def _rule_reply(messages: list[dict], offered: set[str]):
    last = messages[-1] if messages else {}
    user_text = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
    if "loop forever" in user_text:  # a new call each round: only the round cap stops it
        rounds = sum(1 for m in messages if m.get("role") == "tool")
        return {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"1+{rounds}"}}]}
    if "repeat forever" in user_text:  # the very same call each round: the repeat bound stops it
        return {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    if last.get("role") == "tool":
        return f"The result is {_text_of(last)}."
    if last.get("role") == "user" and "calc:" in user_text:
        if "calculator" not in offered:  # like a real model: it can only call what it is offered
            return f"I have no calculator tool. Echo: {user_text}"
        expression = user_text.split("calc:", 1)[1].strip()
        return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]}
    if last.get("role") == "user" and "ask:" in user_text and "ask_user" in offered:
        question = user_text.split("ask:", 1)[1].strip()
        return {"tool_calls": [{"name": "ask_user", "arguments": {"question": question}}]}
    return f"Echo: {user_text}"


def _usage(body: dict, completion_tokens: int) -> dict:
    prompt_tokens = sum(len(tokenize(_text_of(m))) for m in body.get("messages") or [])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _argument_fragments(arguments: str) -> list[str]:
    # Real servers split the arguments JSON across chunks; three pieces exercise the joining.
    step = max(1, len(arguments) // 3)
    return [arguments[i : i + step] for i in range(0, len(arguments), step)] or [""]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # 50 clients connecting at once must not wait on SYN retries

    def handle_error(self, request, client_address):
        # A client that hung up is normal for a streaming server; anything else is a bug here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams, so a dropped connection is detectable
    double: ScriptedOpenAIServer
    timeout = 60

    def setup(self):
        super().setup()
        self.double._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        self.double._track(self.connection, False)

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        if self.path == "/health":
            return self._json(200, {"status": "ok"})
        if self.path == "/v1/models":
            model = {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "hearth-tests"}
            return self._json(200, {"object": "list", "data": [model]})
        self._json(404, {"error": {"message": f"No route {self.path}", "type": "not_found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"No route {self.path}", "type": "not_found"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, {"error": {"message": "Body is not JSON.", "type": "invalid_request_error"}})
        number, reply = self.double._record(body)
        try:
            self._answer(body, number, reply)
        except _DISCONNECTS:
            self.close_connection = True

    # --- replies ---------------------------------------------------------------------------

    def _answer(self, body: dict, number: int, reply) -> None:
        if isinstance(reply, dict) and "status" in reply:
            return self._json(reply["status"], reply.get("body", {"error": {"message": "Scripted error"}}), reply.get("headers"))
        cut_after = None
        tool_calls = []
        faults = {}
        if isinstance(reply, str):
            text = reply
        elif "cut_after_tokens" in reply:
            text, cut_after = reply.get("text", ""), reply["cut_after_tokens"]
        else:
            text = reply.get("text", "")
            faults = {k: v for k, v in reply.items() if k not in ("text", "tool_calls")}
            tool_calls = [
                {
                    "id": f"call_{number}_{i}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call.get("raw_arguments", json.dumps(call.get("arguments", {})))},
                }
                for i, call in enumerate(reply.get("tool_calls", []))
            ]
        if faults.get("hang_seconds"):
            self._wait(faults["hang_seconds"])
        meta = {
            "id": f"chatcmpl-scripted-{number}",
            "created": int(time.time()),
            "model": body.get("model") or MODEL_NAME,
            "system_fingerprint": "scripted",
        }
        if body.get("stream"):
            self._stream(body, meta, tokenize(text), tool_calls, cut_after, faults)
        else:
            self._complete(body, meta, text, tool_calls, cut_after)

    def _complete(self, body, meta, text, tool_calls, cut_after) -> None:
        self._wait(self.double.ttft_seconds)
        message = {"role": "assistant", "content": text or None, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        payload = {
            **meta,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_calls else "stop"}
            ],
            "usage": _usage(body, len(tokenize(text)) + len(tool_calls)),
        }
        data = json.dumps(payload).encode()
        if cut_after is not None:
            # Promise the whole body, send half of it, hang up.
            self._start_response(200, "application/json", {"Content-Length": str(len(data))})
            self.wfile.write(data[: len(data) // 2])
            return self._hang_up()
        self._json(200, payload)

    def _stream(self, body, meta, tokens, tool_calls, cut_after, faults=None) -> None:
        faults = faults or {}
        self._start_response(200, "text/event-stream", {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})

        def chunk(delta: dict, finish_reason=None) -> dict:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**meta, "object": "chat.completion.chunk", "choices": [choice]}

        self._event(chunk({"role": "assistant", "content": "", "refusal": None}))
        self._wait(self.double.ttft_seconds)
        started = time.monotonic()
        sent = 0
        for token in tokens:
            if cut_after is not None and sent >= cut_after:
                return self._hang_up()
            if sent == faults.get("stall_after_tokens"):
                self._stall(faults.get("stall_seconds", 0), faults.get("keepalive", False))
                started -= faults.get("stall_seconds", 0)  # pacing goes on from where it was
            if sent == faults.get("malformed_after_tokens"):
                self._write_chunk(b'data: {"choices": [{"delta": {"content": "unterminated\n\n')
                self._write_chunk(b"")
                return
            self._pace(started, sent)
            self._event(chunk({"content": token}))
            sent += 1
        if cut_after is not None:
            return self._hang_up()
        for i, call in enumerate(tool_calls):
            self._pace(started, sent)
            head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            self._event(chunk({"tool_calls": [head]}))
            for fragment in _argument_fragments(call["function"]["arguments"]):
                self._event(chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}))
            sent += 1
        self._event(chunk({}, "tool_calls" if tool_calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._event({**meta, "object": "chat.completion.chunk", "choices": [], "usage": _usage(body, sent)})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the terminating zero-length chunk

    # --- wire helpers ----------------------------------------------------------------------

    def _pace(self, started: float, sent: int) -> None:
        if self.double.tokens_per_second:
            self._wait(started + sent / self.double.tokens_per_second - time.monotonic())

    def _stall(self, seconds: float, keepalive: bool) -> None:
        if not keepalive:
            return self._wait(seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._write_chunk(b": keep-alive\n\n")  # an SSE comment: bytes, but no event
            self._wait(min(0.2, deadline - time.monotonic()))

    def _wait(self, seconds: float) -> None:
        # An Event wait rather than sleep, so stop() does not wait for slow scripted streams.
        if seconds > 0 and self.double._stopped.wait(seconds):
            raise ConnectionAbortedError("server stopped")

    def _start_response(self, status: int, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._start_response(status, "application/json", {"Content-Length": str(len(data)), **(headers or {})})
        self.wfile.write(data)
        self.wfile.flush()

    def _event(self, payload: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _hang_up(self) -> None:
        # No terminating chunk: the client sees an incomplete body, as when a server dies.
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve scripted OpenAI chat completions (rule mode).")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--tps", type=float, default=None, help="tokens per second (default: unpaced)")
    args = parser.parse_args()
    server = ScriptedOpenAIServer(ttft_seconds=args.ttft, tokens_per_second=args.tps).start(port=args.port)
    print(f"scripted OpenAI server on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
