"""The single user, and the one-time login links printed at start-up."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from .models import LoginToken

OWNER_USERNAME = "owner"


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
