"""`make run`: prepare the database, then start every process in the Procfile under honcho.

    python -m config.launch                  migrate, seed, start web + worker (+ redis, llm)
    python -m config.launch wait-for-redis   used by the Procfile: return once Redis answers

redis runs only when REDIS_URL is unset and llm only when LLM_BASE_URL is unset; the others
are then used as they are. Once daphne accepts connections a banner prints a one-time login
URL. Ctrl-C (or SIGTERM) stops everything: honcho sends SIGTERM to each process group and
SIGKILL after its 5 s grace (qcluster sometimes hangs on SIGTERM), so a stop is bounded.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
REDIS_WAIT_SECONDS = 30
WEB_WAIT_SECONDS = 60


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
    manager = Manager()
    env = child_env(settings)
    for name in processes(settings):
        manager.add_process(name, procfile.processes[name], env=env, cwd=str(BASE_DIR))
    threading.Thread(target=banner_when_ready, args=(settings,), daemon=True).start()
    manager.loop()
    # 130/143: stopped by Ctrl-C or SIGTERM, which is how `make run` is meant to end.
    return 0 if manager.returncode in (130, 143) else manager.returncode


def banner_when_ready(settings) -> None:
    from django.core.management import call_command

    # Let honcho fork its children first: this thread must hold no lock while it does.
    time.sleep(1)
    deadline = time.monotonic() + WEB_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", settings.PORT), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        print(f"\n!! daphne is not answering on 127.0.0.1:{settings.PORT}; see the web lines above.\n", flush=True)
        return
    out = io.StringIO()
    call_command("login_url", stdout=out)
    rule = "=" * 78
    print(
        f"\n{rule}\n  Hearth is running. Open this one-time link to log in"
        f" (valid {settings.LOGIN_TOKEN_TTL_SECONDS // 60} min):\n\n    {out.getvalue().strip()}\n\n"
        f"  Another link later: make login        Stop: Ctrl-C\n{rule}\n",
        flush=True,
    )


def wait_for_redis() -> int:
    """0 once settings.REDIS_URL answers PING, 1 after REDIS_WAIT_SECONDS."""
    import redis
    from django.conf import settings
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + REDIS_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return 0
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
        time.sleep(0.1)
    print(f"Redis did not answer at {settings.REDIS_URL} within {REDIS_WAIT_SECONDS} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(BASE_DIR))
    if sys.argv[1:] == ["wait-for-redis"]:
        sys.exit(wait_for_redis())
    sys.exit(run())
