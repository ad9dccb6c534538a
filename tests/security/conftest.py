"""Shared by the security suites: the planted secrets, the real stack (daphne, a qcluster and
the scripted model, started once for the package) and the summary of what was tried."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import redis
import yaml
from django.conf import settings
from django.test import Client

from chat.login import login_token_issue
from tests.e2e.conftest import (
    ModelServer,
    _free_port,
    browser,  # noqa: F401  (the module-scoped Chromium fixture, used as it is)
    stack_running,
    web_stack,
)

from .corpus import corpus_load, corpus_packed
from .tally import tally_lines


def pytest_terminal_summary(terminalreporter):
    lines = tally_lines()
    if lines:
        terminalreporter.section("security figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def planted_secrets(settings, db) -> dict[str, str]:
    """Every secret this installation holds, with recognisable test values where they are ours
    to choose: the Django secret key, the model backend's API key and a live login token.
    (There is no Telegram bot token setting yet; add it here when there is one.)"""
    settings.LLM_API_KEY = f"sk-hearth-test-{secrets.token_hex(16)}"
    return {
        "SECRET_KEY": settings.SECRET_KEY,
        "LLM_API_KEY": settings.LLM_API_KEY,
        "login token": login_token_issue(),
    }


def secrets_found(text: str, planted: dict[str, str]) -> list[str]:
    """The names of the planted secrets that occur in `text`."""
    return [name for name, value in planted.items() if value and value in text]


# --- The real stack, once for the whole package --------------------------------------------------


# Skill texts hold the XSS corpus packed 500 characters at a time (a skill's compatibility
# field is at most 500 long): a few skills carry every payload in every field.
HOSTILE_SKILL_TEXTS = corpus_packed([p.replace("\x00", "") for p in corpus_load("xss_corpus.txt")], 500)


@pytest.fixture(scope="package")
def hostile_skills_dir(tmp_path_factory) -> Path:
    """A skills folder whose skills carry the XSS payloads in every field that is shown."""
    root = tmp_path_factory.mktemp("hostile-skills")
    for n, text in enumerate(HOSTILE_SKILL_TEXTS, start=1):
        folder = root / f"xss-{n}"
        folder.mkdir()
        front = {
            "name": f"xss-{n}", "description": text, "license": text, "compatibility": text,
            "metadata": {"author": text}, "allowed-tools": text,
        }  # fmt: skip
        (folder / "SKILL.md").write_text(f"---\n{yaml.safe_dump(front, allow_unicode=True)}---\n{text}\n", encoding="utf-8")
    return root


@pytest.fixture(scope="package")
def stack(django_db_setup, redis_server, hostile_skills_dir, tmp_path_factory):
    """daphne + a qcluster on the test database, as tests/e2e/conftest.py starts them, but
    once for every module here, and with the hostile skills folder. The model server is in
    rule mode; a test sets `stack.model.server.script` for scripted answers.

    The stack gets a Redis prefix of its own: its qcluster would otherwise take the tasks
    that in-process tests here queue and work off themselves (tests/worker.py)."""
    prefix = f"{os.environ['REDIS_PREFIX']}-security-stack"
    model = ModelServer(port=_free_port())
    model.start()
    stack, port = web_stack(
        model,
        tmp_path_factory.mktemp("stack"),
        GATEWAY_WORKERS="1",
        SKILLS_DIRS=str(hostile_skills_dir),
        WORKSPACES_DIR=str(tmp_path_factory.mktemp("stack-workspaces")),
        REDIS_PREFIX=prefix,
    )
    try:
        with stack_running(stack, port):
            yield stack
    finally:
        _redis_keys_delete(prefix)


def _redis_keys_delete(prefix: str) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in (f"{prefix}:*", f"django_q:{prefix}:*"):
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)
    client.close()


def session_cookie_for(owner) -> str:
    """A session for `owner` stored in the shared database: what a login link would give."""
    client = Client()
    client.force_login(owner)
    return client.cookies[settings.SESSION_COOKIE_NAME].value
