"""Figures the security suites count as they go, printed at the end of the test session.

The numbers are what docs/RELIABILITY.md quotes: how many hostile inputs were tried and
what came of them. Each suite adds its own line with tally_record().
"""

FIGURES: dict[str, dict[str, int]] = {}


def tally_record(suite: str, **counts: int) -> None:
    """Adds `counts` to the suite's running figures (a suite may record from several tests)."""
    figures = FIGURES.setdefault(suite, {})
    for name, value in counts.items():
        figures[name] = figures.get(name, 0) + value


def tally_lines() -> list[str]:
    return [f"{suite}: " + ", ".join(f"{name} {value}" for name, value in figures.items()) for suite, figures in FIGURES.items()]
