"""What the three history tools (list_threads, search_messages, read_thread) share.

They read only the scope's owner's threads (chat.selectors filters by owner); none takes a
user id, and a thread id can only narrow a read within the owner's own threads.
"""

from __future__ import annotations

from datetime import datetime, time

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from . import ToolInputError

SINCE_SCHEMA = {
    "type": "string",
    "description": "Only what changed at or after this ISO date or date-time, e.g. '2026-11-20' or '2026-11-20T08:00'.",
}


def since_parse(value: str | None) -> datetime | None:
    """An aware datetime from an ISO date or date-time, or None. Raises ToolInputError."""
    if not value:
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ToolInputError(f"{value!r} is not an ISO date; use e.g. '2026-11-20' or '2026-11-20T08:00'.")
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def snippet(text: str, query: str = "", width: int = 240) -> str:
    """A piece of `text` around the first match of `query` (or its start), on one line."""
    flat = " ".join(text.split())
    at = flat.lower().find(query.lower()) if query else -1
    start = max(0, at - width // 3) if at >= 0 else 0
    piece = flat[start : start + width]
    return ("…" if start > 0 else "") + piece + ("…" if start + width < len(flat) else "")


def stamp(moment: datetime) -> str:
    return timezone.localtime(moment).isoformat(timespec="minutes")
