"""Listening to a thread's channel-layer group from sync test code, on the real Redis layer."""

import asyncio
from collections.abc import Callable

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer


def collect_group_events(group: str, action: Callable, *, until: Callable[[list], bool], timeout: float = 5.0):
    """Joins `group`, calls `action()` (in this thread, so it shares the test's database
    connection), then gathers the events that reach the group until `until(events)`.

    Returns (action's result, events). Raises TimeoutError if an event is `timeout` late.
    """

    async def listen():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            result = await sync_to_async(action)()
            events: list[dict] = []
            while not until(events):
                message = await asyncio.wait_for(layer.receive(channel), timeout)
                events.append(message["event"])
            return result, events
        finally:
            await layer.group_discard(group, channel)

    return async_to_sync(listen)()


def ends_with(*types: str) -> Callable[[list], bool]:
    return lambda events: bool(events) and events[-1]["type"] in types
