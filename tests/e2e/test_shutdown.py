"""A real `manage.py worker` stopped with SIGTERM in the middle of an answer: it and every
process it forked exit within a bound, its run is queued again at once (not left running
until its lease expires), and the next worker finishes it: one user message, one complete
answer. Also a run still waiting for the model's first token (cut loose, swept at once), and
a SIGTERM aimed at one worker process (that process alone stops; the cluster goes on)."""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

from agents.models import Run
from chat.models import Message
from gateway import shutdown
from gateway.services import message_submit
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, UserFactory

from .conftest import Stack, _stop, stack_env, wait_until, worker_start

TEXT = " ".join(f"word{n}" for n in range(80))
# qcluster's own stop after its workers: its pusher's last 1 s poll, its monitor; a margin.
QCLUSTER_STOP_SECONDS = 3


@pytest.fixture
def workers(transactional_db, redis_server, tmp_path):
    model = ScriptedOpenAIServer(tokens_per_second=15).start()  # 80 words: over 5 s of streaming
    env = {**stack_env(model.url), "GATEWAY_WORKERS": "2"}
    stack = Stack(base_url="", env=env, model=None, logs=tmp_path)

    def start(name):
        return worker_start(stack, name)

    def stop(process, *, group: bool, within: float) -> float:
        """SIGTERM to the qcluster process or its whole group; asserts that it and every
        process it forked are gone `within` seconds; returns how long it took."""
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        stopped_at = time.monotonic()
        if group:  # what systemd does by default
            os.killpg(process.pid, signal.SIGTERM)
        else:  # what honcho (config/launch.py) and `kill PID` do
            os.kill(process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=within)
        took = time.monotonic() - stopped_at
        assert not alive, f"still running {took:.1f} s after SIGTERM: {alive}\n{stack.log_tail(80)}"
        process.wait(timeout=1)
        stack.processes.remove(process)
        return took

    start.stop, start.stack, start.model = stop, stack, model
    yield start
    _stop(stack.processes)
    model.stop()


def _submit():
    agent = AgentFactory(slug="assistant", is_default=True, enabled_tools=[])
    return message_submit(owner=UserFactory(), text=TEXT, source="web", agent_slug=agent.slug).run


@pytest.mark.parametrize("group", [False, True], ids=["SIGTERM to qcluster", "SIGTERM to its process group"])
def test_a_worker_stopped_mid_stream_hands_the_run_back_and_the_next_worker_finishes_it(workers, group):
    first = workers("worker-1")
    run = _submit()
    wait_until("streaming", lambda: Message.objects.filter(run=run, role="assistant", status="streaming").exists(), stack=workers.stack)
    time.sleep(0.5)

    workers.stop(first, group=group, within=shutdown.RUN_GRACE_SECONDS + QCLUSTER_STOP_SECONDS)

    run.refresh_from_db()
    assert (run.status, run.lease_expires_at, run.attempts) == ("queued", None, 0), workers.stack.log_tail()
    partial = Message.objects.get(run=run, role="assistant")
    assert partial.status == "failed" and partial.content and f"Echo: {TEXT}".startswith(partial.content)

    workers("worker-2")

    run = wait_until("the run to end", lambda: Run.objects.filter(pk=run.pk, status__in=Run.TERMINAL).first(), stack=workers.stack)
    assert (run.status, run.stop_reason, run.attempts) == ("done", "answered", 1)
    replies = list(Message.objects.filter(run=run, role="assistant").order_by("id").values_list("status", "content"))
    assert replies == [("failed", partial.content), ("complete", f"Echo: {TEXT}")]
    assert Message.objects.filter(thread=run.thread, role="user").count() == 1
    assert Run.objects.filter(thread=run.thread).count() == 1


def test_a_run_still_waiting_for_the_model_is_cut_loose_and_taken_back_at_once(workers):
    workers.model.ttft_seconds = 60  # the first token would come long after any stop
    first = workers("worker-1")
    run = _submit()
    wait_until("the model request", lambda: workers.model.requests, stack=workers.stack)

    workers.stop(first, group=False, within=shutdown.STOP_LIMIT_SECONDS + QCLUSTER_STOP_SECONDS)

    # Not left running until its lease (the model timeout plus a minute) expires: the stopped
    # worker's parent swept it once its workers were gone. It counts as a crashed start.
    run.refresh_from_db()
    assert (run.status, run.lease_expires_at, run.attempts) == ("queued", None, 1), workers.stack.log_tail()
    workers.model.ttft_seconds = 0
    workers("worker-2")

    run = wait_until("the run to end", lambda: Run.objects.filter(pk=run.pk, status__in=Run.TERMINAL).first(), stack=workers.stack)
    assert (run.status, run.attempts) == ("done", 2)
    replies = list(Message.objects.filter(run=run, role="assistant").order_by("id").values_list("status", "content"))
    assert replies == [("failed", ""), ("complete", f"Echo: {TEXT}")]


def test_a_sigterm_to_one_worker_process_hands_its_run_to_the_cluster_which_goes_on(workers):
    cluster = workers("worker-1")
    run = _submit()
    wait_until("streaming", lambda: Message.objects.filter(run=run, role="assistant", status="streaming").exists(), stack=workers.stack)
    log = (workers.stack.logs / "worker-1.log").read_text()
    name = re.search(rf"(Process-\w+) processing thread-{run.thread_id} ", log).group(1)
    pid = int(re.search(rf"{name} ready for work at (\d+)", log).group(1))

    os.kill(pid, signal.SIGTERM)

    # That process alone stops: its run goes back to the queue and the cluster (a sibling, or
    # the process qcluster starts in its place) answers it.
    run = wait_until("the run to end", lambda: Run.objects.filter(pk=run.pk, status__in=Run.TERMINAL).first(), stack=workers.stack)
    assert not psutil.pid_exists(pid) and cluster.poll() is None
    assert (run.status, run.attempts) == ("done", 1)
    replies = list(Message.objects.filter(run=run, role="assistant").order_by("id").values_list("status", "content"))
    assert [s for s, _ in replies] == ["failed", "complete"] and replies[1][1] == f"Echo: {TEXT}"
    second = _submit()
    assert wait_until("another answer", lambda: Run.objects.filter(pk=second.pk, status="done").exists(), stack=workers.stack)
