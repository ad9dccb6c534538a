"""The real stack for one benchmark: redis-server, daphne and qcluster as subprocesses.

Everything lives in a throw-away directory data/bench-<name>-*: the SQLite file, the Redis
socket, the processes' logs. `Stack.stop()` ends the processes it started (by process group)
and removes the directory, so a benchmark that fails half-way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from config.embedded_redis import redis_start

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
# Settings the benchmark decides itself: a developer's own DATABASE_URL or REDIS_URL must never
# receive benchmark rows or tasks, nor a Telegram bot benchmark messages.
_OWN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "DATA_DIR", "PORT", "PUBLIC_URL", "LOG_LEVEL", "SECRET_KEY")
_OWN_PREFIXES = ("LLM_", "GATEWAY_", "TELEGRAM_")


def bench_env(**settings: str) -> dict[str, str]:
    """This process's environment without the user's own settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in _OWN_SETTINGS and not k.startswith(_OWN_PREFIXES)}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", **settings)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, *, name: str, llm_url: str, workers: int | None = None, broker: str = "redis", extra_env=None):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=BASE_DIR / "data"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/chat/"
        self.redis: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.session_cookie = ""
        self.timings: dict[str, float] = {}  # seconds from start(): redis, migrated, web, worker
        self.env = bench_env(
            DATA_DIR=str(self.dir), REDIS_URL=f"unix://{self.dir / 'redis.sock'}", REDIS_PREFIX=f"bench-{name}",
            LLM_BASE_URL=llm_url, GATEWAY_BROKER=broker, PORT=str(self.port), **(extra_env or {}),
        )
        if workers is not None:
            self.env["GATEWAY_WORKERS"] = str(workers)

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> Stack:
        """Redis, migrate, seed, daphne + qcluster; returns once the web answers and the
        worker says it is running. Records each step's time in `timings` (the cold start)."""
        started = time.monotonic()
        try:
            self.redis = redis_start(self.dir / "redis.sock", self.dir)
            self.timings["redis"] = time.monotonic() - started
            self.manage("migrate", "--no-input")
            self.manage("seed_agents")
            self.timings["migrated"] = time.monotonic() - started
            self.web = self._spawn("web", ["daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"])
            self.worker = self._spawn("worker", [*MANAGE, "worker"])
            self._wait_ready(started, timeout)
            self._log_in()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        """Ends the processes; removes the directory unless `keep_data` (for a restart)."""
        with uninterrupted():
            self._stop(keep_data)

    def _stop(self, keep_data: bool) -> None:
        for proc in (self.web, self.worker):
            _end_group(proc, grace=10.0)
        end_process(self.redis, grace=5.0)
        self.web = self.worker = self.redis = None
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> Stack:
        """Stops and starts again on the same data, as a second `make run` would."""
        self.stop(keep_data=True)
        self.timings = {}
        for log in self.dir.glob("*.log"):
            log.unlink()
        return self.start()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        if argv[0] == "daphne":
            argv = [str(Path(sys.executable).parent / "daphne"), *argv[1:]]
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        # A session of its own: qcluster forks a sentinel, monitor, pusher and workers, and
        # stop() must reach all of them without touching anybody else's processes.
        return subprocess.Popen(argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, started: float, timeout: float) -> None:
        deadline = started + timeout
        while time.monotonic() < deadline:
            for proc in (self.web, self.worker):
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{self.log_tail()}")
            if "web" not in self.timings and answers(f"{self.url}/login/help/"):
                self.timings["web"] = time.monotonic() - started
            if "worker" not in self.timings and b"running." in (self.dir / "worker.log").read_bytes():
                self.timings["worker"] = time.monotonic() - started
            if "web" in self.timings and "worker" in self.timings:
                return
            time.sleep(0.02)
        raise RuntimeError(f"the stack did not start within {timeout:.0f} s:\n{self.log_tail()}")

    def _log_in(self) -> None:
        login_url = self.manage("login_url").strip()  # PUBLIC_URL follows PORT
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(login_url, timeout=10).read()
        self.session_cookie = next(c.value for c in jar if c.name == "sessionid")

    # --- helpers for the benchmarks ---------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([*MANAGE, *args], cwd=BASE_DIR, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)[:60]} failed: {_last_lines(done.stderr)}")
        return done.stdout

    def bench_command(self, module: str, *args: str, timeout: float = 120) -> str:
        """Runs `python -m bench.<module> ARGS` against this stack's database; returns stdout."""
        done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=BASE_DIR, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"bench.{module} {' '.join(args)[:60]} failed: {_last_lines(done.stderr)}")
        return done.stdout

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The stack's processes by role; the worker's entry holds the qcluster parent and all its children."""
        roles = {}
        for role, proc in (("web", self.web), ("worker", self.worker), ("redis", self.redis)):
            if proc is not None and proc.poll() is None:
                parent = psutil.Process(proc.pid)
                roles[role] = [parent, *parent.children(recursive=True)]
        return roles

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.dir.glob("*.log"))
        )


def _last_lines(text: str, count: int = 3) -> str:
    """The end of a traceback: where it failed and the exception."""
    return " / ".join(line.strip() for line in text.strip().splitlines()[-count:])


@contextlib.contextmanager
def uninterrupted():
    """Holds back SIGALRM (python -m bench's hard stop) while processes are being ended, so a
    cleanup is never cut short half-way."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def answers(url: str) -> bool:
    """Whether `url` answers with anything below 500 (llama.cpp says 503 while loading)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def end_process(proc: subprocess.Popen | None, *, grace: float) -> None:
    """SIGTERM to one process, SIGKILL if it is still there after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _end_group(proc: subprocess.Popen | None, *, grace: float) -> None:
    """SIGTERM to the process's own group, SIGKILL after `grace` seconds (qcluster can hang
    in "stopping", platform-facts)."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (workers, sentinel)
    except ProcessLookupError:
        pass
    proc.wait()
