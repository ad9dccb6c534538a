"""docs/BENCHMARKS.md: the machine, the date and every figure against its target.

Only the part between the two markers is rewritten; the analysis written by hand around it
(why a target is missed, the profiles, the proposed fixes) stays as it is.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import psutil

from .figures import Row, Spread

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SKELETON = f"""# Benchmarks

`python -m bench` (`make bench`) starts the real stack (daphne, qcluster, redis-server) in
throw-away directories under `data/`, drives it with a websocket client speaking the chat
protocol, and compares every figure with the same backend called directly in the same run.

{START}
{END}
"""


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=DOC.parent).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.1f} GiB RAM",
        "software": f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        "commit": commit or "unknown",
    }


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_markdown(rows: list[Row], hops: dict[str, list[tuple[str, Spread]]], info: dict[str, str], took: float) -> str:
    lines = [
        f"Run on {info['date']}, commit `{info['commit']}`: {info['machine']}; {info['software']}.",
        f"Load average at the start {info['load_start']}, at the end {info['load_end']} "
        f"(other work shares this machine: compare ratios against the direct call rather than raw times). "
        f"The whole run took {took / 60:.1f} min.",
        "",
        "| # | what | figure | target | verdict | notes |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.section} | {_cell(r.what)} | {_cell(r.figure)} | {_cell(r.target)} | {r.verdict} | {_cell(r.note)} |" for r in rows]
    for label, table in hops.items():
        lines += ["", f"Where the time goes, one message at a time ({label}); seconds on one wall clock:", "",
                  "| hop | p50 | p95 | max |", "|---|---|---|---|"]
        lines += [f"| {name} | {s.p50 * 1000:.1f} ms | {s.p95 * 1000:.1f} ms | {s.max * 1000:.1f} ms |" for name, s in table]
    missed = [r for r in rows if r.met is False]
    lines += ["", f"Targets missed in this run: {len(missed)} of {sum(r.met is not None for r in rows)}"
              + (": " + "; ".join(f"{r.section} {r.what}" for r in missed) + "." if missed else ".")]
    return "\n".join(lines)


def write(rows: list[Row], hops: dict, info: dict[str, str], took: float) -> Path:
    text = DOC.read_text() if DOC.exists() else SKELETON
    if START not in text or END not in text:
        text = text.rstrip() + "\n\n" + START + "\n" + END + "\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{results_markdown(rows, hops, info, took)}\n{END}{tail}")
    return DOC
