"""read_thread: a range of turns of one of the user's conversations (read-only, never a whole dump)."""

from chat.models import Message, Thread
from chat.selectors import thread_messages

from . import Tool, ToolInputError
from .history import stamp

MAX_TURNS = 10
MESSAGE_CHARS = 2000


def _build(scope):
    def read_thread(thread_id: int, from_turn: int = 1, to_turn: int | None = None):
        last = from_turn + MAX_TURNS - 1
        to_turn = min(to_turn or last, last)
        if to_turn < from_turn:
            raise ToolInputError("to_turn must not be before from_turn.")
        try:
            thread, rows, last_turn = thread_messages(
                owner=scope.owner_id, thread_id=thread_id, from_turn=from_turn, to_turn=to_turn
            )
        except Thread.DoesNotExist:
            raise ToolInputError(f"There is no thread {thread_id}. Use list_threads to see the thread ids.") from None
        return {
            "thread_id": thread.pk,
            "title": thread.title or "(untitled)",
            "turns": f"{from_turn}-{min(to_turn, last_turn)} of {last_turn}",
            "messages": [_message(m) for m in rows if m.role in (Message.Role.USER, Message.Role.ASSISTANT) and m.content],
            "next_from_turn": to_turn + 1 if to_turn < last_turn else None,
        }

    return read_thread


def _message(m: Message) -> dict:
    text = m.content if len(m.content) <= MESSAGE_CHARS else m.content[:MESSAGE_CHARS] + " […cut]"
    item = {"turn": m.turn, "role": m.role, "at": stamp(m.created_at), "text": text}
    if m.role == Message.Role.ASSISTANT and m.agent_id:
        item["agent"] = m.agent.name
    return item


TOOL = Tool(
    name="read_thread",
    description=f"Read turns of one of the user's conversations, at most {MAX_TURNS} turns per call "
    "(a turn is a user message and its answer). Page on with next_from_turn.",
    parameters={
        "type": "object",
        "properties": {
            "thread_id": {"type": "integer", "description": "From list_threads or search_messages."},
            "from_turn": {"type": "integer", "minimum": 1, "default": 1},
            "to_turn": {"type": "integer", "minimum": 1},
        },
        "required": ["thread_id"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
