"""edit_file: replace one exact, unique piece of text in a workspace file."""

from __future__ import annotations

from . import Tool, ToolInputError
from .workspace import MAX_WRITE_BYTES, read_text, resolve_path, workspace_root


def replace_once(text: str, old: str, new: str, shown: str) -> str:
    """`text` with its single occurrence of `old` replaced by `new`.

    Raises ToolInputError if `old` occurs 0 or several times, or equals `new`."""
    if old == new:
        raise ToolInputError("old_string and new_string are the same, so nothing would change. Give the new text in new_string.")
    count = text.count(old)
    if count == 0:
        raise ToolInputError(
            f"old_string was not found in {shown!r} (0 occurrences). Read the file with read_file and copy the "
            "text exactly, including spaces, indentation and line breaks, without the line numbers."
        )
    if count > 1:
        raise ToolInputError(
            f"old_string occurs {count} times in {shown!r}; it must occur exactly once. Include more of the "
            "surrounding lines in old_string so that it matches only the place you mean."
        )
    return text.replace(old, new, 1)


def _build(scope):
    def edit_file(path: str, old_string: str, new_string: str):
        root = workspace_root(scope)
        real = resolve_path(root, path)
        text = read_text(real, path)
        changed = replace_once(text, old_string, new_string, path)
        data = changed.encode("utf-8")
        if len(data) > MAX_WRITE_BYTES:
            raise ToolInputError(f"After the edit {path!r} would have {len(data):,} bytes, over the {MAX_WRITE_BYTES:,}-byte limit; it was not changed.")
        real.write_bytes(data)
        line = text[: text.index(old_string)].count("\n") + 1
        return f"Edited {path}: replaced 1 occurrence starting at line {line}."

    return edit_file


TOOL = Tool(
    name="edit_file",
    description=(
        "Change part of a text file in your workspace: replaces old_string with new_string. old_string must "
        "match the file exactly (spaces and line breaks too) and occur exactly once; add surrounding lines "
        "to make it unique. To replace a whole file, use write_file."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the workspace, e.g. 'notes/todo.md'."},
            "old_string": {"type": "string", "minLength": 1, "description": "The exact text to replace; must occur once."},
            "new_string": {"type": "string", "description": "The text to put in its place (may be empty to delete)."},
        },
        "required": ["path", "old_string", "new_string"],
        "additionalProperties": False,
    },
    read_only=False,
    build=_build,
)
