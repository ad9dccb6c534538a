"""The thread admin: list, search, filters, and the read-only thread monitor."""

import html
import json

import pytest
from django.urls import reverse

from agents.models import Run
from chat.models import Message, Thread
from tests.factories import (
    AgentFactory,
    MessageFactory,
    RunFactory,
    ThreadFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

CHANGELIST_URL = reverse("admin:chat_thread_changelist")


@pytest.fixture
def admin_client(client):
    """Logged in as the app's one user: a superuser without a password."""
    client.force_login(UserFactory())
    return client


@pytest.fixture
def thread():
    """A thread whose one turn used a tool, then failed once and was answered on retry."""
    agent = AgentFactory(slug="helper", name="Helper")
    thread = ThreadFactory(title="Sums", default_agent=agent)
    question = MessageFactory(thread=thread, content="What is 6*7? <script>alert('q')</script>")
    failed = RunFactory(thread=thread, user_message=question, status=Run.Status.FAILED,
                        stop_reason=Run.StopReason.ERROR, error="backend <b>down</b>", attempts=1)  # fmt: skip
    run = RunFactory(thread=thread, user_message=question, status=Run.Status.DONE, stop_reason=Run.StopReason.ROUND_CAP,
                     rounds=2, prompt_tokens=321, completion_tokens=45, attempts=2)  # fmt: skip
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="", tool_calls=[call], run=run, agent=agent)
    MessageFactory(thread=thread, role=Message.Role.TOOL, tool_call_id="call_1", tool_name="calculator",
                   content='{"result": 42}', duration_ms=17, run=run, agent=agent)  # fmt: skip
    MessageFactory(thread=thread, role=Message.Role.ASSISTANT, content="It is **42**.", run=run, agent=agent)
    thread.failed_run, thread.run = failed, run
    return thread


def monitor(admin_client, thread) -> str:
    response = admin_client.get(reverse("admin:chat_thread_change", args=[thread.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(content: str, element_id: str) -> str:
    start = content.index(f'id="{element_id}"')
    return content[start:content.index("</table>", start)]


def test_the_monitor_shows_the_messages_in_order(admin_client, thread):
    messages = section(monitor(admin_client, thread), "monitor-messages")
    ids = [m.pk for m in thread.messages.order_by("turn", "id")]
    assert [messages.index(f'id="message-{pk}"') for pk in ids] == sorted(messages.index(f'id="message-{pk}"') for pk in ids)
    assert "Messages (4)" in messages
    assert "It is **42**." in messages  # stored text, shown as text


def test_the_monitor_shows_a_tool_call_with_arguments_result_and_duration(admin_client, thread):
    tool_row = section(monitor(admin_client, thread), "monitor-messages").split('id="message-')[3]
    text = html.unescape(tool_row)
    assert "Tool call: calculator" in text
    assert "17 ms" in text
    assert json.dumps({"expression": "6*7"}, indent=2) in text  # arguments found through the assistant's call
    assert '{"result": 42}' in text
    assert "error" not in text.lower()


def test_the_monitor_shows_the_calls_on_the_assistant_message(admin_client, thread):
    assistant_row = html.unescape(section(monitor(admin_client, thread), "monitor-messages").split('id="message-')[2])
    assert "Calls calculator (call_1) with" in assistant_row


def test_a_failed_tool_call_is_marked(admin_client, thread):
    tool = thread.messages.get(role=Message.Role.TOOL)
    tool.is_error, tool.content = True, '{"error": "division by zero"}'
    tool.save()
    tool_row = section(monitor(admin_client, thread), "monitor-messages").split('id="message-')[3]
    assert '<strong class="errornote">error</strong>' in tool_row
    assert "division by zero" in tool_row


def test_the_monitor_shows_the_runs(admin_client, thread):
    runs = html.unescape(section(monitor(admin_client, thread), "monitor-runs"))
    done = runs[runs.index(f'id="run-{thread.run.pk}"'):]
    assert "Stopped: round cap reached" in done
    assert "321 / 45" in done
    assert "Helper" in done
    failed = runs[runs.index(f'id="run-{thread.failed_run.pk}"'):runs.index(f'id="run-{thread.run.pk}"')]
    assert "Failed" in failed and "Error" in failed


def test_the_monitor_escapes_everything_stored(admin_client, thread):
    content = monitor(admin_client, thread)
    assert "<script>alert('q')</script>" not in content
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in content
    assert "backend &lt;b&gt;down&lt;/b&gt;" in content


def test_the_monitor_is_read_only(admin_client, thread):
    url = reverse("admin:chat_thread_change", args=[thread.pk])
    content = monitor(admin_client, thread)
    assert 'name="title"' not in content  # shown, not editable
    assert admin_client.post(url, {"title": "Renamed", "status": "active"}).status_code == 403
    thread.refresh_from_db()
    assert thread.title == "Sums"


def test_threads_cannot_be_added_but_can_be_deleted(admin_client, thread):
    assert admin_client.get(reverse("admin:chat_thread_add")).status_code == 403
    assert admin_client.get(reverse("admin:chat_message_add")).status_code == 403
    response = admin_client.post(reverse("admin:chat_thread_delete", args=[thread.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Thread.objects.filter(pk=thread.pk).exists()


def test_the_list_shows_message_counts(admin_client, thread):
    content = admin_client.get(CHANGELIST_URL).content.decode()
    assert '<td class="field-message_count">4</td>' in content


def test_search_finds_a_thread_by_message_content(admin_client, thread):
    other = ThreadFactory(title="Weather")
    MessageFactory(thread=other, content="Is it raining?")

    found = admin_client.get(CHANGELIST_URL, {"q": "6*7"}).context["cl"].result_list

    assert list(found) == [thread]
    assert list(admin_client.get(CHANGELIST_URL, {"q": "raining"}).context["cl"].result_list) == [other]


def test_the_failed_runs_filter(admin_client, thread):
    quiet = ThreadFactory(title="Quiet")

    def listed(value):
        return set(admin_client.get(CHANGELIST_URL, {"failed_runs": value}).context["cl"].result_list)

    assert listed("yes") == {thread}
    assert listed("no") == {quiet}
