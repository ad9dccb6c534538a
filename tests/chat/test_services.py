import pytest
from django.db import transaction

from chat.models import Message, Thread
from chat.services import message_add_user, thread_fork, title_from_text
from tests.factories import MessageFactory, ThreadFactory

pytestmark = pytest.mark.django_db


def _rows(thread) -> list[tuple]:
    return list(thread.messages.order_by("turn", "id").values_list("turn", "role", "content", "tool_call_id"))


@pytest.fixture
def conversation():
    """Two turns, the second with a tool round: user, assistant+call, tool, assistant."""
    thread = ThreadFactory(title="Sums")
    MessageFactory(thread=thread, content="hello")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="Echo: hello")
    MessageFactory(thread=thread, content="calc: 2+2")
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'}}
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="", tool_calls=[call])
    MessageFactory(thread=thread, role=Message.Role.TOOL, content='{"result": 4}', tool_call_id="call_1", tool_name="calculator")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="The result is 4.")
    return thread


def test_fork_keeps_history_up_to_and_including_the_message(conversation):
    at = conversation.messages.get(content="calc: 2+2")

    fork = thread_fork(thread=conversation, at_message=at)

    assert _rows(fork) == [
        (1, "user", "hello", ""),
        (1, "assistant", "Echo: hello", ""),
        (2, "user", "calc: 2+2", ""),
    ]


def test_fork_records_where_it_came_from(conversation):
    at = conversation.messages.get(content="Echo: hello")

    fork = thread_fork(thread=conversation, at_message=at)

    fork.refresh_from_db()
    assert fork.forked_from_thread == conversation
    assert fork.forked_from_message == at
    assert fork.owner == conversation.owner
    assert fork.default_agent == conversation.default_agent
    assert fork.title == "Sums (fork)"


def test_fork_copies_every_field_including_tool_calls_and_times(conversation):
    at = conversation.messages.get(role=Message.Role.TOOL)

    fork = thread_fork(thread=conversation, at_message=at)

    fields = ("turn", "role", "content", "agent_id", "status", "tool_calls", "tool_call_id", "tool_name", "created_at")
    original = list(conversation.messages.filter(id__lte=at.id).values(*fields))
    assert list(fork.messages.values(*fields)) == original


def test_fork_leaves_the_original_untouched(conversation):
    before = _rows(conversation)
    at = conversation.messages.get(content="hello")

    thread_fork(thread=conversation, at_message=at)

    assert _rows(conversation) == before
    assert Thread.objects.get(pk=conversation.pk).forked_from_thread is None


def test_fork_is_independent_afterwards(conversation):
    at = conversation.messages.get(content="Echo: hello")
    fork = thread_fork(thread=conversation, at_message=at)

    with transaction.atomic():
        message_add_user(thread=fork, text="a different question")
    fork.messages.filter(content="hello").update(content="edited in the fork")

    assert conversation.messages.filter(content="hello").exists()
    assert not conversation.messages.filter(content="a different question").exists()
    assert fork.messages.get(content="a different question").turn == 2


def test_fork_in_the_middle_of_a_turn_stops_at_that_message(conversation):
    call_message = conversation.messages.filter(role=Message.Role.ASSISTANT).exclude(tool_calls=[]).get()

    fork = thread_fork(thread=conversation, at_message=call_message)

    assert [(turn, role) for turn, role, *_ in _rows(fork)] == [
        (1, "user"), (1, "assistant"), (2, "user"), (2, "assistant"),
    ]
    assert fork.messages.last().tool_calls[0]["id"] == "call_1"


def test_fork_rejects_a_message_from_another_thread(conversation):
    stranger = MessageFactory(content="elsewhere")

    with pytest.raises(ValueError, match="not in this thread"):
        thread_fork(thread=conversation, at_message=stranger)

    assert Thread.objects.filter(forked_from_thread=conversation).count() == 0


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Plan a trip to Lisbon", "Plan a trip to Lisbon"),
        ("\n\n   \n  First real line  \nsecond line", "First real line"),
        ("word " * 30, "word word word word word word word word word word word word…"),
        ("x" * 80, "x" * 60 + "…"),
        ("   \n ", ""),
    ],
)
def test_title_from_text_takes_the_first_line_cut_on_a_word(text, title):
    assert title_from_text(text) == title


def test_message_add_user_opens_the_next_turn():
    thread = ThreadFactory(title="")
    with transaction.atomic():
        first = message_add_user(thread=thread, text="first question\nmore")
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="answer")
    with transaction.atomic():
        second = message_add_user(thread=thread, text="second question")

    assert (first.turn, second.turn) == (1, 2)
    assert (first.role, first.content) == ("user", "first question\nmore")
    thread.refresh_from_db()
    assert thread.title == "first question"  # set once, from the first message


def test_message_add_user_keeps_an_existing_title():
    thread = ThreadFactory(title="Chosen title")
    with transaction.atomic():
        message_add_user(thread=thread, text="anything")

    thread.refresh_from_db()
    assert thread.title == "Chosen title"
