"""activate_skill: load the instructions of one of the agent's enabled skills into the thread.

Offered automatically when the agent has skills (ToolSet.for_agent), never toggled per agent.
The schema cannot list the names (it is static), so the name is checked at call time against
the skills captured in the run's scope. The skill is read from disk on each call, so an edit
is seen by the next activation. A skill is never injected twice in one thread: an earlier
successful activation stored in the thread is answered with a pointer to it, not the body.
"""

from chat.models import Message

from ..skills import skill_activation_text, skill_content_marker, skills_discover
from . import Tool, ToolInputError


# A skill's reference or asset file, read on request, is cut at this size.
MAX_FILE_CHARS = 20_000


def _build(scope):
    def activate_skill(name: str, file: str = ""):
        name = name.strip()
        if name not in scope.skills:
            enabled = ", ".join(sorted(scope.skills)) or "none"
            raise ToolInputError(f"No skill named {name!r} is enabled for this agent. Enabled skills: {enabled}.")
        if file:
            return _skill_file(name, file.strip())
        if _activated_in_thread(scope.thread_id, name):
            return (f"The skill {name!r} is already active in this conversation: its instructions are in an "
                    "earlier activate_skill result above. Follow those; there is no need to load it again.")
        discovery = skills_discover()
        skill = discovery.skills.get(name)
        if skill is None:
            why = " ".join(p.message for p in discovery.problems if p.path.parent.name == name)
            raise ToolInputError(f"The skill {name!r} is enabled but could not be loaded: "
                                 f"{why or 'it is no longer on disk.'} Go on without it.")
        return skill_activation_text(skill)

    return activate_skill


def _skill_file(name: str, file: str) -> str:
    """One of the skill's listed files. Only names from Skill.files() are read, so nothing
    outside the skill's folder can be reached (no paths are built from the model's text)."""
    skill = skills_discover().skills.get(name)
    if skill is None:
        raise ToolInputError(f"The skill {name!r} is no longer on disk.")
    listed = skill.files()
    if file not in listed:
        raise ToolInputError(f"The skill {name!r} has no file {file!r}. Its files: {', '.join(listed) or 'none'}.")
    target = skill.path / file
    if target.is_symlink() or not target.resolve().is_relative_to(skill.path.resolve()):
        raise ToolInputError(f"{file!r} points outside the skill's folder; it is not read.")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ToolInputError(f"{file!r} is not a readable text file.") from None
    if len(text) > MAX_FILE_CHARS:
        text = text[:MAX_FILE_CHARS] + f"\n[cut at {MAX_FILE_CHARS:,} characters]"
    return f'<skill_file skill="{name}" path="{file}">\n{text}\n</skill_file>'


def _activated_in_thread(thread_id: int, name: str) -> bool:
    return Message.objects.filter(
        thread_id=thread_id,
        role=Message.Role.TOOL,
        tool_name="activate_skill",
        is_error=False,
        content__startswith=skill_content_marker(name),
    ).exists()


TOOL = Tool(
    name="activate_skill",
    description="Load the full instructions of one of the skills listed in the system prompt. Call it with "
    "the skill's name as soon as the user's task matches that skill's description, before doing the task.",
    parameters={
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The skill's name, exactly as listed in <available_skills>."},
            "file": {"type": "string", "description": "Optional: one of the files the activation listed, to read it."},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
    automatic=True,
)
