"""list_threads: the user's conversations, newest activity first (read-only)."""

from chat.selectors import thread_search

from . import Tool
from .history import SINCE_SCHEMA, since_parse, stamp

MAX_LIMIT = 50


def _build(scope):
    def list_threads(query: str = "", since: str = "", limit: int = 20, offset: int = 0):
        threads = thread_search(
            owner=scope.owner_id, query=query.strip(), since=since_parse(since), limit=limit, offset=offset
        )
        return {
            "threads": [
                {
                    "thread_id": t.pk,
                    "title": t.title or "(untitled)",
                    "updated": stamp(t.updated_at),
                    "messages": t.message_count,
                    "agent": t.default_agent.name if t.default_agent else None,
                    **({"current": True} if t.pk == scope.thread_id else {}),
                }
                for t in threads
            ],
            "next_offset": offset + limit if len(threads) == limit else None,
        }

    return list_threads


TOOL = Tool(
    name="list_threads",
    description="List the user's conversations (newest activity first) with their ids, titles and sizes. "
    "Use read_thread to read one, search_messages to find words across all of them.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Only threads whose title contains this text."},
            "since": SINCE_SCHEMA,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20},
            "offset": {"type": "integer", "minimum": 0, "default": 0},
        },
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
