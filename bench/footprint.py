"""Idle memory of each process, and how long the stack takes to come up."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .figures import Row
from .memory import MB, by_role
from .stack import BASE_DIR, bench_env, free_port, uninterrupted

IDLE_TARGET_BYTES = 300 * MB
COLD_START_TARGET_SECONDS = 5.0
SETTLE_SECONDS = 2.0  # lets start-up garbage be collected and the first stats be written


def idle_rows(stack, *, section: str, label: str, judged: bool = True) -> list[Row]:
    """Memory of each role once the stack has settled. `judged=False` for configurations the
    target is not about (e.g. 50 workers): the figures are then context."""
    time.sleep(SETTLE_SECONDS)
    roles = by_role(stack)
    whole = roles.pop("whole stack")
    rows = [Row(section, f"idle {label}: {role}", usage.text()) for role, usage in roles.items()]
    target = "≤ 300 MB" if judged else ""
    rows += [
        Row(section, f"idle {label}: whole stack without the LLM, RSS summed", f"{whole.rss / MB:,.0f} MB",
            target, whole.rss <= IDLE_TARGET_BYTES if judged else None,
            "counts the workers' shared copy-on-write pages once per process"),
        Row(section, f"idle {label}: whole stack without the LLM, PSS summed", f"{whole.pss / MB:,.0f} MB",
            target, whole.pss <= IDLE_TARGET_BYTES if judged else None, "what the processes really take from the machine"),
    ]
    return rows


def start_rows(timings: dict[str, float], *, section: str, label: str) -> list[Row]:
    """`timings` from Stack.start(): seconds from the start to each step being done.

    Judged against the target only while there is no config/launch.py: once `make run` has
    its launcher, its own time to the login URL (launch_rows) is the figure the target is
    about, and this one (migrate and seed_agents as two processes, and waiting for the
    worker too) is the breakdown."""
    ready = max(timings["web"], timings["worker"])
    steps = (f"redis {timings['redis']:.2f} s, migrate + seed_agents done {timings['migrated']:.1f} s, "
             f"web answering {timings['web']:.1f} s, worker running {timings['worker']:.1f} s")
    judged = not (BASE_DIR / "config" / "launch.py").exists()
    return [Row(section, f"{label}: start to web answering and worker running", f"{ready:.1f} s",
                f"≤ {COLD_START_TARGET_SECONDS:.0f} s" if judged else "", ready <= COLD_START_TARGET_SECONDS if judged else None, steps)]


def launch_rows(llm_url: str, *, section: str, timeout: float = 60.0) -> list[Row]:
    """`python -m config.launch` (what `make run` runs once installed), twice on one data dir:
    seconds until it prints the login URL, on fresh data and again on existing data."""
    if not (BASE_DIR / "config" / "launch.py").exists():
        return [Row(section, "make run to the login URL", "skipped: config/launch.py does not exist yet")]
    data = tempfile.mkdtemp(prefix="bench-launch-", dir=BASE_DIR / "data")
    try:
        rows = []
        for label in ("fresh data dir", "existing data"):
            seconds = _launch_until_login_url(bench_env(DATA_DIR=data, PORT=str(free_port()), LLM_BASE_URL=llm_url), timeout)
            rows.append(Row(section, f"`python -m config.launch` to the login URL, {label}",
                            f"{seconds:.1f} s" if seconds else f"no login URL within {timeout:.0f} s",
                            f"≤ {COLD_START_TARGET_SECONDS:.0f} s", seconds is not None and seconds <= COLD_START_TARGET_SECONDS,
                            "starts redis, migrates, seeds, then web and worker under honcho"))
        return rows
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _launch_until_login_url(env: dict[str, str], timeout: float) -> float | None:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "config.launch"], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    # Drained to the end in a thread, so honcho never blocks on a full pipe.
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        while (left := started + timeout - time.monotonic()) > 0:
            try:
                if "/login/?token=" in lines.get(timeout=left):
                    return time.monotonic() - started
            except queue.Empty:
                break
        return None
    finally:
        with uninterrupted():
            # honcho passes SIGTERM on to its children and SIGKILLs them after its grace.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
