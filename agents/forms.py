"""Admin forms: the agent form with tool and skill checkboxes, the import form, the provider form."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html

from .models import Agent, Provider
from .portability import ROUNDS_MAX, ROUNDS_MIN, TEMPERATURE_MAX, TEMPERATURE_MIN
from .providers import provider_api_key_status
from .skills import skills_discover
from .tools import Tool, tool_names_default, tools_toggleable

# Agents name skills and tools as plain strings; these may outlive the code or folder behind them.
NOT_REGISTERED = "(not registered: no such tool in this version)"
NOT_FOUND = "(not found on disk)"
MAX_IMPORT_BYTES = 1024 * 1024
# A full stop followed by a new sentence ("e.g. 'x'" does not end one).
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z])")


def tool_label(tool: Tool) -> str:
    marks = []
    if not tool.enabled_by_default:
        marks.append("off by default")
    if not tool.read_only:
        marks.append("changes things")
    suffix = f" [{', '.join(marks)}]" if marks else ""
    return f"{tool.name} — {_first_sentence(tool.description)}{suffix}"


def _first_sentence(text: str, limit: int = 160) -> str:
    """Tool descriptions are written for the model and run long; the form shows their gist."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


class AgentForm(forms.ModelForm):
    """The agent's settings. Tool and skill choices are read when the form is built, so a tool
    or skill added since the server started shows up on the next page load.

    Names the agent already has but that are no longer registered or found on disk stay
    offered (ticked, marked) so they can be unticked; any other unknown name is rejected.
    """

    temperature = forms.FloatField(
        min_value=TEMPERATURE_MIN, max_value=TEMPERATURE_MAX, initial=0.7,
        help_text=f"{TEMPERATURE_MIN:g} to {TEMPERATURE_MAX:g}; lower is more focused, higher more varied.",
    )  # fmt: skip
    max_tool_rounds = forms.IntegerField(
        label="Round cap", min_value=ROUNDS_MIN, max_value=ROUNDS_MAX, initial=10,
        help_text="How many times in one answer the agent may call tools before it must stop.",
    )  # fmt: skip
    # "radiolist" is the admin's own class for choice lists: labels as wide as their text.
    enabled_tools = forms.MultipleChoiceField(
        label="Tools", required=False, widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"}),
        help_text="What the agent may call. Changes apply to the next run.",
    )  # fmt: skip
    enabled_skills = forms.MultipleChoiceField(
        label="Skills", required=False, widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"})
    )

    class Meta:
        model = Agent
        fields = (
            "name", "slug", "description", "is_default", "provider", "model", "fallback_model", "system_prompt",
            "temperature", "max_tool_rounds", "enabled_tools", "enabled_skills",
        )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current_tools = list(self.instance.enabled_tools or []) if self.instance.pk else []
        current_skills = list(self.instance.enabled_skills or []) if self.instance.pk else []
        tools = tools_toggleable()
        known_tools = {t.name for t in tools}
        self.fields["enabled_tools"].choices = [(t.name, tool_label(t)) for t in tools] + [
            (name, f"{name} {NOT_REGISTERED}") for name in current_tools if name not in known_tools
        ]
        discovery = skills_discover()
        self.fields["enabled_skills"].choices = [
            (s.name, f"{s.name} — {s.description}") for s in discovery.skills.values()
        ] + [(name, f"{name} {NOT_FOUND}") for name in current_skills if name not in discovery.skills]
        self.fields["enabled_skills"].help_text = _skills_help(len(discovery.skills), len(discovery.problems))
        self.fields["provider"].empty_label = f"Default model server ({settings.LLM_BASE_URL})"
        self.fields["model"].help_text = (
            f"Empty means the default model ({settings.LLM_MODEL}); an agent with a provider must name one. "
            "A name the backend does not list gives a warning after saving."
        )
        if not self.instance.pk:
            self.initial.setdefault("enabled_tools", tool_names_default())

    def clean(self):
        cleaned = super().clean()
        model, fallback = cleaned.get("model", ""), cleaned.get("fallback_model", "")
        if cleaned.get("provider") and not model:
            # LLM_MODEL names a model of the default server; a provider would not know it.
            self.add_error("model", "Name the model: the default model name is only for the default model server.")
        if fallback and fallback == model:
            self.add_error("fallback_model", "The fallback is the agent's own model; name another one or leave it empty.")
        return cleaned


def _skills_help(found: int, problems: int) -> str:
    url = reverse("admin:agents_agent_skills")
    if problems:
        return format_html(
            'Skills found on disk: {}. <a href="{}">See the skills page</a> ({} problem{} reported).',
            found, url, problems, "" if problems == 1 else "s",
        )  # fmt: skip
    return format_html('Skills found on disk: {}. <a href="{}">See the skills page</a>.', found, url)


class AgentImportForm(forms.Form):
    """A file to import, or the same text pasted."""

    file = forms.FileField(required=False, help_text="A .json or .yaml file exported from Hearth.")
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 16, "cols": 80}),
        label="Or paste it here",
    )  # fmt: skip

    def clean(self):
        cleaned = super().clean()
        upload, text = cleaned.get("file"), cleaned.get("text", "")
        if upload:
            if upload.size > MAX_IMPORT_BYTES:
                raise forms.ValidationError(f"The file is larger than {MAX_IMPORT_BYTES // 1024} KB; an agent file is much smaller.")
            try:
                cleaned["text"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text: it is neither JSON nor YAML.") from None
        elif not text.strip():
            raise forms.ValidationError("Choose a file or paste an agent's JSON or YAML.")
        return cleaned


class ProviderForm(forms.ModelForm):
    """A provider's settings. The API key is write-only: the page never holds it, not even as
    the field's value, so it cannot leak through the page source, a screenshot or the browser's
    form history. Left empty, the stored key stays; "Remove the stored key" removes it.
    """

    api_key = forms.CharField(
        label="API key", required=False, strip=True,
        # new-password: browsers must not fill in a saved password of this site.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )  # fmt: skip
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = Provider
        fields = ("name", "slug", "base_url", "api_key", "clear_api_key")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        status = provider_api_key_status(provider=self.instance)
        if status == "set":
            help_text = "A key is stored. Leave this empty to keep it, or type a new one to replace it."
        elif status == "not set":
            help_text = "No key is stored. Leave this empty for a server that needs none."
        else:
            help_text = f"The stored key {status}, or remove it."
        self.fields["api_key"].help_text = help_text

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either type a new key or remove the stored one, not both.")
        return cleaned

    def api_key_change(self) -> str | None:
        """What provider_save's `api_key` should be: None keeps the stored key, "" removes it."""
        if self.cleaned_data.get("clear_api_key"):
            return ""
        return self.cleaned_data.get("api_key") or None
