"""Stored and streamed XSS (OWASP LLM05, improper output handling), in a real Chromium.

Every payload of xss_corpus.txt is put in every place where text written by a person, a model
or an admin is shown: a user message, an assistant message (markdown), its continuation, a
tool call's name, arguments and result, a question and its answer, a stray tool result, a run
error, an agent's name, description and system prompt, a thread title (sidebar, heading, page
title, fork note), a skill's description, licence, compatibility, metadata and allowed tools,
and a reply streamed live over the websocket by the real stack (daphne, a qcluster, the
scripted model). Many payloads go on each page: one chat page holds the whole corpus.

Nothing may run and nothing may be fetched. The browser is watched four ways: __xss() (what
the payloads call) is a Playwright binding that records each call; dialogs (alert) are
recorded; a `securitypolicyviolation` listener, added by an init script, records anything the
CSP had to block; every request is routed, and one to a foreign host, or to a same-origin path
no page of ours asks for, is recorded and refused. The DOM of every page is then read back
(page.content(), parsed in Python: the CSP forbids string eval) and must hold no on*
attribute, no inline or foreign script, no frame, object, embed, base or meta refresh, no
javascript:/data:/vbscript: URL, and, inside the places user text goes, no element the
markdown allow-list does not produce (so no <img>). The last test shows the watch catches an
injection when one gets through.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents.models import Agent, Run
from agents.portability import agents_export_text
from agents.services import agents_seed
from chat.login import owner_get
from chat.models import Message, Thread
from chat.rendering import ALLOWED_ATTRIBUTES, ALLOWED_TAGS

from .conftest import HOSTILE_SKILL_TEXTS, session_cookie_for
from .corpus import corpus_load, corpus_packed
from .tally import tally_record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# NUL never reaches the database: the gateway strips it from messages, PostgreSQL refuses it.
PAYLOADS = [p.replace("\x00", "") for p in corpus_load("xss_corpus.txt")]
# Watches for __xss(); the CSP cannot block a listener added through the DevTools protocol.
WATCH_SCRIPT = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp([e.violatedDirective, e.blockedURI, e.sample].join(" | "));
});
"""
# The same-origin paths our pages ask for; anything else was requested by injected markup.
EXPECTED_PATHS = re.compile(
    r"^/(?:$|new/$|static/|favicon\.ico$|threads/(?:sidebar/|\d+/(?:turns/\d+/)?)$|admin/(?:[a-z0-9_]+/)*$)"
)
# Where text from people, models and admins is put, by class (or id); see _turn.html etc.
USER_TEXT_CLASSES = {
    "bubble", "msg-body", "chip-name", "question-ask", "question-answer", "thread-title",
    "agent-name", "run-error-text", "fork-note", "chip-body",
}  # fmt: skip
USER_TEXT_IDS = {"thread-title"}
# Our own markup inside those places: labels, and the fork icon.
TEMPLATE_CHILDREN = {("div", "chip-label"), ("span", "chip-label"), ("strong", None), ("span", None)}
VOID_TAGS = {"br", "hr", "img", "input", "meta", "link", "source", "embed", "base", "col", "area", "wbr", "track", "param"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background", "srcdoc"}
UNSAFE_SCHEME = re.compile(r"^(?:javascript|vbscript|data):", re.IGNORECASE)


class DomAudit(HTMLParser):
    """What in a page's live DOM could run or fetch something (a list of problems)."""

    def __init__(self, origin: str):
        super().__init__(convert_charrefs=True)
        self.origin = origin
        self.problems: list[str] = []
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, inside user text, inside one of our icons)

    def handle_starttag(self, tag, attrs):
        attrs = [(name.lower(), value or "") for name, value in attrs]
        by_name = dict(attrs)
        inside, icon = self._stack[-1][1:] if self._stack else (False, False)
        # Our icons (templates/icons/, _logo.html) are inline SVG hidden from screen readers.
        icon = icon or (tag == "svg" and by_name.get("aria-hidden") == "true")
        self._check(tag, by_name, attrs, inside and not icon)
        if tag not in VOID_TAGS:
            starts_user_text = bool(set(by_name.get("class", "").split()) & USER_TEXT_CLASSES) or by_name.get("id") in USER_TEXT_IDS
            self._stack.append((tag, inside or starts_user_text, icon))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def _check(self, tag: str, by_name: dict, attrs: list, inside: bool) -> None:
        where = f"<{tag} {' '.join(f'{n}={v[:40]!r}' for n, v in attrs)}>"
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler attribute {where}")
            if name in URL_ATTRIBUTES and UNSAFE_SCHEME.match("".join(value.split()).lstrip("\x00\x01")):
                self.problems.append(f"unsafe URL {where}")
            if name in ("href", "src", "action") and tag in ("script", "link", "img", "form", "iframe") and self._foreign(value):
                self.problems.append(f"foreign resource {where}")
        if tag == "script" and not by_name.get("src") and by_name.get("type") != "application/json":
            self.problems.append(f"inline script {where}")
        if tag in ("iframe", "frame", "object", "embed", "base", "applet") or (
            tag == "meta" and by_name.get("http-equiv", "").lower() == "refresh"
        ):
            self.problems.append(f"forbidden element {where}")
        if inside:
            self._check_user_text(tag, by_name, where)

    def _check_user_text(self, tag: str, by_name: dict, where: str) -> None:
        klass = by_name.get("class")
        if (tag, klass) in TEMPLATE_CHILDREN:
            return
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"element markdown never makes, in user text: {where}")
            return
        allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel"} if tag == "a" else set())
        extra = set(by_name) - allowed
        if extra:
            self.problems.append(f"attributes {sorted(extra)} in user text: {where}")

    def _foreign(self, url: str) -> bool:
        parts = urlsplit(url.strip())
        return bool(parts.netloc) and f"{parts.scheme or 'http'}://{parts.netloc}" != self.origin


def dom_problems(html: str, origin: str) -> list[str]:
    audit = DomAudit(origin)
    audit.feed(html)
    audit.close()
    return audit.problems


@dataclass
class Watch:
    """A signed-in browser page and everything suspicious it did."""

    page: object
    origin: str
    executions: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # CSP violations
    requests: list[str] = field(default_factory=list)  # foreign or unexpected
    errors: list[str] = field(default_factory=list)
    dom: list[str] = field(default_factory=list)
    pages_seen: int = 0

    def visit(self, path: str) -> None:
        self.page.goto(self.origin + path)
        self.audit(path)

    def audit(self, label: str) -> str:
        """Checks the page's DOM as it is now; returns it."""
        self.pages_seen += 1
        html = self.page.content()
        self.dom += [f"{label}: {p}" for p in dom_problems(html, self.origin)]
        return html

    def findings(self) -> dict[str, list[str]]:
        return {
            "executions": self.executions, "csp violations": self.blocked, "requests": self.requests,
            "page errors": self.errors, "dom": self.dom,
        }  # fmt: skip


@pytest.fixture
def watch(stack, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session_cookie_for(owner_get()), "url": stack.base_url}])
    page = context.new_page()
    page.set_default_timeout(10_000)
    seen = Watch(page=page, origin=stack.base_url)
    context.expose_binding("__xss", lambda source, *args: seen.executions.append(f"__xss{args} on {source['page'].url}"))
    context.expose_binding("__csp", lambda source, what: seen.blocked.append(f"{what} on {source['page'].url}"))
    context.add_init_script(WATCH_SCRIPT)

    def route(route):
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != stack.base_url or not EXPECTED_PATHS.match(parts.path):
            seen.requests.append(url)
            return route.abort()
        return route.continue_()

    context.route("**/*", route)
    page.on("dialog", lambda dialog: (seen.executions.append(f"dialog {dialog.type}: {dialog.message}"), dialog.dismiss()))
    page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
    page.on("console", lambda m: seen.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    yield seen
    context.close()


# The fields' sizes: an agent's name holds 100 characters, a title 200, a description 500.
NAMES, TITLES, DESCRIPTIONS = (corpus_packed(PAYLOADS, size) for size in (100, 200, 500))


def covered(shown: list[str]) -> int:
    """How many payloads a place showed whole, somewhere in the strings it showed."""
    return sum(1 for payload in PAYLOADS if any(payload in text for text in shown))


@dataclass
class World:
    corpus: Thread  # one turn per payload, the payload in every kind of message
    agents: list[Agent]  # one per name pack; the first ones carry the description packs
    titled: list[Thread]  # one per title pack, answered by agents[i], forked from the corpus


@pytest.fixture
def world(transactional_db) -> World:
    """Every payload stored everywhere, in the database the stack serves."""
    agents_seed()
    owner = owner_get()
    corpus = Thread.objects.create(owner=owner, title="XSS corpus", default_agent=Agent.objects.get(slug="assistant"))
    agents = [
        Agent.objects.create(
            slug=f"xss-agent-{n}", name=name, description=DESCRIPTIONS[n - 1] if n <= len(DESCRIPTIONS) else name,
            system_prompt="\n".join(PAYLOADS), enabled_tools=["calculator"],
            enabled_skills=[f"xss-{(n - 1) % len(HOSTILE_SKILL_TEXTS) + 1}"],
        )  # fmt: skip
        for n, name in enumerate(NAMES, start=1)
    ]
    agent_of = {payload: agent for agent in reversed(agents) for payload in PAYLOADS if payload in agent.name}
    questions = {payload: _turn_store(corpus, n, payload, agent_of[payload]) for n, payload in enumerate(PAYLOADS, start=1)}
    titled = [
        Thread.objects.create(
            owner=owner, title=title, default_agent=agent, forked_from_thread=corpus,
            forked_from_message=questions[next(p for p in PAYLOADS if p in title)],
        )  # fmt: skip
        for title, agent in zip(TITLES, agents)
    ]
    return World(corpus=corpus, agents=agents, titled=titled)


def _turn_store(thread: Thread, n: int, payload: str, agent: Agent) -> Message:
    """Turn n of the corpus thread: the payload as every kind of message a turn shows."""
    user = Message.objects.create(thread=thread, turn=n, role="user", content=payload, agent=agent)
    run = Run.objects.create(
        thread=thread, user_message=user, agent=agent, status=Run.Status.FAILED, stop_reason=Run.StopReason.ERROR,
        error=payload, started_at=timezone.now(), finished_at=timezone.now(),
    )  # fmt: skip
    calls = [
        _call(f"calc-{n}", "calculator", json.dumps({"expression": payload})),
        _call(f"odd-{n}", payload[:64], payload),  # a name and arguments that are not even JSON
        _call(f"ask-{n}", "ask_user", json.dumps({"question": payload})),
    ]
    reply = {"thread": thread, "turn": n, "run": run, "agent": agent}
    Message.objects.create(**reply, role="assistant", content=payload, tool_calls=calls)
    Message.objects.create(**reply, role="tool", tool_call_id=f"calc-{n}", tool_name="calculator", content=payload)
    Message.objects.create(**reply, role="tool", tool_call_id=f"odd-{n}", tool_name=payload[:64], content=payload, is_error=True)
    Message.objects.create(thread=thread, turn=n, role="user", tool_call_id=f"ask-{n}", content=payload)
    Message.objects.create(**reply, role="tool", tool_call_id=f"stray-{n}", tool_name=payload[:64], content=payload)
    Message.objects.create(**reply, role="assistant", content=payload)
    return user


def _call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _assert_nothing_happened(watch: Watch, inputs: int, suite: str) -> None:
    findings = watch.findings()
    tally_record(
        suite, inputs=inputs, pages=watch.pages_seen, executions=len(watch.executions),
        foreign_or_unexpected_requests=len(watch.requests), csp_violations=len(watch.blocked), dom_problems=len(watch.dom),
    )  # fmt: skip
    print(f"{suite}: {inputs} inputs on {watch.pages_seen} pages; " + ", ".join(f"{k} {len(v)}" for k, v in findings.items()))
    assert {k: v for k, v in findings.items() if v} == {}


# Each turn of the corpus thread shows its payload in these places.
TURN_PLACES = [
    "user message", "assistant markdown", "continued markdown", "tool arguments", "tool result",
    "odd tool name", "odd tool arguments", "error result", "question", "answer", "stray result name",
    "stray result", "run error", "agent name (reply header)",
]  # fmt: skip


def test_the_corpus_stored_in_every_chat_place_runs_and_fetches_nothing(watch, world):
    page = watch.page
    watch.visit(f"/threads/{world.corpus.pk}/")
    # Shown, and shown as text: each bubble and each title reads exactly what was stored.
    expect(page.locator("#turns .msg-user .bubble")).to_have_count(len(PAYLOADS))
    assert page.locator("#turns .msg-user .bubble").all_text_contents() == PAYLOADS
    assert set(page.locator(".thread-list .thread-title").all_text_contents()) == {*TITLES, "XSS corpus"}
    # Every agent picked in turn: chat.js writes its name into the composer's placeholder.
    for agent in world.agents:
        page.locator("#agent-select").select_option(agent.slug)
        expect(page.locator("#composer-text")).to_have_attribute("placeholder", f"Message {agent.name.strip()}…")
    watch.audit("after picking every agent")
    # Each titled thread: its title in <title> and the heading, its agent in the placeholder.
    for thread in world.titled:
        watch.visit(f"/threads/{thread.pk}/")
        expect(page.locator("#thread-title")).to_have_text(thread.title)
    page.wait_for_timeout(300)  # for anything that would fire late (animations, timers)

    names, titles = [a.name for a in world.agents], [t.title for t in world.titled]
    inputs = (
        len(PAYLOADS) * len(TURN_PLACES)
        + covered(names) * 2  # picker options, placeholder set by script
        + covered(titles) * 3  # sidebar, <title>, heading
        + covered([a.name for a in world.agents[: len(titles)]])  # placeholder rendered by the server
        + len(titles)  # fork notes (the start of a payload)
    )
    _assert_nothing_happened(watch, inputs, "XSS, chat pages")


def test_the_corpus_in_every_admin_place_runs_and_fetches_nothing(watch, world):
    page = watch.page
    watch.visit("/admin/agents/agent/")
    expect(page.locator("#result_list tbody tr")).to_have_count(len(world.agents) + 3)
    # The forms of the agents carrying the description packs: every payload in an <input value>
    # (description), in a <textarea> (system prompt) and in the skill checkboxes' labels.
    with_descriptions = world.agents[: len(DESCRIPTIONS)]
    for agent in with_descriptions:
        watch.visit(f"/admin/agents/agent/{agent.pk}/change/")
        expect(page.locator("#id_description")).to_have_value(agent.description.replace("\n", ""))
    watch.visit("/admin/agents/agent/skills/")
    expect(page.locator("#skills tbody tr")).to_have_count(len(HOSTILE_SKILL_TEXTS))
    watch.visit("/admin/chat/thread/")
    watch.visit(f"/admin/chat/thread/{world.corpus.pk}/change/")
    expect(page.locator("#monitor-runs tbody tr")).to_have_count(len(PAYLOADS))
    watch.visit("/admin/agents/run/")
    watch.visit("/admin/chat/message/")
    message_list = page.locator("#result_list").inner_text()
    # Importing the agents back names every one of them in the admin's message.
    watch.visit("/admin/agents/agent/import/")
    page.locator("#id_text").fill(agents_export_text(agents=world.agents, fmt="json"))
    page.locator('input[type="submit"]').click()
    expect(page.locator(".messagelist")).to_contain_text(f"Imported {len(world.agents)} agents")
    watch.audit("after the import")
    page.wait_for_timeout(300)

    names = [a.name for a in world.agents]
    inputs = (
        covered(names) * 3  # agent list, run list, skills page "enabled on"
        + covered([a.name for a in with_descriptions])  # <input value> of the name
        + len(PAYLOADS) * 3 * len(with_descriptions)  # description, system prompt, skill labels
        + len(PAYLOADS) * 5  # skills page: description, licence, compatibility, metadata, allowed tools
        + covered([t.title for t in world.titled])  # thread list
        + len(PAYLOADS) * 5  # monitor: message, tool arguments, result, agent, run error
        + covered([message_list])  # message list (the first page, 60 characters each)
        + covered(names)  # the import's message
    )
    _assert_nothing_happened(watch, inputs, "XSS, admin pages")


def test_a_streamed_reply_carrying_the_corpus_runs_and_fetches_nothing_live_or_rendered(watch, stack, transactional_db):
    agents_seed()
    text = "\n\n".join(PAYLOADS)
    model = stack.model.server
    paced, model.tokens_per_second = model.tokens_per_second, 40  # ~3 s of streaming
    model.script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": text}}]}, text]
    try:
        watch.visit("/new/")
        page = watch.page
        page.locator("#composer-text").fill("Show me every trick you know")
        page.locator("#composer-text").press("Enter")

        # The text arrives over the socket and is shown as it is: as text.
        expect(page.locator("[data-stream-for]")).to_contain_text(PAYLOADS[2], timeout=15_000)
        assert "data-stream-for" in watch.audit("while streaming"), "the reply was no longer streaming"
        expect(page.locator('#turns > .turn[data-open="1"]')).to_have_count(0, timeout=30_000)
        watch.audit("after the run")
    finally:
        model.tokens_per_second, model.script = paced, None

    reply = Message.objects.filter(role="assistant", content=text)
    assert reply.count() == 1, "the streamed reply was not stored whole"
    expect(page.locator(".msg-body.prose")).to_contain_text("click")
    expect(page.locator("details.chip .chip-name")).to_have_text("calculator")
    page.wait_for_timeout(300)

    # The live stream, the rendered reply, and the tool chip's arguments and error.
    _assert_nothing_happened(watch, len(PAYLOADS) * 3, "XSS, streamed reply")


# --- The watch itself ----------------------------------------------------------------------------


def test_the_watch_sees_an_injection_that_gets_through(watch, stack):
    """Pages served by the test itself at a path of ours: one without any CSP, where injected
    markup runs, and one with the app's CSP, where it is blocked but still seen."""
    from config.middleware import CONTENT_SECURITY_POLICY

    markup = (
        "<div class='bubble'><img src=x onerror=__xss(1)><script>alert(2)</script>"
        "<a href='javascript:__xss(3)'>x</a><img src='https://xss.attacker.example/4.png'></div>"
    )
    pages = {"/static/open.html": {}, "/static/guarded.html": {"Content-Security-Policy": CONTENT_SECURITY_POLICY}}
    for path, headers in pages.items():
        watch.page.route(stack.base_url + path, _serve(markup, headers))
        watch.visit(path)
    watch.page.wait_for_timeout(300)

    assert any("__xss(1,)" in e for e in watch.executions) and any("dialog alert: 2" in e for e in watch.executions)
    assert any("script-src" in b for b in watch.blocked)  # on the guarded page
    assert any("xss.attacker.example" in r for r in watch.requests)
    assert any("event handler attribute" in p for p in watch.dom)
    assert any("inline script" in p for p in watch.dom)
    assert any("unsafe URL" in p for p in watch.dom)
    assert any("element markdown never makes" in p and "<img" in p for p in watch.dom)


def _serve(body: str, headers: dict):
    def handler(route):
        route.fulfill(status=200, content_type="text/html", headers=headers, body=body)

    return handler
