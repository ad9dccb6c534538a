"""The agent's workspace: the one place a model-given path is turned into a real path.

Every file tool goes through `resolve_path`, which refuses absolute paths, `..`, NUL bytes and
anything whose real path (symbolic links followed) is outside the real workspace directory.
The check happens before the file is opened; something else changing links in between (the
agent's own shell, if enabled) could race it, so this confines the model's arguments, not a
hostile process already inside the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from . import ToolInputError, ToolScope

# Files bigger than this are not read, edited or searched.
MAX_FILE_BYTES = 5_000_000
# write_file refuses content bigger than this (UTF-8 bytes).
MAX_WRITE_BYTES = 1_000_000
# A NUL byte in this much of the head of a file means it is binary.
BINARY_SNIFF_BYTES = 8192


def workspace_root(scope: ToolScope) -> Path:
    """The workspace's real path, created (with parents) on first use."""
    scope.workspace.mkdir(parents=True, exist_ok=True)
    return scope.workspace.resolve(strict=True)


def resolve_path(root: Path, path: str) -> Path:
    """The real path of `path` (relative to the real workspace `root`), which may not exist yet.

    Raises ToolInputError for an empty path, a NUL byte, an absolute path, a `..` part, or a
    path whose real location (symbolic links followed, dangling ones too) is outside `root`.
    """
    if "\x00" in path:
        raise ToolInputError("The path contains a NUL character. Give a plain relative path such as 'notes/todo.md'.")
    if not path.strip():
        raise ToolInputError("The path is empty. Give a path relative to the workspace, such as 'notes/todo.md'.")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise ToolInputError(f"Absolute paths are refused ({path!r}). Give a path relative to the workspace, such as 'notes/todo.md'.")
    if ".." in pure.parts:
        raise ToolInputError(f"'..' is refused in paths ({path!r}): the tools only work inside the workspace. Give a path relative to it, such as 'notes/todo.md'.")
    real = Path(os.path.realpath(root / pure))
    if not real.is_relative_to(root):
        raise ToolInputError(f"{path!r} is or passes through a symbolic link that leads outside the workspace; it is refused. Use a path to a real file inside the workspace.")
    return real


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, symbolic links followed, is `root` or under it."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def read_text(real: Path, shown: str, *, lenient: bool = False) -> str:
    """The text of the regular file at `real` (already resolved); `shown` names it in errors.

    Raises ToolInputError if it is missing, not a regular file, over MAX_FILE_BYTES, binary
    (a NUL byte in its head), or, unless `lenient` (undecodable bytes become U+FFFD), not UTF-8.
    """
    if not real.exists():
        raise ToolInputError(f"There is no file {shown!r} in the workspace. Call glob with pattern '**/*' to see what is there.")
    if real.is_dir():
        raise ToolInputError(f"{shown!r} is a directory, not a file. Call glob with pattern '{shown.rstrip('/')}/*' to list it.")
    if not real.is_file():
        raise ToolInputError(f"{shown!r} is not a regular file (a device, socket or pipe); only regular files can be read.")
    size = real.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ToolInputError(f"{shown!r} has {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit of the file tools.")
    data = real.read_bytes()
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise ToolInputError(f"{shown!r} looks like a binary file (it contains NUL bytes); the file tools only handle text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if lenient:
            return data.decode("utf-8", errors="replace")
        raise ToolInputError(f"{shown!r} is not UTF-8 text; it can be read but not changed with this tool.") from None


def split_lines(text: str) -> list[str]:
    """The lines of `text` as editors number them: split on newlines only, a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
