"""Runs whose worker died: the sweeper takes them back (re-queue up to the attempt cap, or a
visible failure), and the re-run goes on from the stored history without running a tool
call twice. Real Redis queue, real HTTP model server double."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Run
from agents.recorder import INTERRUPTED_RESULT
from chat.models import Message
from gateway.events import thread_group
from gateway.tasks import runs_sweep
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, MessageFactory, RunFactory
from tests.group_events import collect_group_events, ends_with
from tests.llm_backend import use_llm_server
from tests.worker import work_off

pytestmark = pytest.mark.django_db


def _died_mid_tool(*, attempts=1, **run_fields) -> Run:
    """A run as a SIGKILLed worker leaves it: running, lease past, one tool call answered,
    a second (a file write) under way, and nothing after."""
    past = timezone.now() - timedelta(seconds=5)
    run = RunFactory(
        status=Run.Status.RUNNING, attempts=attempts, started_at=past, lease_expires_at=past,
        user_message__content="save the note", **run_fields,
    )
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}},
        {"id": "c2", "type": "function", "function": {"name": "write_file", "arguments": '{"path": "n.txt", "content": "x"}'}},
    ]
    turn = run.user_message.turn
    MessageFactory(thread=run.thread, run=run, turn=turn, role="assistant", content="", tool_calls=calls)
    MessageFactory(thread=run.thread, run=run, turn=turn, role="tool", tool_call_id="c1", tool_name="calculator", content="2")
    MessageFactory(thread=run.thread, run=run, turn=turn, role="tool", tool_call_id="c2", tool_name="write_file", content="", status="streaming")
    MessageFactory(thread=run.thread, run=run, turn=turn, role="assistant", content="Saving no", status="streaming")
    return run


def test_the_sweeper_requeues_a_dead_workers_run_and_the_rerun_never_repeats_a_call(settings, task_queue, tmp_path):
    settings.WORKSPACES_DIR = tmp_path
    run = _died_mid_tool(agent=AgentFactory(slug="scribe", enabled_tools=["calculator", "write_file"]))
    with ScriptedOpenAIServer(script=["It may not have been saved; shall I try again?"]) as server:
        use_llm_server(settings, server)
        swept, events = collect_group_events(thread_group(run.thread_id), runs_sweep, until=ends_with("run.queued"))
        assert swept == 1
        requeued = Run.objects.get(pk=run.pk)
        assert (requeued.status, requeued.lease_expires_at) == (Run.Status.QUEUED, None)
        assert [e["type"] for e in events] == ["run.queued"]

        assert work_off(task_queue) == ["gateway.tasks.thread_process"]

    run.refresh_from_db()
    assert (run.status, run.stop_reason, run.attempts) == ("done", "answered", 2)
    sent = server.requests[0]["messages"]
    assert sent[-3:] == [
        {"role": "assistant", "content": "", "tool_calls": sent[-3]["tool_calls"]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
        {"role": "tool", "tool_call_id": "c2", "content": INTERRUPTED_RESULT},
    ]
    assert "Saving no" not in json.dumps(sent)  # the broken-off text is not sent back as a prefix
    assert not (tmp_path / "scribe" / "n.txt").exists()  # the interrupted write was not run again
    rows = list(run.thread.messages.order_by("id").values_list("role", "status", "content"))
    assert rows[3:] == [
        ("tool", "complete", INTERRUPTED_RESULT),
        ("assistant", "failed", "Saving no"),  # what the user saw stays, marked as broken off
        ("assistant", "complete", "It may not have been saved; shall I try again?"),
    ]
    assert Message.objects.filter(thread=run.thread, role="user").count() == 1


def test_a_run_out_of_attempts_fails_visibly_and_frees_the_thread(task_queue):
    run = _died_mid_tool(attempts=3)
    waiting = RunFactory(thread=run.thread)

    swept, events = collect_group_events(thread_group(run.thread_id), runs_sweep, until=ends_with("run.failed"))

    assert swept == 1
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert run.error.startswith("The worker stopped while answering (it was restarted or crashed) 3 times")
    assert [(e["type"], e["seq"], e["error"]) for e in events] == [("run.failed", None, run.error)]
    assert run.thread.messages.get(tool_call_id="c2").content == INTERRUPTED_RESULT
    assert task_queue.queue_size() == 1 and Run.objects.get(pk=waiting.pk).status == "queued"


def test_live_and_finished_runs_are_left_alone(task_queue):
    alive = RunFactory(status=Run.Status.RUNNING, lease_expires_at=timezone.now() + timedelta(seconds=60), attempts=1)
    done = RunFactory(status=Run.Status.DONE, lease_expires_at=timezone.now() - timedelta(seconds=60))

    assert runs_sweep() == 0

    assert Run.objects.get(pk=alive.pk).status == "running"
    assert Run.objects.get(pk=done.pk).status == "done"
    assert task_queue.queue_size() == 0


def test_a_waiting_run_is_not_swept():
    run = RunFactory(status=Run.Status.WAITING, waiting_call_id="q1", lease_expires_at=None)

    assert runs_sweep() == 0
    assert Run.objects.get(pk=run.pk).status == "waiting"
