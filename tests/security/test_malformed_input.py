"""Malformed input on every way in: the real daphne answers with a 4xx or an error frame,
never a 500 or a dropped socket, and the next ordinary request is served as usual.

Against the stack the browser tests use (tests/security/conftest.py): raw HTTP with
http.client (so bodies can be anything: 10 MB, not UTF-8, broken multipart) and the
websocket protocol with the `websockets` client. tests/chat/test_consumers.py already covers
frames that are not JSON, not an object, of an unknown type, binary or over 256 KB; here are
valid JSON frames with the wrong types inside.

The defects this suite found (each a 500 or a dead consumer) are fixed; their tests stay:
admin actions on forged ids, a non-ASCII digit in ?active=, deeply nested or alias-bomb
agent files, and frames with an infinite thread id, an unhashable type, deep nesting or a
lone surrogate.
"""

from __future__ import annotations

import http.client
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from agents.models import Agent, Run
from chat.login import owner_get
from chat.models import Message, Thread

from .conftest import session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)

TEN_MB = 10 * 1024 * 1024
FORM = "application/x-www-form-urlencoded"


@dataclass
class Site:
    base_url: str
    cookie: str
    csrf: str
    agent: Agent
    thread: Thread
    message: Message
    run: Run
    spare_thread: Thread

    def request(self, method: str, path: str, body: bytes = b"", content_type: str = FORM, cookie: str | None = None):
        """(status, body) of one raw HTTP request, signed in, with a valid CSRF token."""
        url = urlsplit(self.base_url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {
            "Cookie": f"sessionid={cookie or self.cookie}; csrftoken={self.csrf}",
            "X-CSRFToken": self.csrf,
            "Origin": self.base_url,
            "Content-Type": content_type,
        }
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def still_serves(self) -> bool:
        status, page = self.request("GET", f"/threads/{self.thread.pk}/")
        return status == 200 and b"Malformed" in page


@pytest.fixture
def site(stack, transactional_db) -> Site:
    owner = owner_get()
    agent = Agent.objects.create(slug="steady", name="Steady", temperature=0.5, max_tool_rounds=5, is_default=True)
    thread = Thread.objects.create(owner=owner, title="Malformed", default_agent=agent)
    message = Message.objects.create(thread=thread, turn=1, role="user", content="hello")
    run = Run.objects.create(
        thread=thread, user_message=message, agent=agent, status=Run.Status.FAILED, error="down", finished_at=timezone.now()
    )
    return Site(
        base_url=stack.base_url, cookie=session_cookie_for(owner), csrf=secrets.token_hex(16),
        agent=agent, thread=thread, message=message, run=run, spare_thread=Thread.objects.create(owner=owner, title="Spare"),
    )  # fmt: skip


def _multipart(body: bytes) -> tuple[bytes, str]:
    return body, "multipart/form-data; boundary=xyz"


MALFORMED_BODIES = {
    "10 MB form": (b"name=" + b"x" * TEN_MB, FORM),
    "not UTF-8": (b"name=\xff\xfe\xfa&description=\xc3\x28&text=\x80\x81&post=\xfe", FORM),
    "invalid JSON": (b'{"name": "x", "temperature": ', "application/json"),
    "JSON array": (b"[1, 2, 3]", "application/json"),
    "wrong types": (
        b"name=&name=a&temperature=abc&max_tool_rounds=99999999999999999999&max_tool_rounds=-1"
        b"&enabled_tools=shell&enabled_tools=no-such-tool&enabled_skills%5B%5D=x&slug=../../x"
        b"&text=%5B1%5D&action=no_such_action&_selected_action=1&_selected_action=-1&index=x&post=maybe",
        FORM,
    ),
    "truncated multipart": _multipart(b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.json"\r\n\r\n{"a'),
    "multipart without boundary": (b"--\r\n\r\n", "multipart/form-data"),
    "NUL bytes": (b"name=a%00b&description=%00&text=%00%00", FORM),
}


def _post_endpoints(site: Site) -> dict[str, str]:
    return {
        "fork": f"/messages/{site.message.pk}/fork/",
        "retry": f"/runs/{site.run.pk}/retry/",
        "admin: change agent": f"/admin/agents/agent/{site.agent.pk}/change/",
        "admin: add agent": "/admin/agents/agent/add/",
        "admin: import agents": "/admin/agents/agent/import/",
        "admin: agent list action": "/admin/agents/agent/",
        # Django's delete view takes any POST data as the confirmation (CSRF is the guard),
        # so this one goes to a thread of its own, gone after the first body with data.
        "admin: delete thread": f"/admin/chat/thread/{site.spare_thread.pk}/delete/",
    }


def test_every_post_endpoint_answers_malformed_bodies_without_a_500_and_keeps_serving(site):
    answers, crashed = {}, []
    for endpoint, path in _post_endpoints(site).items():
        for kind, (body, content_type) in MALFORMED_BODIES.items():
            status, page = site.request("POST", path, body, content_type)
            answers[endpoint, kind] = (status, b"errornote" in page)
            if status >= 500 or not site.still_serves():
                crashed.append(f"{endpoint} / {kind}: {status}")

    assert crashed == [], "\n".join(crashed)
    unreadable = ("10 MB form", "multipart without boundary")
    assert {answers[e, k][0] for e, k in answers if k in unreadable} == {400}
    # The admin's forms refuse what they can read, saying why (fork and retry take no body);
    # a body that is no form at all (JSON, broken multipart) leaves the import page unsent.
    forms = ("admin: change agent", "admin: add agent", "admin: import agents")
    assert {answers[e, k][0] for e, k in answers if e in forms and k not in unreadable} == {200}
    form_encoded = ("not UTF-8", "wrong types", "NUL bytes")
    assert all(answers[e, k][1] for e in forms for k in form_encoded)
    # And nothing was changed by any of it: the agent, the list of agents, the thread.
    site.agent.refresh_from_db()
    assert (site.agent.name, site.agent.temperature, site.agent.max_tool_rounds) == ("Steady", 0.5, 5)
    assert Agent.objects.count() == 1
    assert Thread.objects.filter(pk=site.thread.pk).exists()


def test_an_admin_action_on_a_non_numeric_id_is_refused_without_a_500(site):
    status, _ = site.request("POST", "/admin/agents/agent/", b"action=export_json&_selected_action=abc")

    assert status < 500
    assert site.still_serves()


def test_signing_out_with_a_malformed_body_signs_out_and_the_server_goes_on(site):
    other_session = session_cookie_for(owner_get())
    status, _ = site.request("POST", "/logout/", b"\xff" * 1000, "application/json", cookie=other_session)

    assert status == 302
    assert site.request("GET", "/new/", cookie=other_session)[0] == 302  # signed out
    assert site.still_serves()  # the other session was not touched


@pytest.mark.parametrize(
    "query",
    [
        "?active=99999999999999999999999",
        "?active=%00",
        "?active=-1",
        "?active=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    ],
)
def test_the_sidebar_refuses_odd_active_ids_without_a_500(site, query):
    status, _ = site.request("GET", f"/threads/sidebar/{query}")

    assert status == 200
    assert site.still_serves()


def test_huge_ids_in_urls_are_not_found_rather_than_a_500(site):
    huge = "9" * 30
    for method, path in [
        ("GET", f"/threads/{huge}/"),
        ("GET", f"/threads/{site.thread.pk}/turns/{huge}/"),
        ("POST", f"/messages/{huge}/fork/"),
        ("POST", f"/runs/{huge}/retry/"),
        ("GET", f"/admin/agents/agent/{huge}/change/"),
    ]:
        assert site.request(method, path)[0] in (302, 404, 409), path
    assert site.still_serves()


# --- Agent import: a file from somewhere else (OWASP LLM03, supply chain) ------------------------


def _alias_bomb(levels: int) -> str:
    """YAML whose aliases expand 9-fold per level: a few hundred bytes, 9**levels items."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines + [f"format: *a{levels - 1}", "slug: bomb"]) + "\n"


@pytest.mark.parametrize("text", ["[" * 100_000, "- " * 5_000 + "x"], ids=["JSON", "YAML"])
def test_importing_a_deeply_nested_file_is_refused_with_a_reason(site, text):
    status, page = site.request("POST", "/admin/agents/agent/import/", urlencode({"text": text}).encode())

    assert status == 200 and b"import-problems" in page
    assert site.still_serves()


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(site):
    status, page = site.request("POST", "/admin/agents/agent/import/", urlencode({"text": _alias_bomb(5)}).encode())

    assert status < 500 and b"import-problems" in page
    assert len(page) < 64 * 1024, f"{len(page):,} bytes of error page from a {len(_alias_bomb(5))}-byte file"
    assert Agent.objects.count() == 1


# --- Websocket frames -------------------------------------------------------------------------

BAD_FRAMES = [
    ('{"type": "subscribe", "thread": {"$gt": 0}}', "That thread does not exist."),
    ('{"type": "subscribe", "thread": [1]}', "That thread does not exist."),
    ('{"type": "subscribe", "thread": "1 OR 1=1"}', "That thread does not exist."),
    ('{"type": "subscribe", "thread": NaN}', "That thread does not exist."),
    ('{"type": "subscribe", "thread": 99999999999999999999999}', "That thread does not exist."),
    ('{"type": "message.send", "thread": null, "text": {"a": 1}}', "A message must be text."),
    ('{"type": "message.send", "thread": null, "text": ["hi"]}', "A message must be text."),
    ('{"type": "message.send", "thread": "abc", "text": "hi"}', "That thread does not exist (it may have been deleted)."),
    ('{"type": "message.send", "thread": true, "text": "hi"}', "That thread does not exist (it may have been deleted)."),
    ('{"type": "message.send", "thread": null, "agent": ["x"], "text": "hi"}', "There is no agent called \"['x']\"."),
    ('{"type": "message.send", "thread": null, "text": "' + "x" * 60_000 + '"}', "That message is 60,000 characters long; the limit is 50,000."),
    ('"just a string"', 'A frame must be a JSON object with a "type".'),
    # Defects this suite found (each once killed the consumer); any error frame will do.
    ('{"type": "subscribe", "thread": 1e309}', None),  # int(inf): OverflowError
    ('{"type": "message.send", "thread": -1e309, "text": "hi"}', None),
    ('{"type": ["subscribe"]}', None),  # an unhashable "type"
    ('{"type": {"a": 1}}', None),
    ("[" * 50_000 + "]" * 50_000, None),  # RecursionError in json.loads, under the frame limit
    ('{"type": "message.send", "thread": null, "text": "\\ud800 half a character"}', None),  # a lone surrogate
]


@pytest.mark.parametrize(("frame", "error"), BAD_FRAMES, ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_a_frame_with_wrong_types_gets_an_error_frame_and_the_socket_keeps_working(site, frame, error):
    url = site.base_url.replace("http://", "ws://") + "/ws/chat/"
    headers = {"Cookie": f"sessionid={site.cookie}", "Origin": site.base_url}
    with connect(url, additional_headers=headers, max_size=None, open_timeout=10) as socket:
        socket.send(frame)
        try:
            answer = json.loads(socket.recv(timeout=3))
            socket.send(json.dumps({"type": "subscribe", "thread": site.thread.pk}))
            after = json.loads(socket.recv(timeout=3))
        except ConnectionClosed as closed:
            pytest.fail(f"the server closed the socket ({closed.rcvd}) instead of answering")

    assert answer == {"type": "error", "error": error if error else answer.get("error"), "ref": None}
    assert answer["error"]
    assert after == {"type": "subscribed", "thread": site.thread.pk}
    assert not Message.objects.exclude(pk=site.message.pk).exists()  # nothing was stored
