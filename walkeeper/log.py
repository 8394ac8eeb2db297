"""Messages for the operator on stderr. Tiny on purpose: push imports it."""

import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2
level = NORMAL


def warn(msg: str) -> None:
    if level >= NORMAL:
        print(f"walkeeper: {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    if level >= NORMAL:
        print(msg, file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    if level >= VERBOSE:
        print(f"walkeeper: {msg}", file=sys.stderr, flush=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 segment', '2 segments' ('store', 'stores'; many for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
