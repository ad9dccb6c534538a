"""Attacks on logging in: guessing links, a stale session after rotation, an unsafe deploy.

Through the real URLconf, middleware, templates and cache; the deploy check runs
`manage.py check --deploy` in a child process with the environment an owner would set.
"""

import logging
import os
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse

from chat.login import login_token_issue
from chat.models import LoginToken

pytestmark = pytest.mark.django_db

HOME = reverse("chat:home")
SIGNED_IN_HOME = reverse("chat:new")  # where home sends an owner with no threads yet
LOGIN_HELP = reverse("chat:login-help")


@pytest.fixture(autouse=True)
def failures_forgotten():
    # The failure counters live in the per-process cache, which outlives a test's database.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def max_three_failures(settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 600
    return settings


def _refused(client, times, **extra):
    for n in range(times):
        assert client.get(f"/login/?token=guess-{n}", **extra).status_code == 403


# --- Guessing links ----------------------------------------------------------------------------


def test_after_too_many_refused_links_even_a_valid_one_is_turned_away_and_not_used_up(client, max_three_failures):
    token = login_token_issue()
    _refused(client, 3)

    response = client.get(f"/login/?token={token}")

    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many attempts" in page and "Wait 10 minutes" in page and "make login" in page
    assert response["Retry-After"] == "600"
    assert response["Referrer-Policy"] == "no-referrer"
    assert "_auth_user_id" not in client.session
    assert LoginToken.objects.get().used_at is None


def test_the_link_works_once_the_window_has_passed(client, max_three_failures, monkeypatch):
    token = login_token_issue()
    _refused(client, 3)
    start = time.time()

    monkeypatch.setattr(time, "time", lambda: start + 600 - 30)
    almost = client.get(f"/login/?token={token}")
    monkeypatch.setattr(time, "time", lambda: start + 600 + 1)
    after = client.get(f"/login/?token={token}")

    assert (almost.status_code, almost["Retry-After"]) == (429, "30")
    assert "Wait 1 minute," in almost.content.decode()
    assert after["Location"] == HOME
    assert client.session["_auth_user_id"]


def test_another_address_is_not_limited(client, max_three_failures):
    _refused(client, 3, REMOTE_ADDR="198.51.100.7")

    response = client.get(f"/login/?token={login_token_issue()}", REMOTE_ADDR="198.51.100.8")

    assert response["Location"] == HOME


def test_a_forwarded_for_header_does_not_get_an_address_new_attempts(client, max_three_failures):
    for n in range(3):
        client.get(f"/login/?token=guess-{n}", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")

    response = client.get(f"/login/?token={login_token_issue()}", HTTP_X_FORWARDED_FOR="203.0.113.99")

    assert response.status_code == 429


def test_a_successful_login_does_not_count_as_a_failure(client, settings):
    settings.LOGIN_MAX_FAILURES = 2
    _refused(client, 1)
    assert client.get(f"/login/?token={login_token_issue()}")["Location"] == HOME

    response = client.get(f"/login/?token={login_token_issue()}")

    assert response["Location"] == HOME


def test_a_refusal_is_logged_as_a_warning_without_the_token(client, caplog):
    secret_guess = "Zq8-secret-looking-guess-" + "x" * 20

    with caplog.at_level(logging.WARNING, logger="chat.login"):
        client.get(f"/login/?token={secret_guess}")

    [record] = [r for r in caplog.records if r.name == "chat.login"]
    assert record.levelno == logging.WARNING
    assert "127.0.0.1" in record.getMessage()
    assert secret_guess not in caplog.text and "Zq8" not in caplog.text


# --- Rotation ----------------------------------------------------------------------------------


def _login_url(*args) -> str:
    out = StringIO()
    call_command("login_url", *args, stdout=out)
    return out.getvalue().strip()


def _path(url: str) -> str:
    return url.removeprefix(settings.PUBLIC_URL)


def test_rotating_signs_out_an_existing_session_and_old_links(client):
    client.get(_path(_login_url()))
    assert client.get(HOME)["Location"] == SIGNED_IN_HOME
    unused_old_link = _path(_login_url())

    new_link = _path(_login_url("--rotate"))

    assert client.get(HOME)["Location"].startswith(LOGIN_HELP)
    assert client.get(unused_old_link).status_code == 403
    assert client.get(new_link)["Location"] == HOME
    assert client.get(HOME)["Location"] == SIGNED_IN_HOME


def test_rotating_deletes_the_owners_session_rows(client):
    client.get(_path(_login_url()))
    assert Session.objects.count() == 1

    _login_url("--rotate")

    assert Session.objects.count() == 0


def test_a_new_link_without_rotating_keeps_sessions_and_earlier_links(client):
    client.get(_path(_login_url()))
    earlier = _path(_login_url())

    _login_url()

    assert client.get(HOME)["Location"] == SIGNED_IN_HOME
    assert client.get(earlier)["Location"] == HOME


# --- Deploy check ------------------------------------------------------------------------------

PRODUCTION = {"HEARTH_HTTPS": "1", "HEARTH_BEHIND_PROXY": "1", "ALLOWED_HOSTS": "hearth.example.com", "PUBLIC_URL": "https://hearth.example.com"}


def _deploy_check(**env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_") and k not in {"DJANGO_DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "PUBLIC_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={**base, "DATA_DIR": str(settings.DATA_DIR), "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_production_settings_pass_the_deploy_check():
    result = _deploy_check(**PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_local_http_default_is_not_production_and_the_deploy_check_says_so():
    result = _deploy_check()

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


def test_a_weak_secret_key_fails_the_deploy_check():
    result = _deploy_check(**PRODUCTION, SECRET_KEY="too-short")

    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_debug_fails_the_deploy_check_even_behind_https():
    result = _deploy_check(**PRODUCTION, DJANGO_DEBUG="1")

    assert result.returncode != 0
    assert "security.W018" in result.stderr
