"""Saving agents, and moving them in and out as JSON or YAML files.

An exported agent is its settings, enabled tools and enabled skills, under
`"format": "hearth-agent", "version": 1`. Which agent answers by default is a choice of
this installation, not of the agent, so `is_default` is neither exported nor imported.

Everything read from a file is checked before anything is written: an import either
creates/updates every agent it holds or changes nothing.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from .models import Agent
from .skills import skills_discover
from .tools import tools_toggleable

FORMAT = "hearth-agent"
VERSION = 1
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.0, 2.0
ROUNDS_MIN, ROUNDS_MAX = 1, 50
# The settings a file holds, in export order. All of them are required on import: a file
# describes an agent whole, so importing it never leaves a half-old, half-new agent.
FIELDS = (
    "slug", "name", "description", "model", "system_prompt",
    "temperature", "max_tool_rounds", "enabled_tools", "enabled_skills",
)  # fmt: skip
_TEXT_LIMITS = {"slug": 64, "name": 100, "description": 500, "model": 200, "system_prompt": None}

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
    discovered on disk, no slug twice. Raises AgentImportError listing every problem found,
    and then nothing was written. On success all agents are written in one transaction;
    `is_default` of existing agents is left as it was, new agents are not default.
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
    tools = {t.name for t in tools_toggleable()}
    skills = set(skills_discover().skills)
    problems, cleaned = [], []
    for index, item in enumerate(items, start=1):
        item_problems, values = _check_agent(item, tools=tools, skills=skills)
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
    try:
        return yaml.safe_load(text)
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


def _check_agent(item: Any, *, tools: set[str], skills: set[str]) -> tuple[list[str], dict]:
    """(problems, cleaned values). The values are only meaningful when there are no problems."""
    if not isinstance(item, dict):
        return [f"expected an agent (a mapping of settings), got {_type_name(item)}."], {}
    problems = []
    if "format" in item and item["format"] != FORMAT:
        problems.append(f"format must be {FORMAT!r}, not {item['format']!r}.")
    if "version" in item and item["version"] != VERSION:
        problems.append(f"version {item['version']!r} is not supported (this Hearth reads version {VERSION}).")
    unknown = sorted(str(k) for k in item if k not in FIELDS and k not in ("format", "version"))
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown)} (allowed: {', '.join(FIELDS)}).")
    missing = [k for k in FIELDS if k not in item]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}.")
    values = {}
    for key in FIELDS:
        if key in item:
            problem = _check_value(key, item[key], tools=tools, skills=skills)
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                values[key] = item[key]
    return problems, values


def _check_value(key: str, value: Any, *, tools: set[str], skills: set[str]) -> str:
    """"" if `value` is right for `key`, else what is wrong with it."""
    if key in _TEXT_LIMITS:
        return _check_text(key, value, _TEXT_LIMITS[key])
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
    known, noun = (tools, "tool") if key == "enabled_tools" else (skills, "skill")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"must be a list of {noun} names, got {_type_name(value)}."
    unknown = [v for v in value if v not in known]
    if unknown:
        where = "registered that can be switched on" if noun == "tool" else "found on disk"
        offered = ", ".join(sorted(known)) or "none"
        return f"no {noun} named {', '.join(map(repr, unknown))} is {where} (known: {offered})."
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
