"""Security tests (placeholder docstring; the index is written when the suites exist)."""
