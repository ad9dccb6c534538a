"""Tools an agent may call. One module per tool; this package holds the registry.

A tool is built for one run with the run's scope captured in a closure, so the model can
only choose the arguments a tool's schema offers, never whose data it touches. Arguments
are checked against the tool's JSON schema before the tool sees them, and every failure
(unknown tool, bad JSON, schema violation, timeout, a bug in the tool) comes back to the
model as `{"error": "..."}`: errors are data, the loop goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from django.db import connections
from jsonschema import Draft202012Validator

log = logging.getLogger(__name__)

# Stable import paths of the tool modules; each defines TOOL.
TOOL_MODULES = [
    "agents.tools.calculator",
    "agents.tools.current_time",
    "agents.tools.list_threads",
    "agents.tools.search_messages",
    "agents.tools.read_thread",
    "agents.tools.read_file",
    "agents.tools.write_file",
    "agents.tools.edit_file",
    "agents.tools.grep",
    "agents.tools.glob",
    "agents.tools.shell",
    "agents.tools.fetch_url",
    "agents.tools.ask_user",
    "agents.tools.activate_skill",
]
# What the model sees of a result; the database keeps it whole.
RESULT_CHARS_FOR_MODEL = 8000
# Tool calls of one model answer run at most this many at a time.
MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class ToolScope:
    """Whose data a run's tools may touch. Fixed when the tool list is built for a run."""

    owner_id: int
    thread_id: int
    agent_id: int | None
    # The agent's own directory; file tools and the shell never leave it.
    workspace: Path
    run_id: int | None = None
    # Skills enabled on the agent (activate_skill may only load these).
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    read_only: bool  # False: it changes something (files, the outside world)
    build: Callable[[ToolScope], Callable[..., Any]]
    # Offered to new agents unless switched off; False means an admin must switch it on.
    enabled_by_default: bool = True
    timeout_seconds: float = 30.0
    # Registered but not toggled per agent: offered when the agent has what it needs (skills).
    automatic: bool = False
    # The call's answer comes from the user, not the tool: the run pauses until it arrives.
    pauses_run: bool = False

    def schema(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolInputError(Exception):
    """Raised by a tool for bad arguments or a refused request; the message goes back to the model."""


@dataclass(frozen=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments: str  # raw JSON text as the model wrote it


@dataclass(frozen=True)
class ToolResult:
    content: str  # whole; RESULT_CHARS_FOR_MODEL applies only to what the model is sent
    is_error: bool
    duration_ms: int
    error: str = ""  # the error message alone, for the admin and the chip

    @classmethod
    def failure(cls, error: str, duration_ms: int = 0) -> ToolResult:
        """An error result: the model is sent {"error": ...}."""
        return cls(content=json.dumps({"error": error}, ensure_ascii=False), is_error=True, duration_ms=duration_ms, error=error)


def registry() -> dict[str, Tool]:
    """Every tool defined in code, by name."""
    tools = {}
    for path in TOOL_MODULES:
        tool = import_module(path).TOOL
        tools[tool.name] = tool
    return tools


def tools_toggleable() -> list[Tool]:
    """The tools an admin switches on and off per agent, in a stable order."""
    return sorted((t for t in registry().values() if not t.automatic), key=lambda t: t.name)


def tool_names_default() -> list[str]:
    return [t.name for t in tools_toggleable() if t.enabled_by_default]


# Results sent whole: a skill's instructions are meant to be read in full (the Agent Skills
# format allows bodies of several thousand tokens) and can be loaded only once per thread.
UNCUT_RESULTS = {"activate_skill"}


def for_model(content: str, tool_name: str = "") -> str:
    """A tool result as the model is sent it: cut at RESULT_CHARS_FOR_MODEL, saying so."""
    if len(content) <= RESULT_CHARS_FOR_MODEL or tool_name in UNCUT_RESULTS:
        return content
    return content[:RESULT_CHARS_FOR_MODEL] + f"\n[truncated: {len(content):,} characters in all, first {RESULT_CHARS_FOR_MODEL:,} shown]"


class ToolSet:
    """The tools one run may use, already bound to that run's scope."""

    def __init__(self, tools: list[Tool], scope: ToolScope):
        self.tools = tools
        self._by_name = {t.name: t for t in tools}
        self._bound: dict[str, Callable[..., Any]] = {t.name: t.build(scope) for t in tools}

    @classmethod
    def for_agent(cls, enabled: list[str], scope: ToolScope) -> ToolSet:
        """The agent's enabled tools, plus automatic ones that apply (activate_skill with skills)."""
        available = registry()
        chosen = [available[n] for n in enabled if n in available and not available[n].automatic]
        if scope.skills and "activate_skill" in available:
            chosen.append(available["activate_skill"])
        return cls(chosen, scope)

    def pauses(self, name: str) -> bool:
        tool = self._by_name.get(name)
        return tool is not None and tool.pauses_run

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self.tools]

    def call(self, name: str, arguments: str) -> ToolResult:
        """Runs one call in this thread, without a timeout. Never raises."""
        started = time.monotonic()
        content, error = self._call(name, arguments)
        return _result(content, error, started)

    def call_many(self, calls: list[ToolCallRequest]) -> list[ToolResult]:
        """Runs the calls in parallel, MAX_PARALLEL_CALLS at a time, each with its tool's
        timeout, and returns the results in call order. Never raises.

        The calls go in batches, so every call's clock starts when the call starts (none waits
        in a queue while its time runs out). A call that times out is answered with an error;
        its thread is left to finish on its own (Python cannot stop a thread), which is why
        tools that can hang (shell, fetch_url, grep) also enforce their own limits.
        """
        results: list[ToolResult] = []
        for start in range(0, len(calls), MAX_PARALLEL_CALLS):
            results += self._call_batch(calls[start : start + MAX_PARALLEL_CALLS])
        return results

    def _call_batch(self, calls: list[ToolCallRequest]) -> list[ToolResult]:
        pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="tool")
        try:
            started = time.monotonic()
            futures = [pool.submit(self._call_in_thread, c.name, c.arguments) for c in calls]
            results = []
            for call, future in zip(calls, futures, strict=True):
                timeout = self._timeout(call.name)
                try:
                    content, error = future.result(timeout=max(0.0, started + timeout - time.monotonic()))
                except FutureTimeout:
                    content, error = None, f"The tool {call.name!r} did not finish within {timeout:g} seconds."
                results.append(_result(content, error, started))
            return results
        finally:
            pool.shutdown(wait=False)

    def _timeout(self, name: str) -> float:
        tool = self._by_name.get(name)
        return tool.timeout_seconds if tool else 5.0

    def _call_in_thread(self, name: str, arguments: str) -> tuple[str | None, str]:
        try:
            return self._call(name, arguments)
        finally:
            # Tools that read the database opened a connection in this pool thread.
            connections.close_all()

    def _call(self, name: str, arguments: str) -> tuple[str | None, str]:
        """(content, "") on success, (None, error message) on failure."""
        fn = self._bound.get(name)
        if fn is None:
            offered = ", ".join(sorted(self._bound)) or "none"
            return None, f"There is no tool named {name!r} here; it was not run. Tools you can call: {offered}."
        tool = self._by_name[name]
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return None, f"The arguments were not valid JSON ({exc.msg}). Send one JSON object{_usage(tool)}."
        if not isinstance(args, dict):
            return None, f"The arguments must be a JSON object{_usage(tool)}."
        problem = _schema_problem(tool, args)
        if problem:
            return None, f"Invalid arguments: {problem}{_usage(tool)}."
        try:
            result = fn(**args)
        except ToolInputError as exc:
            return None, str(exc)
        except Exception as exc:  # a tool bug must not end the run: the model gets the error
            log.exception("tool %s failed", name)
            return None, f"The tool failed: {type(exc).__name__}: {exc}"
        return (result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)), ""


def _result(content: str | None, error: str, started: float) -> ToolResult:
    duration_ms = int((time.monotonic() - started) * 1000)
    if error:
        return ToolResult.failure(error, duration_ms)
    return ToolResult(content=content or "", is_error=False, duration_ms=duration_ms)


def _schema_problem(tool: Tool, args: dict) -> str:
    errors = sorted(Draft202012Validator(tool.parameters).iter_errors(args), key=lambda e: list(e.path))
    if not errors:
        return ""
    first = errors[0]
    where = ".".join(str(p) for p in first.path)
    return f"{where}: {first.message}" if where else first.message


def _usage(tool: Tool) -> str:
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    if not props:
        return " (this tool takes no arguments: send {})"
    parts = [f"{n}: {p.get('type', 'any')}{'' if n in required else ', optional'}" for n, p in props.items()]
    return f" (this tool takes {{{'; '.join(parts)}}})"
