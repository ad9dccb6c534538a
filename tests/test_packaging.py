"""The install files a fresh machine uses: every pin must be installable anywhere."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_constraints_pin_versions_not_paths_on_one_machine():
    lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]

    assert lines
    assert [ln for ln in lines if "==" not in ln or " @ " in ln] == []
