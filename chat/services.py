"""Writes to threads and messages. Each function states what it guarantees and raises."""

from django.db import connection, transaction
from django.db.models import Max

from .models import Message, Thread

TITLE_CHARS = 60


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


def message_add_answer(*, thread: Thread, text: str, turn: int, call_id: str, source: str = "web") -> Message:
    """Stores the user's reply to a question an agent asked (ask_user) in that question's turn.

    It is a user message carrying the question's tool call id, which makes it that call's
    result in the history the model sees. Same locking rule as message_add_user.
    """
    message = Message.objects.create(
        thread=thread, turn=turn, role=Message.Role.USER, content=text, source=source, tool_call_id=call_id
    )
    thread.save(update_fields=["updated_at"])
    return message


_COPIED_FIELDS = (
    "turn", "role", "content", "agent_id", "source", "status",
    "tool_calls", "tool_call_id", "tool_name", "is_error", "duration_ms", "created_at", "completed_at",
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
    _copy_messages(source=thread, target=fork, upto=at_message)
    return fork


def _copy_messages(*, source: Thread, target: Thread, upto: Message) -> None:
    # One INSERT ... SELECT inside the database: a 10 000-message fork stays far below a
    # second, where building the rows in Python took most of one. New ids follow the
    # ORDER BY, which keeps (turn, id) order within each turn.
    table = connection.ops.quote_name(Message._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(Message._meta.get_field(f).column) for f in _COPIED_FIELDS)
    thread_col = connection.ops.quote_name(Message._meta.get_field("thread").column)
    turn, pk = (connection.ops.quote_name(c) for c in ("turn", "id"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({thread_col}, {columns}) "
            f"SELECT %s, {columns} FROM {table} "
            f"WHERE {thread_col} = %s AND ({turn} < %s OR ({turn} = %s AND {pk} <= %s)) "
            f"ORDER BY {turn}, {pk}",
            [target.pk, source.pk, upto.turn, upto.turn, upto.pk],
        )
