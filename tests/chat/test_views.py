"""The web pages, through the real URLconf, middleware and templates."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.signing import SignedPackage

from agents.models import Run
from chat.login import login_token_issue
from chat.models import Message, Thread
from tests.factories import AgentFactory, MessageFactory, RunFactory, ThreadFactory, UserFactory

pytestmark = pytest.mark.django_db

LOGIN_HELP = reverse("chat:login-help")


@pytest.fixture
def signed_in(client, owner):
    client.force_login(owner)
    return client


def _thread_with_reply(owner, reply="Hello", **reply_fields):
    thread = ThreadFactory(owner=owner)
    run = RunFactory(
        thread=thread, status=Run.Status.DONE, stop_reason=Run.StopReason.ANSWERED, started_at=timezone.now()
    )
    message = MessageFactory(thread=thread, run=run, role=Message.Role.ASSISTANT, content=reply, **reply_fields)
    return thread, run, message


def _turn(client, thread, number=1):
    return client.get(reverse("chat:turn", args=[thread.pk, number]))


# --- Signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("get", "chat:home", []),
        ("get", "chat:new", []),
        ("get", "chat:sidebar", []),
        ("get", "chat:thread", [1]),
        ("get", "chat:turn", [1, 1]),
        ("post", "chat:fork", [1]),
        ("post", "chat:retry", [1]),
    ],
)
def test_every_chat_page_sends_a_stranger_to_the_login_help(client, method, name, args):
    url = reverse(name, args=args)

    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN_HELP}?next={url}"


def test_a_login_link_signs_in_once_and_leaves_the_address_bar_at_once(client, owner):
    token = login_token_issue()

    response = client.get(f"/login/?token={token}", follow=True)

    assert response.redirect_chain[0] == ("/", 302)
    assert token not in response.request["PATH_INFO"] + response.request.get("QUERY_STRING", "")
    assert all(token not in url for url, _ in response.redirect_chain)
    assert response.status_code == 200
    assert response.wsgi_request.user.is_authenticated


def test_the_login_response_sends_no_referrer_and_is_not_cached(client):
    response = client.get(f"/login/?token={login_token_issue()}")

    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]


def test_a_used_login_link_is_refused_with_a_way_to_get_a_new_one(client):
    token = login_token_issue()
    client.get(f"/login/?token={token}")
    client.logout()

    response = client.get(f"/login/?token={token}")

    assert response.status_code == 403
    assert "make login" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("query", ["", "?token=", "?token=nonsense"])
def test_a_login_without_a_valid_token_is_refused(client, query):
    response = client.get(f"/login/{query}")

    assert response.status_code == 403
    assert "make login" in response.content.decode()


def test_the_login_help_explains_how_to_get_a_link(client):
    response = client.get(LOGIN_HELP)

    assert response.status_code == 200
    assert "make login" in response.content.decode()


def test_signing_out_takes_a_post(signed_in):
    assert signed_in.get(reverse("chat:logout")).status_code == 405

    response = signed_in.post(reverse("chat:logout"))

    assert response["Location"] == LOGIN_HELP
    assert signed_in.get(reverse("chat:home"))["Location"].startswith(LOGIN_HELP)


def test_the_admin_sends_a_stranger_to_the_login_help_not_to_a_password_form(client):
    response = client.get("/admin/", follow=True)

    assert response.redirect_chain[-1] == (LOGIN_HELP, 302)
    assert "type=\"password\"" not in response.content.decode()


def test_the_signed_in_owner_can_use_the_admin(signed_in):
    assert signed_in.get("/admin/").status_code == 200
    assert signed_in.get("/admin/chat/thread/").status_code == 200
    assert signed_in.get("/admin/login/?next=/admin/chat/thread/")["Location"] == "/admin/chat/thread/"


def test_the_admin_login_does_not_redirect_off_site(signed_in):
    assert signed_in.get("/admin/login/?next=https://evil.example/")["Location"] == reverse("admin:index")


# --- Headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/new/", LOGIN_HELP, "/login/?token=wrong"])
def test_pages_carry_the_strict_csp_and_nosniff(signed_in, url):
    response = signed_in.get(url)

    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "img-src 'self' data:" in csp
    assert "unsafe-inline" not in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_style(signed_in, owner):
    thread, _, _ = _thread_with_reply(owner)

    html = signed_in.get(reverse("chat:thread", args=[thread.pk])).content.decode()

    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


# --- Pages -----------------------------------------------------------------------------------


def test_home_opens_the_newest_thread(signed_in, owner):
    ThreadFactory(owner=owner)
    newest = ThreadFactory(owner=owner)
    ThreadFactory()  # someone else's, newer still

    assert signed_in.get("/")["Location"] == reverse("chat:thread", args=[newest.pk])


def test_home_without_threads_opens_a_new_chat(signed_in):
    assert signed_in.get("/")["Location"] == reverse("chat:new")


def test_a_new_chat_preselects_the_default_agent_and_lists_every_agent(signed_in):
    AgentFactory(slug="brief", name="Brief")
    AgentFactory(slug="assistant", name="Assistant", is_default=True)

    html = signed_in.get(reverse("chat:new")).content.decode()

    assert 'data-thread=""' in html
    assert '<option value="assistant" selected>Assistant</option>' in html
    assert '<option value="brief">Brief</option>' in html


def test_a_thread_preselects_its_own_default_agent(signed_in, owner):
    AgentFactory(slug="assistant", name="Assistant", is_default=True)
    brief = AgentFactory(slug="brief", name="Brief")
    thread = ThreadFactory(owner=owner, default_agent=brief)

    html = signed_in.get(reverse("chat:thread", args=[thread.pk])).content.decode()

    assert '<option value="brief" selected>Brief</option>' in html
    assert '<option value="assistant">Assistant</option>' in html


def test_a_thread_page_shows_every_turn_in_order(signed_in, owner):
    thread, _, _ = _thread_with_reply(owner, reply="First answer")
    RunFactory(thread=thread, user_message=MessageFactory(thread=thread, content="Second question"))

    html = signed_in.get(reverse("chat:thread", args=[thread.pk])).content.decode()

    assert html.index('id="turn-1"') < html.index("First answer") < html.index('id="turn-2"')
    assert html.index("Second question") > html.index('id="turn-2"')


def test_another_owners_thread_and_its_turns_are_not_found(signed_in):
    theirs, _, _ = _thread_with_reply(UserFactory())

    assert signed_in.get(reverse("chat:thread", args=[theirs.pk])).status_code == 404
    assert _turn(signed_in, theirs).status_code == 404


def test_a_turn_that_does_not_exist_is_not_found(signed_in, owner):
    thread, _, _ = _thread_with_reply(owner)

    assert _turn(signed_in, thread, 2).status_code == 404


def test_the_sidebar_lists_only_the_owners_threads_and_marks_forks(signed_in, owner):
    original = ThreadFactory(owner=owner, title="Original")
    ThreadFactory(owner=owner, title="Copy", forked_from_thread=original)
    ThreadFactory(title="Not mine")

    html = signed_in.get(reverse("chat:sidebar") + f"?active={original.pk}").content.decode()

    assert "Original" in html and "Copy" in html and "Not mine" not in html
    assert html.count('class="fork-mark"') == 1
    assert f'class="thread-link is-active" href="/threads/{original.pk}/"' in html


def test_a_fork_says_where_it_came_from(signed_in, owner):
    original, _, reply = _thread_with_reply(owner, reply="Forty-two")
    fork = ThreadFactory(owner=owner, forked_from_thread=original, forked_from_message=reply)

    html = signed_in.get(reverse("chat:thread", args=[fork.pk])).content.decode()

    assert "Forked from" in html
    assert f'href="/threads/{original.pk}/#message-{reply.pk}"' in html
    assert "“Forty-two”" in html


# --- The turn partial ------------------------------------------------------------------------


def test_a_turn_renders_model_markdown_as_safe_html(signed_in, owner):
    thread, _, reply = _thread_with_reply(
        owner, reply="**Bold** <script>alert(1)</script> [x](javascript:alert(1)) ![p](https://evil.example/p.png)"
    )

    html = _turn(signed_in, thread).content.decode()

    assert (
        '<div class="msg-body prose"><p><strong>Bold</strong> &lt;script&gt;alert(1)&lt;/script&gt; '
        '[x](javascript:alert(1)) '
        '<a href="https://evil.example/p.png" rel="noopener noreferrer nofollow">p</a></p></div>'
    ) in html
    assert "<img" not in html and "<script" not in html


def test_a_users_message_is_shown_as_plain_text(signed_in, owner):
    thread = ThreadFactory(owner=owner)
    RunFactory(thread=thread, user_message=MessageFactory(thread=thread, content="<b>hi</b> **there**"))

    html = _turn(signed_in, thread).content.decode()

    assert '<div class="bubble">&lt;b&gt;hi&lt;/b&gt; **there**</div>' in html


def test_a_reply_is_labelled_with_its_agents_name(signed_in, owner):
    thread, _, _ = _thread_with_reply(owner, agent=AgentFactory(slug="brief", name="Brief"))

    html = _turn(signed_in, thread).content.decode()

    assert '<span class="agent-name">Brief</span>' in html


def test_tool_calls_show_as_chips_with_arguments_and_result(signed_in, owner):
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'}}
    bad = {"id": "c2", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"1/0"}'}}
    thread, run, _ = _thread_with_reply(owner, reply="", tool_calls=[call, bad])
    MessageFactory(
        thread=thread, run=run, role=Message.Role.TOOL, tool_call_id="c1", tool_name="calculator", content='{"result": 42}'
    )
    MessageFactory(
        thread=thread, run=run, role=Message.Role.TOOL, tool_call_id="c2", tool_name="calculator",
        content='{"error": "Division by zero."}', is_error=True,
    )

    html = _turn(signed_in, thread).content.decode()

    assert '<details class="chip chip-done" data-key="call-c1">' in html
    assert '<details class="chip chip-error" data-key="call-c2">' in html
    assert "{\n  &quot;expression&quot;: &quot;6*7&quot;\n}" in html
    assert "{&quot;result&quot;: 42}" in html
    assert "Division by zero." in html


def test_a_tool_round_and_the_answer_after_it_read_as_one_reply(signed_in, owner):
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    thread, run, first = _thread_with_reply(owner, reply="", tool_calls=[call])
    MessageFactory(thread=thread, run=run, role=Message.Role.TOOL, tool_call_id="c1", tool_name="calculator", content="42")
    answer = MessageFactory(thread=thread, run=run, role=Message.Role.ASSISTANT, content="It is 42.")

    html = _turn(signed_in, thread).content.decode()

    assert html.count('class="agent-name"') == 1
    assert f'class="msg msg-assistant msg-cont" id="message-{answer.pk}"' in html
    # One fork button for the reply, at its end (and one for the question).
    assert html.count('class="icon-btn fork-btn"') == 2
    assert f'action="/messages/{answer.pk}/fork/"' in html


def test_a_tool_call_without_a_result_yet_shows_as_running(signed_in, owner):
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    thread, run, _ = _thread_with_reply(owner, reply="", tool_calls=[call])
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)

    html = _turn(signed_in, thread).content.decode()

    assert '<details class="chip chip-running" data-key="call-c1">' in html
    assert 'data-open="1"' in html and 'class="typing"' in html


def test_a_chip_shows_how_long_the_call_took_and_a_call_never_made_says_not_run(signed_in, owner):
    made = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    skipped = {"id": "c2", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    thread, run, _ = _thread_with_reply(owner, reply="", tool_calls=[made, skipped])
    MessageFactory(thread=thread, run=run, role=Message.Role.TOOL, tool_call_id="c1", tool_name="calculator", content="2", duration_ms=37)
    Run.objects.filter(pk=run.pk).update(stop_reason=Run.StopReason.REPEATED_CALL, rounds=3)

    html = _turn(signed_in, thread).content.decode()

    assert "done · 37 ms" in html
    assert '<details class="chip chip-skipped" data-key="call-c2">' in html and "not run" in html
    assert "Stopped: the same tool call was repeated 3 times (after 3 rounds)." in html


def test_a_question_from_the_agent_waits_for_the_answer_then_shows_it(signed_in, owner):
    ask = {"id": "q1", "type": "function", "function": {"name": "ask_user", "arguments": '{"question": "Which <b>city</b>?"}'}}
    thread, run, _ = _thread_with_reply(owner, reply="", tool_calls=[ask])
    Run.objects.filter(pk=run.pk).update(status=Run.Status.WAITING, waiting_call_id="q1", stop_reason="")

    waiting = _turn(signed_in, thread).content.decode()
    MessageFactory(thread=thread, role=Message.Role.USER, turn=1, tool_call_id="q1", content="Rome <i>please</i>")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.DONE, waiting_call_id="", stop_reason=Run.StopReason.ANSWERED)
    answered = _turn(signed_in, thread).content.decode()

    assert "Which &lt;b&gt;city&lt;/b&gt;?" in waiting
    assert "is waiting for your answer" in waiting and 'data-open="0"' in waiting
    assert "Rome &lt;i&gt;please&lt;/i&gt;" in answered and "Your answer" in answered
    assert answered.count('class="msg msg-user"') == 1  # the answer is not shown as a new question


def test_a_queued_turn_shows_the_typing_indicator(signed_in, owner):
    thread = ThreadFactory(owner=owner)
    run = RunFactory(thread=thread)

    html = _turn(signed_in, thread).content.decode()

    assert f'data-runs="{run.pk}" data-open="1"' in html
    assert "is waiting for a worker…" in html


def test_a_streaming_reply_has_an_empty_slot_for_the_live_text(signed_in, owner):
    thread, run, reply = _thread_with_reply(owner, reply="", status=Message.Status.STREAMING)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)

    html = _turn(signed_in, thread).content.decode()

    assert f'<div class="msg-body stream" data-stream-for="{reply.pk}"></div>' in html


def test_a_failed_run_shows_its_error_and_a_retry_button(signed_in, owner):
    thread, run, _ = _thread_with_reply(owner, reply="Half an ans", status=Message.Status.FAILED)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, error="Could not reach the model server.")

    html = _turn(signed_in, thread).content.decode()

    assert "Half an ans" in html and "incomplete" in html
    assert "Could not reach the model server." in html
    assert f'hx-post="{reverse("chat:retry", args=[run.pk])}"' in html


def test_a_run_stopped_by_the_round_cap_says_so(signed_in, owner):
    thread, run, _ = _thread_with_reply(owner, reply="")
    Run.objects.filter(pk=run.pk).update(stop_reason=Run.StopReason.ROUND_CAP, rounds=10)

    html = _turn(signed_in, thread).content.decode()

    assert "Stopped: round cap reached (after 10 rounds)." in html


def test_an_earlier_failed_attempt_stays_visible_without_a_retry_button(signed_in, owner):
    thread, failed, _ = _thread_with_reply(owner, reply="", status=Message.Status.FAILED)
    Run.objects.filter(pk=failed.pk).update(status=Run.Status.FAILED, error="Timed out.")
    retry = RunFactory(thread=thread, user_message=failed.user_message, status=Run.Status.DONE)
    MessageFactory(thread=thread, run=retry, role=Message.Role.ASSISTANT, content="Second time lucky")

    html = _turn(signed_in, thread).content.decode()

    assert f'data-runs="{failed.pk} {retry.pk}"' in html
    assert html.index("An earlier attempt failed.") < html.index("Timed out.") < html.index("Second time lucky")
    assert "Retry</button>" not in html


# --- Fork and retry --------------------------------------------------------------------------


def test_forking_by_htmx_creates_the_fork_and_sends_the_page_there(signed_in, owner):
    thread, _, reply = _thread_with_reply(owner, reply="Answer one")
    RunFactory(thread=thread, user_message=MessageFactory(thread=thread, content="Not copied"))

    response = signed_in.post(reverse("chat:fork", args=[reply.pk]), headers={"HX-Request": "true"})

    fork = Thread.objects.get(forked_from_thread=thread)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("chat:thread", args=[fork.pk])
    assert list(fork.messages.values_list("content", flat=True)) == [thread.messages.first().content, "Answer one"]
    assert fork.forked_from_message == reply


def test_forking_without_javascript_redirects_to_the_fork(signed_in, owner):
    _, _, reply = _thread_with_reply(owner)

    response = signed_in.post(reverse("chat:fork", args=[reply.pk]))

    fork = Thread.objects.get(forked_from_message=reply)
    assert response["Location"] == reverse("chat:thread", args=[fork.pk])


def test_another_owners_message_cannot_be_forked(signed_in):
    _, _, reply = _thread_with_reply(UserFactory())

    assert signed_in.post(reverse("chat:fork", args=[reply.pk])).status_code == 404
    assert Thread.objects.count() == 1


def test_fork_refuses_a_get(signed_in, owner):
    _, _, reply = _thread_with_reply(owner)

    assert signed_in.get(reverse("chat:fork", args=[reply.pk])).status_code == 405


def test_retry_queues_a_new_run_and_re_renders_the_turn(
    signed_in, owner, django_capture_on_commit_callbacks, task_queue
):
    thread, run, _ = _thread_with_reply(owner, reply="", status=Message.Status.FAILED)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, error="Boom.")

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(reverse("chat:retry", args=[run.pk]), headers={"HX-Request": "true"})

    retry = Run.objects.exclude(pk=run.pk).get()
    assert (retry.status, retry.user_message_id) == (Run.Status.QUEUED, run.user_message_id)
    html = response.content.decode()
    assert f'data-runs="{run.pk} {retry.pk}" data-open="1"' in html
    assert "An earlier attempt failed." in html and "is waiting for a worker…" in html
    task = SignedPackage.loads(task_queue.dequeue()[0][1])
    assert (task["func"], task["args"]) == ("gateway.tasks.thread_process", (thread.pk,))


def test_retry_of_a_run_that_did_not_fail_is_refused_with_the_reason(signed_in, owner):
    _, run, _ = _thread_with_reply(owner)

    response = signed_in.post(reverse("chat:retry", args=[run.pk]), headers={"HX-Request": "true"})

    assert response.status_code == 409
    assert response.content.decode() == "Only a failed run can be retried."
    assert Run.objects.count() == 1


def test_retry_of_another_owners_run_is_refused(signed_in):
    _, run, _ = _thread_with_reply(UserFactory())
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)

    response = signed_in.post(reverse("chat:retry", args=[run.pk]))

    assert response.status_code == 409
    assert Run.objects.count() == 1
