"""write_file: create or overwrite a text file in the workspace."""

from __future__ import annotations

from . import Tool, ToolInputError
from .workspace import MAX_WRITE_BYTES, resolve_path, split_lines, workspace_root


def _build(scope):
    def write_file(path: str, content: str):
        data = content.encode("utf-8")
        if len(data) > MAX_WRITE_BYTES:
            raise ToolInputError(f"The content has {len(data):,} bytes, over the {MAX_WRITE_BYTES:,}-byte limit. Write a smaller file, or split it into several.")
        root = workspace_root(scope)
        real = resolve_path(root, path)
        if real == root or real.is_dir():
            raise ToolInputError(f"{path!r} is a directory. Give the path of a file inside it, such as '{path.rstrip('/')}/notes.md'.")
        if real.exists() and not real.is_file():
            raise ToolInputError(f"{path!r} is not a regular file (a device, socket or pipe); it cannot be written.")
        existed = real.exists()
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(data)
        verb = "Overwrote" if existed else "Created"
        return f"{verb} {path} ({len(data):,} bytes, {len(split_lines(content))} lines)."

    return write_file


TOOL = Tool(
    name="write_file",
    description=(
        "Create a text file in your workspace, or replace its whole content; missing parent folders are "
        f"created. At most {MAX_WRITE_BYTES:,} bytes. To change part of an existing file, use edit_file."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the workspace, e.g. 'notes/todo.md'."},
            "content": {"type": "string", "description": "The file's whole new content."},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    read_only=False,
    build=_build,
)
