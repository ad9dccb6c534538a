"""`python -m config.launch` (what `make run` runs) stopped by SIGTERM, as Ctrl-C stops it:
every process it started is gone within a bound, and the answer that was being written goes
back to the queue and is finished by the next start. Its own data dir (SQLite, the embedded
Redis), a scripted model in this process."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from config.launch import STOP_GRACE_SECONDS
from tests.doubles.openai_server import ScriptedOpenAIServer

BASE_DIR = Path(__file__).resolve().parent.parent
TEXT = " ".join(f"word{n}" for n in range(60))
# honcho's SIGKILL comes STOP_GRACE_SECONDS after the first process has exited; a margin.
STOP_BOUND_SECONDS = STOP_GRACE_SECONDS + 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Launch:
    """One `python -m config.launch` with its output read in a thread (honcho must never
    block on a full pipe)."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.launch"], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_login_url(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if "/login/?token=" in self.lines.get(timeout=left):
                    return
            except queue.Empty:
                break
        raise AssertionError("no login URL:\n" + "".join(self.output[-60:]))

    def family(self) -> list[psutil.Process]:
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to whatever of it is left: honcho starts each process in a
        session of its own, so no process group holds them all."""
        if self.process.poll() is not None:
            return
        family = self.family()
        self.process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=STOP_BOUND_SECONDS)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def launch_env(tmp_path):
    model = ScriptedOpenAIServer(tokens_per_second=15).start()  # 60 words: 4 s of streaming
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATA_DIR=str(tmp_path), PORT=str(_free_port()), LLM_BASE_URL=model.url, LLM_MAX_RETRIES="0",
        GATEWAY_WORKERS="1", DJANGO_SETTINGS_MODULE="config.settings",
    )
    launches: list[Launch] = []

    def start() -> Launch:
        launches.append(Launch(env))
        launches[-1].wait_for_login_url()
        return launches[-1]

    start.model, start.env, start.db = model, env, tmp_path / "db.sqlite3"
    yield start
    for launch in launches:
        launch.stop()
    model.stop()


def _submit(env: dict[str, str]) -> int:
    code = (
        "from chat.login import owner_get; from gateway.services import message_submit; "
        f"print(message_submit(owner=owner_get(), text={TEXT!r}, source='web').run.pk)"
    )
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.split()[-1])


def _run_row(db: Path, run_id: int) -> tuple:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT status, attempts, lease_expires_at FROM agents_run WHERE id = ?", (run_id,)).fetchone()


def _replies(db: Path, run_id: int) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT status, content FROM chat_message WHERE run_id = ? AND role = 'assistant' ORDER BY id", (run_id,)
        ).fetchall()


def test_sigterm_ends_every_process_in_time_and_the_next_start_finishes_the_answer(launch_env):
    first = launch_env()
    run_id = _submit(launch_env.env)
    deadline = time.monotonic() + 30
    while not launch_env.model.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # streaming
    family = first.family()
    names = {" ".join(p.cmdline()) for p in family}
    assert any("daphne" in n for n in names) and any("embedded_redis" in n for n in names)

    stopped_at = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=STOP_BOUND_SECONDS)
    took = time.monotonic() - stopped_at

    assert not alive, f"still running {took:.1f} s after SIGTERM: {alive}\n" + "".join(first.output[-60:])
    assert first.process.wait(1) == 0
    assert "SIGKILL" not in "".join(first.output)  # every process stopped on its own, none was killed
    status, attempts, lease = _run_row(launch_env.db, run_id)
    assert (status, attempts, lease) == ("queued", 0, None), "".join(first.output[-60:])

    second = launch_env()
    deadline = time.monotonic() + 30
    while _run_row(launch_env.db, run_id)[0] != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _run_row(launch_env.db, run_id)[:2] == ("done", 1), "".join(second.output[-60:])
    replies = _replies(launch_env.db, run_id)
    assert [s for s, _ in replies] == ["failed", "complete"] and replies[1][1] == f"Echo: {TEXT}"
