"""Agent Skills (agentskills.io): folders with a SKILL.md that teach an agent one kind of task.

A skill lives in `<skills dir>/<name>/SKILL.md`: YAML front matter (name, description and a few
optional fields) between `---` lines, then markdown instructions. The system prompt lists only
the enabled skills' names and descriptions (skill_catalog_prompt); the body is loaded when the
model calls activate_skill (skill_activation_text). That is progressive disclosure: a skill
costs a line of prompt until it is needed.

The skills dirs are scanned on every call, so a skill edited, added or removed on disk is seen by
the next run without a restart. Parsing is lenient: what can be loaded is loaded, and every
oddity is reported as a SkillProblem for the admin's Skills page.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import yaml
from django.conf import settings

SKILL_FILE = "SKILL.md"
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1024
MAX_COMPATIBILITY_CHARS = 500
# A SKILL.md is instructions for a model, not a data file; anything larger is a mistake.
MAX_SKILL_FILE_BYTES = 256 * 1024
# Skill files listed on activation; a skill with more is listed up to here, saying so.
MAX_LISTED_FILES = 100

_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# Folders that are tooling, not part of a skill.
_IGNORED_DIRS = {"__pycache__", "node_modules"}


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    path: Path  # the skill's folder
    body: str  # the markdown after the front matter
    license: str = ""
    compatibility: str = ""
    # Unhashable fields stay out of the hash, so a Skill can still go into a set.
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    allowed_tools: list[str] = field(default_factory=list, hash=False)
    source: Path = Path()  # the skills dir it was found in

    def files(self, limit: int = MAX_LISTED_FILES) -> list[str]:
        """The skill's other files as sorted paths relative to its folder, at most `limit`.

        SKILL.md itself, dot-files and tooling folders (__pycache__, node_modules) are left
        out. Files are listed, never opened. Symlinked folders are not followed.
        """
        found = []
        for root, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _IGNORED_DIRS]
            rel_root = Path(root).relative_to(self.path)
            for n in names:
                if n.startswith(".") or (rel_root == Path() and n == SKILL_FILE):
                    continue
                found.append((rel_root / n).as_posix())
        return sorted(found)[:limit]


@dataclass(frozen=True)
class SkillProblem:
    path: Path  # the SKILL.md (or folder) concerned
    message: str


@dataclass(frozen=True)
class Discovery:
    skills: dict[str, Skill]  # by name, sorted by name
    problems: list[SkillProblem]


def skills_discover() -> Discovery:
    """Every skill in settings.SKILLS_DIRS, read from disk now, and what was wrong on the way.

    Dirs are searched in order; on a name found in two dirs the first wins (the project's
    before the user's) and the other is reported as shadowed. A missing dir is not a
    problem. Never raises for anything on disk: a skill that cannot be loaded is skipped and
    reported.
    """
    skills: dict[str, Skill] = {}
    problems: list[SkillProblem] = []
    for source in settings.SKILLS_DIRS:
        source = Path(source).expanduser()
        if not source.exists():
            continue
        if not source.is_dir():
            problems.append(SkillProblem(source, "The skills directory is not a directory."))
            continue
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            skill = _load(folder, source, problems)
            if skill is None:
                continue
            if skill.name in skills:
                winner = skills[skill.name].path / SKILL_FILE
                problems.append(SkillProblem(folder / SKILL_FILE, f"Skipped: shadowed by {winner} (same name {skill.name!r})."))
                continue
            skills[skill.name] = skill
    return Discovery(skills=dict(sorted(skills.items())), problems=problems)


def skills_for_agent(names: list[str]) -> list[Skill]:
    """The discovered skills among `names`, in name order; names not found are skipped."""
    found = skills_discover().skills
    return [found[n] for n in sorted(set(names)) if n in found]


def skill_catalog_prompt(skills: list[Skill]) -> str:
    """The system-prompt section listing the skills (names and descriptions only); "" for none."""
    if not skills:
        return ""
    entries = "\n".join(
        f"<skill><name>{escape(s.name)}</name><description>{escape(s.description)}</description></skill>" for s in skills
    )
    return (
        "When a task matches one of the skills below, call the `activate_skill` tool with the skill's name "
        "to load its instructions, then follow them.\n"
        f"<available_skills>\n{entries}\n</available_skills>"
    )


def skill_content_marker(name: str) -> str:
    """The opening tag that starts every activation text; activate_skill looks for it in a thread."""
    return f'<skill_content name="{escape(name, {chr(34): "&quot;"})}">'


def skill_activation_text(skill: Skill) -> str:
    """The skill's instructions as activate_skill returns them: the body inside a
    `<skill_content name="…">` marker, then the skill's folder name and its other files."""
    body = skill.body.strip() or "(This skill has no instructions beyond its description.)"
    files = skill.files(limit=MAX_LISTED_FILES + 1)
    lines = [skill_content_marker(skill.name), body, "", f"Skill folder: {skill.path.name}"]
    if files:
        lines.append("Files in this skill (not loaded; read one with activate_skill and its `file` argument):")
        lines += [f"- {f}" for f in files[:MAX_LISTED_FILES]]
        if len(files) > MAX_LISTED_FILES:
            lines.append(f"- … (only the first {MAX_LISTED_FILES} are listed)")
    lines.append("</skill_content>")
    return "\n".join(lines)


def _load(folder: Path, source: Path, problems: list[SkillProblem]) -> Skill | None:
    """The skill in `folder`, or None after recording why it was skipped. Warnings are recorded too."""
    skill_file = folder / SKILL_FILE
    fields, body, error = _read_front_matter(skill_file)
    if error:
        problems.append(SkillProblem(skill_file, f"Skipped: {error}"))
        return None

    def warn(message: str):
        problems.append(SkillProblem(skill_file, message))

    name = _checked_name(fields.get("name"), folder.name, warn)
    if name is None:
        problems.append(SkillProblem(skill_file, f"Skipped: the folder name {folder.name!r} is not a valid skill name "
                                                  "(lowercase letters, digits and single hyphens, at most 64 characters); rename the folder."))
        return None
    description = fields.get("description")
    if isinstance(description, (int, float)) and not isinstance(description, bool):
        description = str(description)
    if not isinstance(description, str) or not description.strip():
        problems.append(SkillProblem(skill_file, "Skipped: the front matter has no description (required: say what the skill does and when to use it)."))
        return None
    description = " ".join(description.split())
    if len(description) > MAX_DESCRIPTION_CHARS:
        warn(f"The description is longer than {MAX_DESCRIPTION_CHARS} characters; it was cut.")
        description = description[:MAX_DESCRIPTION_CHARS]
    compatibility = _text(fields.get("compatibility"), "compatibility", warn)
    if len(compatibility) > MAX_COMPATIBILITY_CHARS:
        warn(f"compatibility is longer than {MAX_COMPATIBILITY_CHARS} characters; it was cut.")
        compatibility = compatibility[:MAX_COMPATIBILITY_CHARS]
    return Skill(
        name=name,
        description=description,
        path=folder,
        body=body,
        license=_text(fields.get("license"), "license", warn),
        compatibility=compatibility,
        metadata=_metadata(fields.get("metadata"), warn),
        allowed_tools=_allowed_tools(fields.get("allowed-tools"), warn),
        source=source,
    )


def _read_front_matter(skill_file: Path) -> tuple[dict, str, str]:
    """(front matter fields, body, "") or ({}, "", why it cannot be read)."""
    try:
        if skill_file.stat().st_size > MAX_SKILL_FILE_BYTES:
            return {}, "", f"{SKILL_FILE} is larger than {MAX_SKILL_FILE_BYTES // 1024} KB."
        text = skill_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}, "", f"the folder has no {SKILL_FILE}."
    except (OSError, UnicodeDecodeError) as exc:
        return {}, "", f"{SKILL_FILE} could not be read ({exc})."
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return {}, "", f"{SKILL_FILE} does not start with YAML front matter (a line '---', the fields, then '---')."
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        return {}, "", "the front matter is not closed by a '---' line."
    try:
        fields = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 2}" if where else ""  # +2: 0-based, after the opening '---'
        reason = getattr(exc, "problem", None) or str(exc)
        return {}, "", f"the front matter is not valid YAML{at}: {reason}. Quote values that contain ': '."
    if not isinstance(fields, dict):
        return {}, "", "the front matter is not a mapping of fields (name: …, description: …)."
    return fields, "".join(lines[end + 1:]).strip("\n"), ""


def _checked_name(declared, folder_name: str, warn) -> str | None:
    """The name to load the skill under: the folder's, warning when the declared one differs or
    is invalid. None when the folder name itself is not a valid name."""
    if not _valid_name(folder_name):
        return None
    if declared is None or declared == "":
        warn(f"The front matter has no name; loaded as {folder_name!r} (the folder name).")
    elif not isinstance(declared, str) or not _valid_name(declared):
        warn(f"The name {declared!r} is not valid (lowercase letters, digits and single hyphens, at most "
             f"{MAX_NAME_CHARS} characters); loaded as {folder_name!r} (the folder name).")
    elif declared != folder_name:
        warn(f"The name {declared!r} does not match the folder {folder_name!r}; loaded as {folder_name!r}.")
    return folder_name


def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_CHARS and bool(_NAME_RE.match(name))


def _text(value, field_name: str, warn) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        warn(f"{field_name} should be text; ignored.")
        return ""
    return str(value).strip()


def _metadata(value, warn) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        warn("metadata should be a mapping of keys to values; ignored.")
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _allowed_tools(value, warn) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    warn("allowed-tools should be a space-separated list of tool names; ignored.")
    return []
