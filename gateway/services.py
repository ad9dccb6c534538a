"""The single way in for every channel: store the message, queue the run, wake a worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from agents.models import Agent, Run
from agents.services import agent_default
from chat.models import Message, Source, Thread
from chat.services import message_add_answer, message_add_user

from . import tasks
from .events import publish_run_queued


class SubmissionRejected(Exception):
    """The input was refused. The message is meant for the user, as is; nothing was stored."""


@dataclass(frozen=True)
class Submission:
    thread: Thread
    message: Message
    run: Run
    created_thread: bool


def message_submit(
    *,
    owner,
    text: str,
    source: str,
    thread_id: int | None = None,
    agent_slug: str | None = None,
    channel: dict | None = None,
    on_thread: Callable[[Thread], None] | None = None,
) -> Submission:
    """Stores a user message and a queued run for it in one transaction; enqueues on commit.

    With no thread_id a new thread is started. With no agent_slug the thread's default agent
    answers. The chosen agent becomes the thread's default, so the next message goes to it
    too. If a run of the thread is waiting on a question it asked (ask_user), the message is
    the answer instead: it is stored in that run's turn and the same run is queued again to
    go on (the agent choice does not apply to an answer). Raises SubmissionRejected (nothing stored) for empty or oversized text, an unknown
    source, thread or agent. If no worker is running, the run simply waits in the queue.
    `on_thread(thread)` is called inside the transaction, before any event is published: an
    edge uses it to start listening to a new thread, so it misses none of the run's events.
    """
    text = _clean_text(text)
    if source not in Source.values:
        raise SubmissionRejected(f"Unknown source {source!r}.")
    with transaction.atomic():
        created = thread_id is None
        thread = _thread_for(owner, thread_id)
        waiting = None if created else Run.objects.filter(thread=thread, status=Run.Status.WAITING).first()
        if waiting is not None:
            message = _answer_store(waiting, thread, text, source)
            if on_thread is not None:
                on_thread(thread)
            return Submission(thread=thread, message=message, run=waiting, created_thread=False)
        agent = _agent_for(agent_slug, thread)
        if thread.default_agent_id != agent.pk:
            thread.default_agent = agent
            thread.save(update_fields=["default_agent", "updated_at"])
        message = message_add_user(thread=thread, text=text, agent=agent, source=source)
        if on_thread is not None:
            on_thread(thread)
        run = Run.objects.create(
            thread=thread, user_message=message, agent=agent, source=source, channel=channel or {}
        )
        transaction.on_commit(lambda: publish_run_queued(run))
        transaction.on_commit(lambda: tasks.thread_enqueue(thread.pk))
    return Submission(thread=thread, message=message, run=run, created_thread=created)


def _answer_store(run: Run, thread: Thread, text: str, source: str) -> Message:
    # Inside message_submit's transaction, with the thread locked.
    message = message_add_answer(thread=thread, text=text, turn=run.user_message.turn, call_id=run.waiting_call_id, source=source)
    Run.objects.filter(pk=run.pk, status=Run.Status.WAITING).update(status=Run.Status.QUEUED, waiting_call_id="", attempts=0)
    run.refresh_from_db()
    transaction.on_commit(lambda: publish_run_queued(run))
    transaction.on_commit(lambda: tasks.thread_enqueue(thread.pk))
    return message


def _clean_text(text) -> str:
    if not isinstance(text, str):
        raise SubmissionRejected("A message must be text.")
    text = text.replace("\x00", "").strip()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON) cannot be stored
        raise SubmissionRejected("That message holds a broken character (half of a UTF-16 pair).") from None
    if not text:
        raise SubmissionRejected("Type a message first: it is empty.")
    limit = settings.GATEWAY_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise SubmissionRejected(f"That message is {len(text):,} characters long; the limit is {limit:,}.")
    return text


def _thread_for(owner, thread_id) -> Thread:
    if thread_id is None:
        return Thread.objects.create(owner=owner)
    if isinstance(thread_id, bool):  # JSON true would otherwise read as thread 1
        raise SubmissionRejected("That thread does not exist (it may have been deleted).")
    try:
        # The row lock keeps turn numbers and run order straight when two channels write at once.
        return Thread.objects.select_for_update().get(pk=int(thread_id), owner=owner)
    except (Thread.DoesNotExist, TypeError, ValueError, OverflowError):  # int(1e309) overflows
        raise SubmissionRejected("That thread does not exist (it may have been deleted).") from None


def _agent_for(agent_slug, thread) -> Agent:
    if agent_slug:
        agent = Agent.objects.filter(slug=str(agent_slug)).first()
        if agent is None:
            raise SubmissionRejected(f"There is no agent called {str(agent_slug)[:64]!r}.")
        return agent
    agent = thread.default_agent or agent_default()
    if agent is None:
        raise SubmissionRejected("No agent is configured yet. Add one in the admin.")
    return agent


def run_retry(*, owner, run_id: int) -> Run:
    """Queues a new run for the user message of a failed run (the failed one stays on record).

    Raises SubmissionRejected if the run is not the owner's, or is not failed, or a newer run
    for the same message exists already.
    """
    with transaction.atomic():
        run = Run.objects.select_related("user_message", "thread").filter(pk=run_id, thread__owner=owner).first()
        if run is None:
            raise SubmissionRejected("That run does not exist.")
        Thread.objects.select_for_update().filter(pk=run.thread_id).first()
        if run.status != Run.Status.FAILED:
            raise SubmissionRejected("Only a failed run can be retried.")
        if Run.objects.filter(user_message_id=run.user_message_id, pk__gt=run.pk).exists():
            raise SubmissionRejected("This message has already been retried.")
        retry = Run.objects.create(
            thread_id=run.thread_id,
            user_message_id=run.user_message_id,
            agent_id=run.agent_id,
            source=run.source,
            channel=run.channel,
        )
        transaction.on_commit(lambda: publish_run_queued(retry))
        transaction.on_commit(lambda: tasks.thread_enqueue(retry.thread_id))
    return retry
