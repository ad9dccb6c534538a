"""The workspace file tools, called through the registry as the loop calls them."""

import json
import time

import pytest

from agents.tools import (
    ToolScope,
    ToolSet,
    edit_file,
    glob,
    grep,
    read_file,
    write_file,
)
from agents.tools.workspace import MAX_WRITE_BYTES

SECRET = "TOP SECRET outside the workspace"


@pytest.fixture
def ws(tmp_path):
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def tools(ws):
    scope = ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=ws)
    return ToolSet([read_file.TOOL, write_file.TOOL, edit_file.TOOL, grep.TOOL, glob.TOOL], scope)


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text(SECRET + "\n")
    return path


def ok(tools, name, **args) -> str:
    result = tools.call(name, json.dumps(args))
    assert not result.is_error, result.content
    return result.content


def error(tools, name, **args) -> str:
    result = tools.call(name, json.dumps(args))
    assert result.is_error, result.content
    return json.loads(result.content)["error"]


def test_the_workspace_is_created_on_first_use(tmp_path):
    ws = tmp_path / "agents" / "new-agent"
    tools = ToolSet([write_file.TOOL], ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=ws))
    ok(tools, "write_file", path="a.txt", content="hi\n")
    assert (ws / "a.txt").read_text() == "hi\n"


def test_read_file_numbers_lines(tools, ws):
    (ws / "notes.md").write_text("first\nsecond\n")
    assert ok(tools, "read_file", path="notes.md") == "    1\tfirst\n    2\tsecond\n[notes.md: lines 1-2 of 2; end of file]"


def test_read_file_pages_through_a_long_file(tools, ws):
    (ws / "long.txt").write_text("".join(f"line {n}\n" for n in range(1, 501)))
    first = ok(tools, "read_file", path="long.txt")
    assert first.splitlines()[-2] == "  200\tline 200"
    assert first.endswith("[long.txt: lines 1-200 of 500; to read on, call read_file with offset=201]")
    last = ok(tools, "read_file", path="long.txt", offset=451, limit=100)
    assert last.splitlines()[0] == "  451\tline 451"
    assert last.endswith("[long.txt: lines 451-500 of 500; end of file]")


def test_read_file_stops_a_page_early_when_it_would_be_too_long_to_send(tools, ws):
    (ws / "wide.txt").write_text(("x" * 500 + "\n") * 100)
    page = ok(tools, "read_file", path="wide.txt")
    assert len(page) <= read_file.PAGE_CHARS + 200
    assert "to read on, call read_file with offset=" in page.splitlines()[-1]


def test_read_file_cuts_very_long_lines(tools, ws):
    (ws / "min.js").write_text("y" * 50_000)
    page = ok(tools, "read_file", path="min.js")
    assert "[line cut: 50,000 characters" in page
    assert len(page) < 2000


def test_read_file_offset_past_the_end(tools, ws):
    (ws / "short.txt").write_text("one\n")
    assert error(tools, "read_file", path="short.txt", offset=5) == "offset=5 is past the end: 'short.txt' has 1 lines. Give an offset from 1 to 1."


def test_read_file_refuses_missing_binary_and_folders(tools, ws):
    (ws / "image.png").write_bytes(b"\x89PNG\r\n\x00\x00data")
    (ws / "docs").mkdir()
    assert "There is no file 'nope.txt'" in error(tools, "read_file", path="nope.txt")
    assert "looks like a binary file" in error(tools, "read_file", path="image.png")
    assert "'docs' is a directory" in error(tools, "read_file", path="docs")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../etc/passwd", "'..' is refused"),
        ("notes/../../outside/secret.txt", "'..' is refused"),
        ("/etc/passwd", "Absolute paths are refused"),
        ("notes\x00.txt", "NUL character"),
        ("", "The path is empty"),
    ],
)
@pytest.mark.parametrize(
    ("tool", "extra"),
    [
        ("read_file", {}),
        ("write_file", {"content": "x"}),
        ("edit_file", {"old_string": "a", "new_string": "b"}),
        ("grep", {"pattern": "root"}),
    ],
)
def test_paths_that_leave_the_workspace_are_refused(tools, outside, tool, extra, path, message):
    assert message in error(tools, tool, path=path, **extra)
    assert (outside / "secret.txt").read_text() == SECRET + "\n"


def test_a_symlink_to_a_file_outside_is_refused_by_every_tool(tools, ws, outside):
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    refused = "leads outside the workspace"
    assert refused in error(tools, "read_file", path="link.txt")
    assert refused in error(tools, "write_file", path="link.txt", content="overwritten")
    assert refused in error(tools, "edit_file", path="link.txt", old_string="TOP", new_string="NO")
    assert refused in error(tools, "grep", pattern="SECRET", path="link.txt")
    assert ok(tools, "grep", pattern="SECRET") == "No matches for 'SECRET'."
    assert ok(tools, "glob", pattern="**/*") == "No files match '**/*'. Try '**/*' to list everything."
    assert (outside / "secret.txt").read_text() == SECRET + "\n"


def test_a_symlinked_folder_outside_is_refused_by_every_tool(tools, ws, outside):
    (ws / "linked").symlink_to(outside, target_is_directory=True)
    refused = "leads outside the workspace"
    assert refused in error(tools, "read_file", path="linked/secret.txt")
    assert refused in error(tools, "write_file", path="linked/new.txt", content="x")
    assert refused in error(tools, "grep", pattern="SECRET", path="linked")
    assert ok(tools, "grep", pattern="SECRET") == "No matches for 'SECRET'."
    assert "No files match" in ok(tools, "glob", pattern="linked/*")
    assert "No files match" in ok(tools, "glob", pattern="**/secret.txt")
    assert not (outside / "new.txt").exists()


def test_a_dangling_symlink_pointing_outside_cannot_be_written_through(tools, ws, outside):
    (ws / "trap.txt").symlink_to(outside / "planted.txt")
    assert "leads outside the workspace" in error(tools, "write_file", path="trap.txt", content="x")
    assert not (outside / "planted.txt").exists()


def test_a_symlink_that_stays_inside_is_followed(tools, ws):
    (ws / "real.txt").write_text("inside\n")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    assert ok(tools, "read_file", path="alias.txt").startswith("    1\tinside")


def test_write_file_creates_folders_and_overwrites(tools, ws):
    assert ok(tools, "write_file", path="notes/2024/todo.md", content="a\nb\n") == "Created notes/2024/todo.md (4 bytes, 2 lines)."
    assert ok(tools, "write_file", path="notes/2024/todo.md", content="c") == "Overwrote notes/2024/todo.md (1 bytes, 1 lines)."
    assert (ws / "notes" / "2024" / "todo.md").read_text() == "c"


def test_write_file_refuses_too_much_content_and_folders(tools, ws):
    (ws / "docs").mkdir()
    assert "over the 1,000,000-byte limit" in error(tools, "write_file", path="big.txt", content="x" * (MAX_WRITE_BYTES + 1))
    assert not (ws / "big.txt").exists()
    assert "'docs' is a directory" in error(tools, "write_file", path="docs", content="x")


def test_edit_file_replaces_the_unique_occurrence(tools, ws):
    (ws / "plan.md").write_text("# Plan\n- buy milk\n- call Ann\n")
    assert ok(tools, "edit_file", path="plan.md", old_string="- call Ann", new_string="- call Bob") == "Edited plan.md: replaced 1 occurrence starting at line 3."
    assert (ws / "plan.md").read_text() == "# Plan\n- buy milk\n- call Bob\n"


def test_edit_file_needs_exactly_one_match(tools, ws):
    (ws / "plan.md").write_text("- item\n- item\n")
    assert "not found in 'plan.md' (0 occurrences)" in error(tools, "edit_file", path="plan.md", old_string="- thing", new_string="x")
    many = error(tools, "edit_file", path="plan.md", old_string="- item", new_string="x")
    assert "occurs 2 times in 'plan.md'" in many and "Include more of the surrounding lines" in many
    assert (ws / "plan.md").read_text() == "- item\n- item\n"


def test_edit_file_refuses_missing_files_and_non_utf8_text(tools, ws):
    (ws / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    assert "There is no file 'nope.md'" in error(tools, "edit_file", path="nope.md", old_string="a", new_string="b")
    assert "is not UTF-8 text" in error(tools, "edit_file", path="latin1.txt", old_string="caf", new_string="tea")
    assert (ws / "latin1.txt").read_bytes() == "café\n".encode("latin-1")


def test_grep_finds_lines_and_filters_by_glob(tools, ws):
    (ws / "a.md").write_text("TODO: write\nnothing\n")
    (ws / "src").mkdir()
    (ws / "src" / "b.py").write_text("x = 1  # todo later\n")
    (ws / "blob.bin").write_bytes(b"TODO\x00\x01")
    assert ok(tools, "grep", pattern="TODO") == "[1 matches]\na.md:1: TODO: write"
    assert ok(tools, "grep", pattern="todo", ignore_case=True) == "[2 matches]\na.md:1: TODO: write\nsrc/b.py:1: x = 1  # todo later"
    assert ok(tools, "grep", pattern="todo", ignore_case=True, glob="*.py") == "[1 matches]\nsrc/b.py:1: x = 1  # todo later"
    assert ok(tools, "grep", pattern="todo", ignore_case=True, path="src") == "[1 matches]\nsrc/b.py:1: x = 1  # todo later"


def test_grep_caps_the_number_of_matches(tools, ws):
    (ws / "many.txt").write_text("hit\n" * 500)
    result = ok(tools, "grep", pattern="hit").splitlines()
    assert result[0].startswith(f"[more than {grep.MAX_MATCHES} matches")
    assert len(result) == grep.MAX_MATCHES + 1


def test_grep_stops_a_pattern_that_would_backtrack_for_ever_and_says_why(tools, ws, monkeypatch):
    monkeypatch.setattr(grep, "SEARCH_SECONDS", 0.3)
    (ws / "a.txt").write_text("a" * 5000 + "\n")
    started = time.monotonic()

    message = error(tools, "grep", pattern="(.*a){12}x")

    assert time.monotonic() - started < 5
    assert message.startswith("The search took longer than 0.3 seconds and was stopped.")


def test_grep_explains_an_invalid_regex(tools):
    message = error(tools, "grep", pattern="print(")
    assert message.startswith("Invalid regular expression 'print(': missing )")
    assert "escape special characters" in message


def test_glob_lists_sorted_matches(tools, ws):
    (ws / "notes").mkdir()
    for name in ("b.md", "a.md", "notes/c.md", "notes/d.txt"):
        (ws / name).write_text("x")
    assert ok(tools, "glob", pattern="**/*.md") == "[3 paths match]\na.md\nb.md\nnotes/c.md"
    assert ok(tools, "glob", pattern="*") == "[3 paths match]\na.md\nb.md\nnotes/"


def test_glob_caps_results(tools, ws):
    for n in range(glob.MAX_RESULTS + 5):
        (ws / f"f{n:03}.txt").write_text("x")
    result = ok(tools, "glob", pattern="*.txt").splitlines()
    assert result[0] == f"[{glob.MAX_RESULTS + 5} paths match, first {glob.MAX_RESULTS} shown; use a narrower pattern]"
    assert result[1:3] == ["f000.txt", "f001.txt"] and len(result) == glob.MAX_RESULTS + 1


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("/etc/*", "Absolute patterns are refused"), ("../*", "'..' is refused"), ("a/../../*", "'..' is refused"), ("a\x00", "NUL")],
)
def test_glob_refuses_patterns_that_leave_the_workspace(tools, pattern, message):
    assert message in error(tools, "glob", pattern=pattern)


def test_unknown_arguments_are_refused_with_the_usage(tools):
    message = error(tools, "read_file", path="a.txt", lines=5)
    assert "Additional properties are not allowed" in message and "path: string" in message
