"""Reading the attack corpora (xss_corpus.txt, injection_corpus.txt).

One payload per line. Lines starting with "# " are comments, blank lines are skipped. So that
any payload fits on one line, four escapes are decoded: \\n (a newline), \\0 (a NUL),
\\uXXXX and \\UXXXXXXXX (that code point); every other backslash is kept as it is.
"""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
_ESCAPE = re.compile(r"\\(n|0|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def _decode(match: re.Match) -> str:
    code = match.group(1)
    if code == "n":
        return "\n"
    if code == "0":
        return "\x00"
    return chr(int(code[1:], 16))


def corpus_load(name: str) -> list[str]:
    """The payloads in tests/security/<name>, in file order."""
    lines = (HERE / name).read_text(encoding="utf-8").splitlines()
    return [_ESCAPE.sub(_decode, line) for line in lines if line.strip() and not line.startswith("# ")]


def corpus_packed(payloads: list[str], limit: int) -> list[str]:
    """The payloads joined by spaces into as few strings of at most `limit` characters as will
    hold them, in order: a field shown once per page (a title, a name) then carries several."""
    packs: list[str] = []
    for payload in payloads:
        if packs and len(packs[-1]) + 1 + len(payload) <= limit:
            packs[-1] += " " + payload
        else:
            packs.append(payload[:limit])
    return packs
