"""django-q2 tasks. Stable dotted paths: queued tasks and schedules point at them by name.

A task takes ids, claims its work with a conditional update, and is safe to deliver twice.
"""

from __future__ import annotations

import functools

from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from agents.models import Run
from agents.services import (
    run_claim_next,
    run_execute,
    run_has_queued,
    run_queued_thread_ids,
    runs_recover,
)

from . import shutdown
from .events import RunPublisher, publish_run_expired, publish_run_queued


def thread_enqueue(thread_id: int) -> None:
    """Asks a worker to process the thread's queue. Call on commit, never inside a transaction."""
    async_task(
        "gateway.tasks.thread_process", thread_id, task_name=f"thread-{thread_id}", group="runs", broker=_broker()
    )


@functools.cache
def _broker() -> Broker:
    # One broker (one Redis connection pool) per process: without it django-q2 connects
    # anew for every enqueue, a few milliseconds on each message's path to a worker.
    return get_broker()


def thread_process(thread_id: int) -> None:
    """Runs the thread's oldest queued run, then hands the rest of the queue to a new task.

    Does nothing if a run of this thread is already running: that worker enqueues the next
    one when it ends, so runs of one thread go one at a time, in order. Does nothing either
    once this worker is stopping (gateway.shutdown): the run stays queued for the next
    worker. A run the stop hands back (released) is announced as queued again.
    """
    with shutdown.task_running():
        if shutdown.stopping():
            return
        run = run_claim_next(thread_id=thread_id)
        if run is None:
            return
        publisher = RunPublisher(thread_id=thread_id, run_id=run.pk, source=run.source)
        try:
            with shutdown.run_in_flight(run.pk):
                run = run_execute(run=run, publish=shutdown.interruptible(publisher))
        finally:
            publisher.close()
        if run.status == Run.Status.QUEUED:
            publish_run_queued(run)
        if run_has_queued(thread_id=thread_id):
            thread_enqueue(thread_id)


def runs_sweep() -> int:
    """Takes back runs whose worker died (expired lease): re-queues them (up to
    GATEWAY_MAX_ATTEMPTS starts) or fails them visibly, and wakes their threads.

    Scheduled every minute (gateway/migrations/0001). Returns how many runs it took back.
    """
    requeued, failed = runs_recover()
    for run in requeued:
        publish_run_queued(run)
    for run in failed:
        publish_run_expired(run)
    for thread_id in {run.thread_id for run in requeued + failed}:
        if run_has_queued(thread_id=thread_id):
            thread_enqueue(thread_id)
    return len(requeued) + len(failed)


def threads_wake() -> int:
    """Takes back what a stop or a crash left behind, and wakes every thread that has a run
    to answer: expired leases first (runs_sweep), then each thread with a queued run and
    none running, whose task may have been lost (tasks a stopped worker had already taken
    off the broker, or the Redis broker's tasks in a killed worker). A thread whose task is
    in fact still queued gets a second one, which finds nothing to claim.

    Enqueued by `manage.py worker` when it starts. Returns how many threads it woke.
    """
    runs_sweep()
    thread_ids = run_queued_thread_ids()
    for thread_id in thread_ids:
        thread_enqueue(thread_id)
    return len(thread_ids)
