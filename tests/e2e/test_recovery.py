"""A real qcluster killed with SIGKILL in the middle of an answer: the app takes the run back
(lease, sweeper, attempt counter) and a new worker finishes it; nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import time

import pytest

from agents.models import Run
from chat.models import Message
from gateway.services import message_submit
from gateway.tasks import runs_sweep
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, UserFactory

from .conftest import Stack, _stop, stack_env, wait_until, worker_start

LEASE_SECONDS = 2
TEXT = " ".join(f"word{n}" for n in range(60))


@pytest.fixture
def workers(transactional_db, redis_server, tmp_path):
    model = ScriptedOpenAIServer(tokens_per_second=15).start()
    env = {**stack_env(model.url), "GATEWAY_LEASE_SECONDS": str(LEASE_SECONDS), "GATEWAY_WORKERS": "1"}
    stack = Stack(base_url="", env=env, model=None, logs=tmp_path)

    def start(name):
        return worker_start(stack, name)

    def kill(process):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        stack.processes.remove(process)

    start.kill = kill
    yield start
    _stop(stack.processes)
    model.stop()


def test_a_worker_killed_mid_stream_is_replaced_and_the_answer_completes_once(workers):
    first = workers("worker-1")
    agent = AgentFactory(slug="assistant", is_default=True, enabled_tools=[])
    submitted = message_submit(owner=UserFactory(), text=TEXT, source="web", agent_slug=agent.slug)
    run = submitted.run
    wait_until("streaming", lambda: Message.objects.filter(run=run, role="assistant", status="streaming").exists())
    time.sleep(1.5)  # tokens are out and checkpointed (every third of the lease)

    workers.kill(first)
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING  # nobody could end it
    time.sleep(LEASE_SECONDS + 0.5)
    assert runs_sweep() == 1  # what the every-minute schedule does
    workers("worker-2")

    run = wait_until("the run to end", lambda: Run.objects.filter(pk=run.pk, status__in=Run.TERMINAL).first())
    assert (run.status, run.stop_reason, run.attempts) == ("done", "answered", 2)
    replies = list(Message.objects.filter(run=run, role="assistant").order_by("id").values_list("status", "content"))
    assert [status for status, _ in replies] == ["failed", "complete"]
    assert replies[1][1] == f"Echo: {TEXT}"
    assert 0 < len(replies[0][1]) < len(replies[1][1])  # the broken-off part the user saw, kept
    assert Message.objects.filter(thread=run.thread, role="user").count() == 1
    assert Run.objects.filter(thread=run.thread).count() == 1
