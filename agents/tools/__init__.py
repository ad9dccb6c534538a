"""Tools an agent may call. One module per tool; this package holds the registry.

A tool is built for one run with the run's scope captured in a closure, so the model can
only choose the arguments a tool's schema offers, never whose data it touches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

log = logging.getLogger(__name__)

# Stable import paths of the tool modules; each defines TOOL.
TOOL_MODULES = ["agents.tools.calculator"]
# What the model sees of a result; the database keeps it whole.
RESULT_CHARS_FOR_MODEL = 8000


@dataclass(frozen=True)
class ToolScope:
    """Whose data a run's tools may touch. Fixed when the tool list is built."""

    owner_id: int
    thread_id: int
    agent_id: int | None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    read_only: bool
    build: Callable[[ToolScope], Callable[..., Any]]
    enabled_by_default: bool = True

    def schema(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolInputError(Exception):
    """Raised by a tool for bad arguments; the message goes back to the model as the result."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool
    duration_ms: int


def registry() -> dict[str, Tool]:
    """Every tool defined in code, by name."""
    tools = {}
    for path in TOOL_MODULES:
        tool = import_module(path).TOOL
        tools[tool.name] = tool
    return tools


class ToolSet:
    """The tools one run may use, already bound to that run's scope."""

    def __init__(self, tools: list[Tool], scope: ToolScope):
        self._tools = {t.name: t for t in tools}
        self._bound = {t.name: t.build(scope) for t in tools}

    @classmethod
    def for_names(cls, names: list[str], scope: ToolScope) -> ToolSet:
        available = registry()
        return cls([available[n] for n in names if n in available], scope)

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self._tools.values()]

    def call(self, name: str, arguments: str) -> ToolResult:
        """Runs one call. Never raises: every failure comes back as an error result."""
        started = time.monotonic()
        content, is_error = self._call(name, arguments)
        return ToolResult(content=content, is_error=is_error, duration_ms=int((time.monotonic() - started) * 1000))

    def _call(self, name: str, arguments: str) -> tuple[str, bool]:
        fn = self._bound.get(name)
        if fn is None:
            offered = ", ".join(sorted(self._bound)) or "none"
            return _error(f"There is no tool named {name!r} here. Tools you can call: {offered}."), True
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return _error(f"The arguments were not valid JSON ({exc.msg}). Send a JSON object."), True
        if not isinstance(args, dict):
            return _error("The arguments must be a JSON object."), True
        try:
            result = fn(**args)
        except ToolInputError as exc:
            return _error(str(exc)), True
        except TypeError as exc:
            props = ", ".join(self._tools[name].parameters.get("properties", {})) or "none"
            return _error(f"Wrong arguments ({exc}). This tool takes: {props}."), True
        except Exception as exc:  # a tool bug must not end the run: the model gets the error
            log.exception("tool %s failed", name)
            return _error(f"The tool failed: {type(exc).__name__}: {exc}"), True
        return (result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)), False


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
