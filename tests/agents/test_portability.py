"""Saving, exporting and importing agents: the services and the management commands."""

import io
import json

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict

from agents.models import Agent, Provider
from agents.portability import (
    AgentImportError,
    agent_export,
    agent_export_text,
    agent_import,
    agent_save,
    agents_export_text,
    agents_import,
)
from agents.providers import provider_save
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def skills_dir(tmp_path, settings):
    """One skill on disk, `notes`, and nothing else the machine may have."""
    folder = tmp_path / "skills" / "notes"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text("---\nname: notes\ndescription: Take notes.\n---\nWrite them down.\n")
    settings.SKILLS_DIRS = [tmp_path / "skills"]
    return tmp_path / "skills"


SECRET = "sk-home-93ab71c0"


@pytest.fixture
def home_gpu():
    provider = Provider(slug="home-gpu", name="Home GPU", base_url="http://gpubox.internal:8080/v1")
    return provider_save(provider=provider, api_key=SECRET)


@pytest.fixture
def writer(home_gpu):
    return AgentFactory(
        slug="writer", name="Writer", description="Writes things.", provider=home_gpu, model="scripted",
        fallback_model="scripted-small", system_prompt="You write.\nLine two: ünïcode.", temperature=1.25,
        max_tool_rounds=7, enabled_tools=["calculator"], enabled_skills=["notes"],
    )  # fmt: skip


def valid(**changes) -> dict:
    """A correct agent file for the slug of the `writer` fixture, so a partial write would show on it."""
    data = {
        "format": "hearth-agent", "version": 1, "slug": "writer", "name": "Helper", "description": "",
        "model": "", "system_prompt": "Help.", "temperature": 0.5, "max_tool_rounds": 4,
        "enabled_tools": ["calculator"], "enabled_skills": [],
    }  # fmt: skip
    data.update(changes)
    return data


def snapshot() -> list[dict]:
    return [model_to_dict(a) for a in Agent.objects.order_by("pk")]


def test_export_holds_every_setting_and_the_format(writer):
    assert agent_export(agent=writer) == {
        "format": "hearth-agent", "version": 1, "slug": "writer", "name": "Writer",
        "description": "Writes things.", "provider": "home-gpu", "model": "scripted", "fallback_model": "scripted-small",
        "system_prompt": "You write.\nLine two: ünïcode.", "temperature": 1.25, "max_tool_rounds": 7,
        "enabled_tools": ["calculator"], "enabled_skills": ["notes"],
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_an_export_names_the_provider_but_never_holds_its_key_or_address(writer, fmt):
    text = agent_export_text(agent=writer, fmt=fmt)

    assert "home-gpu" in text
    assert SECRET not in text
    assert "gpubox" not in text
    assert writer.provider.api_key_encrypted not in text


def test_an_agent_on_the_default_server_exports_no_provider():
    data = agent_export(agent=AgentFactory(slug="plain", provider=None))
    assert (data["provider"], data["fallback_model"]) == (None, "")


def test_a_file_from_before_providers_means_the_default_server_and_no_fallback(writer):
    assert "provider" not in valid() and "fallback_model" not in valid()

    agent_import(text=json.dumps(valid(model="scripted")))

    writer.refresh_from_db()
    assert (writer.provider, writer.model, writer.fallback_model) == (None, "scripted", "")


def test_an_import_can_move_an_agent_to_a_provider(writer):
    Agent.objects.filter(pk=writer.pk).update(provider=None, fallback_model="")

    agent_import(text=json.dumps(valid(provider="home-gpu", model="big", fallback_model="small")))

    writer.refresh_from_db()
    assert (writer.provider.slug, writer.model, writer.fallback_model) == ("home-gpu", "big", "small")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_then_import_restores_the_agent(writer, fmt):
    text = agent_export_text(agent=writer, fmt=fmt)
    exported = agent_export(agent=writer)
    Agent.objects.filter(pk=writer.pk).update(name="Changed", temperature=0.1, enabled_tools=[], enabled_skills=[])

    imported = agent_import(text=text)

    assert imported.pk == writer.pk
    writer.refresh_from_db()
    assert agent_export(agent=writer) == exported


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_import_creates_an_agent_that_was_not_there(writer, fmt):
    text = agent_export_text(agent=writer, fmt=fmt)
    exported = agent_export(agent=writer)
    writer.delete()

    created = agent_import(text=text)

    assert agent_export(agent=Agent.objects.get(pk=created.pk)) == exported
    assert created.is_default is False


def test_import_leaves_which_agent_is_default_as_it_was(writer):
    other = agent_save(agent=Agent(slug="other", name="Other", is_default=True))
    agent_import(text=agent_export_text(agent=writer, fmt="json"))
    assert list(Agent.objects.filter(is_default=True)) == [other]

    agent_import(text=agent_export_text(agent=other, fmt="json"))
    assert list(Agent.objects.filter(is_default=True)) == [other]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_list_of_agents_round_trips(writer, fmt):
    second = AgentFactory(slug="second", enabled_tools=[])
    text = agents_export_text(agents=[writer, second], fmt=fmt)
    before = [agent_export(agent=a) for a in (writer, second)]
    Agent.objects.all().delete()

    imported = agents_import(text=text)

    assert [agent_export(agent=a) for a in imported] == before


def test_a_list_with_one_bad_agent_imports_none(writer):
    text = json.dumps([valid(slug="fine"), valid(slug="broken", enabled_tools=["no_such_tool"])])
    before = snapshot()
    with pytest.raises(AgentImportError) as caught:
        agents_import(text=text)
    assert "Agent 2 ('broken'): enabled_tools: no tool named 'no_such_tool'" in str(caught.value)
    assert snapshot() == before


def test_agent_import_refuses_a_list():
    with pytest.raises(AgentImportError, match="list of agents"):
        agent_import(text=json.dumps([valid()]))


def test_a_slug_twice_in_one_file_is_refused():
    with pytest.raises(AgentImportError, match="'writer' appears more than once"):
        agents_import(text=json.dumps([valid(), valid()]))


BAD_FILES = [
    ("", "The file is empty."),
    ('{"slug": "x",', "Not valid JSON: Expecting property name enclosed in double quotes (line 1, column 14)."),
    ("slug: [unclosed\nname: x\n", "Neither JSON nor valid YAML"),
    ("just some words", "must hold an agent (a mapping of settings), not text"),
    (json.dumps(["not an agent"]), "expected an agent (a mapping of settings), got text"),
    (json.dumps({k: v for k, v in valid().items() if k not in ("name", "model")}), "missing keys: name, model."),
    (json.dumps(valid(colour="blue")), "unknown keys: colour"),
    (json.dumps(valid(format="something-else")), "format must be 'hearth-agent'"),
    (json.dumps(valid(version=2)), "version 2 is not supported"),
    (json.dumps(valid(enabled_tools=["calculator", "rm_rf"])), "enabled_tools: no tool named 'rm_rf'"),
    (json.dumps(valid(enabled_tools="calculator")), "enabled_tools: must be a list of tool names, got text."),
    (json.dumps(valid(enabled_skills=["ghost"])), "enabled_skills: no skill named 'ghost' is found on disk (known: notes)."),
    (json.dumps(valid(slug="has spaces/and slashes")), "slug: 'has spaces/and slashes' is not a valid slug"),
    (json.dumps(valid(slug=12)), "slug: must be text, got a number."),
    (json.dumps(valid(name="  ")), "name: must not be empty."),
    (json.dumps(valid(temperature=2.5)), "temperature: must be between 0 and 2, got 2.5."),
    (json.dumps(valid(temperature="hot")), "temperature: must be a number, got text."),
    (json.dumps(valid(max_tool_rounds=0)), "max_tool_rounds: must be between 1 and 50, got 0."),
    (json.dumps(valid(max_tool_rounds=3.5)), "max_tool_rounds: must be a whole number, got a number."),
    (json.dumps(valid(max_tool_rounds=True)), "max_tool_rounds: must be a whole number, got true/false."),
    (json.dumps(valid(description="x" * 501)), "description: is 501 characters long; at most 500 are allowed."),
    (json.dumps(valid(provider="nowhere", model="big")),
     "provider: no provider with the slug 'nowhere' here (known: home-gpu); add it in the admin first, or use null."),
    (json.dumps(valid(provider=7)), "provider: must be a provider's slug or null (the default model server), got a number."),
    (json.dumps(valid(provider="home-gpu", model="")), "model: must name a model, as the agent uses the provider 'home-gpu'."),
    (json.dumps(valid(model="big", fallback_model="big")), "fallback_model: is the agent's own model"),
    (json.dumps(valid(fallback_model=["a"])), "fallback_model: must be text, got a list."),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_refused_with_a_clear_message_and_changes_nothing(writer, text, message):
    before = snapshot()
    with pytest.raises(AgentImportError) as caught:
        agents_import(text=text)
    assert message in str(caught.value)
    assert snapshot() == before


def test_every_problem_is_listed_at_once(writer):
    text = json.dumps(valid(temperature=9, enabled_tools=["nope"], extra=1))
    with pytest.raises(AgentImportError) as caught:
        agents_import(text=text)
    message = str(caught.value)
    assert message.startswith("The agent file was not imported:\n- ")
    for part in ("unknown keys: extra", "temperature: must be between", "enabled_tools: no tool named 'nope'"):
        assert part in message
    writer.refresh_from_db()
    assert (writer.temperature, writer.enabled_tools) == (1.25, ["calculator"])


def test_yaml_written_by_hand_imports():
    text = yaml.safe_dump(valid(slug="by-hand", enabled_skills=["notes"]))
    agent = agent_import(text=text)
    assert (agent.slug, agent.enabled_skills, agent.max_tool_rounds) == ("by-hand", ["notes"], 4)


def test_saving_a_default_agent_clears_the_other_defaults(writer):
    first = agent_save(agent=Agent(slug="first", name="First", is_default=True))
    agent_save(agent=Agent(slug="plain", name="Plain"))
    assert list(Agent.objects.filter(is_default=True)) == [first]

    writer.is_default = True
    agent_save(agent=writer)

    assert list(Agent.objects.filter(is_default=True)) == [writer]


# --- management commands ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_the_commands_round_trip_through_a_file(writer, tmp_path, fmt):
    path = tmp_path / f"writer.{fmt}"
    exported = agent_export(agent=writer)
    call_command("agent_export", "writer", "--format", fmt, "--output", str(path), stderr=io.StringIO())
    writer.delete()

    out = io.StringIO()
    call_command("agent_import", str(path), stdout=out)

    assert "Imported: writer" in out.getvalue()
    assert agent_export(agent=Agent.objects.get(slug="writer")) == exported


def test_export_writes_to_stdout_and_import_reads_stdin(writer, monkeypatch):
    out = io.StringIO()
    call_command("agent_export", "writer", stdout=out)
    assert json.loads(out.getvalue())["slug"] == "writer"
    Agent.objects.filter(pk=writer.pk).update(name="Changed")

    monkeypatch.setattr("sys.stdin", io.StringIO(out.getvalue()))
    call_command("agent_import", "-", stdout=io.StringIO())

    writer.refresh_from_db()
    assert writer.name == "Writer"


def test_export_of_an_unknown_slug_is_a_command_error(writer):
    with pytest.raises(CommandError, match="No agent with the slug 'nobody'. Agents: writer."):
        call_command("agent_export", "nobody")


def test_import_of_a_bad_file_is_a_command_error_and_changes_nothing(writer, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(valid(temperature=-1)))
    before = snapshot()
    with pytest.raises(CommandError, match="temperature: must be between 0 and 2, got -1"):
        call_command("agent_import", str(path))
    assert snapshot() == before


def test_import_of_a_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="Could not read"):
        call_command("agent_import", str(tmp_path / "nope.json"))
