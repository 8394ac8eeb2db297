"""The archive_command and restore_command lines PostgreSQL runs, for a configuration.

The plain lines call this very walkeeper (`walkeeper --config FILE push %p %f`,
`... fetch %f %p`). Where the `walkeeper-fast` script is installed beside it, the
lines put it first:

    walkeeper-fast push  RECORDS_DIR %p %f || walkeeper ... push %p %f
    walkeeper-fast fetch SPOOL_DIR   %f %p || walkeeper ... fetch %f %p

walkeeper-fast (bin/walkeeper-fast, POSIX sh) does the two fast paths, a push the
background pusher already did and a fetch served from the prefetch spool, with the
same checks and no Python interpreter, and exits 1 without touching anything in
every other case, so that the walkeeper call after `||` does the whole job. The
directories are this configuration's (state_dir, cluster); if they change, the fast
half finds nothing and the walkeeper half does the work: slower, never wrong.
"""

from __future__ import annotations

import os
import shlex
import sys

from walkeeper.archiving.claims import records_dir
from walkeeper.archiving.prefetcher import spool_dir

FAST_SCRIPT = "walkeeper-fast"


def walkeeper_argv(config) -> tuple[list[str], list[str]]:
    """(environment assignments, argv) that run this very walkeeper with the same
    configuration, for PostgreSQL to call."""
    exe = os.path.abspath(sys.argv[0])
    if os.path.basename(exe) != "walkeeper":
        exe = os.path.realpath(exe)     # a link of another name (walkeeper-15 -> ...)
    cmd = [exe] if os.path.basename(exe) == "walkeeper" and os.access(exe, os.X_OK) \
        else [sys.executable, "-m", "walkeeper"]
    prefix = []
    if config.path is not None:
        cmd += ["--config", str(config.path)]
    else:
        # Environment-only configuration: carry the non-secret variables along;
        # secrets must come from the server's own environment.
        from walkeeper.config import ENV_STORE_VARIABLES

        for var in ENV_STORE_VARIABLES + ("WALKEEPER_CLUSTER", "WALKEEPER_STATE_DIR"):
            if os.environ.get(var):
                prefix.append(f"{var}={shlex.quote(os.environ[var])}")
    return prefix, cmd


def conf_value(value: str) -> str:
    """A string setting as postgresql.conf writes it: single quotes, `'` doubled,
    backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def commands(config) -> dict:
    """`walkeeper commands`: the two lines for postgresql.conf, and which of them
    starts with walkeeper-fast (None: not installed beside this walkeeper)."""
    script = fast_script(walkeeper_argv(config)[1])
    return {"archive_command": archive_command(config),
            "restore_command": restore_command(config),
            "walkeeper_fast": script,
            "fast_push": script is not None and config["push.parallel"] > 1,
            "fast_fetch": script is not None and config["fetch.prefetch"] > 0}


def fast_script(cmd: list[str]) -> str | None:
    """walkeeper-fast beside the walkeeper script `cmd` runs; None when there is none
    (walkeeper run as `python -m walkeeper`, or installed without it)."""
    if os.path.basename(cmd[0]) != "walkeeper":
        return None
    # Beside the command, else beside the script a link on PATH points to
    # (bin/install links only walkeeper itself).
    for where in (cmd[0], os.path.realpath(cmd[0])):
        path = os.path.join(os.path.dirname(where), FAST_SCRIPT)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def archive_command(config) -> str:
    prefix, cmd = walkeeper_argv(config)
    plain = " ".join(prefix + [shlex.quote(c) for c in cmd] + ["push", "%p", "%f"])
    script = fast_script(cmd) if config["push.parallel"] > 1 else None
    if script is None:
        return plain
    records = records_dir(config.state_dir, config.cluster)
    return f"{shlex.quote(script)} push {shlex.quote(records)} %p %f || {plain}"


def restore_command(config, only: list[str] | None = None) -> str:
    """only: the stores it may fetch from (`fetch --store NAME` each), None: every store."""
    prefix, cmd = walkeeper_argv(config)
    stores = [a for n in (only or ()) for a in ("--store", n)]
    plain = " ".join(prefix + [shlex.quote(c) for c in cmd + ["fetch"] + stores]
                     + ["%f", "%p"])
    script = fast_script(cmd) if config["fetch.prefetch"] > 0 else None
    if script is None:
        return plain
    spool = spool_dir(config.state_dir, config.cluster)
    return f"{shlex.quote(script)} fetch {shlex.quote(spool)} %f %p || {plain}"
