"""Shared fixtures: a real Redis for the whole session, the scripted model server, owners.

Redis: without REDIS_URL the session starts the embedded redis-server on DATA_DIR's socket
(`make test` points DATA_DIR at a test folder); with REDIS_URL (CI) that server is used as
is. Either way every key the tests write carries a test-only prefix, so a developer's app on
the same Redis never sees test events or test tasks, nor the other way round.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django_q.brokers import get_broker
from django_q.conf import Conf

from config.embedded_redis import redis_ping, redis_start
from tests.doubles.openai_server import ScriptedOpenAIServer

from .factories import AgentFactory, UserFactory
from .llm_backend import use_llm_server

# Django is set up before any conftest is imported, so the environment arrives too late for
# settings.py: the prefix is applied to the live settings below. Setting it in the
# environment as well hands it to the daphne and qcluster processes the browser tests start.
TEST_REDIS_PREFIX = f"{settings.REDIS_PREFIX}-test"
os.environ["REDIS_PREFIX"] = TEST_REDIS_PREFIX
settings.REDIS_PREFIX = TEST_REDIS_PREFIX  # for keys the app writes itself (breakers, replay)

# Async tests run ORM calls in executor threads whose connections would otherwise live on
# (CONN_MAX_AGE) and keep PostgreSQL from dropping the test database at the end.
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLM_RECORD") == "1":
        return
    skip = pytest.mark.skip(reason="needs the real local model; set LLM_RECORD=1")
    for item in items:
        if "llm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """A real Redis for the session: REDIS_URL's, else the embedded one started here."""
    process = None
    # A Redis already answering on the socket belongs to someone else (an app run with the
    # same DATA_DIR): share it (the prefix keeps us apart) rather than pull the socket away.
    embedded = not os.environ.get("REDIS_URL")
    if embedded and not (redis_ping(settings.REDIS_URL)):
        process = redis_start(settings.REDIS_SOCKET, settings.DATA_DIR)
    layers = {"default": {**settings.CHANNEL_LAYERS["default"]}}
    layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], "prefix": f"{TEST_REDIS_PREFIX}:asgi"}
    # django-q2 reads Q_CLUSTER once, at import; its queue name is looked up per call.
    queue_name = (Conf.PREFIX, Conf.CLUSTER_NAME)
    Conf.PREFIX = Conf.CLUSTER_NAME = TEST_REDIS_PREFIX
    with override_settings(CHANNEL_LAYERS=layers, Q_CLUSTER={**settings.Q_CLUSTER, "name": TEST_REDIS_PREFIX}):
        _delete_test_keys()
        try:
            yield settings.REDIS_URL
        finally:
            _delete_test_keys()
            Conf.PREFIX, Conf.CLUSTER_NAME = queue_name
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


def _delete_test_keys() -> None:
    # Leftovers of an interrupted session (queued tasks, group memberships); only test keys.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in (f"{TEST_REDIS_PREFIX}:*", f"django_q:{TEST_REDIS_PREFIX}:*"):
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)
    client.close()


@pytest.fixture
def task_queue():
    """The real django-q2 queue on Redis, emptied for this test."""
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def agent(db):
    return AgentFactory(slug="assistant", is_default=True)


@pytest.fixture
def llm_server(settings):
    """A scripted model server in rule mode, set as the app's LLM backend.

    The SDK's retries are off so an error reaches the run at once; tests that need a
    script start their own server and pass it to `use_llm_server`.
    """
    with ScriptedOpenAIServer() as server:
        use_llm_server(settings, server)
        yield server


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The login rate limit counts in the per-process cache; no test inherits another's count."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_redis_state(redis_server):
    """Circuit breakers and run replay logs live in Redis, shared by every process: each test
    starts with every breaker closed and no replay log (run ids are reused after a rollback)."""
    client = redis.Redis.from_url(redis_server)
    for pattern in (f"{TEST_REDIS_PREFIX}:breaker:*", f"{TEST_REDIS_PREFIX}:asgi:replay:*"):
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)
    client.close()
