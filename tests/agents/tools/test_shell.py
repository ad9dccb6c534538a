"""The shell tool, run for real through the registry: /bin/sh, real processes, real timeouts."""

import json
import os
import time
from pathlib import Path

import pytest

from agents.tools import ToolScope, ToolSet, shell


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


@pytest.fixture
def tools(ws):
    return ToolSet([shell.TOOL], ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=ws))


def run(tools, **args) -> dict:
    result = tools.call("shell", json.dumps(args))
    assert not result.is_error, result.content
    return json.loads(result.content)


def test_it_runs_a_command_and_reports_its_output(tools):
    result = run(tools, command="echo out; echo err >&2; exit 3")
    assert result == {"exit_code": 3, "timed_out": False, "stderr": "err\n", "stdout": "out\n"}


def test_it_runs_in_the_workspace_which_it_creates(tools, ws):
    result = run(tools, command="pwd -P; echo hi > made.txt")
    assert result["stdout"] == f"{ws.resolve()}\n"
    assert (ws / "made.txt").read_text() == "hi\n"


def test_the_environment_holds_no_server_secrets(tools, ws, monkeypatch):
    monkeypatch.setenv("HEARTH_TEST_SECRET", "s3cr3t-value")
    monkeypatch.setenv("SECRET_KEY", "django-insecure-test")
    env = dict(line.split("=", 1) for line in run(tools, command="env")["stdout"].splitlines() if "=" in line)
    assert "HEARTH_TEST_SECRET" not in env and "SECRET_KEY" not in env
    assert "s3cr3t-value" not in json.dumps(env)
    assert env["HOME"] == str(ws.resolve())
    assert env["PATH"] == shell.SAFE_PATH
    assert env["LC_ALL"] == "C.UTF-8"


def test_stdin_is_closed(tools):
    assert run(tools, command="cat; echo done")["stdout"] == "done\n"


def test_a_timeout_kills_the_command_and_its_children(tools):
    started = time.monotonic()
    result = run(tools, command="sleep 30 & echo $!; wait", timeout_seconds=1)
    assert time.monotonic() - started < 5
    assert result["timed_out"] is True
    assert "Killed after 1 s" in result["note"]
    child = int(result["stdout"].strip())
    assert _gone_within(child, seconds=3)


def test_background_children_do_not_outlive_the_call(tools):
    result = run(tools, command="sleep 30 >/dev/null 2>&1 & echo $!")
    assert result["timed_out"] is False
    assert _gone_within(int(result["stdout"].strip()), seconds=3)


def test_output_is_capped_and_says_so(tools):
    result = run(tools, command="yes 0123456789 | head -c 1000000")
    assert result["exit_code"] == 0
    kept, note = result["stdout"].rsplit("\n[", 1)
    assert len(kept.encode()) <= shell.MAX_OUTPUT_BYTES
    assert note == f"output cut: 1,000,000 bytes in all, first {shell.MAX_OUTPUT_BYTES:,} shown]"


def test_a_timeout_above_the_maximum_is_refused(tools):
    result = tools.call("shell", json.dumps({"command": "true", "timeout_seconds": shell.MAX_TIMEOUT_SECONDS + 1}))
    assert result.is_error
    assert f"timeout_seconds: {shell.MAX_TIMEOUT_SECONDS + 1} is greater than the maximum of {shell.MAX_TIMEOUT_SECONDS}" in result.error


def test_it_is_off_by_default_and_outlives_its_own_time_limit():
    assert shell.TOOL.enabled_by_default is False
    assert shell.TOOL.read_only is False
    assert shell.TOOL.timeout_seconds > shell.MAX_TIMEOUT_SECONDS


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether the process is gone (or a zombie awaiting its reaper) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status")
        try:
            state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
        except FileNotFoundError:
            return True
        if "zombie" in state or "(dead)" in state:
            return True
        time.sleep(0.05)
    return os.path.exists(f"/proc/{pid}") is False
