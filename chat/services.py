"""Writes to threads and messages. Each function states what it guarantees and raises."""

from django.db import transaction
from django.db.models import Max, Q

from .models import Message, Thread

TITLE_CHARS = 60
FORK_BATCH_SIZE = 1000


def thread_create(*, owner, agent=None, title: str = "") -> Thread:
    """Creates an empty thread answered by `agent` by default."""
    return Thread.objects.create(owner=owner, default_agent=agent, title=title[:200])


def title_from_text(text: str) -> str:
    """A thread title from a message: its first non-empty line, shortened on a word boundary."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0] or line[:TITLE_CHARS]
    return cut + "…"


def message_add_user(*, thread: Thread, text: str, agent=None, source: str = "web") -> Message:
    """Appends a user message as a new turn. Must run inside a transaction that locked the thread.

    The turn number is max+1, which is race-free only because the caller holds the thread's
    row lock (PostgreSQL) or the database write lock (SQLite, IMMEDIATE transactions).
    """
    last_turn = thread.messages.aggregate(m=Max("turn"))["m"] or 0
    message = Message.objects.create(
        thread=thread, turn=last_turn + 1, role=Message.Role.USER, content=text, agent=agent, source=source
    )
    fields = ["updated_at"]
    if not thread.title:
        thread.title = title_from_text(text)
        fields.append("title")
    thread.save(update_fields=fields)
    return message


_COPIED_FIELDS = (
    "turn", "role", "content", "agent_id", "source", "status",
    "tool_calls", "tool_call_id", "tool_name", "is_error", "created_at", "completed_at",
)


@transaction.atomic
def thread_fork(*, thread: Thread, at_message: Message) -> Thread:
    """Creates a new thread holding `thread`'s history up to and including `at_message`.

    The original is not touched; the fork records where it came from and is independent
    afterwards. Raises ValueError if the message belongs to another thread.
    """
    if at_message.thread_id != thread.pk:
        raise ValueError("That message is not in this thread.")
    fork = Thread.objects.create(
        owner_id=thread.owner_id,
        title=f"{thread.title or 'Thread'} (fork)"[:200],
        default_agent_id=thread.default_agent_id,
        forked_from_thread=thread,
        forked_from_message=at_message,
    )
    history = (
        thread.messages.filter(Q(turn__lt=at_message.turn) | Q(turn=at_message.turn, id__lte=at_message.pk))
        .order_by("turn", "id")
        .values(*_COPIED_FIELDS)
    )
    batch = []
    for row in history.iterator(chunk_size=FORK_BATCH_SIZE):
        batch.append(Message(thread=fork, **row))
        if len(batch) >= FORK_BATCH_SIZE:
            Message.objects.bulk_create(batch)
            batch = []
    Message.objects.bulk_create(batch)
    return fork
