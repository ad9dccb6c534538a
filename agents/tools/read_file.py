"""read_file: a page of a text file in the workspace, with line numbers."""

from __future__ import annotations

from . import RESULT_CHARS_FOR_MODEL, Tool, ToolInputError
from .workspace import read_text, resolve_path, split_lines, workspace_root

DEFAULT_LIMIT = 200
MAX_LIMIT = 2000
# Longer lines are cut, so that a page always shows at least one whole-enough line.
MAX_LINE_CHARS = 1000
# A page stops early at this many characters, so the model is sent it whole with its footer.
PAGE_CHARS = RESULT_CHARS_FOR_MODEL - 1000


def page(lines: list[str], shown: str, offset: int, limit: int) -> str:
    """Lines offset.. (1-based) as `   12\\tline`, at most `limit` of them and PAGE_CHARS in all,
    then a footer with the total and the offset of the next page. Raises ToolInputError if
    `offset` is past the end."""
    total = len(lines)
    if total == 0:
        return f"[{shown} is empty: 0 lines]"
    if offset > total:
        raise ToolInputError(f"offset={offset} is past the end: {shown!r} has {total} lines. Give an offset from 1 to {total}.")
    rows, size, n = [], 0, offset - 1
    end = min(total, n + limit)
    while n < end:
        row = f"{n + 1:>5}\t{_cut(lines[n])}"
        if rows and size + len(row) > PAGE_CHARS:
            break
        rows.append(row)
        size += len(row) + 1
        n += 1
    more = f"to read on, call read_file with offset={n + 1}" if n < total else "end of file"
    rows.append(f"[{shown}: lines {offset}-{n} of {total}; {more}]")
    return "\n".join(rows)


def _cut(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return line[:MAX_LINE_CHARS] + f" [line cut: {len(line):,} characters; use grep to find text in it]"


def _build(scope):
    def read_file(path: str, offset: int = 1, limit: int = DEFAULT_LIMIT):
        root = workspace_root(scope)
        text = read_text(resolve_path(root, path), path, lenient=True)
        return page(split_lines(text), path, offset, limit)

    return read_file


TOOL = Tool(
    name="read_file",
    description=(
        "Read a text file in your workspace, with line numbers. Returns up to `limit` lines from line "
        "`offset` (1-based) and says how many lines the file has and which offset to read next."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the workspace, e.g. 'notes/todo.md'."},
            "offset": {"type": "integer", "minimum": 1, "description": "First line to show (1-based). Default 1."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": f"Most lines to show. Default {DEFAULT_LIMIT}."},
        },
        "required": ["path"],
        "additionalProperties": False,
    },
    read_only=True,
    build=_build,
)
