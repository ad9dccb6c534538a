"""`make run`: prepare the database, then start every process in the Procfile under honcho.

    python -m config.launch                      migrate, seed, start web + worker (+ redis, llm)
    python -m config.launch after-redis CMD...   (Procfile) run CMD once Redis answers PING

redis runs only when REDIS_URL is unset and llm only when LLM_BASE_URL is unset; the others
are then used as they are. Once daphne (and our model) answer, a banner prints a one-time
login URL. Ctrl-C (or SIGTERM) stops everything: each process gets SIGTERM, and whatever is
left of its process group SIGKILL after STOP_GRACE_SECONDS, so a stop is bounded. The worker
hands its runs in flight back to the queue first (gateway/shutdown.py); the next start goes on
with them.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 8
REDIS_WAIT_SECONDS = 30
WEB_WAIT_SECONDS = 60
LLM_WAIT_SECONDS = 300  # a first start assembles and hashes the 491 MB model


def processes(settings) -> list[str]:
    """The Procfile entries this configuration runs."""
    names = ["web", "worker"]
    if settings.REDIS_URL == f"unix://{settings.REDIS_SOCKET}":
        names.append("redis")
    if settings.LLM_EMBEDDED:
        names.append("llm")
    return names


def child_env(settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # the venv's python and daphne
        DJANGO_SETTINGS_MODULE="config.settings",
        DATA_DIR=str(settings.DATA_DIR),
        PORT=str(settings.PORT),
        PYTHONUNBUFFERED="1",  # honcho reads the output through a pipe
    )
    return env


def run() -> int:
    import django
    import honcho.manager
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_agents")
    connections.close_all()  # honcho forks; children must not share this process's DB socket

    procfile = parse_procfile((BASE_DIR / "Procfile").read_text())
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
    manager = Manager()
    manager._procmgr = StopInOrder(manager)  # honcho 2.0 has no public hook for this
    env = child_env(settings)
    for name in processes(settings):
        manager.add_process(name, procfile.processes[name], env=env, cwd=str(BASE_DIR))
    threading.Thread(target=banner_when_ready, args=(settings,), daemon=True).start()
    manager.loop()
    # 130/143: stopped by Ctrl-C or SIGTERM, which is how `make run` is meant to end.
    return 0 if manager.returncode in (130, 143) else manager.returncode


class StopInOrder:
    """How honcho signals our processes (it replaces honcho's ProcessManager). Two stop hangs,
    both measured with qcluster, are avoided:

    - honcho sends SIGTERM to a whole process group; qcluster's workers then get it directly
      and its parent never finishes stopping. So SIGTERM goes to the leader only (every
      Procfile entry `exec`s its real process, which stops its own children); the SIGKILL
      after the grace still goes to the group.
    - qcluster stopping after Redis is gone retries the broker until it is killed, and the
      worker's runs in flight still need the model and Redis while they finish or hand
      themselves back to the queue (gateway/shutdown.py). So the embedded Redis and the
      embedded model get their SIGTERM once the worker has exited.
    """

    def __init__(self, manager):
        self._processes = manager._processes  # name -> {"pid", "returncode"}, kept by honcho

    def terminate(self, pid: int) -> None:
        if pid in (self._pid("redis"), self._pid("llm")) and self._pid("worker"):
            threading.Thread(target=self._terminate_after_worker, args=(pid,), daemon=True).start()
        else:
            _signal(pid, signal.SIGTERM)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def _terminate_after_worker(self, pid: int) -> None:
        _wait_until(lambda: "returncode" in self._processes["worker"], STOP_GRACE_SECONDS)
        _signal(pid, signal.SIGTERM)

    def _pid(self, name: str) -> int | None:
        return self._processes.get(name, {}).get("pid")


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def banner_when_ready(settings) -> None:
    """Prints the login banner once daphne accepts connections and, when it is ours, the
    model answers /health: a message sent before that would only fail."""
    from django.core.management import call_command

    # Let honcho fork its children first: this thread must hold no lock while it does.
    time.sleep(1)
    if not _wait_until(lambda: _accepts(settings.PORT), WEB_WAIT_SECONDS):
        print(f"\n!! daphne is not answering on 127.0.0.1:{settings.PORT}; see the web lines above.\n", flush=True)
        return
    llm_health = f"http://127.0.0.1:{settings.LLM_PORT}/health"
    if settings.LLM_EMBEDDED and not _wait_until(lambda: _answers_ok(llm_health), LLM_WAIT_SECONDS):
        print("\n!! the local model is not ready; see the llm lines above.\n", flush=True)
    out = io.StringIO()
    call_command("login_url", stdout=out)
    rule = "=" * 78
    print(
        f"\n{rule}\n  Hearth is running. Open this one-time link to log in"
        f" (valid {settings.LOGIN_TOKEN_TTL_SECONDS // 60} min):\n\n    {out.getvalue().strip()}\n\n"
        f"  Another link later: make login        Stop: Ctrl-C\n{rule}\n",
        flush=True,
    )


def _wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:  # URLError, refused, and llama.cpp's 503 while loading
        return False


def after_redis(argv: list[str]) -> int:
    """Replaces this process with `argv` once settings.REDIS_URL answers PING; 1 if it never does."""
    from django.conf import settings

    from config.embedded_redis import redis_ping

    if _wait_until(lambda: redis_ping(settings.REDIS_URL), REDIS_WAIT_SECONDS):
        os.execvp(argv[0], argv)
    print(f"Redis did not answer at {settings.REDIS_URL} within {REDIS_WAIT_SECONDS} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] == ["after-redis"] and sys.argv[2:]:
        sys.exit(after_redis(sys.argv[2:]))
    sys.exit(run())
