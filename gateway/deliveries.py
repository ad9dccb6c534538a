"""Channels other than the web register here to hear about runs that came from them.

The web page listens on the thread's channel-layer group; a channel such as Telegram needs
its answer pushed instead. It registers `deliver(event)` for its source name (in its
AppConfig.ready) and receives every non-delta event of runs whose source it is, in the
worker that runs them. The run's `channel` dict says where to reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_registry: dict[str, Callable[[dict], None]] = {}


def register(source: str, deliver: Callable[[dict], None]) -> None:
    _registry[source] = deliver


def unregister(source: str) -> None:
    _registry.pop(source, None)


def deliver(source: str, event: dict) -> None:
    """Hands an event to the channel registered for `source`, if any. Never raises."""
    handler = _registry.get(source)
    if handler is None:
        return
    try:
        handler(event)
    except Exception:
        log.exception("delivery to %s failed for run %s", source, event.get("run"))
