"""The single user, the one-time login links printed at start-up, and their rotation.

Failed attempts are counted per client address in the cache (see CACHES in settings);
rotating ends every session through the owner's session auth hash, which Django and channels
check on every request and socket connect.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .models import LoginToken

log = logging.getLogger(__name__)

OWNER_USERNAME = "owner"
# Sent to an owner's sessions group when rotation has ended every session.
SESSION_ENDED = "session.ended"
_DB_SESSION_ENGINES = {"django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"}


class LoginLimited(Exception):
    """Too many refused login links from one address; try again after `wait_seconds`."""

    def __init__(self, wait_seconds: int):
        super().__init__(f"too many failed logins; wait {wait_seconds} s")
        self.wait_seconds = wait_seconds

    @property
    def wait_minutes(self) -> int:
        return max(1, math.ceil(self.wait_seconds / 60))


def owner_get():
    """The one user this installation has (created on first use, with no password)."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=OWNER_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login_token_issue() -> str:
    """A new one-time login token (256 random bits). Only its hash is stored."""
    token = secrets.token_urlsafe(32)
    LoginToken.objects.create(
        digest=_digest(token), expires_at=timezone.now() + timedelta(seconds=settings.LOGIN_TOKEN_TTL_SECONDS)
    )
    return token


def login_url(token: str) -> str:
    return f"{settings.PUBLIC_URL}/login/?token={token}"


def login_token_redeem(token) -> object | None:
    """The owner if `token` is a valid unused link, which is then used up; otherwise None.

    Compared in constant time against every live token, so timing tells nothing about them.
    """
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    digest = _digest(token)
    now = timezone.now()
    match = None
    for candidate in LoginToken.objects.filter(used_at__isnull=True, expires_at__gt=now):
        if hmac.compare_digest(candidate.digest, digest):
            match = candidate
    if match is None:
        return None
    # Conditional update: of two requests racing with the same link, only one logs in.
    if LoginToken.objects.filter(pk=match.pk, used_at__isnull=True).update(used_at=now) != 1:
        return None
    return owner_get()


def login_token_attempt(token, *, client_ip: str):
    """The owner if `token` is a valid unused link (now used up); None if it is refused.

    Raises LoginLimited, before the token is even looked at, while `client_ip` has had
    LOGIN_MAX_FAILURES refusals within the last LOGIN_FAILURE_WINDOW_SECONDS; a link is thus
    never used up by a request that was turned away. Every refusal is counted and logged at
    WARNING with the address, never the token. A successful login is not counted.
    """
    wait = _limited_for_seconds(client_ip)
    if wait:
        raise LoginLimited(wait)
    user = login_token_redeem(token)
    if user is None:
        failures = _failure_record(client_ip)
        log.warning(
            "Refused a login link from %s (%d of %d allowed failures in %d s)",
            client_ip, failures, settings.LOGIN_MAX_FAILURES, settings.LOGIN_FAILURE_WINDOW_SECONDS,
        )
    return user


def _failures_key(client_ip: str) -> str:
    return f"login-failures:{client_ip}"


def _recent_failures(client_ip: str, now: float) -> list[float]:
    since = now - settings.LOGIN_FAILURE_WINDOW_SECONDS
    return [t for t in cache.get(_failures_key(client_ip), []) if t > since]


def _limited_for_seconds(client_ip: str) -> int:
    now = time.time()
    recent = _recent_failures(client_ip, now)
    if len(recent) < settings.LOGIN_MAX_FAILURES:
        return 0
    # A sliding window: the address may try again once enough failures have aged out of it.
    oldest_counted = recent[-settings.LOGIN_MAX_FAILURES]
    return max(1, math.ceil(oldest_counted + settings.LOGIN_FAILURE_WINDOW_SECONDS - now))


def _failure_record(client_ip: str) -> int:
    # Read-modify-write without a lock: Django runs sync views one at a time under daphne, and
    # at worst two racing failures count as one. Only the last LOGIN_MAX_FAILURES are kept.
    now = time.time()
    recent = (_recent_failures(client_ip, now) + [now])[-settings.LOGIN_MAX_FAILURES :]
    cache.set(_failures_key(client_ip), recent, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    return len(recent)


def owner_sessions_group(owner_id: int) -> str:
    """The channel-layer group every open socket of this owner is in."""
    return f"owner-{owner_id}-sessions"


def login_rotate() -> str:
    """Starts over: returns a new link's token after ending everything issued before.

    Every earlier unused link stops working. Every session of the owner ends: the owner's
    unusable password is drawn anew, which changes get_session_auth_hash(), so Django's
    get_user() and channels' AuthMiddleware no longer accept any older session; their rows are
    deleted too when sessions live in the database. Open sockets are told on commit through
    the channel layer (SESSION_ENDED to owner_sessions_group); if that message is lost (Redis
    down, a full channel), a socket still finds out on its next frame (session_is_current).
    """
    with transaction.atomic():
        owner = owner_get()
        LoginToken.objects.filter(used_at__isnull=True).delete()
        owner.set_unusable_password()
        owner.save(update_fields=["password"])
        _sessions_delete(owner_id=owner.pk)
        token = login_token_issue()
        transaction.on_commit(lambda: _sockets_sign_out(owner_id=owner.pk))
    log.info("Login rotated: earlier links and sessions of %s no longer work", owner.username)
    return token


def _sessions_delete(*, owner_id: int) -> None:
    if settings.SESSION_ENGINE not in _DB_SESSION_ENGINES:
        return
    from django.contrib.sessions.models import Session

    # One user: a handful of rows, so decoding each is cheaper than anything clever.
    ended = [s.pk for s in Session.objects.all() if s.get_decoded().get(SESSION_KEY) == str(owner_id)]
    Session.objects.filter(pk__in=ended).delete()


def _sockets_sign_out(*, owner_id: int) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(owner_sessions_group(owner_id), {"type": SESSION_ENDED})
    except Exception:
        # The sessions are already invalid; an open socket notices on its next frame instead.
        log.warning("Could not tell open sockets about the rotation", exc_info=True)


def session_is_current(*, user_id, session_hash) -> bool:
    """Whether a session that stored `session_hash` at login still verifies for `user_id` now."""
    user = get_user_model().objects.filter(pk=user_id).first()
    return bool(user and session_hash) and constant_time_compare(session_hash, user.get_session_auth_hash())
