"""grep: search the workspace's text files for a regular expression."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from itertools import islice
from pathlib import Path

# The `regex` package, not `re`: it can stop a match after a timeout and release the GIL while
# matching, so a catastrophic pattern ('(a|aa)*c') cannot wedge the worker.
import regex as re

from . import Tool, ToolInputError
from .workspace import is_inside, read_text, resolve_path, split_lines, workspace_root

MAX_MATCHES = 100
MAX_FILES = 5000
MAX_PATTERN_CHARS = 500
MATCH_LINE_CHARS = 200
# The whole search gives up after this long; below the Tool's timeout so the tool says why.
SEARCH_SECONDS = 20.0


def compile_pattern(pattern: str, ignore_case: bool) -> re.Pattern:
    """The compiled regex. Raises ToolInputError if it is too long or invalid."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ToolInputError(f"The pattern is longer than {MAX_PATTERN_CHARS} characters. Search for a shorter expression.")
    try:
        return re.compile(pattern, (re.IGNORECASE if ignore_case else 0) | re.V0)
    except re.error as exc:
        raise ToolInputError(
            f"Invalid regular expression {pattern!r}: {exc}. Use Python regex syntax, and escape special "
            r"characters such as ( [ . * + ? with a backslash to match them literally, e.g. 'print\('."
        ) from None


def matches_glob(relative: str, pattern: str) -> bool:
    """A pattern without '/' matches the file name ('*.md'); one with '/' the workspace-relative
    path, where a leading '**/' may also match no folder at all ('**/*.md' matches 'a.md')."""
    if "/" not in pattern:
        return fnmatch(relative.rsplit("/", 1)[-1], pattern)
    return fnmatch(relative, pattern) or (pattern.startswith("**/") and fnmatch(relative, pattern[3:]))


def files_under(root: Path, start: Path, pattern: str | None) -> Iterator[tuple[str, Path]]:
    """(workspace-relative name, real path) of the files at or under `start`, sorted, never
    leaving `root`: symbolic links are only taken when they resolve inside it."""
    if not start.is_dir():
        yield start.relative_to(root).as_posix(), start
        return
    for folder, dirs, names in os.walk(start):  # does not descend into linked folders
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if is_inside(root, path) and (pattern is None or matches_glob(relative, pattern)):
                yield relative, Path(os.path.realpath(path))


def search(regex: re.Pattern, files: Iterator[tuple[str, Path]]) -> Iterator[str]:
    """`path:line: text` for each matching line; unreadable, binary and huge files are skipped.

    Raises ToolInputError when the search takes longer than SEARCH_SECONDS in all."""
    deadline = time.monotonic() + SEARCH_SECONDS
    for relative, real in islice(files, MAX_FILES):
        try:
            text = read_text(real, relative, lenient=True)
        except (ToolInputError, OSError):
            continue
        for number, line in enumerate(split_lines(text), 1):
            try:
                found = regex.search(line, timeout=max(0.001, deadline - time.monotonic()), concurrent=True)
            except TimeoutError:
                raise ToolInputError(
                    f"The search took longer than {SEARCH_SECONDS:g} seconds and was stopped. Use a simpler "
                    "pattern (avoid nested repeats such as '(a|aa)*') or narrow it with path or glob."
                ) from None
            if found:
                yield f"{relative}:{number}: {line[:MATCH_LINE_CHARS]}"


def _build(scope):
    def grep(pattern: str, path: str = ".", glob: str | None = None, ignore_case: bool = False):
        regex = compile_pattern(pattern, ignore_case)
        root = workspace_root(scope)
        start = resolve_path(root, path)
        if not start.exists():
            raise ToolInputError(f"There is no file or folder {path!r} in the workspace. Leave path out to search everything.")
        found = list(islice(search(regex, files_under(root, start, glob)), MAX_MATCHES + 1))
        if not found:
            return f"No matches for {pattern!r}."
        if len(found) > MAX_MATCHES:
            head = f"[more than {MAX_MATCHES} matches, first {MAX_MATCHES} shown; narrow the pattern, path or glob]"
        else:
            head = f"[{len(found)} matches]"
        return "\n".join([head, *found[:MAX_MATCHES]])

    return grep


TOOL = Tool(
    name="grep",
    description=(
        "Search the text files in your workspace for a regular expression (Python syntax). Returns "
        f"'path:line: text' for each matching line, at most {MAX_MATCHES}. Binary files are skipped."
    ),
    parameters={
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "description": "Regular expression, e.g. 'TODO|FIXME'."},
            "path": {"type": "string", "description": "File or folder to search, relative to the workspace. Default: all of it."},
            "glob": {"type": "string", "description": "Only files whose name ('*.md') or relative path ('notes/**/*.txt') matches."},
            "ignore_case": {"type": "boolean", "description": "Match regardless of case. Default false."},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
