"""search_messages: find words in the user's past messages (read-only)."""

from chat.selectors import message_search

from . import Tool, ToolInputError
from .history import SINCE_SCHEMA, since_parse, snippet, stamp

MAX_LIMIT = 50


def _build(scope):
    def search_messages(query: str, thread_id: int | None = None, since: str = "", limit: int = 20):
        query = query.strip()
        if len(query) < 2:
            raise ToolInputError("Give at least two characters to search for, e.g. {\"query\": \"invoice\"}.")
        found = message_search(owner=scope.owner_id, query=query, thread_id=thread_id, since=since_parse(since), limit=limit)
        return {
            "query": query,
            "matches": [
                {
                    "thread_id": m.thread_id,
                    "thread_title": m.thread.title or "(untitled)",
                    "turn": m.turn,
                    "role": m.role,
                    "at": stamp(m.created_at),
                    "snippet": snippet(m.content, query),
                }
                for m in found
            ],
            "note": "Use read_thread with a thread_id and turns to read the context." if found else "No matches.",
        }

    return search_messages


TOOL = Tool(
    name="search_messages",
    description="Search the user's past conversations for text (case-insensitive), newest first. "
    "Returns snippets with thread ids and turn numbers.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "The text to look for."},
            "thread_id": {"type": "integer", "description": "Only search this thread."},
            "since": SINCE_SCHEMA,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
