"""The real stack for browser tests: daphne and a qcluster as subprocesses, a scripted model.

They share the pytest-django test database (its name comes from the live connection, so the
SQLite file and a PostgreSQL test_* database both work) and the session's Redis with its
test prefix (tests/conftest.py). Tests use `transactional_db`: the subprocesses must see
what the test writes, and the test must see what they write.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from tests.doubles.openai_server import ScriptedOpenAIServer

BASE_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
# Slow enough that a reply visibly grows over several frames, fast enough for a ~60 s module.
TOKENS_PER_SECOND = 20
START_TIMEOUT_SECONDS = 30


def stack_env(model_url: str) -> dict[str, str]:
    """The environment for a subprocess of the stack: the test database, the session's
    Redis (with its test prefix, already in os.environ) and the model at `model_url`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATA_DIR": str(settings.DATA_DIR),
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "LLM_BASE_URL": model_url,
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_SECONDS": "10",
        "PYTHONUNBUFFERED": "1",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if "postgresql" in db["ENGINE"]:
        auth = f"{quote(db['USER'] or '', safe='')}:{quote(db['PASSWORD'] or '', safe='')}@" if db["USER"] else ""
        host = db["HOST"] or "localhost"
        port = f":{db['PORT']}" if db["PORT"] else ""
        return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"Browser tests do not know how to share a {db['ENGINE']} database.")


@dataclass
class ModelServer:
    """The scripted model, restartable on the same port (the workers keep its URL)."""

    port: int
    server: ScriptedOpenAIServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.server = ScriptedOpenAIServer(ttft_seconds=0.1, tokens_per_second=TOKENS_PER_SECOND).start(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    model: ModelServer
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        """Runs a management command against the stack's database, as a user would."""
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, check=True,
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.logs.glob("*.log"))
        )


def _spawn(stack: Stack, name: str, args: list[str]) -> subprocess.Popen:
    log = (stack.logs / f"{name}.log").open("w")
    # A session of its own, so the qcluster's worker children are stopped with it.
    process = subprocess.Popen(
        args, cwd=BASE_DIR, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.processes.append(process)
    return process


def _wait_for(stack: Stack, what: str, ready) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in stack.processes):
            raise RuntimeError(f"a process exited while waiting for {what}\n{stack.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {START_TIMEOUT_SECONDS} s\n{stack.log_tail()}")


def web_stack(model: ModelServer, logs: Path, **env) -> tuple[Stack, int]:
    """A Stack for daphne on a free port plus a qcluster, answered by `model`; `env` adds to
    or overrides the environment. Start it with `stack_running`."""
    port = _free_port()
    env = {
        **stack_env(model.url),
        "PORT": str(port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_WORKERS": "2",
        "DJANGO_DEBUG": "0",
        **env,
    }
    return Stack(base_url=f"http://127.0.0.1:{port}", env=env, model=model, logs=logs), port


def worker_start(stack: Stack, name: str) -> subprocess.Popen:
    """`manage.py worker` (a qcluster) for `stack`, once it says it is running."""
    log = stack.logs / f"{name}.log"
    process = _spawn(stack, name, [sys.executable, "manage.py", "worker"])
    _wait_for(stack, name, lambda: "running." in log.read_text(errors="replace"))
    return process


@contextlib.contextmanager
def stack_running(stack: Stack, port: int):
    """daphne on `port` and a qcluster for `stack`, both ready, until the block ends; then both
    are stopped, and the stack's model server too."""
    try:
        _spawn(stack, "daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"])
        worker_start(stack, "qcluster")
        _wait_for(stack, "daphne", lambda: _accepts(port))
        yield stack
    finally:
        _stop(stack.processes)
        if stack.model is not None:
            stack.model.stop()


def wait_until(what: str, check, *, timeout: float = 30.0, stack: Stack | None = None):
    """check()'s first truthy value, polled until `timeout`; else fails saying what was awaited
    (with the stack's log tail when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{stack.log_tail(80)}" if stack else ""))


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, 15)
    for process in processes:
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # qcluster sometimes hangs on SIGTERM (see config/launch.py).
            os.killpg(process.pid, 9)
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(django_db_setup, redis_server, tmp_path_factory):
    """daphne + qcluster on the test database, answered by a paced scripted model."""
    model = ModelServer(port=_free_port())
    model.start()
    stack, port = web_stack(model, tmp_path_factory.mktemp("stack"))
    with stack_running(stack, port):
        yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test does it).")
    # Sync Playwright keeps an event loop running in this thread, which makes Django refuse
    # ORM calls as "async unsafe". Nothing runs on that loop but Playwright's own waits, so
    # the test's ORM reads (and pytest-django's flush) are safe.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(stack, browser, transactional_db):
    """A signed-in page on a fresh database with the starter agents. Fails the test on any
    console error or uncaught exception (a CSP violation is one)."""
    from agents.services import agents_seed

    agents_seed()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # The command `make login` runs; its system checks import the whole app, which adds
    # seconds to every test and checks nothing the stack's start did not already.
    page.goto(stack.manage("login_url", "--skip-checks"))
    yield page
    context.close()
    assert not problems, "\n".join(problems)
