"""The model names the LLM backend offers (`GET {LLM_BASE_URL}/models`).

Part of the LLM interface, but kept apart from agents/openai_client.py so the web process can
ask without loading the openai SDK: one plain HTTP request with httpx2 (the client openai
itself uses).
"""

from __future__ import annotations

import logging

import httpx2
from django.conf import settings

log = logging.getLogger(__name__)

# The admin waits for this while saving an agent; a backend slower than this is "not reachable".
MODELS_LIST_TIMEOUT_SECONDS = 3.0


def model_names_list() -> list[str] | None:
    """The ids of the models the backend lists, in its order.

    Returns None when the list cannot be had (backend down, slow, an HTTP error, or an
    answer that is not the OpenAI list shape); callers then say they could not check,
    never refuse. Never raises.
    """
    url = settings.LLM_BASE_URL.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {settings.LLM_API_KEY}"}
    try:
        response = httpx2.get(url, headers=headers, timeout=MODELS_LIST_TIMEOUT_SECONDS)
        response.raise_for_status()
        data = response.json()["data"]
        return [str(item["id"]) for item in data]
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError, KeyError, TypeError) as exc:
        log.info("could not list the backend's models at %s: %s", url, exc)
        return None


def model_name_warning(*, model: str) -> str:
    """What to tell someone who just set an agent's model to `model`; "" when nothing.

    A blank model means LLM_MODEL and is not checked. A name the backend does not list is
    worth a warning, never a refusal: some backends (llama-swap, routers) accept names they do
    not list, and the backend may simply be down right now.
    """
    if not model:
        return ""
    names = model_names_list()
    if names is None:
        return f"Could not check the model name {model!r}: the model list at {settings.LLM_BASE_URL} could not be read."
    if model in names:
        return ""
    listed = ", ".join(names[:20]) or "none"
    return f"The backend does not list a model named {model!r}; runs may fail. Models it lists: {listed}."
