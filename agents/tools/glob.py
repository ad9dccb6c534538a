"""glob: list the workspace's files and folders that match a pattern such as '**/*.md'.

(This module's name shadows the standard library's `glob` only for relative imports; it uses pathlib.)
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path, PurePosixPath

from . import Tool, ToolInputError
from .workspace import is_inside, workspace_root

MAX_RESULTS = 200
# Paths looked at before sorting; a pattern over a huge tree stops here.
MAX_SCANNED = 20_000


def check_pattern(pattern: str) -> None:
    """Raises ToolInputError for a pattern that is empty, absolute, has a NUL or a '..' part."""
    example = "Give a pattern relative to the workspace, such as '**/*.md' or 'notes/*'."
    if "\x00" in pattern:
        raise ToolInputError(f"The pattern contains a NUL character. {example}")
    if not pattern.strip():
        raise ToolInputError(f"The pattern is empty. {example}")
    if PurePosixPath(pattern).is_absolute():
        raise ToolInputError(f"Absolute patterns are refused ({pattern!r}). {example}")
    if ".." in PurePosixPath(pattern).parts:
        raise ToolInputError(f"'..' is refused in patterns ({pattern!r}): only the workspace can be listed. {example}")


def matching(root: Path, pattern: str) -> list[str]:
    """Sorted workspace-relative names matching `pattern` whose real path is inside `root`;
    folders end with '/'."""
    names = []
    for path in islice(root.glob(pattern), MAX_SCANNED):
        if path == root or not is_inside(root, path):
            continue
        name = path.relative_to(root).as_posix()
        names.append(name + "/" if path.is_dir() else name)
    return sorted(names)


def _build(scope):
    def glob(pattern: str):
        check_pattern(pattern)
        root = workspace_root(scope)
        names = matching(root, pattern)
        if not names:
            return f"No files match {pattern!r}. Try '**/*' to list everything."
        if len(names) > MAX_RESULTS:
            head = f"[{len(names):,} paths match, first {MAX_RESULTS} shown; use a narrower pattern]"
        else:
            head = f"[{len(names)} paths match]"
        return "\n".join([head, *names[:MAX_RESULTS]])

    return glob


TOOL = Tool(
    name="glob",
    description=(
        "List files and folders in your workspace whose path matches a glob pattern, sorted: '*.md' (top "
        f"level), '**/*.md' (any depth), 'notes/*'. Folders end with '/'. At most {MAX_RESULTS} results."
    ),
    parameters={
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "description": "Glob relative to the workspace, e.g. '**/*.md'."},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
