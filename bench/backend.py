"""The scripted model server (tests/doubles) in a process of its own, steered over stdin.

A process of its own so that it does not share a GIL with the benchmark's clients: a stream
of 2 000 tokens costs the server real CPU, and the figures should show the pipeline's cost,
not the two fighting over one interpreter. Without a script it answers "Echo: <text>".

    python -m bench.backend          prints its URL, then reads one command a line:
      pace TTFT_SECONDS TOKENS_PER_SECOND|none   answers "ok"
      arrivals                                   answers a JSON list of [time, text] per request
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.doubles.openai_server import ScriptedOpenAIServer, _text_of


class TimedServer(ScriptedOpenAIServer):
    """Also records when each request arrived (wall clock) and its last user text."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, str]] = []

    def _record(self, body):
        arrived = time.time()
        messages = body.get("messages") or []
        user_text = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        with self._lock:
            self.arrivals.append((arrived, user_text[:80]))
        return super()._record(body)


def main() -> None:
    server = TimedServer().start()
    print(server.url, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "pace":
            server.ttft_seconds = float(args[0])
            server.tokens_per_second = None if args[1] == "none" else float(args[1])
            print("ok", flush=True)
        elif command == "arrivals":
            with server._lock:
                print(json.dumps(server.arrivals), flush=True)
    server.stop()


class Backend:
    """The parent's handle on `python -m bench.backend`."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the scripted model server did not start")

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def pace(self, *, ttft_seconds: float, tokens_per_second: float | None) -> None:
        self._ask(f"pace {ttft_seconds} {tokens_per_second or 'none'}")

    def arrivals(self) -> dict[str, float]:
        """When the request for each user text (its first 80 characters) arrived; the last one wins."""
        return {text: at for at, text in json.loads(self._ask("arrivals"))}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # main() ends at EOF
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    main()
