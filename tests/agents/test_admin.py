"""The agent admin: the form's tool and skill checkboxes, the model check, export/import, skills
page; the provider admin, which takes an API key and never shows it again."""

import html
import json
import re

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from agents import tools as tool_registry
from agents.models import Agent, Provider
from agents.models_list import model_names_list
from agents.providers import provider_api_key_read, provider_save
from agents.tools import Tool, tools_toggleable
from tests.doubles.openai_server import ScriptedOpenAIServer
from tests.factories import AgentFactory, UserFactory
from tests.llm_backend import closed_port_url

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:agents_agent_add")
CHANGELIST_URL = reverse("admin:agents_agent_changelist")
SKILLS_URL = reverse("admin:agents_agent_skills")
IMPORT_URL = reverse("admin:agents_agent_import")
PROVIDER_ADD_URL = reverse("admin:agents_provider_add")
PROVIDER_CHANGELIST_URL = reverse("admin:agents_provider_changelist")
SECRET = "sk-proj-7Hq2ZxW9vL0p"

# A tool this module registers (see the `switch_tool` fixture): off by default, and it changes things.
TOOL = Tool(
    name="zz_switch", description="Flips a test switch. Only tests use it, e.g. this one.", parameters={"type": "object", "properties": {}},
    read_only=False, build=lambda scope: (lambda: "flipped"), enabled_by_default=False,
)  # fmt: skip


@pytest.fixture
def switch_tool(monkeypatch):
    """Registers TOOL the way a new tool module is registered, while the server is running."""
    monkeypatch.setattr(tool_registry, "TOOL_MODULES", [*tool_registry.TOOL_MODULES, __name__])
    return TOOL


def write_skill(root, name, description, body="Do it.", folder=None):
    path = root / (folder or name) / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\nname: {name}\ndescription: {description}\n---\n{body}\n", encoding="utf-8")


@pytest.fixture
def admin_client(client):
    """Logged in as the app's one user: a superuser without a password (faster than pytest-django's)."""
    client.force_login(UserFactory())
    return client


@pytest.fixture(autouse=True)
def skills_dir(tmp_path, settings):
    root = tmp_path / "skills"
    write_skill(root, "notes", "Take notes.")
    settings.SKILLS_DIRS = [root]
    return root


@pytest.fixture(autouse=True)
def backend(settings):
    """The scripted model server as the backend: it lists one model, "scripted"."""
    with ScriptedOpenAIServer() as server:
        settings.LLM_BASE_URL = server.url
        yield server


def form_data(**changes) -> dict:
    data = {
        "name": "Helper", "slug": "helper", "description": "", "provider": "", "model": "", "fallback_model": "",
        "system_prompt": "Help.", "temperature": "0.7", "max_tool_rounds": "10", "enabled_tools": ["calculator"],
        "enabled_skills": [],
    }  # fmt: skip
    data.update(changes)
    return data


def checkboxes(content: str, field: str) -> dict[str, bool]:
    """{value: checked} for the checkboxes of `field` in the page."""
    found = {}
    for tag in re.findall(rf'<input type="checkbox" name="{field}"[^>]*>', content):
        value = html.unescape(re.search(r'value="([^"]*)"', tag).group(1))
        found[value] = " checked" in tag
    return found


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- the form ---------------------------------------------------------------------------------


def test_the_form_has_a_checkbox_for_every_tool_and_skill(admin_client, skills_dir, switch_tool):
    write_skill(skills_dir, "review", "Review a week.")

    content = admin_client.get(ADD_URL).content.decode()

    tools = checkboxes(content, "enabled_tools")
    assert list(tools) == [t.name for t in tools_toggleable()]
    assert "zz_switch" in tools
    assert checkboxes(content, "enabled_skills") == {"notes": False, "review": False}


def test_a_new_agent_starts_with_the_default_tools_ticked(admin_client, switch_tool):
    tools = checkboxes(admin_client.get(ADD_URL).content.decode(), "enabled_tools")
    assert tools["calculator"] is True
    assert tools["zz_switch"] is False


def test_labels_say_what_a_tool_is_and_mark_the_unusual_ones(admin_client, switch_tool):
    content = html.unescape(admin_client.get(ADD_URL).content.decode())
    assert "zz_switch — Flips a test switch. [off by default, changes things]" in content
    assert "Only tests use it" not in content  # the gist of a description, not all of it
    assert "calculator — " in content
    assert "notes — Take notes." in content


def test_ticking_a_tool_and_a_skill_saves_them_on_the_agent(admin_client, switch_tool):
    agent = AgentFactory(slug="helper", enabled_tools=["calculator"], enabled_skills=[])
    url = reverse("admin:agents_agent_change", args=[agent.pk])

    response = admin_client.post(url, form_data(enabled_tools=["calculator", "zz_switch"], enabled_skills=["notes"]))

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.enabled_tools, agent.enabled_skills) == (["calculator", "zz_switch"], ["notes"])
    assert checkboxes(admin_client.get(url).content.decode(), "enabled_tools")["zz_switch"] is True


def test_unknown_tool_and_skill_names_are_rejected(admin_client):
    response = admin_client.post(ADD_URL, form_data(enabled_tools=["calculator", "rm_rf"], enabled_skills=["ghost"]))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "rm_rf is not one of the available choices" in errors["enabled_tools"][0]
    assert "ghost is not one of the available choices" in errors["enabled_skills"][0]
    assert not Agent.objects.filter(slug="helper").exists()


def test_a_skill_gone_from_disk_still_shows_ticked_and_can_be_unticked(admin_client):
    agent = AgentFactory(slug="helper", enabled_skills=["notes", "vanished"])
    url = reverse("admin:agents_agent_change", args=[agent.pk])

    content = admin_client.get(url).content.decode()

    assert checkboxes(content, "enabled_skills") == {"notes": True, "vanished": True}
    assert "vanished (not found on disk)" in content
    admin_client.post(url, form_data(enabled_skills=["notes"]))
    agent.refresh_from_db()
    assert agent.enabled_skills == ["notes"]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("temperature", "2.1", "less than or equal to 2"),
        ("temperature", "-0.1", "greater than or equal to 0"),
        ("max_tool_rounds", "0", "greater than or equal to 1"),
        ("max_tool_rounds", "51", "less than or equal to 50"),
    ],
)
def test_temperature_and_round_cap_are_range_checked(admin_client, field, value, error):
    response = admin_client.post(ADD_URL, form_data(**{field: value}))
    assert error in response.context["adminform"].form.errors[field][0]
    assert not Agent.objects.exists()


def test_skills_help_links_to_the_skills_page(admin_client):
    assert f'<a href="{SKILLS_URL}">See the skills page</a>' in admin_client.get(ADD_URL).content.decode()


# --- the model check --------------------------------------------------------------------------


def test_the_backend_model_list_is_read():
    assert model_names_list() == ["scripted"]


def test_a_model_the_backend_does_not_list_gives_a_warning_and_is_saved(admin_client):
    response = admin_client.post(ADD_URL, form_data(model="other"), follow=True)

    assert Agent.objects.get(slug="helper").model == "other"
    warnings = [m for m in shown_messages(response) if "does not list" in m]
    assert warnings == ["The backend does not list a model named 'other'; runs may fail. Models it lists: scripted."]


@pytest.mark.parametrize("model", ["scripted", ""])
def test_a_listed_or_blank_model_gives_no_warning(admin_client, model, backend):
    response = admin_client.post(ADD_URL, form_data(model=model), follow=True)

    assert Agent.objects.get(slug="helper").model == model
    assert [m for m in shown_messages(response) if "model" in m.lower()] == []


def test_a_backend_that_is_down_is_said_and_the_agent_is_saved(admin_client, settings):
    settings.LLM_BASE_URL = closed_port_url()

    response = admin_client.post(ADD_URL, form_data(model="other"), follow=True)

    assert Agent.objects.get(slug="helper").model == "other"
    assert any(m.startswith("Could not check the model name 'other'") for m in shown_messages(response))


def test_saving_an_agent_as_default_clears_the_other_default(admin_client):
    old = AgentFactory(slug="old", is_default=True)

    admin_client.post(ADD_URL, form_data(is_default="on"))

    assert list(Agent.objects.filter(is_default=True).values_list("slug", flat=True)) == ["helper"]
    old.refresh_from_db()
    assert old.is_default is False


# --- changelist, export and import ------------------------------------------------------------


def test_the_list_shows_counts_and_links_to_skills_and_import(admin_client):
    AgentFactory(slug="helper", enabled_tools=["calculator"], enabled_skills=["notes"], model="")
    content = admin_client.get(CHANGELIST_URL).content.decode()
    assert f'href="{SKILLS_URL}"' in content and f'href="{IMPORT_URL}"' in content
    assert '<td class="field-tool_count">1</td>' in content
    assert "default (" in content  # a blank model names the default


def export(admin_client, action, agents):
    data = {"action": action, "_selected_action": [a.pk for a in agents]}
    return admin_client.post(CHANGELIST_URL, data)


def test_exporting_one_agent_downloads_its_file(admin_client):
    agent = AgentFactory(slug="helper", enabled_skills=["notes"])

    response = export(admin_client, "export_json", [agent])

    assert response["Content-Disposition"] == 'attachment; filename="helper.json"'
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["enabled_skills"] == ["notes"]


def test_exporting_several_agents_downloads_a_yaml_list(admin_client):
    agents = [AgentFactory(slug="a-one"), AgentFactory(slug="b-two")]

    response = export(admin_client, "export_yaml", agents)

    assert response["Content-Disposition"] == 'attachment; filename="agents.yaml"'
    assert [a["slug"] for a in yaml.safe_load(response.content)] == ["a-one", "b-two"]


def test_the_import_page_imports_an_exported_file(admin_client):
    agent = AgentFactory(slug="helper", name="Helper", enabled_skills=["notes"])
    text = export(admin_client, "export_yaml", [agent]).content
    Agent.objects.filter(pk=agent.pk).update(name="Changed", enabled_skills=[])

    upload = _upload("helper.yaml", text)
    response = admin_client.post(IMPORT_URL, {"file": upload}, follow=True)

    assert response.redirect_chain[-1][0] == CHANGELIST_URL
    assert "Imported 1 agent: Helper." in shown_messages(response)
    agent.refresh_from_db()
    assert (agent.name, agent.enabled_skills) == ("Helper", ["notes"])


def test_the_import_page_shows_what_is_wrong_and_changes_nothing(admin_client):
    AgentFactory(slug="helper", name="Helper")
    text = json.dumps({"slug": "helper", "name": "<b>Bold</b>", "temperature": 7})

    response = admin_client.post(IMPORT_URL, {"text": text})

    content = response.content.decode()
    assert response.status_code == 200
    assert "The agent file was not imported:" in content
    assert "<li>missing keys: description, model, system_prompt, max_tool_rounds, enabled_tools, enabled_skills.</li>" in content
    assert "<li>temperature: must be between 0 and 2, got 7.</li>" in content
    assert Agent.objects.get(slug="helper").name == "Helper"
    assert Agent.objects.count() == 1


def test_the_import_page_refuses_a_file_that_is_not_text(admin_client):
    response = admin_client.post(IMPORT_URL, {"file": _upload("x.json", b"\xff\xfe\x00garbage")})
    assert "The file is not UTF-8 text" in response.content.decode()
    assert not Agent.objects.exists()


def _upload(name, content: bytes):
    return SimpleUploadedFile(name, content)


# --- the skills page --------------------------------------------------------------------------


def test_the_skills_page_lists_skills_who_uses_them_and_problems(admin_client, skills_dir):
    (skills_dir / "broken").mkdir()
    (skills_dir / "broken" / "SKILL.md").write_text("no front matter here")
    write_skill(skills_dir, "evil", "<script>alert(1)</script> & more", folder="evil")
    AgentFactory(slug="helper", name="Helper", enabled_skills=["notes", "gone"])

    content = admin_client.get(SKILLS_URL).content.decode()

    assert "2 skills found" in content
    assert str(skills_dir / "notes") in content
    assert re.search(r'<th scope="row">notes</th>.*?>Helper</a>', content, re.S)
    assert "1 problem found while reading skills" in content
    assert "does not start with YAML front matter" in content
    assert "gone" in content and "not found on disk" in content
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in content


# --- providers --------------------------------------------------------------------------------


def make_provider(slug="cloud", api_key=SECRET, **fields) -> Provider:
    fields = {"name": "Cloud", "base_url": "https://llm.example.com/v1", **fields}
    return provider_save(provider=Provider(slug=slug, **fields), api_key=api_key)


def provider_data(**changes) -> dict:
    data = {"name": "Cloud", "slug": "cloud", "base_url": "https://llm.example.com/v1", "api_key": ""}
    data.update(changes)
    return data


def provider_url(provider) -> str:
    return reverse("admin:agents_provider_change", args=[provider.pk])


def test_a_provider_added_with_a_key_stores_it_encrypted(admin_client):
    response = admin_client.post(PROVIDER_ADD_URL, provider_data(api_key=SECRET))

    assert response.status_code == 302
    provider = Provider.objects.get(slug="cloud")
    assert SECRET not in provider.api_key_encrypted
    assert provider_api_key_read(provider=provider) == SECRET


def test_no_page_ever_shows_the_key(admin_client):
    provider = make_provider()
    AgentFactory(slug="helper", provider=provider, model="big")

    pages = {
        "change": admin_client.get(provider_url(provider)),
        "changelist": admin_client.get(PROVIDER_CHANGELIST_URL),
        "history": admin_client.get(reverse("admin:agents_provider_history", args=[provider.pk])),
        "agent changelist": admin_client.get(CHANGELIST_URL),
    }

    for name, response in pages.items():
        assert response.status_code == 200, name
        assert SECRET not in response.content.decode(), name
        assert provider.api_key_encrypted not in response.content.decode(), name
    field = re.search(r'<input[^>]*name="api_key"[^>]*>', pages["change"].content.decode()).group(0)
    assert 'type="password"' in field and "value=" not in field
    assert '<td class="field-api_key_shown">set</td>' in pages["changelist"].content.decode()


def test_a_provider_without_a_key_is_listed_as_not_set(admin_client):
    make_provider(api_key="")
    assert '<td class="field-api_key_shown">not set</td>' in admin_client.get(PROVIDER_CHANGELIST_URL).content.decode()


def test_an_empty_key_field_keeps_the_stored_key(admin_client):
    provider = make_provider()

    response = admin_client.post(provider_url(provider), provider_data(name="Renamed"))

    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.name, provider_api_key_read(provider=provider)) == ("Renamed", SECRET)


def test_a_new_key_replaces_the_stored_one(admin_client):
    provider = make_provider()

    admin_client.post(provider_url(provider), provider_data(api_key="sk-new"))

    provider.refresh_from_db()
    assert provider_api_key_read(provider=provider) == "sk-new"


def test_the_clear_box_removes_the_stored_key(admin_client):
    provider = make_provider()
    assert 'name="clear_api_key"' in admin_client.get(provider_url(provider)).content.decode()

    admin_client.post(provider_url(provider), provider_data(clear_api_key="on"))

    provider.refresh_from_db()
    assert provider.api_key_encrypted == ""
    assert 'name="clear_api_key"' not in admin_client.get(provider_url(provider)).content.decode()


def test_a_new_key_and_the_clear_box_together_are_refused(admin_client):
    provider = make_provider()

    response = admin_client.post(provider_url(provider), provider_data(api_key="sk-new", clear_api_key="on"))

    assert "Either type a new key or remove the stored one" in response.content.decode()
    provider.refresh_from_db()
    assert provider_api_key_read(provider=provider) == SECRET


def test_a_form_with_errors_does_not_echo_the_typed_key(admin_client):
    response = admin_client.post(PROVIDER_ADD_URL, provider_data(base_url="ftp://nope", api_key=SECRET))

    assert response.status_code == 200
    assert "http:// or https://" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert not Provider.objects.exists()


def test_a_key_that_cannot_be_decrypted_is_said_not_crashed_on(admin_client, settings):
    provider = make_provider()
    settings.HEARTH_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    changelist = admin_client.get(PROVIDER_CHANGELIST_URL).content.decode()
    change = admin_client.get(provider_url(provider))

    assert "cannot be decrypted (HEARTH_ENCRYPTION_KEYS changed?)" in changelist
    assert change.status_code == 200
    assert "The stored key cannot be decrypted" in html.unescape(change.content.decode())


def test_a_provider_in_use_cannot_be_deleted(admin_client):
    provider = make_provider()
    AgentFactory(slug="helper", name="Helper", provider=provider, model="big")

    response = admin_client.post(reverse("admin:agents_provider_delete", args=[provider.pk]), {"post": "yes"})

    assert "would require deleting the following protected related objects" in response.content.decode()
    assert Provider.objects.filter(pk=provider.pk).exists()


# --- an agent's provider and fallback model ---------------------------------------------------


def test_an_agent_saves_its_provider_and_fallback_model(admin_client, backend, settings):
    provider = make_provider(base_url=backend.url)  # the scripted server lists "scripted"
    settings.LLM_BASE_URL = closed_port_url()  # so a check against the default server would complain

    response = admin_client.post(ADD_URL, form_data(provider=provider.pk, model="scripted", fallback_model="tiny"), follow=True)

    agent = Agent.objects.get(slug="helper")
    assert (agent.provider, agent.model, agent.fallback_model) == (provider, "scripted", "tiny")
    assert [m for m in shown_messages(response) if "model" in m.lower()] == [
        "Fallback model: The provider Cloud does not list a model named 'tiny'; runs may fail. Models it lists: scripted.",
    ]
    content = admin_client.get(CHANGELIST_URL).content.decode()
    assert '<td class="field-provider_shown">Cloud</td>' in content


def test_an_agent_with_a_provider_must_name_its_model(admin_client):
    provider = make_provider()

    response = admin_client.post(ADD_URL, form_data(provider=provider.pk, model=""))

    assert "Name the model" in response.context["adminform"].form.errors["model"][0]
    assert not Agent.objects.exists()


def test_the_fallback_cannot_be_the_model_itself(admin_client):
    response = admin_client.post(ADD_URL, form_data(model="scripted", fallback_model="scripted"))

    assert "The fallback is the agent's own model" in response.context["adminform"].form.errors["fallback_model"][0]


def test_the_agent_form_offers_the_providers_and_the_default(admin_client):
    make_provider(name="Cloud")

    content = admin_client.get(ADD_URL).content.decode()

    select = re.search(r'<select name="provider"[^>]*>(.*?)</select>', content, re.S).group(1)
    assert "Default model server (" in select and ">Cloud</option>" in select


def test_exporting_an_agent_from_the_admin_holds_the_provider_slug_and_no_key(admin_client):
    agent = AgentFactory(slug="helper", provider=make_provider(), model="big", fallback_model="small")

    response = export(admin_client, "export_json", [agent])

    data = json.loads(response.content)
    assert (data["provider"], data["fallback_model"]) == ("cloud", "small")
    assert SECRET not in response.content.decode()
