"""Saving agents, and moving them in and out as JSON or YAML files.

An exported agent is its settings, enabled tools and enabled skills, under
`"format": "hearth-agent", "version": 1`. Which agent answers by default is a choice of
this installation, not of the agent, so `is_default` is neither exported nor imported.
A provider is named by its slug only: its address and API key stay in this installation
(an API key never leaves it in a file), and the importing one must have a provider with
that slug.

Everything read from a file is checked before anything is written: an import either
creates/updates every agent it holds or changes nothing.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from .models import Agent, Provider
from .skills import skills_discover
from .tools import tools_toggleable

# Values quoted back in problems are cut short: a file's junk must not become a huge page.
_quoter = reprlib.Repr()  # keyword arguments only from Python 3.12
_quoter.maxstring = _quoter.maxother = 80
_quoter.maxlist = _quoter.maxdict = 6
_quoter.maxlevel = 2
_quote = _quoter.repr


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors/aliases: agent files never need them, and aliases expand
    exponentially (a few hundred bytes can become gigabytes: the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in agent files", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


FORMAT = "hearth-agent"
VERSION = 1
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.0, 2.0
ROUNDS_MIN, ROUNDS_MAX = 1, 50
# The settings a file holds, in export order. All of them are required on import, except the
# ones added since files were first written (OPTIONAL), whose absence means what a file from
# before them meant. Either way a file describes an agent whole: importing it never leaves a
# half-old, half-new agent.
FIELDS = (
    "slug", "name", "description", "provider", "model", "fallback_model", "system_prompt",
    "temperature", "max_tool_rounds", "enabled_tools", "enabled_skills",
)  # fmt: skip
OPTIONAL = {"provider": None, "fallback_model": ""}  # the default model server; no fallback
_TEXT_LIMITS = {
    "slug": 64, "name": 100, "description": 500, "model": 200, "fallback_model": 200, "system_prompt": None,
}  # fmt: skip

Format = Literal["json", "yaml"]


class AgentImportError(Exception):
    """An import was refused. The message says everything that is wrong; nothing was changed."""


def agent_save(*, agent: Agent) -> Agent:
    """Saves `agent`. If it is the default agent, no other agent stays default.

    Both writes happen in one transaction, so there is never a moment with two defaults.
    """
    with transaction.atomic():
        agent.save()
        if agent.is_default:
            Agent.objects.filter(is_default=True).exclude(pk=agent.pk).update(is_default=False)
    return agent


def agent_export(*, agent: Agent) -> dict[str, Any]:
    """The agent as a plain dict that agent_import accepts back."""
    data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    for key in FIELDS:
        if key == "provider":
            data[key] = agent.provider.slug if agent.provider_id else None
            continue
        value = getattr(agent, key)
        data[key] = list(value) if isinstance(value, list) else value
    return data


def agent_export_text(*, agent: Agent, fmt: Format) -> str:
    """One agent as a JSON or YAML document."""
    return _dump(agent_export(agent=agent), fmt)


def agents_export_text(*, agents: list[Agent], fmt: Format) -> str:
    """Several agents as one JSON or YAML list (agents_import accepts it back)."""
    return _dump([agent_export(agent=a) for a in agents], fmt)


def _dump(data: Any, fmt: Format) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    raise ValueError(f"unknown export format {fmt!r}; use 'json' or 'yaml'")


def agent_import(*, text: str) -> Agent:
    """Creates the agent a JSON or YAML document describes, or updates the agent with its slug.

    Raises AgentImportError, changing nothing, if the text is not one agent or anything in it
    is wrong (see agents_import).
    """
    agents = agents_import(text=text, allow_list=False)
    return agents[0]


def agents_import(*, text: str, allow_list: bool = True) -> list[Agent]:
    """Creates or updates (by slug) every agent in `text`: one agent, or a list of them.

    Checks everything first: parseable JSON/YAML, exactly the known keys, types, ranges, slug
    format, that every tool is registered and can be switched on, that every skill is
    discovered on disk, that a named provider exists here (and the agent then names its
    model), no slug twice. Raises AgentImportError listing every problem found, and then
    nothing was written. On success all agents are written in one transaction; `is_default`
    of existing agents is left as it was, new agents are not default.
    """
    data = _parse(text)
    if isinstance(data, list):
        if not allow_list:
            raise AgentImportError("The file holds a list of agents; import one agent at a time here.")
        if not data:
            raise AgentImportError("The file holds an empty list: there is no agent to import.")
        items = data
    elif isinstance(data, dict):
        items = [data]
    else:
        raise AgentImportError(f"The file must hold an agent (a mapping of settings), not {_type_name(data)}.")
    known = _Known(
        tools={t.name for t in tools_toggleable()},
        skills=set(skills_discover().skills),
        providers={p.slug: p for p in Provider.objects.all()},
    )
    problems, cleaned = [], []
    for index, item in enumerate(items, start=1):
        item_problems, values = _check_agent(item, known=known)
        label = _label(item, index, many=len(items) > 1)
        problems += [f"{label}{p}" for p in item_problems]
        cleaned.append(values)
    slugs = [v.get("slug") for v in cleaned]
    problems += [f"The slug {s!r} appears more than once." for s in sorted({s for s in slugs if s and slugs.count(s) > 1})]
    if problems:
        raise AgentImportError("The agent file was not imported:\n" + "\n".join(f"- {p}" for p in problems))
    with transaction.atomic():
        return [_write(values) for values in cleaned]


def _parse(text: str) -> Any:
    if not text.strip():
        raise AgentImportError("The file is empty.")
    # JSON is tried first only for text that looks like JSON, so its error is the one reported.
    if text.lstrip()[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise AgentImportError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        except RecursionError:
            raise AgentImportError("Not an agent file: it is nested too deeply.") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 -- a SafeLoader subclass
    except RecursionError:
        raise AgentImportError("Not an agent file: it is nested too deeply.") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise AgentImportError(f"Neither JSON nor valid YAML: {problem}{at}.") from None


def _label(item: Any, index: int, many: bool) -> str:
    slug = item.get("slug") if isinstance(item, dict) else None
    if many:
        return f"Agent {index}" + (f" ({slug!r})" if isinstance(slug, str) else "") + ": "
    return ""


@dataclass(frozen=True)
class _Known:
    """What the names in a file may refer to in this installation."""

    tools: set[str]
    skills: set[str]
    providers: dict[str, Provider]  # by slug


def _check_agent(item: Any, *, known: _Known) -> tuple[list[str], dict]:
    """(problems, cleaned values). The values are only meaningful when there are no problems;
    a cleaned "provider" is a Provider or None."""
    if not isinstance(item, dict):
        return [f"expected an agent (a mapping of settings), got {_type_name(item)}."], {}
    problems = []
    if "format" in item and item["format"] != FORMAT:
        problems.append(f"format must be {FORMAT!r}, not {_quote(item['format'])}.")
    if "version" in item and item["version"] != VERSION:
        problems.append(f"version {_quote(item['version'])} is not supported (this Hearth reads version {VERSION}).")
    unknown = sorted(str(k)[:80] for k in item if k not in FIELDS and k not in ("format", "version"))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        problems.append(f"unknown keys: {shown} (allowed: {', '.join(FIELDS)}).")
    missing = [k for k in FIELDS if k not in item and k not in OPTIONAL]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}.")
    values = dict(OPTIONAL)
    for key in FIELDS:
        if key in item:
            problem = _check_value(key, item[key], known=known)
            if problem:
                problems.append(f"{key}: {problem}")
            elif key == "provider" and item[key] is not None:
                values[key] = known.providers[item[key]]
            else:
                values[key] = item[key]
    if values.get("provider") is not None and values.get("model") == "":
        # LLM_MODEL names a model of the default server; the provider would not know it.
        problems.append(f"model: must name a model, as the agent uses the provider {values['provider'].slug!r}.")
    if values.get("fallback_model") and values.get("fallback_model") == values.get("model"):
        problems.append("fallback_model: is the agent's own model; name another one or leave it empty.")
    return problems, values


def _check_value(key: str, value: Any, *, known: _Known) -> str:
    """"" if `value` is right for `key`, else what is wrong with it."""
    if key in _TEXT_LIMITS:
        return _check_text(key, value, _TEXT_LIMITS[key])
    if key == "provider":
        if value is None or (isinstance(value, str) and value in known.providers):
            return ""
        if not isinstance(value, str):
            return f"must be a provider's slug or null (the default model server), got {_type_name(value)}."
        offered = ", ".join(sorted(known.providers)) or "none"
        return f"no provider with the slug {value!r} here (known: {offered}); add it in the admin first, or use null."
    if key == "temperature":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {_type_name(value)}."
        if not TEMPERATURE_MIN <= value <= TEMPERATURE_MAX:
            return f"must be between {TEMPERATURE_MIN:g} and {TEMPERATURE_MAX:g}, got {value!r}."
        return ""
    if key == "max_tool_rounds":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, got {_type_name(value)}."
        if not ROUNDS_MIN <= value <= ROUNDS_MAX:
            return f"must be between {ROUNDS_MIN} and {ROUNDS_MAX}, got {value!r}."
        return ""
    names, noun = (known.tools, "tool") if key == "enabled_tools" else (known.skills, "skill")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"must be a list of {noun} names, got {_type_name(value)}."
    unknown = [v for v in value if v not in names]
    if unknown:
        where = "registered that can be switched on" if noun == "tool" else "found on disk"
        offered = ", ".join(sorted(names)) or "none"
        return f"no {noun} named {', '.join(map(_quote, unknown[:10]))} is {where} (known: {offered})."
    if len(set(value)) != len(value):
        return f"a {noun} is listed twice."
    return ""


def _check_text(key: str, value: Any, limit: int | None) -> str:
    if not isinstance(value, str):
        return f"must be text, got {_type_name(value)}."
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are allowed."
    if key == "name" and not value.strip():
        return "must not be empty."
    if key == "slug":
        try:
            validate_slug(value)
        except ValidationError:
            return f"{value!r} is not a valid slug (letters, digits, hyphens and underscores only)."
    return ""


def _write(values: dict) -> Agent:
    agent = Agent.objects.filter(slug=values["slug"]).first() or Agent(slug=values["slug"])
    for key, value in values.items():
        setattr(agent, key, value)
    agent.temperature = float(values["temperature"])
    return agent_save(agent=agent)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number",
             float: "a number", type(None): "nothing (null)"}  # fmt: skip
    return names.get(type(value), type(value).__name__)
