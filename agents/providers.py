"""Where an agent's model calls go, and the provider API keys kept encrypted at rest.

An agent either names a Provider (a row added in the admin: base URL and API key) or none, and
then answers through the default model server from settings (LLM_BASE_URL, LLM_API_KEY).
`backend_for(agent)` turns either into a `Backend`, the one thing the LLM layer needs to know.

API keys are stored only as Fernet tokens (AES-128-CBC with an HMAC, from the `cryptography`
package). The encryption keys are settings.HEARTH_ENCRYPTION_KEYS, newest first
(config/settings.py: the HEARTH_ENCRYPTION_KEYS variable, else a file in DATA_DIR): the newest
encrypts, any of them decrypts (MultiFernet), so a key is rotated by putting a new one in front,
running `manage.py providers_reencrypt`, then dropping the old one. Decrypted keys live only in
a Backend's `api_key` and the requests made with it: never in a page, a log line or a file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from .llm import LLMError
from .models import Agent, Provider

DEFAULT_KEY = "default"
DEFAULT_NAME = "the default model server"
# Sent for a provider without a key, as settings.LLM_API_KEY is when LLM_API_KEY is unset: the
# openai SDK refuses an empty key, and "Bearer " with nothing after it is not a valid header.
# Servers that need no key ignore it.
KEYLESS_API_KEY = "not-needed"


@dataclass(frozen=True)
class Backend:
    """One OpenAI-compatible server, with what it takes to call it."""

    key: str  # stable id for the circuit breaker: "default" or "provider:<slug>"
    name: str  # for people, in error messages: "the default model server" or the provider's name
    base_url: str
    api_key: str = field(repr=False)  # the decrypted key (never empty); never log it


class ProviderError(LLMError):
    """A provider cannot be used as configured: its stored API key cannot be decrypted.

    The message is meant for the user and says what to do. It is a configuration problem,
    not an outage (`retryable` is False): a circuit breaker should not count it against the
    provider, and trying again will not help until someone changes the keys.
    """

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


def backend_for(agent: Agent | None) -> Backend:
    """The server `agent`'s model calls go to, with its API key decrypted.

    `agent` None, or an agent without a provider, gives the default model server from settings
    (key "default"); an agent with a provider gives that provider (key "provider:<slug>"; one
    query unless `provider` was select_related). `api_key` is never empty: a server needing no
    key gets a placeholder. Raises ProviderError if the provider's key cannot be decrypted with
    any of HEARTH_ENCRYPTION_KEYS. Reads the database, writes nothing.
    """
    if agent is None or agent.provider_id is None:
        return Backend(key=DEFAULT_KEY, name=DEFAULT_NAME, base_url=settings.LLM_BASE_URL, api_key=settings.LLM_API_KEY)
    provider = agent.provider
    return Backend(
        key=f"provider:{provider.slug}",
        name=provider.name,
        base_url=provider.base_url,
        api_key=provider_api_key_read(provider=provider) or KEYLESS_API_KEY,
    )


def provider_api_key_read(*, provider: Provider) -> str:
    """The provider's API key in plain text, "" when it has none.

    Raises ProviderError when none of HEARTH_ENCRYPTION_KEYS decrypts the stored token (the
    keys changed, or the row came from another installation).
    """
    if not provider.api_key_encrypted:
        return ""
    try:
        return _fernet().decrypt(provider.api_key_encrypted.encode()).decode()
    except InvalidToken:
        raise ProviderError(_undecryptable(provider)) from None


def provider_api_key_set(*, provider: Provider, api_key: str) -> None:
    """Stores `api_key` on the (unsaved) instance, encrypted with the newest key; "" clears it."""
    provider.api_key_encrypted = _fernet().encrypt(api_key.encode()).decode() if api_key else ""


def provider_save(*, provider: Provider, api_key: str | None = None) -> Provider:
    """Saves `provider`. `api_key` None keeps the stored key, "" removes it, other text replaces it.

    A kept key is written again encrypted with the newest encryption key, so saving a
    provider also rotates its key. A kept key that cannot be decrypted is kept as it is (the
    admin shows it as unreadable); saving never raises ProviderError.
    """
    if api_key is not None:
        provider_api_key_set(provider=provider, api_key=api_key)
    elif provider.api_key_encrypted:
        try:
            provider.api_key_encrypted = _fernet().rotate(provider.api_key_encrypted.encode()).decode()
        except InvalidToken:
            pass
    provider.save()
    return provider


def providers_reencrypt() -> tuple[int, list[str]]:
    """Re-encrypts every stored API key with the newest encryption key, so the older keys can
    then be removed from HEARTH_ENCRYPTION_KEYS.

    Returns (how many keys were re-encrypted, names of the providers whose key none of the
    configured keys decrypts; those are left as they were). Each row is updated only if its
    token is still the one read, so a key entered in the admin meanwhile is never overwritten.
    `updated_at` is left alone: the provider's settings did not change.
    """
    done, unreadable = 0, []
    fernet = _fernet()
    for provider in Provider.objects.exclude(api_key_encrypted="").order_by("name"):
        try:
            token = fernet.rotate(provider.api_key_encrypted.encode()).decode()
        except InvalidToken:
            unreadable.append(provider.name)
            continue
        done += Provider.objects.filter(pk=provider.pk, api_key_encrypted=provider.api_key_encrypted).update(
            api_key_encrypted=token
        )
    return done, unreadable


def provider_api_key_status(*, provider: Provider) -> str:
    """"set", "not set", or "cannot be decrypted" (with what to do): for the admin's pages."""
    if not provider.api_key_encrypted:
        return "not set"
    try:
        _fernet().decrypt(provider.api_key_encrypted.encode())
    except InvalidToken:
        return "cannot be decrypted (HEARTH_ENCRYPTION_KEYS changed?): enter the key again"
    return "set"


def _undecryptable(provider: Provider) -> str:
    return (
        f"Cannot decrypt the API key of provider {provider.name}: HEARTH_ENCRYPTION_KEYS changed? "
        "Put the key it was saved with back among the encryption keys, or enter the API key again in the admin."
    )


def _fernet() -> MultiFernet:
    return _multi_fernet(tuple(settings.HEARTH_ENCRYPTION_KEYS))


@functools.lru_cache(maxsize=4)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    # Keyed by the key list, so a changed setting (tests, override_settings) is never served stale.
    return MultiFernet([Fernet(key) for key in keys])
