"""Percentiles, and the rows of the results table (a figure set against its target)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    p50: float
    p95: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        ordered = sorted(samples)
        if not ordered:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), p95, ordered[-1], len(ordered))

    def ms(self) -> str:
        return f"p50 {self.p50 * 1000:.1f} ms, p95 {self.p95 * 1000:.1f} ms, max {self.max * 1000:.1f} ms"


def figures(samples: list[float]) -> str:
    """Seconds as "p50 … ms, p95 … ms, max … ms" (whole milliseconds)."""
    spread = Spread.of(samples)
    return f"p50 {spread.p50 * 1000:.0f} ms, p95 {spread.p95 * 1000:.0f} ms, max {spread.max * 1000:.0f} ms"


@dataclass(frozen=True)
class Row:
    """One line of docs/BENCHMARKS.md. `met` is None where there is no target (context figures)."""

    section: str
    what: str
    figure: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: ""}[self.met]

    def line(self) -> str:
        return f"[{self.section}] {self.what}: {self.figure}" + (f"  (target {self.target}: {self.verdict})" if self.target else "") + (
            f"  — {self.note}" if self.note else ""
        )
