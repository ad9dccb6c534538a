"""Reads of threads and messages, always through the owner so nobody reads another's data."""

from django.db.models import Count, Max

from .models import Message, Thread


def thread_list(*, owner, limit: int = 100):
    return Thread.objects.filter(owner=owner, status=Thread.Status.ACTIVE).order_by("-updated_at", "-id")[:limit]


def thread_get(*, owner, thread_id) -> Thread:
    """The owner's thread. Raises Thread.DoesNotExist for a missing id or another owner's thread."""
    return Thread.objects.select_related("default_agent", "forked_from_thread").get(pk=thread_id, owner=owner)


def message_get(*, owner, message_id) -> Message:
    """The owner's message. Raises Message.DoesNotExist otherwise."""
    return Message.objects.select_related("thread", "agent").get(pk=message_id, thread__owner=owner)


def thread_search(*, owner, query: str = "", since=None, limit: int = 20, offset: int = 0):
    """The owner's threads, newest activity first, optionally whose title contains `query` or
    that changed at or after `since`. Each carries `message_count`."""
    threads = Thread.objects.filter(owner=owner).annotate(message_count=Count("messages"))
    if query:
        threads = threads.filter(title__icontains=query)
    if since is not None:
        threads = threads.filter(updated_at__gte=since)
    return list(threads.select_related("default_agent").order_by("-updated_at", "-id")[offset : offset + limit])


def message_search(*, owner, query: str, thread_id: int | None = None, since=None, limit: int = 20):
    """The owner's user and assistant messages containing `query` (case-insensitive), newest
    first. `thread_id` only narrows the search within the owner's threads."""
    messages = Message.objects.filter(
        thread__owner=owner, role__in=(Message.Role.USER, Message.Role.ASSISTANT), content__icontains=query
    )
    if thread_id is not None:
        messages = messages.filter(thread_id=thread_id)
    if since is not None:
        messages = messages.filter(created_at__gte=since)
    return list(messages.select_related("thread", "agent").order_by("-created_at", "-id")[:limit])


def thread_messages(*, owner, thread_id: int, from_turn: int, to_turn: int):
    """(thread, its messages in turns from_turn..to_turn, the thread's last turn number).

    Raises Thread.DoesNotExist for a missing id or another owner's thread, alike."""
    thread = Thread.objects.get(pk=thread_id, owner=owner)
    rows = list(
        thread.messages.filter(turn__gte=from_turn, turn__lte=to_turn).select_related("agent").order_by("turn", "id")
    )
    last_turn = thread.messages.aggregate(m=Max("turn"))["m"] or 0
    return thread, rows, last_turn
