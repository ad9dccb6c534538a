"""The thread as the model sees it: the agent's system prompt, then every message in order."""

from __future__ import annotations

from chat.models import Message

from .skills import skill_catalog_prompt
from .tools import for_model

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely; use markdown where it helps."


def history_for_run(run, agent, skills=()) -> list[dict]:
    """OpenAI-shaped messages for answering `run`: everything up to and including its turn.

    The system prompt is the agent's, followed by the catalog (names and descriptions only)
    of its enabled `skills`; a skill's body reaches the model only through activate_skill.
    Tool results are cut to what the model is sent (agents.tools.for_model).

    Later turns (the user may have typed ahead) are left out. Tool calls with no stored result
    (a fork cut between them, or a failed round) are dropped, as are results with no call,
    because providers reject a history where the two do not pair up. Answers that broke off
    (status failed) are left out too: a retry must answer the question afresh, and servers
    such as llama.cpp continue a trailing assistant message as if it were a prefix. Rows still
    being written (streaming) are not history yet.
    """
    rows = (
        run.thread.messages.filter(turn__lte=run.user_message.turn)
        .exclude(status__in=(Message.Status.FAILED, Message.Status.STREAMING))
        .order_by("turn", "id")
    )
    system = agent.system_prompt or DEFAULT_SYSTEM_PROMPT
    catalog = skill_catalog_prompt(list(skills))
    if catalog:
        system = f"{system}\n\n{catalog}"
    return [{"role": "system", "content": system}] + messages_to_wire(rows)


def messages_to_wire(rows) -> list[dict]:
    """Rows as OpenAI messages. A user message that answers an ask_user call (it carries the
    call's id) is that call's tool result: the model asked, the user replied."""
    rows = list(rows)
    answered = {m.tool_call_id for m in rows if m.tool_call_id and m.role in (Message.Role.TOOL, Message.Role.USER)}
    wire: list[dict] = []
    open_calls: set[str] = set()
    for m in rows:
        if m.role == Message.Role.TOOL or (m.role == Message.Role.USER and m.tool_call_id):
            if m.tool_call_id in open_calls:
                # A user's answer to ask_user is sent whole, like any user message.
                content = m.content if m.role == Message.Role.USER else for_model(m.content, m.tool_name)
                wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
            continue
        if m.role == Message.Role.ASSISTANT:
            calls = [c for c in m.tool_calls if c.get("id") in answered]
            if not m.content and not calls:
                continue
            item = {"role": "assistant", "content": m.content}
            if calls:
                item["tool_calls"] = calls
            open_calls = {c["id"] for c in calls}
            wire.append(item)
            continue
        open_calls = set()
        wire.append({"role": m.role, "content": m.content})
    return wire
