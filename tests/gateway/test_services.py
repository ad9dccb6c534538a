import pytest
from django_q.signing import SignedPackage

from agents.models import Run
from chat.models import Message, Thread
from gateway.events import thread_group
from gateway.services import SubmissionRejected, message_submit, run_retry
from tests.factories import AgentFactory, RunFactory, ThreadFactory, UserFactory
from tests.group_events import collect_group_events

pytestmark = pytest.mark.django_db


def _stored() -> tuple[int, int, int]:
    return Thread.objects.count(), Message.objects.count(), Run.objects.count()


def _queued_tasks(queue) -> list[tuple[str, tuple]]:
    tasks = []
    while queue.queue_size():
        task = SignedPackage.loads(queue.dequeue()[0][1])
        tasks.append((task["func"], task["args"]))
    return tasks


def test_submit_stores_the_message_and_a_queued_run_in_a_new_thread(owner, agent, task_queue):
    submission = message_submit(owner=owner, text="  Plan a trip\nto Lisbon  ", source="web")

    thread, message, run = submission.thread, submission.message, submission.run
    assert submission.created_thread
    assert (thread.owner, thread.default_agent, thread.title) == (owner, agent, "Plan a trip")
    assert (message.turn, message.role, message.content, message.agent, message.source) == (
        1, "user", "Plan a trip\nto Lisbon", agent, "web",
    )
    run.refresh_from_db()
    assert (run.status, run.thread, run.user_message, run.agent, run.source) == ("queued", thread, message, agent, "web")


def test_submit_enqueues_the_thread_only_on_commit(owner, agent, django_capture_on_commit_callbacks, task_queue):
    thread = ThreadFactory(owner=owner, default_agent=agent)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        message_submit(owner=owner, text="hello", source="web", thread_id=thread.pk)
        assert task_queue.queue_size() == 0
    assert len(callbacks) == 2

    assert _queued_tasks(task_queue) == [("gateway.tasks.thread_process", (thread.pk,))]


def test_submit_announces_the_queued_run_on_commit(owner, agent, django_capture_on_commit_callbacks, task_queue):
    thread = ThreadFactory(owner=owner, default_agent=agent)

    def submit():
        with django_capture_on_commit_callbacks(execute=True):
            return message_submit(owner=owner, text="hello", source="web", thread_id=thread.pk)

    submission, events = collect_group_events(thread_group(thread.pk), submit, until=lambda events: len(events) == 1)

    assert events == [
        {
            "type": "run.queued", "thread": thread.pk, "run": submission.run.pk, "seq": 0,
            "message_id": submission.message.pk, "turn": 1, "agent": "assistant",
        }
    ]


def test_each_message_opens_the_next_turn_with_its_own_run(owner, agent, task_queue):
    first = message_submit(owner=owner, text="one", source="web")
    second = message_submit(owner=owner, text="two", source="web", thread_id=first.thread.pk)

    assert not second.created_thread
    assert (first.message.turn, second.message.turn) == (1, 2)
    assert list(Run.objects.filter(thread=first.thread).values_list("user_message__content", flat=True)) == ["one", "two"]


def test_choosing_an_agent_makes_it_the_threads_default(owner, agent, task_queue):
    brief = AgentFactory(slug="brief")
    first = message_submit(owner=owner, text="one", source="web")

    switched = message_submit(owner=owner, text="two", source="web", thread_id=first.thread.pk, agent_slug="brief")
    after = message_submit(owner=owner, text="three", source="web", thread_id=first.thread.pk)

    assert (first.run.agent, switched.run.agent, after.run.agent) == (agent, brief, brief)
    assert Thread.objects.get(pk=first.thread.pk).default_agent == brief


def test_nul_characters_are_removed(owner, agent, task_queue):
    submission = message_submit(owner=owner, text="a\x00b", source="web")

    assert submission.message.content == "ab"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "Type a message first: it is empty."),
        ("   \n\t  ", "Type a message first: it is empty."),
        ("\x00", "Type a message first: it is empty."),
        (None, "A message must be text."),
        (["hi"], "A message must be text."),
        ("x" * 100_000, "That message is 100,000 characters long; the limit is 50,000."),
    ],
)
def test_unusable_text_is_rejected_and_nothing_is_stored(owner, agent, task_queue, text, error):
    thread = ThreadFactory(owner=owner, default_agent=agent)
    before = _stored()

    with pytest.raises(SubmissionRejected) as rejected:
        message_submit(owner=owner, text=text, source="web", thread_id=thread.pk)

    assert str(rejected.value) == error
    assert _stored() == before
    assert task_queue.queue_size() == 0


@pytest.mark.parametrize("thread_id", [999_999, "not-a-number", "other-owner"])
def test_a_thread_that_is_not_the_owners_is_rejected(owner, agent, task_queue, thread_id):
    if thread_id == "other-owner":
        thread_id = ThreadFactory(owner=UserFactory(), default_agent=agent).pk
    before = _stored()

    with pytest.raises(SubmissionRejected, match=r"^That thread does not exist \(it may have been deleted\)\.$"):
        message_submit(owner=owner, text="hi", source="web", thread_id=thread_id)

    assert _stored() == before


def test_an_unknown_agent_is_rejected_and_no_thread_is_started(owner, agent, task_queue):
    before = _stored()

    with pytest.raises(SubmissionRejected, match=r"^There is no agent called 'nobody'\.$"):
        message_submit(owner=owner, text="hi", source="web", agent_slug="nobody")

    assert _stored() == before


def test_without_any_agent_the_message_is_rejected(owner, task_queue):
    with pytest.raises(SubmissionRejected, match="No agent is configured yet"):
        message_submit(owner=owner, text="hi", source="web")

    assert _stored() == (0, 0, 0)


def test_an_unknown_source_is_rejected(owner, agent, task_queue):
    with pytest.raises(SubmissionRejected, match="Unknown source 'fax'"):
        message_submit(owner=owner, text="hi", source="fax")

    assert _stored() == (0, 0, 0)


# --- run_retry ------------------------------------------------------------------------------


def _failed_run(owner, **fields) -> Run:
    return RunFactory(thread__owner=owner, status=Run.Status.FAILED, error="boom", **fields)


def test_retry_queues_a_new_run_for_the_same_message_on_commit(owner, django_capture_on_commit_callbacks, task_queue):
    failed = _failed_run(owner, source="telegram", channel={"chat_id": 5})

    with django_capture_on_commit_callbacks(execute=True):
        retry = run_retry(owner=owner, run_id=failed.pk)
        assert task_queue.queue_size() == 0

    retry.refresh_from_db()
    assert retry.pk != failed.pk
    assert (retry.status, retry.user_message, retry.agent, retry.source, retry.channel) == (
        "queued", failed.user_message, failed.agent, "telegram", {"chat_id": 5},
    )
    assert Run.objects.get(pk=failed.pk).status == "failed"  # kept on record
    assert _queued_tasks(task_queue) == [("gateway.tasks.thread_process", (failed.thread_id,))]


def test_retry_refuses_a_run_that_did_not_fail(owner, task_queue):
    done = RunFactory(thread__owner=owner, status=Run.Status.DONE)

    with pytest.raises(SubmissionRejected, match="Only a failed run can be retried."):
        run_retry(owner=owner, run_id=done.pk)


def test_retry_refuses_a_second_retry_of_the_same_message(owner, task_queue):
    failed = _failed_run(owner)
    run_retry(owner=owner, run_id=failed.pk)

    with pytest.raises(SubmissionRejected, match="already been retried"):
        run_retry(owner=owner, run_id=failed.pk)

    assert Run.objects.filter(user_message=failed.user_message).count() == 2


def test_retry_refuses_another_owners_run(owner, task_queue):
    foreign = _failed_run(UserFactory())

    with pytest.raises(SubmissionRejected, match="That run does not exist."):
        run_retry(owner=owner, run_id=foreign.pk)

    assert Run.objects.count() == 1
