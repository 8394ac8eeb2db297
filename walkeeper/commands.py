"""One function per command: configuration and arguments in, data out.

The CLI, tools, tests and the Django management commands call these; none of them
prints. walkeeper.output renders what they return; verdict() says when a command
that returned its data still failed (verify-chain found problems, a check failed).
Every import is inside its function: push and fetch must not pay for the others.
"""

from __future__ import annotations


def push(config, wal_path: str, wal_name: str) -> None:
    from walkeeper.archiving import push as pushing

    pushing.push(config, wal_path, wal_name)


def fetch(config, wal_name: str, dest: str, stores=()) -> None:
    """stores: names of the only stores to try (recover's plan-bound restore_command)."""
    from walkeeper.archiving import fetch as fetching

    fetching.fetch(config, wal_name, dest, list(stores))


def basebackup(config, label: str | None = None, progress: bool = False):
    from walkeeper.backups import basebackup as backup

    return backup.take_basebackup(config, label, progress)


def list_(config) -> dict:
    from walkeeper.reports import list as listing

    return listing.list_data(config)


TARGET_OPTIONS = ("time", "lsn", "xid", "name", "immediate", "latest")


def recover(config, pgdata: str, *, target_time: str | None = None,
            target_lsn: str | None = None, target_xid: str | None = None,
            target_name: str | None = None, immediate: bool = False, latest: bool = False,
            target_timeline: str | int = "latest", target_action: str = "pause",
            exclusive: bool = False, backup_id: str | None = None, port: int | None = None,
            archive: bool | None = None, dry_run: bool = False):
    """Exactly one target, as the operator typed it; the recovery plan (restored
    into pgdata unless dry_run). port: the copy's; archive: whether the copy archives
    (None: only when pgdata is the configured cluster's). UsageError for a bad or
    missing target."""
    from walkeeper.backups import recover as restore
    from walkeeper.catalog import planner
    from walkeeper.errors import UsageError

    given = {"time": target_time, "lsn": target_lsn, "xid": target_xid,
             "name": target_name, "immediate": immediate or None, "latest": latest or None}
    chosen = [(k, v) for k, v in given.items() if v is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one target: --target-time, --target-lsn, "
                         "--target-xid, --target-name, --immediate or --latest")
    kind, value = chosen[0]
    try:
        target = planner.Target.parse(kind, value if isinstance(value, str) else None)
    except ValueError as exc:
        raise UsageError(f"--target-{kind}: {exc}") from None
    try:
        timeline = planner.parse_target_timeline(target_timeline)
    except ValueError as exc:
        raise UsageError(f"--target-timeline: {exc}") from None
    options = restore.RecoveryOptions(timeline, target_action, not exclusive, port, archive)
    return restore.recover(config, pgdata, target, options, backup_id, dry_run)


def dump(config, database: str | None = None, name: str | None = None) -> dict:
    """name: the dump's name (Django's `<db>_<YYYYmmdd_HHMMSS>`); default none."""
    from walkeeper.backups import dump as dumping

    return dumping.take_dump(config, database, name=name)


def restore_dump(config, dump_id: str, database: str, clean: bool = False) -> dict:
    from walkeeper.backups import dump as dumping

    return dumping.restore_dump(config, dump_id, database, clean)


def expire(config, dry_run: bool = False) -> dict:
    from walkeeper.maintenance import expire as expiring

    return expiring.expire(config, dry_run)


def verify_chain(config, store: str | None = None, quick: bool = False,
                 progress: bool = False):
    from walkeeper.maintenance import verify_chain as verify

    return verify.verify_chain(config, store, quick, progress)


def sync(config, from_store: str | None = None, to_store: str | None = None,
         dry_run: bool = False, progress=None) -> dict:
    """progress(text) is told of each object copied."""
    from walkeeper.maintenance import sync as syncing

    return syncing.sync(config, from_store, to_store, dry_run, progress)


def drill(config, keep: bool = False) -> dict:
    from walkeeper.backups import drill as drilling

    return drilling.run_drill(config, keep)


def postgres_commands(config) -> dict:
    from walkeeper.archiving import hooks

    return hooks.commands(config)


def status(config) -> dict:
    from walkeeper.reports import status as reporting

    return reporting.collect(config)


def check(config, timeout: float = 60.0, report=None) -> list:
    """report(check) is called as each check finishes (for a terminal)."""
    from walkeeper.maintenance import check as checking

    return checking.run_checks(config, timeout, report)


def verdict(command: str, data):
    """The error a command that returned `data` still failed with, or None."""
    if command == "verify-chain":
        from walkeeper.maintenance import verify_chain as verify

        return verify.failure(data)
    if command == "sync":
        from walkeeper.maintenance import sync as syncing

        return syncing.failure(data)
    if command == "check":
        from walkeeper.maintenance import check as checking

        return checking.failure(data)
    return None
