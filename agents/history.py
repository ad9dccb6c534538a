"""The thread as the model sees it: the agent's system prompt, then every message in order."""

from __future__ import annotations

from chat.models import Message

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely; use markdown where it helps."


def history_for_run(run, agent) -> list[dict]:
    """OpenAI-shaped messages for answering `run`: everything up to and including its turn.

    Later turns (the user may have typed ahead) are left out. Tool calls with no stored result
    (a fork cut between them, or a failed round) are dropped, as are results with no call,
    because providers reject a history where the two do not pair up. Answers that broke off
    (status failed) are left out too: a retry must answer the question afresh, and servers
    such as llama.cpp continue a trailing assistant message as if it were a prefix.
    """
    rows = (
        run.thread.messages.filter(turn__lte=run.user_message.turn)
        .exclude(status=Message.Status.FAILED)
        .order_by("turn", "id")
    )
    return [{"role": "system", "content": agent.system_prompt or DEFAULT_SYSTEM_PROMPT}] + messages_to_wire(rows)


def messages_to_wire(rows) -> list[dict]:
    rows = list(rows)
    answered = {m.tool_call_id for m in rows if m.role == Message.Role.TOOL}
    wire: list[dict] = []
    open_calls: set[str] = set()
    for m in rows:
        if m.role == Message.Role.TOOL:
            if m.tool_call_id in open_calls:
                wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
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
