"""Reads of threads and messages, always through the owner so nobody reads another's data."""

from .models import Message, Thread


def thread_list(*, owner, limit: int = 100):
    return Thread.objects.filter(owner=owner, status=Thread.Status.ACTIVE).order_by("-updated_at", "-id")[:limit]


def thread_get(*, owner, thread_id) -> Thread:
    """The owner's thread. Raises Thread.DoesNotExist for a missing id or another owner's thread."""
    return Thread.objects.select_related("default_agent", "forked_from_thread").get(pk=thread_id, owner=owner)


def message_get(*, owner, message_id) -> Message:
    """The owner's message. Raises Message.DoesNotExist otherwise."""
    return Message.objects.select_related("thread", "agent").get(pk=message_id, thread__owner=owner)
