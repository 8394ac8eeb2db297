"""The click command tree: each command parses, calls walkeeper.commands, writes
through walkeeper.output, and leaves errors and exit codes to walkeeper.cli.run."""

from __future__ import annotations

import os
import sys

import click

from walkeeper import __version__, commands, log
from walkeeper.cli import fetch_command, push_command, run


def _config_path():
    return click.get_current_context().find_root().obj


def _execute(command: str, work, target: str = "") -> None:
    sys.exit(run(command, target, _config_path(), work))


def _write(command: str, data, fmt: str = "text", **context) -> None:
    from walkeeper.output.writers import render

    click.echo(render(command, data, fmt, **context), nl=False)


def _fail_if(command: str, data) -> None:
    error = commands.verdict(command, data)
    if error is not None:
        raise error


def _terminal(progress: bool | None = None) -> bool:
    show = sys.stderr.isatty() if progress is None else progress
    return show and log.level > log.QUIET


JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="walkeeper")
@click.option("--config", "config_path", metavar="PATH",
              help="Config file (default: $WALKEEPER_CONFIG, then "
                   "/etc/walkeeper/walkeeper.toml, else the environment alone).")
@click.option("-v", "--verbose", is_flag=True, help="Detail, and tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(ctx, config_path, verbose, quiet):
    """walkeeper: PostgreSQL WAL archiving and point-in-time recovery.

    \b
    archive_command = 'walkeeper push %p %f'
    restore_command = 'walkeeper fetch %f %p'
    """
    log.level = log.VERBOSE if verbose else log.QUIET if quiet else log.NORMAL
    ctx.obj = config_path


@cli.command()
@click.argument("wal_path")
@click.argument("wal_name")
@click.pass_obj
def push(config_path, wal_path, wal_name):
    """Archive one WAL file durably to every store (archive_command)."""
    sys.exit(push_command(config_path, wal_path, wal_name))


@cli.command()
@click.option("--store", "stores", multiple=True, metavar="NAME",
              help="Try only this store (repeatable; default: every store, in order).")
@click.argument("wal_name")
@click.argument("dest_path")
@click.pass_obj
def fetch(config_path, stores, wal_name, dest_path):
    """Restore one WAL file from the first store with a good copy (restore_command)."""
    sys.exit(fetch_command(config_path, wal_name, dest_path, stores))


@cli.command()
@click.option("--label", help="A label stored with the backup.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's metadata as JSON.")
def basebackup(label, progress, as_json):
    """Take a base backup with pg_basebackup into every store."""
    def work(cfg):
        info = commands.basebackup(cfg, label, _terminal(progress))
        _write("basebackup", info, "json" if as_json else "text")
    _execute("basebackup", work, label or "")


@cli.command("list")
@JSON
def list_(as_json):
    """Base backups, dumps, and WAL ranges per timeline with any gaps."""
    _execute("list", lambda cfg: _write("list", commands.list_(cfg),
                                        "json" if as_json else "text"))


@cli.command()
@click.option("--pgdata", required=True, metavar="DIR",
              help="Where to restore: must not exist or be empty.")
@click.option("--target-time", metavar="TS", help="ISO 8601; no offset: local time.")
@click.option("--target-lsn", metavar="LSN")
@click.option("--target-xid", metavar="XID")
@click.option("--target-name", metavar="NAME", help="A restore point (pg_create_restore_point).")
@click.option("--immediate", is_flag=True, help="Stop as soon as the backup is consistent.")
@click.option("--latest", is_flag=True, help="Replay to the end of the archive.")
@click.option("--target-timeline", default="latest", metavar="latest|current|N",
              show_default=True)
@click.option("--target-action", type=click.Choice(["pause", "promote", "shutdown"]),
              default="pause", show_default=True)
@click.option("--exclusive", is_flag=True, help="Stop just before the target, not after it.")
@click.option("--backup", "backup_id", metavar="ID", help="Use this backup.")
@click.option("--port", type=click.IntRange(1, 65535), metavar="N",
              help="The restored copy's port (default: the source's).")
@click.option("--archive", type=click.Choice(["on", "off"]),
              help="Whether the restored copy archives (default: off, unless DIR is "
                   "the configured [postgres] pgdata).")
@click.option("--dry-run", is_flag=True,
              help="Plan, and read back everything the recovery needs; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def recover(pgdata, target_time, target_lsn, target_xid, target_name, immediate, latest,
            target_timeline, target_action, exclusive, backup_id, port, archive, dry_run,
            as_json):
    """Restore a base backup and configure recovery to a target."""
    def work(cfg):
        plan = commands.recover(
            cfg, pgdata, target_time=target_time, target_lsn=target_lsn,
            target_xid=target_xid, target_name=target_name, immediate=immediate,
            latest=latest, target_timeline=target_timeline, target_action=target_action,
            exclusive=exclusive, backup_id=backup_id, port=port,
            archive=None if archive is None else archive == "on", dry_run=dry_run)
        if as_json:
            _write("recover", plan, "json")
        else:
            _write("recover", plan, dry_run=dry_run, pgdata=pgdata,
                   passphrase_env=cfg["encryption.passphrase_env"])
    _execute("recover", work)


@cli.command()
@click.option("--database", metavar="DB", help="Default: the conninfo's database.")
@click.option("--json", "as_json", is_flag=True)
def dump(database, as_json):
    """Logical backup of one database with pg_dump (custom format)."""
    _execute("dump", lambda cfg: _write("dump", commands.dump(cfg, database),
                                        "json" if as_json else "text"), database or "")


@cli.command("restore-dump")
@click.argument("dump_id")
@click.option("--database", required=True, metavar="DB", help="Restore into this database.")
@click.option("--clean", is_flag=True, help="Drop objects before recreating them.")
def restore_dump(dump_id, database, clean):
    """Verify a dump's checksum, then pg_restore it into DB."""
    _execute("restore-dump", lambda cfg: _write(
        "restore-dump", commands.restore_dump(cfg, dump_id, database, clean)), dump_id)


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@JSON
def expire(dry_run, as_json):
    """Apply [retention]: delete old backups, dumps, and the WAL below the oldest kept."""
    def work(cfg):
        result = commands.expire(cfg, dry_run)
        if as_json:
            _write("expire", result, "json")
        else:
            _write("expire", result, dry_run=dry_run)
    _execute("expire", work)


@cli.command("verify-chain")
@click.option("--store", "store_name", metavar="NAME", help="Check only this store.")
@click.option("--quick", is_flag=True,
              help="Presence, sizes and trailers only; do not read the objects through.")
@JSON
def verify_chain(store_name, quick, as_json):
    """Check every object decodes and verifies, and the WAL chain has no gap."""
    def work(cfg):
        report = commands.verify_chain(cfg, store_name, quick, _terminal())
        _write("verify-chain", report, "json" if as_json else "text")
        _fail_if("verify-chain", report)
    _execute("verify-chain", work, store_name or "")


@cli.command()
@click.option("--from", "from_store", metavar="STORE", help="Copy only from this store.")
@click.option("--to", "to_store", metavar="STORE", help="Copy only into this store.")
@click.option("--dry-run", is_flag=True, help="Verify and list what would be copied.")
@JSON
def sync(from_store, to_store, dry_run, as_json):
    """Copy every verified object a store lacks (or holds corrupt) from another store."""
    def work(cfg):
        result = commands.sync(cfg, from_store, to_store, dry_run, log.info)
        _write("sync", result, "json" if as_json else "text")
        _fail_if("sync", result)
    _execute("sync", work, to_store or "")


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the restored copy (its path is printed).")
@JSON
def drill(keep, as_json):
    """Restore test: restore the newest backup, start it, check it, stop it."""
    _execute("drill", lambda cfg: _write("drill", commands.drill(cfg, keep),
                                         "json" if as_json else "text"))


@cli.command()
@JSON
@click.option("--prometheus", is_flag=True,
              help="Prometheus text format, for node_exporter's textfile collector.")
@click.option("--html", "html_file", metavar="FILE",
              help="Write a self-contained HTML dashboard to FILE (atomically).")
def status(as_json, prometheus, html_file):
    """What an operator's dashboard shows: pushes, lag, backups, drills, failures, stores."""
    if sum(map(bool, (as_json, prometheus, html_file))) > 1:
        raise click.UsageError("give at most one of --json, --prometheus and --html")

    def work(cfg):
        from walkeeper.output.writers import render, write_atomic

        data = commands.status(cfg)
        if html_file:
            write_atomic(html_file, render("status", data, "html"))
            click.echo(f"wrote {os.path.abspath(html_file)}")
            return
        _write("status", data, "json" if as_json else "prometheus" if prometheus else "text")
    _execute("status", work)


@cli.command("commands")
@JSON
def commands_(as_json):
    """archive_command and restore_command for postgresql.conf, for this configuration."""
    _execute("commands", lambda cfg: _write("commands", commands.postgres_commands(cfg),
                                            "json" if as_json else "text"))


@cli.command()
@click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the switched WAL segment to reach every store.")
@JSON
def check(timeout, as_json):
    """End-to-end check: config, stores, PostgreSQL settings, a WAL switch archived."""
    def work(cfg):
        from walkeeper.output.text import check_line

        checks = commands.check(cfg, timeout,
                                None if as_json else lambda c: click.echo(check_line(c)))
        if as_json:
            error = commands.verdict("check", checks)
            _write("check", {"ok": error is None, "checks": [c._asdict() for c in checks]},
                   "json")
        _fail_if("check", checks)
    _execute("check", work)
