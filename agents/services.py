"""Agents and runs: choosing who answers, claiming queued work, executing a run to its end."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat.models import Message, Thread

from . import llm
from .history import history_for_run
from .loop import Budget, OverTime, loop_run
from .models import Agent, Run
from .recorder import (
    Publish,
    RunInterrupted,
    RunRecorder,
    lease_duration,
    tool_calls_interrupt,
)
from .skills import Skill, skills_for_agent
from .tools import ToolScope, ToolSet

log = logging.getLogger(__name__)


def agent_default() -> Agent | None:
    """The agent that answers when nobody chose one: the one marked default, else the first."""
    return Agent.objects.order_by("-is_default", "id").first()


STARTER_AGENTS = [
    {
        "slug": "assistant",
        "name": "Assistant",
        "description": "General help: arithmetic, the time, your past conversations, web pages, and the example skills.",
        "system_prompt": "You are a helpful assistant. Answer clearly and concisely; use markdown where it helps. "
        "Use the calculator tool for any arithmetic instead of working it out yourself. Use the history "
        "tools when the user refers to earlier conversations. Ask the user (ask_user) only when you cannot go on.",
        "enabled_tools": [
            "calculator", "current_time", "list_threads", "search_messages", "read_thread", "fetch_url", "ask_user",
        ],
        "enabled_skills": ["meeting-notes", "web-research"],
        "is_default": True,
    },
    {
        "slug": "scribe",
        "name": "Scribe",
        "description": "Keeps notes and documents in its own workspace folder (read, write, edit, search files).",
        "system_prompt": "You keep the user's notes and documents as files in your workspace. Read a file before "
        "you change it; prefer small exact edits (edit_file) over rewriting whole files; say which files you changed.",
        "enabled_tools": ["read_file", "write_file", "edit_file", "grep", "glob", "current_time", "list_threads", "search_messages", "read_thread"],
        "enabled_skills": ["weekly-review", "meeting-notes"],
        "temperature": 0.3,
    },
    {
        "slug": "brief",
        "name": "Brief",
        "description": "Answers in one or two sentences.",
        "system_prompt": "Answer in at most two short sentences. No lists, no preamble.",
        "enabled_tools": [],
        "temperature": 0.3,
    },
]


def agents_seed() -> list[Agent]:
    """Creates the starter agents when there are no agents at all. Returns those created."""
    if Agent.objects.exists():
        return []
    return [Agent.objects.create(**spec) for spec in STARTER_AGENTS]


def run_claim_next(*, thread_id: int) -> Run | None:
    """Marks the thread's oldest queued run as running and returns it.

    Returns None if another run of the thread is running (one at a time per thread, in
    order) or waiting for the user, or nothing is queued. Safe to call twice for the same work: the thread row lock
    (PostgreSQL) or the write lock (SQLite IMMEDIATE) makes the check-and-set atomic.
    """
    with transaction.atomic():
        Thread.objects.select_for_update().filter(pk=thread_id).first()
        runs = Run.objects.filter(thread_id=thread_id).select_related("agent", "thread", "user_message")
        # A run waiting on the user's answer holds the thread too: the next message answers it.
        if runs.filter(status__in=(Run.Status.RUNNING, Run.Status.WAITING)).exists():
            return None
        run = runs.filter(status=Run.Status.QUEUED).order_by("id").first()
        if run is None:
            return None
        run.status = Run.Status.RUNNING
        run.started_at = timezone.now()
        run.lease_expires_at = run.started_at + lease_duration()
        run.attempts += 1
        run.save(update_fields=["status", "started_at", "lease_expires_at", "attempts"])
    return run


WORKER_LOST_ERROR = (
    "The worker stopped while answering (it was restarted or crashed) {attempts} times, so this "
    "answer was given up. Retry to ask again."
)


def runs_recover() -> tuple[list[Run], list[Run]]:
    """Takes back running runs whose lease has expired (their worker died); returns
    (re-queued, failed).

    A run started fewer than GATEWAY_MAX_ATTEMPTS times is queued again and goes on from its
    stored history: its half-streamed message is kept and marked failed, and tool calls that
    were under way are answered as interrupted (never run twice). A run out of attempts
    fails with a message saying so. Each run is moved with a conditional update, so a run
    its worker finished meanwhile is left alone.
    """
    now = timezone.now()
    requeued, failed = [], []
    for run in Run.objects.filter(status=Run.Status.RUNNING, lease_expires_at__lt=now):
        give_up = run.attempts >= settings.GATEWAY_MAX_ATTEMPTS
        with transaction.atomic():
            if give_up:
                fields = {"status": Run.Status.FAILED, "stop_reason": Run.StopReason.ERROR,
                          "error": WORKER_LOST_ERROR.format(attempts=run.attempts), "finished_at": now}
            else:
                fields = {"status": Run.Status.QUEUED, "lease_expires_at": None}
            if not Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, lease_expires_at__lt=now).update(**fields):
                continue
            run.messages.filter(role=Message.Role.ASSISTANT, status=Message.Status.STREAMING).update(
                status=Message.Status.FAILED, completed_at=now
            )
            tool_calls_interrupt(run=run)
        run.refresh_from_db()
        (failed if give_up else requeued).append(run)
    return requeued, failed


def run_has_queued(*, thread_id: int) -> bool:
    return Run.objects.filter(thread_id=thread_id, status=Run.Status.QUEUED).exists()


def run_queued_thread_ids() -> list[int]:
    """Threads with a queued run and none running or waiting: the ones a worker should be
    told about again when their task may have been lost (a stopped worker's local queue,
    the Redis broker's missing receipts). A thread with a running run is left out: its
    worker, or the sweeper if that worker died, wakes it when the run ends."""
    busy = Run.objects.filter(status__in=(Run.Status.RUNNING, Run.Status.WAITING)).values("thread_id")
    queued = Run.objects.filter(status=Run.Status.QUEUED).exclude(thread_id__in=busy)
    return list(queued.order_by("thread_id").values_list("thread_id", flat=True).distinct())


def workspace_for(agent: Agent) -> Path:
    """The agent's own directory for file tools and the shell (created when first used)."""
    return settings.WORKSPACES_DIR / agent.slug


def run_execute(*, run: Run, publish: Publish, client: llm.LLMClient | None = None) -> Run:
    """Runs a claimed run until it is done, failed, or waiting for the user, and returns it.

    Never raises for model or tool failures: they end the run as "failed" with a readable
    error, keeping whatever text was already streamed. Every step is published through
    `publish(event_type, data)` after it is stored. A run resumed after the user answered
    its question goes on from the stored history, with its earlier rounds and calls counted.
    """
    recorder = RunRecorder(run, publish)
    publish("run.started", {"agent": run.agent.slug if run.agent else None, "turn": run.user_message.turn})
    try:
        agent = run.agent or agent_default()
        if agent is None:
            raise llm.LLMError("No agent is configured. Add one in the admin.", retryable=False)
        if client is None:
            client, model = llm.client_for(agent)
        else:
            model = agent.model or settings.LLM_MODEL
        if run.model != model:
            run.model = model
            run.save(update_fields=["model"])
        skills = skills_for_agent(agent.enabled_skills)
        tools = ToolSet.for_agent(
            agent.enabled_tools,
            ToolScope(
                owner_id=run.thread.owner_id,
                thread_id=run.thread_id,
                agent_id=agent.pk,
                workspace=workspace_for(agent),
                run_id=run.pk,
                skills=tuple(s.name for s in skills),
            ),
        )
        if not run.messages.exists():  # not on a resumed or recovered run: it was done then
            _skill_invoke(run, skills, tools, recorder)
        result = loop_run(
            client=client,
            model=model,
            messages=history_for_run(run, agent, skills),
            tools=tools,
            max_rounds=agent.max_tool_rounds,
            temperature=agent.temperature,
            max_tokens=settings.LLM_MAX_TOKENS,
            emit=recorder,
            rounds_done=run.rounds,
            calls_done=_calls_done(run),
            budget=Budget.starting_now(seconds=settings.GATEWAY_RUN_TIMEOUT_SECONDS, max_tokens=settings.GATEWAY_RUN_MAX_TOKENS),
        )
    except RunInterrupted:  # its worker is stopping: back to the queue, not failed
        return recorder.release()
    except (llm.LLMError, OverTime) as exc:
        return recorder.fail(str(exc))
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        return recorder.fail(f"Internal error ({type(exc).__name__}). The details are in the server log.")
    if result.stop_reason == "waiting":
        return recorder.wait(result)
    return recorder.finish(result)


SKILL_COMMAND = re.compile(r"^/([a-z0-9][a-z0-9-]{0,63})(?:\s|$)")


def _skill_invoke(run: Run, skills: list[Skill], tools: ToolSet, emit: RunRecorder) -> None:
    """`/skill-name ...` typed by the user loads that skill before the model's first turn.

    Done as an ordinary activate_skill call, stored and shown like one, so "never twice in a
    thread" and the chat's tool chips need nothing special. A `/word` that is not one of the
    agent's skills is left alone: it is just text.
    """
    match = SKILL_COMMAND.match(run.user_message.content)
    if not match or match.group(1) not in {s.name for s in skills}:
        return
    call_id = f"skill-{run.pk}"
    arguments = json.dumps({"name": match.group(1)})
    wire = {"id": call_id, "type": "function", "function": {"name": "activate_skill", "arguments": arguments}}
    emit("message.started", {})
    emit("message.completed", {"content": "", "tool_calls": [wire], "finish_reason": "tool_calls"})
    emit("tool.called", {"call_id": call_id, "name": "activate_skill", "arguments": arguments})
    outcome = tools.call("activate_skill", arguments)
    emit(
        "tool.finished",
        {"call_id": call_id, "name": "activate_skill", "content": outcome.content, "is_error": outcome.is_error, "duration_ms": outcome.duration_ms},
    )


def _calls_done(run: Run) -> list[tuple[str, str]]:
    calls = []
    for tool_calls in run.messages.filter(role=Message.Role.ASSISTANT).values_list("tool_calls", flat=True):
        for call in tool_calls or []:
            function = call.get("function") or {}
            calls.append((function.get("name", ""), function.get("arguments", "")))
    return calls
