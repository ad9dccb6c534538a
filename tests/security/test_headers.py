"""Every response carries the browser-side defences, error pages and static files included.

Through the real URLconf and middleware stack (test client, DEBUG off as in production). A
500 needs a view that fails: tests/security/crash_urls.py is the app's URLconf plus one.
tests/chat/test_views.py checks the CSP's content on three pages; here it is the coverage.
"""

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from chat.login import login_token_issue, owner_get
from config.middleware import CONTENT_SECURITY_POLICY
from tests.factories import AgentFactory, MessageFactory, ThreadFactory

pytestmark = pytest.mark.django_db

HARDENED_REFERRER_POLICIES = {"same-origin", "no-referrer"}


def hardening_problems(response) -> list[str]:
    """What is missing from a response's security headers ([] when nothing is)."""
    headers = response.headers
    problems = []
    if headers.get("Content-Security-Policy") != CONTENT_SECURITY_POLICY:
        problems.append(f"CSP is {headers.get('Content-Security-Policy')!r}")
    if headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    if headers.get("Referrer-Policy") not in HARDENED_REFERRER_POLICIES:
        problems.append(f"Referrer-Policy is {headers.get('Referrer-Policy')!r}")
    framing_denied = headers.get("X-Frame-Options") == "DENY" or "frame-ancestors 'none'" in headers.get(
        "Content-Security-Policy", ""
    )
    if not framing_denied:
        problems.append("the page may be framed (neither X-Frame-Options DENY nor frame-ancestors 'none')")
    if "camera=()" not in headers.get("Permissions-Policy", ""):
        problems.append("no Permissions-Policy")
    return problems


@pytest.fixture
def world(db):
    owner = owner_get()
    agent = AgentFactory(slug="assistant", is_default=True)
    thread = ThreadFactory(owner=owner, default_agent=agent, title="Headers")
    MessageFactory(thread=thread, content="hello")
    return {"owner": owner, "agent": agent, "thread": thread}


@pytest.fixture
def owner_client(world):
    client = Client()
    client.force_login(world["owner"])
    return client


# (what, signed in?, method, url template, expected status). {thread} and {agent} are filled in.
RESPONSES = [
    ("chat page", True, "get", "/threads/{thread}/", 200),
    ("new chat", True, "get", "/new/", 200),
    ("turn partial (htmx)", True, "get", "/threads/{thread}/turns/1/", 200),
    ("sidebar partial (htmx)", True, "get", "/threads/sidebar/", 200),
    ("home redirect", True, "get", "/", 302),
    ("admin index", True, "get", "/admin/", 200),
    ("admin agent list", True, "get", "/admin/agents/agent/", 200),
    ("admin agent form", True, "get", "/admin/agents/agent/{agent}/change/", 200),
    ("admin skills page", True, "get", "/admin/agents/agent/skills/", 200),
    ("admin thread monitor", True, "get", "/admin/chat/thread/{thread}/change/", 200),
    ("admin add refused", True, "get", "/admin/chat/thread/add/", 403),
    ("login help", False, "get", "/login/help/", 200),
    ("refused login link", False, "get", "/login/?token=not-a-token", 403),
    ("stranger sent to login", False, "get", "/threads/{thread}/", 302),
    ("admin for a stranger", False, "get", "/admin/", 302),
    ("admin password form replaced", False, "get", "/admin/login/", 302),
    ("static css", False, "get", "/static/css/app.css", 200),
    ("static js", False, "get", "/static/js/chat.js", 200),
    ("static svg", False, "get", "/static/img/hearth.svg", 200),
    ("admin static", False, "get", "/static/admin/css/base.css", 200),
    ("favicon redirect", False, "get", "/favicon.ico", 301),
    ("404 page", True, "get", "/no/such/page/", 404),
    ("404 for a stranger", False, "get", "/no/such/page/", 404),
    ("404 static file", False, "get", "/static/no-such-file.css", 404),
    ("404 thread", True, "get", "/threads/999999/", 404),
    ("405 wrong method", True, "get", "/logout/", 405),
    ("409 retry refused", True, "post", "/runs/999999/retry/", 409),
]


@pytest.mark.parametrize(
    ("what", "signed_in", "method", "url", "status"), RESPONSES, ids=[r[0] for r in RESPONSES]
)
def test_every_kind_of_response_carries_the_security_headers(world, owner_client, what, signed_in, method, url, status):
    client = owner_client if signed_in else Client()
    url = url.format(thread=world["thread"].pk, agent=world["agent"].pk)

    response = getattr(client, method)(url)

    assert response.status_code == status
    assert hardening_problems(response) == []


def test_a_working_login_link_and_the_rate_limited_page_carry_them_with_no_referrer(world, settings):
    settings.LOGIN_MAX_FAILURES = 1
    signed_in = Client().get(f"/login/?token={login_token_issue()}")
    Client().get("/login/?token=wrong")
    limited = Client().get("/login/?token=wrong-again")

    assert (signed_in.status_code, limited.status_code) == (302, 429)
    for response in (signed_in, limited):
        assert hardening_problems(response) == []
        assert response["Referrer-Policy"] == "no-referrer"  # the URL held a secret


def test_the_500_page_carries_them_and_shows_no_details():
    client = Client(raise_request_exception=False)

    with override_settings(ROOT_URLCONF="tests.security.crash_urls"):
        response = client.get("/crash/")

    assert response.status_code == 500
    assert hardening_problems(response) == []
    page = response.content.decode()
    assert "Something went wrong" in page and "RuntimeError" not in page and "on purpose" not in page


def test_the_csrf_failure_page_carries_them(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["owner"])

    response = client.post("/logout/")

    assert response.status_code == 403
    assert "Please reload the page" in response.content.decode()
    assert hardening_problems(response) == []


def test_a_request_for_a_foreign_host_is_a_400_that_carries_them(world):
    response = Client().get("/login/help/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert hardening_problems(response) == []


def test_a_body_over_the_upload_limit_is_a_400_that_carries_them(owner_client, world):
    too_big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    url = reverse("admin:agents_agent_change", args=[world["agent"].pk])

    response = owner_client.post(url, {"name": too_big})

    assert response.status_code == 400
    assert hardening_problems(response) == []


# --- Cookies ----------------------------------------------------------------------------------


def _cookie_problems(morsel, *, httponly: bool) -> list[str]:
    problems = []
    if morsel["samesite"] not in ("Lax", "Strict"):
        problems.append(f"{morsel.key}: SameSite is {morsel['samesite']!r}")
    if httponly and not morsel["httponly"]:
        problems.append(f"{morsel.key}: not HttpOnly")
    return problems


def test_the_session_cookie_from_a_login_link_is_httponly_and_samesite(world):
    response = Client().get(f"/login/?token={login_token_issue()}")

    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session.value
    assert _cookie_problems(session, httponly=True) == []


def test_the_csrf_cookie_is_httponly_and_samesite(owner_client):
    response = owner_client.get("/new/")

    # SameSite keeps it off cross-site requests; HttpOnly because no script of ours reads it
    # (forms carry the token in their body).
    assert _cookie_problems(response.cookies[settings.CSRF_COOKIE_NAME], httponly=True) == []


def test_the_admin_messages_cookie_is_httponly_and_samesite(owner_client, world):
    agent = world["agent"]
    form = {
        "name": "Renamed", "slug": agent.slug, "description": "", "model": "", "system_prompt": "",
        "temperature": "0.5", "max_tool_rounds": "5", "enabled_tools": [], "enabled_skills": [],
    }  # fmt: skip

    response = owner_client.post(reverse("admin:agents_agent_change", args=[agent.pk]), form)

    assert response.status_code == 302
    assert _cookie_problems(response.cookies["messages"], httponly=True) == []
