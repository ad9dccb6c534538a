"""The model names a model server offers (`GET {base_url}/models`).

Part of the LLM interface, but kept apart from agents/openai_client.py so the web process can
ask without loading the openai SDK: one plain HTTP request with httpx2 (the client openai
itself uses). The server is an agent's provider, or the default one (LLM_BASE_URL).
"""

from __future__ import annotations

import logging

import httpx2

from .models import Agent
from .providers import Backend, ProviderError, backend_for

log = logging.getLogger(__name__)

# The admin waits for this while saving an agent; a backend slower than this is "not reachable".
MODELS_LIST_TIMEOUT_SECONDS = 3.0


def model_names_list(*, backend: Backend | None = None) -> list[str] | None:
    """The ids of the models `backend` (default: the default model server) lists, in its order.

    Returns None when the list cannot be had (backend down, slow, an HTTP error, or an
    answer that is not the OpenAI list shape); callers then say they could not check,
    never refuse. Never raises.
    """
    backend = backend or backend_for(None)
    url = backend.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {backend.api_key}"}
    try:
        response = httpx2.get(url, headers=headers, timeout=MODELS_LIST_TIMEOUT_SECONDS)
        response.raise_for_status()
        data = response.json()["data"]
        return [str(item["id"]) for item in data]
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError, KeyError, TypeError) as exc:
        log.info("could not list the models of %s at %s: %s", backend.name, url, exc)
        return None


def agent_model_warnings(*, agent: Agent) -> list[str]:
    """What to tell someone who just saved `agent`, one line each; [] when nothing.

    Its model and fallback model are checked against the list of its provider (or the default
    model server): one request, none when both are blank (a blank model means LLM_MODEL). A
    name the backend does not list is worth a warning, never a refusal: some backends
    (llama-swap, routers) accept names they do not list, and the backend may simply be down
    right now. Never raises: a key that cannot be decrypted is said, not raised.
    """
    models = [m for m in (agent.model, agent.fallback_model) if m]
    if not models:
        return []
    try:
        backend = backend_for(agent)
    except ProviderError as exc:
        return [f"Could not check the model names: {exc}"]
    names = model_names_list(backend=backend)
    warnings = [_warning(agent.model, names, backend)] if agent.model else []
    if agent.fallback_model and agent.fallback_model != agent.model:
        warnings.append(_warning(agent.fallback_model, names, backend, label="Fallback model: "))
    return [w for w in warnings if w]


def _warning(model: str, names: list[str] | None, backend: Backend, label: str = "") -> str:
    if names is None:
        return f"{label}Could not check the model name {model!r}: the model list at {backend.base_url} could not be read."
    if model in names:
        return ""
    who = "The backend" if backend.key == "default" else f"The provider {backend.name}"
    listed = ", ".join(names[:20]) or "none"
    return f"{label}{who} does not list a model named {model!r}; runs may fail. Models it lists: {listed}."
