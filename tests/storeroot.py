"""Store roots for tests: created as `walkeeper check` creates them on first-time
setup. Nothing that writes objects (push, basebackup, dump, sync) creates a missing
store root: a mistyped or unmounted path must fail (issue 15, item 4)."""

from __future__ import annotations

from pathlib import Path


def root(path) -> Path:
    """path, created (0700) if missing."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
