from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from chat.login import (
    OWNER_USERNAME,
    LoginLimited,
    login_rotate,
    login_token_attempt,
    login_token_issue,
    login_token_redeem,
    login_url,
    owner_get,
    session_is_current,
)
from chat.models import LoginToken

pytestmark = pytest.mark.django_db


def test_a_token_logs_the_owner_in_once():
    token = login_token_issue()

    first = login_token_redeem(token)
    second = login_token_redeem(token)

    assert first.username == OWNER_USERNAME
    assert second is None
    assert LoginToken.objects.get().used_at is not None


def test_an_expired_token_is_refused():
    token = login_token_issue()
    LoginToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert login_token_redeem(token) is None
    assert LoginToken.objects.get().used_at is None


@pytest.mark.parametrize("wrong", ["not-the-token", "", None, 12345, "x" * 201])
def test_a_wrong_token_is_refused_and_the_real_one_still_works(wrong):
    token = login_token_issue()

    assert login_token_redeem(wrong) is None
    assert login_token_redeem(token) is not None


def test_only_a_hash_of_the_token_is_stored():
    token = login_token_issue()

    stored = LoginToken.objects.get()
    assert token not in stored.digest
    assert len(stored.digest) == 64
    assert stored.expires_at > timezone.now() + timedelta(minutes=59)


def test_the_owner_is_a_superuser_without_a_usable_password():
    token = login_token_issue()
    owner = login_token_redeem(token)

    assert owner.is_superuser and owner.is_staff
    assert not owner.has_usable_password()
    assert owner_get() == owner
    assert get_user_model().objects.count() == 1


def test_login_url_carries_the_token(settings):
    settings.PUBLIC_URL = "http://127.0.0.1:8000"

    assert login_url("abc") == "http://127.0.0.1:8000/login/?token=abc"


@pytest.fixture
def failures_forgotten():
    cache.clear()
    yield
    cache.clear()


def test_an_address_is_limited_before_its_token_is_looked_at(settings, failures_forgotten):
    settings.LOGIN_MAX_FAILURES, settings.LOGIN_FAILURE_WINDOW_SECONDS = 2, 300
    token = login_token_issue()
    assert login_token_attempt("wrong", client_ip="192.0.2.1") is None
    assert login_token_attempt("wrong", client_ip="192.0.2.1") is None

    with pytest.raises(LoginLimited) as limited:
        login_token_attempt(token, client_ip="192.0.2.1")

    assert (limited.value.wait_seconds, limited.value.wait_minutes) == (300, 5)
    assert LoginToken.objects.get().used_at is None
    assert login_token_attempt(token, client_ip="192.0.2.2").username == OWNER_USERNAME


def test_rotating_ends_earlier_unused_links_and_returns_one_that_works():
    earlier = login_token_issue()

    token = login_rotate()

    assert login_token_redeem(earlier) is None
    assert login_token_redeem(token).username == OWNER_USERNAME
    assert LoginToken.objects.count() == 1


def test_rotating_changes_the_session_hash_so_earlier_sessions_no_longer_verify():
    owner = owner_get()
    before = owner.get_session_auth_hash()
    assert session_is_current(user_id=owner.pk, session_hash=before)

    login_rotate()

    owner.refresh_from_db()
    assert not owner.has_usable_password()
    assert not session_is_current(user_id=owner.pk, session_hash=before)
    assert session_is_current(user_id=owner.pk, session_hash=owner.get_session_auth_hash())


@pytest.mark.parametrize("session_hash", [None, ""])
def test_a_session_without_a_hash_is_not_current(session_hash):
    assert not session_is_current(user_id=owner_get().pk, session_hash=session_hash)
