"""current_time: the date and time now, in the owner's time zone or a named IANA zone."""

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from . import Tool, ToolInputError


def time_now(zone_name: str | None = None) -> dict:
    """The current time in `zone_name` (default, also for "": settings.TIME_ZONE) as {timezone, iso,
    weekday, utc_offset, abbreviation}. Raises ToolInputError for an unknown zone."""
    zone = _zone(zone_name or settings.TIME_ZONE)
    now = datetime.now(zone)
    return {
        "timezone": zone.key,
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": _offset(now),
        "abbreviation": now.tzname(),
    }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: keys that are not plain relative names ("../x", "/etc/localtime", "").
        raise ToolInputError(
            f"Unknown time zone {name!r}. Use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC' "
            "(case matters), or leave timezone out for the owner's zone."
        ) from None


def _offset(moment: datetime) -> str:
    minutes = int(moment.utcoffset().total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _build(scope):
    def current_time(timezone: str | None = None):
        return time_now(timezone)

    return current_time


TOOL = Tool(
    name="current_time",
    description=(
        "The current date and time: ISO timestamp, weekday, time zone and UTC offset. "
        "Without arguments it uses the owner's time zone; pass timezone (an IANA name such as 'Europe/Berlin') for another."
    ),
    parameters={
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "maxLength": 64, "description": "IANA time zone name, e.g. 'Asia/Tokyo'."},
        },
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
