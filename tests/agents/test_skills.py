import json
import textwrap
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from agents.skills import (
    Skill,
    skill_activation_text,
    skill_catalog_prompt,
    skills_discover,
    skills_for_agent,
)
from agents.tools import ToolScope, ToolSet
from agents.tools.activate_skill import TOOL
from chat.models import Message
from tests.factories import MessageFactory, ThreadFactory

GOOD = """\
---
name: trip-planner
description: Plan a trip & compare <options>.
license: MIT
compatibility: Needs fetch_url.
metadata:
  author: someone
  version: 1.0
allowed-tools: fetch_url write_file
---
# Trip planner

1. Ask where to.
"""


def write_skill(root: Path, folder: str, text: str) -> Path:
    path = root / folder / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def dirs(tmp_path):
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    with override_settings(SKILLS_DIRS=[project, home]):
        yield project, home


def problems_for(discovery, folder: str) -> list[str]:
    return [p.message for p in discovery.problems if folder in p.path.parts]


def test_a_valid_skill_is_parsed_with_all_fields(dirs):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD)

    found = skills_discover()

    assert found.problems == []
    skill = found.skills["trip-planner"]
    assert skill.description == "Plan a trip & compare <options>."
    assert skill.license == "MIT"
    assert skill.compatibility == "Needs fetch_url."
    assert skill.metadata == {"author": "someone", "version": "1.0"}
    assert skill.allowed_tools == ["fetch_url", "write_file"]
    assert skill.body == "# Trip planner\n\n1. Ask where to."
    assert skill.path == project / "trip-planner"
    assert skill.source == project
    assert hash(skill) == hash(skill)  # usable in sets despite the dict field


def test_allowed_tools_may_be_a_list(dirs):
    project, _ = dirs
    write_skill(project, "a", "---\nname: a\ndescription: A.\nallowed-tools: [grep, glob]\n---\n")

    assert skills_discover().skills["a"].allowed_tools == ["grep", "glob"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\nname: broken\n---\nBody.\n", "no description"),
        ("---\nname: broken\ndescription: '   '\n---\n", "no description"),
        ("---\nname: broken\ndescription: Use when: things\n---\n", "not valid YAML at line 3"),
        ("# Just markdown\n\nNo front matter here.\n", "does not start with YAML front matter"),
        ("---\nname: broken\ndescription: never closed\n", "not closed"),
        ("---\n- a\n- list\n---\n", "not a mapping"),
        ("---\n---\nBody.\n", "not a mapping"),
    ],
)
def test_a_broken_skill_is_skipped_with_a_problem(dirs, text, message):
    project, _ = dirs
    write_skill(project, "broken", text)
    write_skill(project, "fine", "---\nname: fine\ndescription: Fine.\n---\n")

    found = skills_discover()

    assert list(found.skills) == ["fine"]
    [problem] = found.problems
    assert problem.path == project / "broken" / "SKILL.md"
    assert problem.message.startswith("Skipped:")
    assert message in problem.message


def test_a_folder_without_skill_md_is_reported(dirs):
    project, _ = dirs
    (project / "empty").mkdir()

    found = skills_discover()

    assert found.skills == {}
    assert "no SKILL.md" in problems_for(found, "empty")[0]


def test_an_unreadable_file_is_skipped_with_a_problem(dirs):
    project, _ = dirs
    path = write_skill(project, "binary", "")
    path.write_bytes(b"---\nname: binary\ndescription: \xff\xfe\n---\n")

    found = skills_discover()

    assert found.skills == {}
    assert "could not be read" in problems_for(found, "binary")[0]


def test_a_name_that_does_not_match_the_folder_loads_under_the_folder_name_with_a_warning(dirs):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD.replace("name: trip-planner", "name: travel"))

    found = skills_discover()

    assert list(found.skills) == ["trip-planner"]
    assert problems_for(found, "trip-planner") == ["The name 'travel' does not match the folder 'trip-planner'; loaded as 'trip-planner'."]


@pytest.mark.parametrize("name", ["Trip_Planner", "-trip", "trip--planner", "x" * 65])
def test_an_invalid_name_loads_under_the_folder_name_with_a_warning(dirs, name):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD.replace("name: trip-planner", f"name: {name}"))

    found = skills_discover()

    assert list(found.skills) == ["trip-planner"]
    assert "is not valid" in problems_for(found, "trip-planner")[0]


def test_a_folder_whose_name_is_not_a_skill_name_is_skipped(dirs):
    project, _ = dirs
    write_skill(project, "Trip Planner", GOOD)

    found = skills_discover()

    assert found.skills == {}
    assert "rename the folder" in problems_for(found, "Trip Planner")[0]


def test_a_too_long_description_is_cut_with_a_problem(dirs):
    project, _ = dirs
    write_skill(project, "long", f"---\nname: long\ndescription: {'a' * 1500}\n---\n")

    found = skills_discover()

    assert found.skills["long"].description == "a" * 1024
    assert "it was cut" in problems_for(found, "long")[0]


def test_the_project_skill_shadows_the_home_one(dirs):
    project, home = dirs
    write_skill(project, "trip-planner", GOOD)
    write_skill(home, "trip-planner", GOOD.replace("Plan a trip", "Home version"))
    write_skill(home, "only-home", "---\nname: only-home\ndescription: From home.\n---\n")

    found = skills_discover()

    assert list(found.skills) == ["only-home", "trip-planner"]
    assert found.skills["trip-planner"].source == project
    [problem] = found.problems
    assert problem.path == home / "trip-planner" / "SKILL.md"
    assert f"shadowed by {project / 'trip-planner' / 'SKILL.md'}" in problem.message


def test_a_missing_skills_dir_is_not_a_problem(tmp_path):
    with override_settings(SKILLS_DIRS=[tmp_path / "nope"]):
        assert skills_discover().problems == []


def test_an_edit_on_disk_is_seen_by_the_next_discovery(dirs):
    project, _ = dirs
    path = write_skill(project, "trip-planner", GOOD)
    assert skills_discover().skills["trip-planner"].body.endswith("Ask where to.")

    path.write_text(GOOD.replace("Ask where to.", "Ask when."), encoding="utf-8")
    assert skills_discover().skills["trip-planner"].body.endswith("Ask when.")

    path.unlink()
    assert "trip-planner" not in skills_discover().skills


def test_files_lists_the_other_files_sorted_without_skill_md(dirs):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD)
    folder = project / "trip-planner"
    for rel in ["scripts/convert.py", "references/airports.md", "assets/packing.md", "README.txt", ".hidden", "scripts/__pycache__/x.pyc"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")

    skill = skills_discover().skills["trip-planner"]

    assert skill.files() == ["README.txt", "assets/packing.md", "references/airports.md", "scripts/convert.py"]
    assert skill.files(limit=2) == ["README.txt", "assets/packing.md"]


def test_skills_for_agent_returns_the_known_names_in_order(dirs):
    project, _ = dirs
    for name in ["b-skill", "a-skill"]:
        write_skill(project, name, f"---\nname: {name}\ndescription: {name}.\n---\n")

    assert [s.name for s in skills_for_agent(["b-skill", "gone", "a-skill"])] == ["a-skill", "b-skill"]


def test_the_catalog_lists_names_and_escaped_descriptions_but_not_bodies(dirs):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD)

    prompt = skill_catalog_prompt(skills_for_agent(["trip-planner"]))

    assert "activate_skill" in prompt
    assert "<skill><name>trip-planner</name><description>Plan a trip &amp; compare &lt;options&gt;.</description></skill>" in prompt
    assert prompt.count("<available_skills>") == 1 and prompt.endswith("</available_skills>")
    assert "Ask where to" not in prompt


def test_the_catalog_is_empty_without_skills():
    assert skill_catalog_prompt([]) == ""


def test_the_activation_text_wraps_the_body_and_lists_the_files(dirs):
    project, _ = dirs
    write_skill(project, "trip-planner", GOOD)
    (project / "trip-planner" / "assets").mkdir()
    (project / "trip-planner" / "assets" / "packing.md").write_text("SECRET PACKING LIST")

    text = skill_activation_text(skills_discover().skills["trip-planner"])

    assert text.startswith('<skill_content name="trip-planner">\n# Trip planner\n\n1. Ask where to.\n')
    assert text.endswith("</skill_content>")
    assert "Skill folder: trip-planner" in text
    assert "Files in this skill (not loaded; read one with activate_skill and its `file` argument):\n- assets/packing.md" in text
    assert "SECRET PACKING LIST" not in text


def test_the_shipped_example_skills_parse_without_problems():
    shipped = Path(settings.BASE_DIR) / ".agents" / "skills"
    with override_settings(SKILLS_DIRS=[shipped]):
        found = skills_discover()

    assert found.problems == []
    assert len(found.skills) >= 2
    assert any(s.files() for s in found.skills.values())  # progressive disclosure has something to show
    for skill in found.skills.values():
        assert len(skill.body.splitlines()) < 150


# --- the activate_skill tool -------------------------------------------------------------------


def call_activate(tmp_path, thread_id: int, name: str, enabled=("trip-planner",)):
    scope = ToolScope(owner_id=1, thread_id=thread_id, agent_id=None, workspace=tmp_path, skills=tuple(enabled))
    return ToolSet([TOOL], scope).call("activate_skill", json.dumps({"name": name}))


def test_the_tool_is_automatic_and_read_only():
    assert TOOL.automatic and TOOL.read_only
    name = TOOL.parameters["properties"]["name"]
    assert name["type"] == "string" and "enum" not in name


@pytest.mark.django_db
def test_activating_an_enabled_skill_returns_its_body(dirs, tmp_path):
    write_skill(dirs[0], "trip-planner", GOOD)
    thread = ThreadFactory()

    result = call_activate(tmp_path, thread.id, "trip-planner")

    assert not result.is_error
    assert result.content == skill_activation_text(skills_discover().skills["trip-planner"])


@pytest.mark.django_db
def test_a_skill_that_is_not_enabled_is_refused_without_its_body(dirs, tmp_path):
    write_skill(dirs[0], "trip-planner", GOOD)
    write_skill(dirs[0], "other", "---\nname: other\ndescription: Other.\n---\nOTHER BODY\n")
    thread = ThreadFactory()

    result = call_activate(tmp_path, thread.id, "other", enabled=("trip-planner",))

    assert result.is_error
    assert result.error == "No skill named 'other' is enabled for this agent. Enabled skills: trip-planner."
    assert "OTHER BODY" not in result.content


@pytest.mark.django_db
def test_an_enabled_skill_removed_from_disk_gives_a_clear_error(dirs, tmp_path):
    thread = ThreadFactory()

    result = call_activate(tmp_path, thread.id, "trip-planner")

    assert result.is_error
    assert "'trip-planner' is enabled but could not be loaded: it is no longer on disk." in result.error


@pytest.mark.django_db
def test_an_enabled_skill_that_is_broken_says_why(dirs, tmp_path):
    write_skill(dirs[0], "trip-planner", "---\nname: trip-planner\n---\nBody.\n")
    thread = ThreadFactory()

    result = call_activate(tmp_path, thread.id, "trip-planner")

    assert result.is_error
    assert "no description" in result.error


@pytest.mark.django_db
def test_a_skill_is_not_injected_twice_in_one_thread(dirs, tmp_path):
    write_skill(dirs[0], "trip-planner", GOOD)
    thread = ThreadFactory()
    first = call_activate(tmp_path, thread.id, "trip-planner")
    MessageFactory(thread=thread, role=Message.Role.TOOL, tool_name="activate_skill", tool_call_id="c1", content=first.content)

    again = call_activate(tmp_path, thread.id, "trip-planner")
    elsewhere = call_activate(tmp_path, ThreadFactory(owner=thread.owner).id, "trip-planner")

    assert not again.is_error
    assert "already active in this conversation" in again.content
    assert "Ask where to" not in again.content
    assert elsewhere.content == first.content


@pytest.mark.django_db
def test_a_failed_or_different_activation_does_not_count(dirs, tmp_path):
    write_skill(dirs[0], "trip-planner", GOOD)
    write_skill(dirs[0], "trip", "---\nname: trip\ndescription: Trip.\n---\nShort trip.\n")
    thread = ThreadFactory()
    MessageFactory(thread=thread, role=Message.Role.TOOL, tool_name="activate_skill", is_error=True,
                   content='<skill_content name="trip">')
    MessageFactory(thread=thread, role=Message.Role.TOOL, tool_name="activate_skill",
                   content=call_activate(tmp_path, thread.id, "trip-planner").content)

    result = call_activate(tmp_path, thread.id, "trip", enabled=("trip", "trip-planner"))

    assert result.content.startswith('<skill_content name="trip">\nShort trip.')


def test_skill_is_hashable_and_comparable(tmp_path):
    a = Skill(name="a", description="A.", path=tmp_path, body="", metadata={"k": "v"}, source=tmp_path)
    assert {a, a} == {a}


def test_a_listed_skill_file_is_read_on_request_and_nothing_else(dirs, tmp_path):
    skill_md = write_skill(dirs[0], "trip-planner", GOOD)
    (skill_md.parent / "references").mkdir()
    (skill_md.parent / "references" / "visas.md").write_text("Check visa rules.")
    (tmp_path / "outside.txt").write_text("SECRET")
    (skill_md.parent / "references" / "link.md").symlink_to(tmp_path / "outside.txt")
    scope = ToolScope(owner_id=1, thread_id=1, agent_id=None, workspace=tmp_path, skills=("trip-planner",))

    def read(file):
        return ToolSet([TOOL], scope).call("activate_skill", json.dumps({"name": "trip-planner", "file": file}))

    ok = read("references/visas.md")
    traversal = read("../../outside.txt")
    linked = read("references/link.md")

    assert ok.content == '<skill_file skill="trip-planner" path="references/visas.md">\nCheck visa rules.\n</skill_file>'
    assert traversal.is_error and "has no file '../../outside.txt'" in traversal.content
    assert linked.is_error and "SECRET" not in linked.content
