"""The chat websocket through the real ASGI stack: origin check, session auth, Redis layer."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agents.models import Run
from chat.consumers import (
    CLOSE_SIGNED_OUT,
    CLOSE_UNAUTHENTICATED,
    MAX_FRAME_BYTES,
    SIGNED_OUT_ERROR,
)
from chat.login import OWNER_USERNAME, login_rotate
from chat.models import Message
from config.asgi import application
from gateway.events import thread_group
from tests.factories import ThreadFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
# A refused socket's app waits on its channel-layer receive, which channels-redis only gives
# up after its BRPOP timeout; the communicator cancels it instead of waiting that long.
REFUSED_APP_WAIT_SECONDS = 0.1
# The consumer is sync: each frame is handled in a worker thread with its own queries, which
# on a loaded machine can take longer than the communicator's 1 s default.
FRAME_SECONDS = 5


@pytest.fixture
def owner(db):
    # The installation's one owner, the user login_rotate() signs out.
    return UserFactory(username=OWNER_USERNAME)


@pytest.fixture
def session_cookie(owner):
    client = Client()
    client.force_login(owner)
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())


@pytest.fixture
async def socket(session_cookie, task_queue):
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN, session_cookie])
    connected, _ = await communicator.connect(timeout=FRAME_SECONDS)
    assert connected
    yield communicator
    await communicator.disconnect()


@pytest.fixture
def in_memory_layer(settings):
    """For sockets refused before the consumer runs: they never use the channel layer, but
    their app still waits on a channel-layer receive, and cancelling channels-redis's BRPOP
    mid-call can hang for good (django/channels_redis#319 and kin; seen once here in CI)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def _closed_with(communicator) -> int:
    # Accepted, then closed with a code the page can act on (a refused handshake is a bare 1006).
    connected, _ = await communicator.connect(timeout=FRAME_SECONDS)
    closed = await communicator.receive_output(timeout=FRAME_SECONDS)
    await communicator.disconnect(timeout=REFUSED_APP_WAIT_SECONDS)
    assert connected and closed["type"] == "websocket.close"
    return closed["code"]


async def test_a_visitor_who_is_not_logged_in_is_closed_with_the_signed_out_code(in_memory_layer):
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN])

    assert await _closed_with(communicator) == CLOSE_UNAUTHENTICATED


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://127.0.0.1.evil.example:8000", None])
async def test_a_page_from_another_origin_is_refused_even_with_the_cookie(session_cookie, origin, in_memory_layer):
    headers = [session_cookie] + ([(b"origin", origin)] if origin else [])
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)

    connected, _ = await communicator.connect(timeout=FRAME_SECONDS)
    await communicator.disconnect(timeout=REFUSED_APP_WAIT_SECONDS)

    assert not connected


async def test_subscribing_to_an_own_thread_is_confirmed(socket, owner):
    thread = await database_sync_to_async(ThreadFactory)(owner=owner)

    await socket.send_json_to({"type": "subscribe", "thread": thread.pk})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "subscribed", "thread": thread.pk}


@pytest.mark.parametrize("thread", ["another owner's", 999_999, "abc", None])
async def test_subscribing_to_a_thread_that_is_not_ones_own_is_an_error(socket, thread):
    if thread == "another owner's":
        thread = (await database_sync_to_async(ThreadFactory)(owner=await database_sync_to_async(UserFactory)())).pk

    await socket.send_json_to({"type": "subscribe", "thread": thread, "ref": "s1"})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": "That thread does not exist.", "ref": "s1"}


async def test_a_message_for_a_new_thread_is_accepted_stored_and_its_queued_event_not_missed(socket, owner, agent):
    await socket.send_json_to({"type": "message.send", "thread": None, "text": "hello", "ref": "c1"})

    frames = {f["type"]: f for f in [await socket.receive_json_from(timeout=FRAME_SECONDS), await socket.receive_json_from(timeout=FRAME_SECONDS)]}
    accepted = frames["message.accepted"]
    assert frames["run.queued"]["run"] == accepted["run"]

    message = await database_sync_to_async(Message.objects.select_related("thread").get)(pk=accepted["message_id"])
    run = await database_sync_to_async(Run.objects.get)(pk=accepted["run"])
    assert accepted == {
        "type": "message.accepted", "ref": "c1", "thread": message.thread_id, "message_id": message.pk,
        "run": run.pk, "turn": 1, "created_thread": True, "url": f"/threads/{message.thread_id}/",
    }
    assert (message.content, message.thread.owner_id, run.user_message_id, run.status) == ("hello", owner.pk, message.pk, "queued")


async def test_a_message_to_a_subscribed_thread_is_accepted_and_announced_as_queued(socket, owner, agent):
    thread = await database_sync_to_async(ThreadFactory)(owner=owner, default_agent=agent)
    await socket.send_json_to({"type": "subscribe", "thread": thread.pk})
    await socket.receive_json_from(timeout=FRAME_SECONDS)

    await socket.send_json_to({"type": "message.send", "thread": thread.pk, "text": "again", "ref": "c2"})

    frames = {f["type"]: f for f in [await socket.receive_json_from(timeout=FRAME_SECONDS), await socket.receive_json_from(timeout=FRAME_SECONDS)]}
    accepted, queued = frames["message.accepted"], frames["run.queued"]
    assert (accepted["thread"], accepted["created_thread"], accepted["turn"]) == (thread.pk, False, 1)
    assert queued == {
        "type": "run.queued", "thread": thread.pk, "run": accepted["run"], "seq": 0,
        "message_id": accepted["message_id"], "turn": 1, "agent": "assistant",
    }


async def test_a_rejected_message_is_an_error_frame_with_its_ref(socket, agent):
    await socket.send_json_to({"type": "message.send", "thread": None, "text": "   ", "ref": "c3"})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": "Type a message first: it is empty.", "ref": "c3"}
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_bad_frames_each_get_an_error_and_the_socket_keeps_working(socket, owner):
    bad_frames = [
        ({"text_data": "{not json"}, "That frame is not valid JSON."),
        ({"text_data": "[1, 2]"}, 'A frame must be a JSON object with a "type".'),
        ({"text_data": '{"type": "reboot"}'}, "Unknown frame type 'reboot'."),
        ({"bytes_data": b'{"type": "subscribe"}'}, "Send JSON text frames."),
        ({"text_data": json.dumps({"type": "message.send", "text": "x" * MAX_FRAME_BYTES})}, "Frame too large (limit 256 KB)."),
    ]
    for frame, error in bad_frames:
        await socket.send_to(**frame)
        assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": error, "ref": None}

    thread = await database_sync_to_async(ThreadFactory)(owner=owner)
    await socket.send_json_to({"type": "subscribe", "thread": thread.pk})
    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "subscribed", "thread": thread.pk}


async def test_run_events_sent_to_the_thread_group_reach_the_subscriber(socket, owner):
    thread = await database_sync_to_async(ThreadFactory)(owner=owner)
    await socket.send_json_to({"type": "subscribe", "thread": thread.pk})
    await socket.receive_json_from(timeout=FRAME_SECONDS)
    event = {"type": "message.streamed", "thread": thread.pk, "run": 3, "seq": 4, "message_id": 9, "delta": "Hel"}

    await get_channel_layer().group_send(thread_group(thread.pk), {"type": "run.event", "event": event})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == event


async def test_events_of_threads_not_subscribed_do_not_arrive(socket, owner):
    thread = await database_sync_to_async(ThreadFactory)(owner=owner)

    await get_channel_layer().group_send(thread_group(thread.pk), {"type": "run.event", "event": {"type": "run.started"}})

    assert await socket.receive_nothing(timeout=0.3)


# --- Rotating the login ---------------------------------------------------------------------


async def test_rotating_the_login_closes_an_open_socket_with_a_reason(socket):
    await database_sync_to_async(login_rotate)()

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": SIGNED_OUT_ERROR, "ref": None}
    assert await socket.receive_output(timeout=FRAME_SECONDS) == {"type": "websocket.close", "code": CLOSE_SIGNED_OUT}


async def test_a_socket_whose_session_no_longer_verifies_is_closed_on_its_next_frame(socket, owner):
    # As if the rotation's group message had been lost: the session hash changes silently.
    owner.set_unusable_password()
    await database_sync_to_async(owner.save)(update_fields=["password"])
    thread = await database_sync_to_async(ThreadFactory)(owner=owner)

    await socket.send_json_to({"type": "subscribe", "thread": thread.pk})

    assert await socket.receive_json_from(timeout=FRAME_SECONDS) == {"type": "error", "error": SIGNED_OUT_ERROR, "ref": None}
    assert await socket.receive_output(timeout=FRAME_SECONDS) == {"type": "websocket.close", "code": CLOSE_SIGNED_OUT}


async def test_the_old_session_cookie_cannot_open_a_socket_after_rotation(session_cookie, owner, in_memory_layer):
    await database_sync_to_async(login_rotate)()
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN, session_cookie])

    assert await _closed_with(communicator) == CLOSE_UNAUTHENTICATED
