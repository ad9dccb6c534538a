"""A worker's orderly stop: each run in flight finishes within a short grace or goes back to
the queue at once, instead of staying `running` until its lease runs out.

What django-q2 1.11 does by itself: `qcluster`'s parent process handles SIGTERM and SIGINT
by setting its sentinel's stop event; the sentinel stops its pusher, puts one "STOP" in the
local task queue per worker process and then waits, with no limit, for every worker process
to finish the task it is running. The worker processes are never told: they ignore SIGINT
(Ctrl-C in a terminal reaches them too) and a supervisor sends SIGTERM to the parent only
(config/launch.py). A run can take minutes, so the supervisor's SIGKILL ended it, and the
sweeper took it back only once its lease had expired (the model timeout plus a minute).

So `manage.py worker` creates one stop flag before qcluster forks (a number in shared
memory, inherited by every process it forks: when the stop was asked for) and sets it when
the parent is asked to stop. In each worker process:

- a task that starts after the stop claims nothing (its run stays queued; the worker
  command wakes that thread once the cluster has stopped);
- a run in flight goes on for RUN_GRACE_SECONDS: it may well finish;
- after that, the next step the run stores raises RunInterrupted (`interruptible` wraps the
  task's publish), and the run service releases the run (RunRecorder.release): queued again
  with the start not counted, partial text kept and marked failed, tool calls under way
  answered as interrupted. The task announces run.queued and enqueues the thread again, so
  the next worker goes on with it at once;
- a run still in flight STOP_LIMIT_SECONDS after the stop has stored no step since its grace
  ended: it waits on the model's first token, or on a slow tool, and cannot be stopped
  between two steps. A watcher thread (started by `process_started`, on django-q2's
  post_spawn signal) then cuts its lease to now and ends the process. The stopped worker's
  parent sweeps once its cluster is down, so the run is queued again at once, as a crashed
  worker's run is (that start counts), instead of after the lease.

A SIGTERM sent to a worker process itself (a whole process group signalled, as systemd does)
starts the same stop in that process alone; it then exits once its run is finished or
released, as it would have at once without a run.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import timezone

from agents.models import Run
from agents.recorder import Publish, RunInterrupted

log = logging.getLogger(__name__)

RUN_GRACE_SECONDS = 2.0
# From the stop; below config/launch.py's STOP_GRACE_SECONDS (8), with room for qcluster's
# own stop (its pusher's last 1 s BLPOP, then its monitor) before the supervisor's SIGKILL.
STOP_LIMIT_SECONDS = 4.0
# The loop's steps: after each one is stored, a stopping worker may hand the run back.
STEP_EVENTS = frozenset({"message.started", "message.streamed", "message.completed", "tool.called", "tool.finished"})

WATCH_SECONDS = 0.1

# When the stop was asked for (time.monotonic(), one clock for all processes on Linux), 0 until
# then; shared by the qcluster parent and every process it forks. Not a multiprocessing.Event:
# its lock can be left held by a process that dies (a worker ends on its SIGTERM), and every
# later set() would then hang.
_stop_flag = None
# Per process (each forked worker has its own copy):
_stopping_since: float | None = None  # the stop as this process knows it (monotonic)
_run_in_flight: int | None = None  # the run this process's main thread is executing
_in_task = False
_exit_after_task = False


def stop_flag_create() -> None:
    """In the qcluster parent, before it forks: the flag every worker process will watch."""
    global _stop_flag
    _stop_flag = multiprocessing.get_context("fork").RawValue(ctypes.c_double, 0.0)


def stop_request() -> None:
    """Tells every worker process that the cluster is stopping (a plain store in shared
    memory: safe in a signal handler, whatever the other processes are doing)."""
    if _stop_flag is not None and not _stop_flag.value:
        _stop_flag.value = time.monotonic()


def process_started(**kwargs) -> None:
    """django-q2's post_spawn receiver, run in each new worker process: watches the stop
    flag, and takes a SIGTERM aimed at this process as a stop too."""
    if _stop_flag is None:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_watch, name="stop-watcher", daemon=True).start()


def stopping() -> bool:
    return _stop_time() is not None


def _stop_time() -> float | None:
    """When this process's stop began (monotonic), or None: its own SIGTERM, or the cluster's."""
    if _stopping_since is not None:
        return _stopping_since
    if _stop_flag is not None and _stop_flag.value:
        return _stop_flag.value
    return None


def stop_begin(at: float | None = None) -> None:
    """Marks this process as stopping since `at` (monotonic; default now)."""
    global _stopping_since
    if _stopping_since is None:
        _stopping_since = time.monotonic() if at is None else at


def stop_reset() -> None:
    """Forgets a stop (tests run tasks in their own process)."""
    global _stopping_since, _exit_after_task
    _stopping_since, _exit_after_task = None, False


def interruptible(publish: Publish) -> Publish:
    """`publish`, then RunInterrupted after any step once the stop's grace is over."""

    def publish_then_check(event_type: str, data: dict) -> None:
        publish(event_type, data)
        since = _stop_time()
        if event_type in STEP_EVENTS and since is not None and time.monotonic() - since >= RUN_GRACE_SECONDS:
            raise RunInterrupted

    return publish_then_check


@contextmanager
def task_running() -> Iterator[None]:
    """Around a task: a SIGTERM that arrives meanwhile lets the task end first; the process
    exits after it."""
    global _in_task
    _in_task = True
    try:
        yield
    finally:
        _in_task = False
    if _exit_after_task:
        _exit_like_sigterm()


@contextmanager
def run_in_flight(run_id: int) -> Iterator[None]:
    """Around the execution of a run: the watcher knows which run to cut loose if it must."""
    global _run_in_flight
    _run_in_flight = run_id
    try:
        yield
    finally:
        _run_in_flight = None


def _watch() -> None:
    while (since := _stop_time()) is None:
        time.sleep(WATCH_SECONDS)
    run_id = _run_in_flight
    if run_id is not None:
        log.info("stopping: run %s has %g s to finish, then goes back to the queue", run_id, RUN_GRACE_SECONDS)
    time.sleep(max(0.0, since + STOP_LIMIT_SECONDS - time.monotonic()))
    run_id = _run_in_flight
    if run_id is None:
        return
    # The main thread is blocked (model or tool) and may wake at any moment, so this thread
    # must not write the run's steps: only the lease, which then tells the sweeper the run
    # is free. Exiting right after leaves no window for the main thread to write more.
    Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(lease_expires_at=timezone.now())
    log.warning("stopping: run %s stored no step within %g s; its lease is cut, the sweeper takes it back", run_id, STOP_LIMIT_SECONDS)
    os._exit(0)


def _on_sigterm(signum, frame) -> None:
    # This process only: a SIGTERM sent to one worker process must not stop its siblings.
    # (A whole process group signalled gives each its own; the parent sets the shared flag.)
    global _exit_after_task
    stop_begin()
    if not _in_task:
        _exit_like_sigterm()
    _exit_after_task = True


def _exit_like_sigterm() -> None:
    # What the signal would have done without our handler: end the process, status -SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
