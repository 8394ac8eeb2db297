"""The local state directory: last successes and a failure log for `status`.

Recording is best effort: a push that is durable in every store has succeeded
even when its state directory cannot be written, so errors here only warn.
"""

from __future__ import annotations

import json
import os
import time
from walkeeper import log

FAILURES = "failures.jsonl"
MAX_FAILURE_LOG = 1 << 20


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _ensure(state_dir: str) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)


def ensure_state_dir(state_dir: str) -> None:
    """The state directory, created (0700) if absent, for a command that cannot work
    without it (drill, restore-dump): ConfigError naming it and the fix otherwise."""
    from walkeeper.errors import ConfigError

    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise ConfigError(f"state_dir {state_dir}: exists and is not a directory",
                          hint="set state_dir (or WALKEEPER_STATE_DIR) to a directory")
    try:
        _ensure(state_dir)
    except OSError as exc:
        raise ConfigError(f"state_dir {state_dir}: cannot be used ({exc.strerror or exc})",
                          hint="set state_dir (or WALKEEPER_STATE_DIR) to a directory this "
                               "user can write") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"state_dir {state_dir}: not writable by this user",
                          hint="set state_dir (or WALKEEPER_STATE_DIR) to a directory this "
                               "user can write")


def record_success(state_dir: str, command: str, **fields) -> None:
    try:
        _ensure(state_dir)
        path = os.path.join(state_dir, f"last_{command}.json")
        tmp = os.path.join(state_dir, f".last_{command}.json.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump({"time": _now(), **fields}, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warn(f"cannot record success in {state_dir}: {exc.strerror}")


def record_failure(state_dir: str, command: str, target: str, reason: str) -> None:
    try:
        _ensure(state_dir)
        path = os.path.join(state_dir, FAILURES)
        try:
            if os.stat(path).st_size > MAX_FAILURE_LOG:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass
        line = json.dumps({"time": _now(), "command": command, "target": target,
                           "reason": reason})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        log.warn(f"cannot record failure in {state_dir}: {exc.strerror}")


def read_json(state_dir: str, name: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
