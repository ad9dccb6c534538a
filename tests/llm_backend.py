"""Pointing the app's LLM settings at a test server (or at nothing at all)."""

import socket

from tests.doubles.openai_server import ScriptedOpenAIServer


def use_llm_server(settings, server: ScriptedOpenAIServer) -> None:
    """Makes `server` the app's model backend, with the SDK's retries off so that an error
    reaches the run at once instead of after the SDK's backoff."""
    settings.LLM_BASE_URL = server.url
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_TIMEOUT_SECONDS = 10


def closed_port_url() -> str:
    """A base URL where nothing listens: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
