"""shell: run a command with /bin/sh in the agent's workspace. Off by default.

What confines it, honestly: the working directory is the workspace, the environment is built
from scratch (a fixed PATH, HOME=the workspace, a UTF-8 locale; none of the server's variables,
so no SECRET_KEY, API keys or tokens), stdin is closed, the run is time-limited and its output
capped. That is all. It is NOT a sandbox: the command runs as the server's user and can read
and write whatever that user can, reach the network, and `cd` anywhere. Enable it only on
agents you would trust with a terminal on this machine.

The command runs in its own process group (session); when it finishes or times out the whole
group is killed, so background children do not outlive the call. A child that starts a new
session of its own escapes that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from . import Tool
from .workspace import workspace_root

DEFAULT_TIMEOUT_SECONDS = 20
MAX_TIMEOUT_SECONDS = 60
# Per stream; the rest is read and thrown away so the child never blocks on a full pipe.
MAX_OUTPUT_BYTES = 16_384
MAX_COMMAND_CHARS = 10_000
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# After the kill, how long to wait for the pipes to close (a escaped grandchild may hold them).
DRAIN_SECONDS = 2.0


def clean_env(workspace: Path) -> dict[str, str]:
    """The command's whole environment: nothing from the server's."""
    return {"PATH": SAFE_PATH, "HOME": str(workspace), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp"}


class _Capped:
    """Reads a pipe to its end in a thread, keeping the first MAX_OUTPUT_BYTES."""

    def __init__(self, pipe):
        self.kept, self.total = bytearray(), 0
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe):
        with pipe:
            while chunk := pipe.read1(65536):
                self.total += len(chunk)
                self.kept += chunk[: max(0, MAX_OUTPUT_BYTES - len(self.kept))]

    def text(self) -> str:
        self._thread.join(DRAIN_SECONDS)
        text = bytes(self.kept).decode("utf-8", errors="replace")
        if self.total > len(self.kept):
            text += f"\n[output cut: {self.total:,} bytes in all, first {MAX_OUTPUT_BYTES:,} shown]"
        return text


def run(command: str, cwd: Path, timeout: float) -> dict:
    """Runs `command` with /bin/sh -c in `cwd`; kills its process group at the end or after
    `timeout` seconds. Returns exit_code (negative: killed by that signal), timed_out, stderr, stdout."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], cwd=cwd, env=clean_env(cwd), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    out, err = _Capped(proc.stdout), _Capped(proc.stderr)
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
    # stderr before stdout: a long stdout would otherwise push the error out of what the model sees.
    return {"exit_code": proc.returncode, "timed_out": timed_out, "stderr": err.text(), "stdout": out.text()}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _build(scope):
    def shell(command: str, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS):
        result = run(command, workspace_root(scope), timeout_seconds)
        if result["timed_out"]:
            result["note"] = f"Killed after {timeout_seconds} s. Give a larger timeout_seconds (up to {MAX_TIMEOUT_SECONDS}) or a quicker command."
        return result

    return shell


TOOL = Tool(
    name="shell",
    description=(
        "Run a shell command (/bin/sh -c) in your workspace folder and get its exit code, stdout and stderr "
        f"(each cut at {MAX_OUTPUT_BYTES:,} bytes). Time limit {DEFAULT_TIMEOUT_SECONDS} s by default, at most "
        f"{MAX_TIMEOUT_SECONDS} s; no input; a minimal environment. It is confined only by its working "
        "folder and environment, not sandboxed: do not touch files outside the workspace."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_CHARS, "description": "The command line, e.g. 'ls -la'."},
            "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS, "description": f"Time limit. Default {DEFAULT_TIMEOUT_SECONDS}."},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    read_only=False,
    build=_build,
    enabled_by_default=False,
    timeout_seconds=MAX_TIMEOUT_SECONDS + 10,
)
