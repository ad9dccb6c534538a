"""Memory of the stack's processes: RSS as `ps` shows it, and PSS, the honest sum.

qcluster forks its workers from one parent, so their RSS counts the same copy-on-write pages
again and again; PSS splits every shared page between the processes that map it, so the PSS
of a group adds up to what the group really costs the machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    rss: int
    pss: int
    processes: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.rss + other.rss, self.pss + other.pss, self.processes + other.processes)

    def text(self) -> str:
        return f"RSS {self.rss / MB:,.0f} MB, PSS {self.pss / MB:,.0f} MB ({self.processes} processes)"


def usage(processes: list[psutil.Process]) -> Usage:
    total = Usage(0, 0, 0)
    for proc in processes:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += Usage(info.rss, info.pss, 1)
    return total


def by_role(stack) -> dict[str, Usage]:
    roles = {role: usage(procs) for role, procs in stack.processes().items()}
    roles["whole stack"] = sum(roles.values(), Usage(0, 0, 0))
    return roles


def cpu_seconds(stack) -> dict[str, float]:
    """User + system CPU seconds used so far by each role's processes (living ones)."""
    used = {}
    for role, procs in stack.processes().items():
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        used[role] = total
    return used


class PeakSampler:
    """Samples the whole stack's memory once a second in a thread; keeps the sample with the
    highest PSS. Use as a context manager around the load."""

    def __init__(self, stack, *, interval: float = 1.0):
        self.stack = stack
        self.interval = interval
        self.peak: dict[str, Usage] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self):
        while True:
            sample = by_role(self.stack)
            if self.peak is None or sample["whole stack"].pss > self.peak["whole stack"].pss:
                self.peak = sample
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
