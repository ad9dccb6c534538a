"""Providers: API keys encrypted at rest, key rotation, and `backend_for`, the LLM layer's view of them."""

import io
import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection

from agents.models import Provider, validate_base_url
from agents.models_list import agent_model_warnings, model_names_list
from agents.providers import (
    Backend,
    ProviderError,
    backend_for,
    provider_api_key_read,
    provider_api_key_status,
    provider_save,
    providers_reencrypt,
)
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-4f9c2b7e1d"
OLD_KEY, NEW_KEY, STRANGER_KEY = (Fernet.generate_key().decode() for _ in range(3))


def make_provider(slug="openai", api_key=SECRET, **fields) -> Provider:
    fields = {"name": slug.title(), "base_url": "https://api.example.com/v1", **fields}
    return provider_save(provider=Provider(slug=slug, **fields), api_key=api_key)


def stored_rows() -> list[tuple]:
    """Every column of every provider row, as the database has them (what a dump would show)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM agents_provider")
        return cursor.fetchall()


@pytest.fixture
def keys(settings):
    """Sets HEARTH_ENCRYPTION_KEYS, newest first, as a deployment would."""

    def use(*values):
        settings.HEARTH_ENCRYPTION_KEYS = list(values)

    use(OLD_KEY)
    return use


# --- encryption at rest -----------------------------------------------------------------------


def test_an_api_key_reads_back_as_it_was_saved(keys):
    provider = make_provider()

    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET


def test_the_database_holds_only_ciphertext(keys):
    provider = make_provider()

    rows = stored_rows()

    assert len(rows) == 1
    assert not any(SECRET in str(column) for column in rows[0])
    token = Provider.objects.values_list("api_key_encrypted", flat=True).get(pk=provider.pk)
    assert Fernet(OLD_KEY).decrypt(token.encode()).decode() == SECRET


def test_the_same_key_saved_twice_is_stored_differently(keys):
    # Fernet tokens carry a random IV: equal keys cannot be spotted by comparing rows.
    first, second = make_provider("one"), make_provider("two")
    assert first.api_key_encrypted != second.api_key_encrypted


def test_neither_repr_nor_str_shows_the_key(keys):
    provider = make_provider()
    backend = backend_for(AgentFactory(provider=provider, model="gpt-4o"))

    assert backend.api_key == SECRET
    for text in (repr(provider), str(provider), repr(backend), str(backend)):
        assert SECRET not in text


def test_a_provider_without_a_key_stores_nothing(keys):
    provider = make_provider(api_key="")

    assert provider.api_key_encrypted == ""
    assert provider_api_key_read(provider=provider) == ""
    assert provider_api_key_status(provider=provider) == "not set"


def test_saving_with_no_key_given_keeps_the_stored_one_and_an_empty_one_removes_it(keys):
    provider = make_provider()

    provider.name = "Renamed"
    provider_save(provider=provider)
    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET

    provider_save(provider=provider, api_key="")
    assert Provider.objects.get(pk=provider.pk).api_key_encrypted == ""


# --- rotation and wrong keys ------------------------------------------------------------------


def test_an_old_key_second_in_the_list_still_decrypts(keys):
    provider = make_provider()

    keys(NEW_KEY, OLD_KEY)

    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET


def test_reencrypting_lets_the_old_key_go(keys):
    provider = make_provider()
    keys(NEW_KEY, OLD_KEY)

    assert providers_reencrypt() == (1, [])

    keys(NEW_KEY)
    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET
    keys(OLD_KEY)
    with pytest.raises(ProviderError):
        provider_api_key_read(provider=Provider.objects.get(pk=provider.pk))


def test_saving_a_provider_again_writes_its_key_with_the_newest_key(keys):
    provider = make_provider()
    keys(NEW_KEY, OLD_KEY)

    provider_save(provider=Provider.objects.get(pk=provider.pk))

    keys(NEW_KEY)
    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET


def test_a_wrong_key_gives_a_clear_error_naming_the_provider(keys):
    agent = AgentFactory(provider=make_provider(name="Big Cloud"), model="gpt-4o")
    keys(STRANGER_KEY)

    with pytest.raises(ProviderError) as caught:
        backend_for(agent)

    assert str(caught.value).startswith(
        "Cannot decrypt the API key of provider Big Cloud: HEARTH_ENCRYPTION_KEYS changed?"
    )
    assert caught.value.retryable is False
    assert provider_api_key_status(provider=agent.provider).startswith("cannot be decrypted")


def test_saving_a_provider_whose_key_cannot_be_read_keeps_the_key_as_it_was(keys):
    provider = make_provider()
    token = provider.api_key_encrypted
    keys(STRANGER_KEY)

    provider.name = "Renamed"
    provider_save(provider=provider)

    assert Provider.objects.get(pk=provider.pk).api_key_encrypted == token
    keys(OLD_KEY)
    assert provider_api_key_read(provider=Provider.objects.get(pk=provider.pk)) == SECRET


def test_the_reencrypt_command_rotates_what_it_can_and_names_the_rest(keys):
    readable = make_provider("readable")
    keys(STRANGER_KEY)
    lost = make_provider("lost", name="Lost One")
    keys(NEW_KEY, OLD_KEY)

    out = io.StringIO()
    with pytest.raises(CommandError, match="No encryption key decrypts the API key of: Lost One"):
        call_command("providers_reencrypt", stdout=out)

    assert "Re-encrypted the API keys of 1 provider." in out.getvalue()
    keys(NEW_KEY)
    assert provider_api_key_read(provider=Provider.objects.get(pk=readable.pk)) == SECRET
    assert Provider.objects.get(pk=lost.pk).api_key_encrypted == lost.api_key_encrypted


# --- backend_for ------------------------------------------------------------------------------


def test_no_agent_or_no_provider_means_the_default_model_server(settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-default"
    expected = Backend(key="default", name="the default model server", base_url="http://127.0.0.1:9/v1", api_key="sk-default")

    assert backend_for(None) == expected
    assert backend_for(AgentFactory(provider=None)) == expected


def test_an_agent_with_a_provider_gets_its_address_and_decrypted_key(keys):
    provider = make_provider("big-cloud", name="Big Cloud", base_url="https://llm.example.org/v1")

    backend = backend_for(AgentFactory(provider=provider, model="large"))

    assert backend == Backend(key="provider:big-cloud", name="Big Cloud", base_url="https://llm.example.org/v1", api_key=SECRET)


def test_a_provider_without_a_key_gets_a_placeholder_the_http_client_accepts(keys):
    backend = backend_for(AgentFactory(provider=make_provider(api_key=""), model="large"))
    assert backend.api_key == "not-needed"


# --- the model list through a provider --------------------------------------------------------


class KeyedModelServer:
    """A model server that lists its models only to a caller with the right bearer key."""

    def __init__(self, key: str):
        expected = f"Bearer {key}"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                ok = self.path == "/v1/models" and self.headers.get("Authorization") == expected
                body = json.dumps({"object": "list", "data": [{"id": "big-model"}]} if ok else {"error": "no"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_the_model_list_is_read_from_the_agents_provider_with_its_key(keys):
    with KeyedModelServer(SECRET) as server:
        agent = AgentFactory(provider=make_provider(name="Big Cloud", base_url=server.url), model="big-model", fallback_model="small")

        assert model_names_list(backend=backend_for(agent)) == ["big-model"]
        assert agent_model_warnings(agent=agent) == [
            "Fallback model: The provider Big Cloud does not list a model named 'small'; runs may fail. Models it lists: big-model."
        ]
        provider_save(provider=agent.provider, api_key="sk-wrong")
        assert model_names_list(backend=backend_for(agent)) is None


def test_a_key_that_cannot_be_decrypted_is_said_when_checking_model_names(keys):
    agent = AgentFactory(provider=make_provider(name="Big Cloud"), model="large")
    keys(STRANGER_KEY)

    [warning] = agent_model_warnings(agent=agent)

    assert warning.startswith("Could not check the model names: Cannot decrypt the API key of provider Big Cloud")


# --- base URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://gpubox:8080/v1", "http://127.0.0.1:11434/v1", "http://[::1]:8080/v1"])
def test_http_and_https_addresses_are_accepted(url):
    validate_base_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com/v1", "http:// or https://"),
        ("api.openai.com/v1", "http:// or https://"),
        ("https:///v1", "http:// or https://"),
        ("https://user:sk-123@api.example.com/v1", "Leave credentials out"),
        ("https://api.example.com/v1?key=1", "?query or #fragment"),
        ("http://gpubox:99999/v1", "an address like"),
    ],
)
def test_other_addresses_are_refused(url, message):
    with pytest.raises(ValidationError, match=message.replace("?", r"\?")):
        validate_base_url(url)


# --- where the encryption keys come from (config/settings.py, in a fresh process) -------------


def settings_keys(data_dir: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HEARTH_ENCRYPTION_KEYS"}
    environment.update(DATA_DIR=str(data_dir), **env)
    code = "import json, config.settings as s; print(json.dumps(s.HEARTH_ENCRYPTION_KEYS))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


def test_without_the_variable_a_key_is_made_once_in_a_private_file(tmp_path):
    first = settings_keys(tmp_path)
    second = settings_keys(tmp_path)

    assert first.returncode == 0, first.stderr
    keys = json.loads(first.stdout)
    assert len(keys) == 1 and Fernet(keys[0])
    assert json.loads(second.stdout) == keys
    assert stat.S_IMODE((tmp_path / "encryption_keys").stat().st_mode) == 0o600


def test_the_variable_lists_keys_newest_first(tmp_path):
    result = settings_keys(tmp_path, HEARTH_ENCRYPTION_KEYS=f"{NEW_KEY}, {OLD_KEY}")

    assert json.loads(result.stdout) == [NEW_KEY, OLD_KEY]
    assert not (tmp_path / "encryption_keys").exists()


def test_a_malformed_key_stops_start_up_without_showing_it(tmp_path):
    result = settings_keys(tmp_path, HEARTH_ENCRYPTION_KEYS=f"{NEW_KEY},not-a-real-key-abc")

    assert result.returncode != 0
    assert "Encryption key 2 in HEARTH_ENCRYPTION_KEYS is not a Fernet key" in result.stderr
    assert "not-a-real-key-abc" not in result.stderr
