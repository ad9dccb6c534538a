"""A worker that is stopping hands its runs back instead of leaving them running: the run is
queued again at once (its start not counted), what was streamed is kept and marked failed,
and the next worker goes on from the stored history. Real Redis queue and channel layer,
real HTTP model server double; the stop is set the way the worker's stop watcher sets it."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.signing import SignedPackage

from agents.models import Run
from agents.recorder import INTERRUPTED_RESULT, RunRecorder
from agents.services import run_claim_next
from chat.models import Message
from gateway import shutdown
from gateway.events import thread_group
from gateway.tasks import thread_process, threads_wake
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, RunFactory, ThreadFactory
from tests.group_events import collect_group_events, ends_with
from tests.llm_backend import use_llm_server
from tests.worker import work_off

pytestmark = pytest.mark.django_db
TEXT = " ".join(f"word{n}" for n in range(40))


@pytest.fixture(autouse=True)
def _not_stopping():
    shutdown.stop_reset()
    yield
    shutdown.stop_reset()


def _stop_once_streaming(server: ScriptedOpenAIServer, after_seconds: float, grace_over: bool = True) -> threading.Thread:
    """Starts the stop (as the worker's stop watcher does) once the model has been asked and
    `after_seconds` have passed; with `grace_over`, as if the stop had come a grace earlier."""

    def stop():
        deadline = time.monotonic() + 10
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(after_seconds)
        shutdown.stop_begin(at=time.monotonic() - (shutdown.RUN_GRACE_SECONDS if grace_over else 0))

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def test_a_run_streaming_when_its_worker_stops_is_queued_again_and_the_next_worker_finishes_it(settings, task_queue):
    run = RunFactory(user_message__content=TEXT, agent=AgentFactory(slug="assistant", enabled_tools=[]))
    with ScriptedOpenAIServer(tokens_per_second=40) as server:
        use_llm_server(settings, server)
        _stop_once_streaming(server, after_seconds=0.3)

        _, events = collect_group_events(
            thread_group(run.thread_id), lambda: thread_process(run.thread_id), until=ends_with("run.queued")
        )

        run.refresh_from_db()
        assert (run.status, run.lease_expires_at, run.attempts, run.error) == ("queued", None, 0, "")
        partial = Message.objects.get(run=run, role="assistant")
        assert partial.status == "failed"
        assert 0 < len(partial.content) < len(f"Echo: {TEXT}") and f"Echo: {TEXT}".startswith(partial.content)
        types = [e["type"] for e in events]
        assert types[:2] == ["run.started", "message.started"] and "message.streamed" in types
        assert (types[-1], events[-1]["seq"]) == ("run.queued", 0)
        assert not {"run.failed", "run.finished", "message.completed"} & set(types)

        shutdown.stop_reset()  # the next worker
        assert work_off(task_queue) == ["gateway.tasks.thread_process"]

    run.refresh_from_db()
    assert (run.status, run.stop_reason, run.attempts) == ("done", "answered", 1)
    replies = list(Message.objects.filter(run=run, role="assistant").order_by("id").values_list("status", "content"))
    assert replies == [("failed", partial.content), ("complete", f"Echo: {TEXT}")]
    assert Message.objects.filter(thread=run.thread, role="user").count() == 1
    # The broken-off text was not sent back to the model as the start of its answer.
    assert server.requests[1]["messages"][-1] == {"role": "user", "content": TEXT}


def test_a_run_that_finishes_within_the_grace_is_not_interrupted(settings, task_queue):
    run = RunFactory(user_message__content="hello there")
    with ScriptedOpenAIServer(ttft_seconds=0.3) as server:
        use_llm_server(settings, server)
        _stop_once_streaming(server, after_seconds=0, grace_over=False)

        thread_process(run.thread_id)

    assert shutdown.stopping()
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("done", 1)
    assert Message.objects.get(run=run, role="assistant").content == "Echo: hello there"


def test_a_task_that_starts_once_its_worker_is_stopping_claims_nothing(llm_server, task_queue):
    run = RunFactory()
    shutdown.stop_begin()

    thread_process(run.thread_id)

    run.refresh_from_db()
    assert (run.status, run.attempts) == ("queued", 0)
    assert llm_server.requests == []


def test_release_answers_tool_calls_under_way_and_counts_the_rounds_done():
    run = RunFactory(agent=AgentFactory(enabled_tools=["calculator", "write_file"]))
    run = run_claim_next(thread_id=run.thread_id)
    recorder = RunRecorder(run, lambda event, data: None)
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}},
        {"id": "c2", "type": "function", "function": {"name": "write_file", "arguments": '{"path": "n.txt"}'}},
    ]
    recorder("message.started", {})
    recorder("message.completed", {"content": "", "tool_calls": calls, "finish_reason": "tool_calls"})
    recorder("tool.called", {"call_id": "c1", "name": "calculator", "arguments": calls[0]["function"]["arguments"]})
    recorder("tool.called", {"call_id": "c2", "name": "write_file", "arguments": calls[1]["function"]["arguments"]})
    recorder("tool.finished", {"call_id": "c1", "name": "calculator", "content": "2", "is_error": False, "duration_ms": 1})

    released = recorder.release()

    assert (released.status, released.attempts, released.rounds, released.lease_expires_at) == ("queued", 0, 1, None)
    results = dict(Message.objects.filter(run=run, role="tool").values_list("tool_call_id", "content"))
    assert results == {"c1": "2", "c2": INTERRUPTED_RESULT}
    assert not Message.objects.filter(run=run, status="streaming").exists()


def test_release_leaves_a_run_that_already_ended_alone():
    run = RunFactory(status=Run.Status.DONE, attempts=1)
    recorder = RunRecorder(run, lambda event, data: None)

    assert recorder.release().status == "done"
    assert Run.objects.get(pk=run.pk).attempts == 1


def _queued_threads(queue) -> list[int]:
    threads = []
    while queue.queue_size():
        task = SignedPackage.loads(queue.dequeue()[0][1])
        assert task["func"] == "gateway.tasks.thread_process"
        threads.append(task["args"][0])
    return sorted(threads)


def test_threads_wake_wakes_threads_whose_queued_run_lost_its_task_and_takes_back_expired_leases(task_queue):
    lost = RunFactory()  # queued, but its task is gone (e.g. the embedded Redis restarted)
    behind_running = RunFactory(thread=RunFactory(status=Run.Status.RUNNING, lease_expires_at=timezone.now() + timedelta(minutes=1)).thread)
    behind_question = RunFactory(thread=RunFactory(status=Run.Status.WAITING, waiting_call_id="q").thread)
    past = timezone.now() - timedelta(seconds=1)
    cut_loose = RunFactory(status=Run.Status.RUNNING, attempts=1, started_at=past, lease_expires_at=past)
    ThreadFactory()  # nothing to do

    assert threads_wake() == 2

    assert Run.objects.get(pk=cut_loose.pk).status == "queued"
    assert set(_queued_threads(task_queue)) == {lost.thread_id, cut_loose.thread_id}
    assert Run.objects.get(pk=behind_running.pk).status == Run.objects.get(pk=behind_question.pk).status == "queued"
