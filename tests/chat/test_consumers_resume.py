"""Resuming runs after a dropped socket, through the real ASGI stack and Redis layer."""

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chat.consumers import MAX_RESUME_RUNS, RESUME_FORMAT_ERROR
from config.asgi import application
from gateway.events import RunPublisher
from tests.factories import RunFactory, ThreadFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
FRAME_SECONDS = 5  # sync consumer on a loaded machine (see test_consumers.py)
MESSAGE_ID = 11


@pytest.fixture(autouse=True)
def _no_replay_logs():
    # Run ids come back after a rolled-back test; its log must not look like this test's.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{get_channel_layer().prefix}:replay:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
async def socket(owner, task_queue):
    client = Client()
    await database_sync_to_async(client.force_login)(owner)
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN, cookie])
    connected, _ = await communicator.connect(timeout=FRAME_SECONDS)
    assert connected
    yield communicator
    await communicator.disconnect()


@pytest.fixture
async def run(owner):
    return await database_sync_to_async(RunFactory)(thread=await database_sync_to_async(ThreadFactory)(owner=owner))


class Worker:
    """A worker's events for one run: run.started, message.started, then deltas (seq 1, 2, 3...)."""

    def __init__(self, run):
        self.publisher = RunPublisher(thread_id=run.thread_id, run_id=run.pk, flush_seconds=0)
        self.sent = 0

    @sync_to_async
    def publish(self, count: int) -> None:
        for _ in range(count):
            self.sent += 1
            if self.sent == 1:
                self.publisher("run.started", {"agent": "assistant", "turn": 1})
            elif self.sent == 2:
                self.publisher("message.started", {"message_id": MESSAGE_ID})
            else:
                self.publisher("message.streamed", {"delta": f"w{self.sent} ", "message_id": MESSAGE_ID})
        self.publisher.close()


async def frames_until_subscribed(socket) -> list[dict]:
    frames = []
    while not frames or frames[-1]["type"] != "subscribed":
        frames.append(await socket.receive_json_from(timeout=FRAME_SECONDS))
    return frames


def resume_frame(run, after, message_id=MESSAGE_ID, **extra):
    return {"type": "resume", "thread": run.thread_id, "runs": [{"run": run.pk, "after": after, "message_id": message_id}], **extra}


async def test_resuming_after_a_gap_sends_exactly_the_missed_events_in_order_then_live_ones(socket, run):
    worker = Worker(run)
    await worker.publish(6)

    await socket.send_json_to(resume_frame(run, after=3))

    frames = await frames_until_subscribed(socket)
    assert [(f["type"], f.get("seq"), f.get("delta")) for f in frames] == [
        ("message.streamed", 4, "w4 "), ("message.streamed", 5, "w5 "), ("message.streamed", 6, "w6 "),
        ("subscribed", None, None),
    ]
    assert frames[0] == {
        "type": "message.streamed", "thread": run.thread_id, "run": run.pk, "seq": 4, "message_id": MESSAGE_ID, "delta": "w4 ",
    }
    # The thread's group was joined: what the worker sends next arrives live.
    await worker.publish(1)
    assert (await socket.receive_json_from(timeout=FRAME_SECONDS))["seq"] == 7


async def test_a_client_that_missed_nothing_is_only_subscribed(socket, run):
    await Worker(run).publish(3)

    await socket.send_json_to(resume_frame(run, after=3))

    assert await frames_until_subscribed(socket) == [{"type": "subscribed", "thread": run.thread_id}]


async def test_a_page_loaded_mid_run_gets_the_run_from_its_start(socket, run):
    await Worker(run).publish(4)

    await socket.send_json_to(resume_frame(run, after=None, message_id=None))

    frames = await frames_until_subscribed(socket)
    assert [f.get("seq") for f in frames] == [1, 2, 3, 4, None]


async def test_an_expired_log_is_answered_with_a_resync_of_the_runs_turn(socket, run):
    # Nothing logged for the run: what REPLAY_SECONDS of silence leaves behind.
    await socket.send_json_to(resume_frame(run, after=5))

    assert await frames_until_subscribed(socket) == [
        {"type": "run.resync", "thread": run.thread_id, "run": run.pk, "turn": 1},
        {"type": "subscribed", "thread": run.thread_id},
    ]


async def test_a_log_that_no_longer_reaches_back_to_the_clients_event_is_a_resync(socket, run, monkeypatch):
    monkeypatch.setattr("gateway.replay.REPLAY_MAX_EVENTS", 3)
    await Worker(run).publish(8)  # seqs 6..8 are left

    await socket.send_json_to(resume_frame(run, after=4))

    assert [f["type"] for f in await frames_until_subscribed(socket)] == ["run.resync", "subscribed"]


async def test_resuming_another_owners_thread_is_an_error_and_nothing_is_sent(socket):
    others = await database_sync_to_async(RunFactory)(thread=await database_sync_to_async(ThreadFactory)(owner=await database_sync_to_async(UserFactory)()))
    worker = Worker(others)
    await worker.publish(3)

    await socket.send_json_to(resume_frame(others, after=None, message_id=None, ref="r1"))

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": "That thread does not exist.", "ref": "r1"}
    await worker.publish(1)  # nothing live either
    assert await socket.receive_nothing(timeout=0.3)


async def test_resuming_another_owners_run_through_ones_own_thread_is_an_error_and_nothing_is_joined(socket, run):
    others = await database_sync_to_async(RunFactory)(thread=await database_sync_to_async(ThreadFactory)(owner=await database_sync_to_async(UserFactory)()))
    theirs = Worker(others)
    await theirs.publish(3)
    frame = {"type": "resume", "thread": run.thread_id, "ref": "r2", "runs": [
        {"run": run.pk, "after": None, "message_id": None}, {"run": others.pk, "after": None, "message_id": None},
    ]}

    await socket.send_json_to(frame)

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": "That run does not exist.", "ref": "r2"}
    await Worker(run).publish(2)  # own thread: not joined, since the frame was refused
    await theirs.publish(1)
    assert await socket.receive_nothing(timeout=0.3)


@pytest.mark.parametrize("runs", [
    None, [], "40", [40], [{"after": 1}], [{"run": "40"}], [{"run": True}], [{"run": 0}],
    [{"run": "RUN", "after": -1}], [{"run": "RUN", "after": "3"}], [{"run": "RUN", "after": 1.5}],
    [{"run": "RUN", "after": False}], [{"run": "RUN", "after": 3, "message_id": "11"}],
    [{"run": "RUN", "after": None}] * (MAX_RESUME_RUNS + 1),
])
async def test_malformed_resume_frames_get_an_error_and_the_socket_keeps_working(socket, run, runs):
    if isinstance(runs, list):
        runs = [{k: run.pk if v == "RUN" else v for k, v in item.items()} if isinstance(item, dict) else item for item in runs]

    await socket.send_json_to({"type": "resume", "thread": run.thread_id, "runs": runs, "ref": "r3"})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": RESUME_FORMAT_ERROR, "ref": "r3"}
    await socket.send_json_to(resume_frame(run, after=None, message_id=None))
    assert [f["type"] for f in await frames_until_subscribed(socket)] == ["run.resync", "subscribed"]
