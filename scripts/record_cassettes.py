"""Re-records tests/cassettes/ against the real local model: `make cassettes`.

Starts `python -m config.embedded_llm` on a free loopback port (the model file is assembled
into DATA_DIR/models on first use, as for `make run`), runs tests/agents/test_llm_adapter.py
with LLM_RECORD=1 so every cassette is recorded afresh, then stops the model. Exits with
pytest's exit code. Review `git diff tests/cassettes` before committing: a recording is only
as good as the model's answer that day (the tests assert on it while recording, too).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_start(env: dict) -> subprocess.Popen:
    """The embedded model server, returned once it prints its ready line. Raises RuntimeError if
    it exits first (it gives up by itself when llama.cpp does not answer within 2 minutes)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.embedded_llm"], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True
    )
    for line in proc.stdout:
        print(f"llm | {line}", end="", flush=True)
        if line.startswith("llm ready"):
            return proc
    proc.wait()
    raise RuntimeError("the embedded model did not start; see its output above")


def main() -> int:
    env = {**os.environ, "LLM_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    env.pop("LLM_BASE_URL", None)  # record the embedded model, never an outside backend
    proc = model_start(env)
    try:
        test_env = {**env, "LLM_RECORD": "1", "DATA_DIR": str(BASE_DIR / "data" / "test")}
        return subprocess.call(
            [sys.executable, "-m", "pytest", "-v", "tests/agents/test_llm_adapter.py"], cwd=BASE_DIR, env=test_env
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
