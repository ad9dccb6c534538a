"""thread_process, called as a django-q2 worker would call it, with the real queue on Redis."""


import pytest
from django_q.conf import Conf

from agents.models import Run
from agents.services import run_claim_next
from gateway.events import thread_group
from gateway.services import message_submit, run_retry
from gateway.tasks import thread_process
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import RunFactory, ThreadFactory
from tests.group_events import collect_group_events, ends_with
from tests.llm_backend import use_llm_server
from tests.worker import work_off

pytestmark = pytest.mark.django_db


def test_it_runs_the_oldest_queued_run_and_hands_the_next_to_a_new_task(llm_server, task_queue):
    thread = ThreadFactory()
    first = RunFactory(thread=thread, user_message__content="one")
    second = RunFactory(thread=thread, user_message__content="two")

    thread_process(thread.pk)

    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == ("done", "queued")
    assert work_off(task_queue) == ["gateway.tasks.thread_process"]
    second.refresh_from_db()
    assert second.status == "done"
    assert second.started_at >= first.finished_at
    # The second answer was asked with the first one already in the history.
    assert [m["content"] for m in llm_server.requests[1]["messages"][1:]] == ["one", "Echo: one", "two"]


def test_it_does_nothing_while_another_run_of_the_thread_is_running(llm_server, task_queue):
    thread = ThreadFactory()
    running = RunFactory(thread=thread)
    waiting = RunFactory(thread=thread)
    run_claim_next(thread_id=thread.pk)

    thread_process(thread.pk)

    assert Run.objects.get(pk=running.pk).status == "running"
    assert Run.objects.get(pk=waiting.pk).status == "queued"
    assert llm_server.requests == []
    assert task_queue.queue_size() == 0  # the running run's worker enqueues the next one


def test_a_second_delivery_of_the_same_task_finds_nothing_to_do(llm_server, task_queue):
    run = RunFactory()
    thread_process(run.thread_id)

    thread_process(run.thread_id)

    assert len(llm_server.requests) == 1
    assert Run.objects.get(pk=run.pk).attempts == 1
    assert task_queue.queue_size() == 0


def test_the_runs_events_reach_the_thread_group(llm_server, task_queue):
    run = RunFactory(user_message__content="hi there")

    _, events = collect_group_events(
        thread_group(run.thread_id), lambda: thread_process(run.thread_id), until=ends_with("run.finished", "run.failed")
    )

    types = [e["type"] for e in events]
    assert types[:2] == ["run.started", "message.started"]
    assert types[-2:] == ["message.completed", "run.finished"]
    assert "".join(e["delta"] for e in events if e["type"] == "message.streamed") == "Echo: hi there"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {(e["thread"], e["run"]) for e in events} == {(run.thread_id, run.pk)}


@pytest.mark.django_db(transaction=True)
def test_in_sync_mode_submitted_messages_are_answered_through_the_real_task_path(owner, agent, llm_server, monkeypatch):
    # django-q2's sync mode runs each task inside async_task(): the whole path from commit to
    # answer, in this process. Conf is read once at import, hence the patch.
    monkeypatch.setattr(Conf, "SYNC", True)
    first = message_submit(owner=owner, text="one", source="web")
    second = message_submit(owner=owner, text="two", source="web", thread_id=first.thread.pk)

    runs = list(Run.objects.filter(thread=first.thread).order_by("id"))
    assert [(r.user_message.content, r.status) for r in runs] == [("one", "done"), ("two", "done")]
    assert runs[1].started_at >= runs[0].finished_at
    assert list(first.thread.messages.values_list("content", flat=True)) == ["one", "Echo: one", "two", "Echo: two"]
    assert second.run.pk == runs[1].pk


def test_a_retry_after_a_cut_off_answer_asks_the_question_afresh(owner, settings, task_queue):
    script = [{"cut_after_tokens": 2, "text": "Once upon a time"}, "A whole story."]
    with ScriptedOpenAIServer(script=script) as server:
        use_llm_server(settings, server)
        failed = RunFactory(thread__owner=owner, user_message__content="tell me a story")
        thread_process(failed.thread_id)

        retry = run_retry(owner=owner, run_id=failed.pk)
        thread_process(retry.thread_id)

    retry.refresh_from_db()
    assert retry.status == "done"
    assert server.requests[1]["messages"][1:] == [{"role": "user", "content": "tell me a story"}]
    assert list(retry.thread.messages.values_list("content", "status")) == [
        ("tell me a story", "complete"), ("Once upon", "failed"), ("A whole story.", "complete"),
    ]
