"""What a run offers the model and does with its answers: enabled tools only, skills by
progressive disclosure, a question to the user that pauses and resumes the run.

Against the real HTTP model server double; every assertion is on stored rows or on the
exact requests the model server received.
"""

import json

import pytest
from django.urls import reverse

from agents.models import Run
from agents.services import run_claim_next, run_execute
from chat.models import Message
from gateway.services import message_submit
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, RunFactory, UserFactory
from tests.llm_backend import use_llm_server

pytestmark = pytest.mark.django_db


class Published(list):
    def __call__(self, event_type, data):
        self.append((event_type, data))


def _offered(request: dict) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools") or []]


@pytest.fixture
def scripted(settings, tmp_path):
    """Starts a scripted model server as the backend; skills and workspaces in tmp dirs."""
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    settings.SKILLS_DIRS = [tmp_path / "skills"]
    servers = []

    def start(*script):
        server = ScriptedOpenAIServer(script=list(script)).start()
        servers.append(server)
        use_llm_server(settings, server)
        return server

    yield start
    for server in servers:
        server.stop()


def _write_skill(settings, name, description, body):
    folder = settings.SKILLS_DIRS[0] / name
    (folder / "references").mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\n---\n{body}\n")
    (folder / "references" / "guide.md").write_text("never sent unless read")


def _execute(run) -> tuple[Run, Published]:
    published = Published()
    claimed = run_claim_next(thread_id=run.thread_id)
    assert claimed is not None
    return run_execute(run=claimed, publish=published), published


def test_only_enabled_tools_are_offered_and_a_disabled_one_asked_for_is_not_run(scripted, settings):
    server = scripted({"tool_calls": [{"name": "write_file", "arguments": {"path": "x.txt", "content": "pwned"}}]}, "OK.")
    agent = AgentFactory(enabled_tools=["calculator", "read_file"])

    run, _ = _execute(RunFactory(agent=agent, user_message__content="write a file"))

    assert _offered(server.requests[0]) == ["calculator", "read_file"]
    result = run.thread.messages.get(role="tool")
    assert result.is_error and "There is no tool named 'write_file' here; it was not run" in result.content
    assert not (settings.WORKSPACES_DIR / agent.slug / "x.txt").exists()
    assert run.status == "done"


def test_file_tools_work_in_the_agents_own_workspace(scripted, settings):
    scripted({"tool_calls": [{"name": "write_file", "arguments": {"path": "notes/a.txt", "content": "hello"}}]}, "Saved.")
    agent = AgentFactory(slug="scribe", enabled_tools=["write_file"])

    run, _ = _execute(RunFactory(agent=agent, user_message__content="save hello"))

    assert (settings.WORKSPACES_DIR / "scribe" / "notes" / "a.txt").read_text() == "hello"
    tool_message = run.thread.messages.get(role="tool")
    assert not tool_message.is_error and tool_message.duration_ms is not None


def test_the_system_prompt_lists_enabled_skills_but_a_body_arrives_only_after_activation(scripted, settings):
    _write_skill(settings, "packing-list", "Make a packing list for a trip.", "STEP ONE: ask where.")
    _write_skill(settings, "unused-skill", "Not enabled on this agent.", "SECRET BODY")
    call = {"tool_calls": [{"name": "activate_skill", "arguments": {"name": "packing-list"}}]}
    server = scripted(call, "Here is your list.")
    agent = AgentFactory(enabled_tools=[], enabled_skills=["packing-list"])

    run, _ = _execute(RunFactory(agent=agent, user_message__content="I am going to Skye"))

    first, second = server.requests
    system = first["messages"][0]["content"]
    assert "<name>packing-list</name>" in system and "Make a packing list for a trip." in system
    assert "unused-skill" not in system and "STEP ONE" not in json.dumps(first)
    assert _offered(first) == ["activate_skill"]
    activation = second["messages"][-1]
    assert activation["role"] == "tool" and '<skill_content name="packing-list">' in activation["content"]
    assert "STEP ONE: ask where." in activation["content"] and "references/guide.md" in activation["content"]
    assert "never sent unless read" not in json.dumps(second)
    assert run.status == "done"


# Tools run in pool threads with their own connections: they must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_slash_skill_name_loads_the_skill_before_the_model_answers_and_only_once_per_thread(scripted, settings):
    _write_skill(settings, "packing-list", "Make a packing list.", "STEP ONE: ask where.")
    server = scripted("Where to?", {"tool_calls": [{"name": "activate_skill", "arguments": {"name": "packing-list"}}]}, "Still loaded.")
    agent = AgentFactory(enabled_tools=[], enabled_skills=["packing-list"])
    owner = UserFactory()

    first = message_submit(owner=owner, text="/packing-list for Skye", source="web", agent_slug=agent.slug)
    _execute(first.run)
    again = message_submit(owner=owner, text="and for Rome?", source="web", thread_id=first.thread.pk)
    _execute(again.run)

    sent = server.requests[0]["messages"]
    assert sent[-3]["content"] == "/packing-list for Skye"
    assert sent[-2]["tool_calls"][0]["function"] == {"name": "activate_skill", "arguments": '{"name": "packing-list"}'}
    assert "STEP ONE" in sent[-1]["content"]
    second_activation = server.requests[2]["messages"][-1]["content"]
    assert "already active" in second_activation and "STEP ONE" not in second_activation


def test_a_slash_word_that_is_not_an_enabled_skill_is_just_text(scripted, settings):
    _write_skill(settings, "packing-list", "Make a packing list.", "STEP ONE")
    server = scripted("Fine.")
    agent = AgentFactory(enabled_tools=[], enabled_skills=[])

    run, _ = _execute(RunFactory(agent=agent, user_message__content="/packing-list please"))

    assert server.requests[0]["messages"][-1] == {"role": "user", "content": "/packing-list please"}
    assert not run.thread.messages.filter(role="tool").exists()


def test_ask_user_pauses_the_run_and_the_next_message_answers_and_resumes_it(scripted, settings, owner):
    ask = {"tool_calls": [{"name": "ask_user", "arguments": {"question": "Which city?"}}]}
    server = scripted(ask, "Booked a table in Rome.")
    agent = AgentFactory(enabled_tools=["ask_user"])

    submitted = message_submit(owner=owner, text="Book me a dinner", source="web", agent_slug=agent.slug)
    paused, published = _execute(submitted.run)

    assert (paused.status, paused.finished_at, paused.lease_expires_at) == ("waiting", None, None)
    assert published[-1] == ("run.waiting", {"status": "waiting", "question": "Which city?", "call_id": paused.waiting_call_id})
    assert run_claim_next(thread_id=paused.thread_id) is None  # nothing runs while it waits

    # Between here and the answer nothing is in memory: any worker (a restarted one) goes on.
    answer = message_submit(owner=owner, text="Rome", source="web", thread_id=submitted.thread.pk, agent_slug="someone-else")
    assert (answer.run.pk, answer.message.turn, answer.message.tool_call_id) == (paused.pk, 1, paused.waiting_call_id)
    assert Run.objects.get(pk=paused.pk).status == "queued"
    resumed, _ = _execute(answer.run)

    assert (resumed.status, resumed.stop_reason, resumed.rounds) == ("done", "answered", 2)
    call_id = server.requests[0 + 1]["messages"][-2]["tool_calls"][0]["id"]
    assert server.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "Rome"}
    assert submitted.thread.messages.filter(role="user").count() == 2  # the answer is stored as the user's
    assert Run.objects.filter(thread=submitted.thread).count() == 1


def test_a_message_typed_while_nothing_waits_starts_a_new_turn_as_usual(scripted, owner):
    scripted("One.", "Two.")
    agent = AgentFactory(enabled_tools=["ask_user"])

    first = message_submit(owner=owner, text="first", source="web", agent_slug=agent.slug)
    _execute(first.run)
    second = message_submit(owner=owner, text="second", source="web", thread_id=first.thread.pk)

    assert second.run.pk != first.run.pk and second.message.turn == 2 and not second.message.tool_call_id


def test_a_run_with_a_typed_ahead_message_waits_for_the_answer_before_the_next_turn(scripted, owner):
    ask = {"tool_calls": [{"name": "ask_user", "arguments": {"question": "Which city?"}}]}
    scripted(ask, "Done.", "Second answered.")
    agent = AgentFactory(enabled_tools=["ask_user"])
    first = message_submit(owner=owner, text="Plan a trip", source="web", agent_slug=agent.slug)
    claimed = run_claim_next(thread_id=first.thread.pk)
    typed_ahead = message_submit(owner=owner, text="also: vegetarian", source="web", thread_id=first.thread.pk)

    run_execute(run=claimed, publish=Published())  # pauses on the question

    assert run_claim_next(thread_id=first.thread.pk) is None
    assert Run.objects.get(pk=typed_ahead.run.pk).status == "queued"


def test_a_toggle_in_the_admin_changes_what_the_next_run_offers_the_model(scripted, client, owner):
    server = scripted("First.", "Second.")
    agent = AgentFactory(slug="helper", enabled_tools=["calculator"])
    client.force_login(owner)
    _execute(RunFactory(agent=agent, user_message__content="one"))

    form = {
        "name": agent.name, "slug": agent.slug, "description": "", "model": "", "system_prompt": "Help.",
        "temperature": "0.7", "max_tool_rounds": "10", "enabled_tools": ["current_time", "fetch_url"], "enabled_skills": [],
    }  # fmt: skip
    response = client.post(reverse("admin:agents_agent_change", args=[agent.pk]), form)
    _execute(RunFactory(agent=agent, user_message__content="two"))

    assert response.status_code == 302
    assert _offered(server.requests[0]) == ["calculator"]
    assert _offered(server.requests[1]) == ["current_time", "fetch_url"]
    assert server.requests[1]["messages"][0]["content"] == "Help."
