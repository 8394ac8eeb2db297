"""The command line: parsing, printing, and exit codes in one place.

push and fetch run once per WAL file, so they bypass click (about 25 ms of imports)
through a tiny parser for exactly their synopsis; everything else, `--help`
included, goes through click.
"""

from __future__ import annotations

import os
import sys

from walkeeper import __version__, log
from walkeeper.errors import EXIT_ARCHIVE_UNREADABLE, EXIT_FAILED, EXIT_USAGE, WalkeeperError

HOT_COMMANDS = ("push", "fetch")


def _describe_plan(plan, dry_run: bool) -> str:
    from walkeeper.wal import format_lsn

    b = plan.backup
    head = "plan (dry run, nothing written)" if dry_run else "recovery plan"
    return "\n".join([
        f"{head}:",
        f"  backup      {b.id} (stop {b.stop_time.isoformat()}, LSN {format_lsn(b.stop_lsn)}, "
        f"timeline {b.timeline})",
        f"  timelines   {' -> '.join(map(str, plan.timelines))}",
        f"  WAL         {plan.first_wal} .. {plan.last_wal} ({len(plan.segments)} segments)",
        f"  to fetch    {log.human_bytes(plan.bytes)}",
        f"  target      {plan.target.kind}"
        + (f" {plan.target.value}" if plan.target.value is not None else ""),
    ])


def _describe_copy(plan, pgdata: str, dry_run: bool) -> str:
    """What recover chose for the restored copy: stores, port, archiving."""
    lines = []
    if plan.skipped_stores:
        lines.append(f"  stores      only {', '.join(plan.stores)}: "
                     f"{', '.join(plan.skipped_stores)} could not be read, so the plan and "
                     f"restore_command use only what was read (recovery can finish from it)")
        lines.append(f"              to fetch from every store once it is back, set in "
                     f"{pgdata}/postgresql.auto.conf:")
        lines.append(f"                restore_command = '{plan.widen_command}'")
        lines.append(f"              then: pg_ctl -D {pgdata} reload")
    else:
        lines.append(f"  stores      {', '.join(plan.stores)}")
    lines.append(f"  port        {plan.port}" if plan.port is not None else
                 "  port        the source's (give --port N to run it beside the source)")
    lines.append("  archiving   on: once promoted, the copy archives into this archive with "
                 "walkeeper push (for a copy that replaces the source)" if plan.archive else
                 "  archiving   off (archive_mode = off; --archive on if this copy "
                 "replaces the source)")
    if dry_run:
        lines.append("  read back   every object above has a good copy")
    return "\n".join(lines)


def _run(command: str, target: str, config_path: str | None, fn) -> int:
    """Load the config, run fn(config), map errors to one line and an exit code."""
    from walkeeper import config as config_mod

    cfg = None
    try:
        cfg = config_mod.load(config_path)
        fn(cfg)
        return 0
    except WalkeeperError as exc:
        code = exc.exit_code
        line = exc.line()
    except KeyboardInterrupt:
        code, line = EXIT_FAILED, "interrupted"
    except Exception as exc:  # a bug, or an error we did not anticipate
        if log.level >= log.VERBOSE:
            import traceback

            traceback.print_exc()
        code = EXIT_ARCHIVE_UNREADABLE if command == "fetch" else EXIT_FAILED
        line = f"unexpected error: {type(exc).__name__}: {exc} (rerun with -v for details)"
    # Not-found is routine for fetch (PostgreSQL probes for history files), so it
    # is not recorded as a failure.
    if cfg is not None and not (command == "fetch" and code == EXIT_FAILED):
        from walkeeper import state

        state.record_failure(cfg.state_dir, command, target, line)
    if log.level > log.QUIET or code != EXIT_FAILED or command != "fetch":
        print(f"walkeeper {command}: {line}", file=sys.stderr, flush=True)
    return code


def _push(config_path, wal_path, wal_name) -> int:
    def go(cfg):
        from walkeeper.archiving import push as pushing

        pushing.push(cfg, wal_path, wal_name)

    return _run("push", wal_name, config_path, go)


def _fetch(config_path, wal_name, dest, stores=()) -> int:
    def go(cfg):
        from walkeeper.archiving import fetch as fetching

        fetching.fetch(cfg, wal_name, dest, list(stores))

    return _run("fetch", wal_name, config_path, go)


def _fast_path(argv: list[str]) -> int | None:
    """Handle `[--config P] [-v|-q] push|fetch A B`; None: let click do it."""
    config_path = None
    level = log.NORMAL
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-v", "--verbose"):
            level = log.VERBOSE
        elif a in ("-q", "--quiet"):
            level = log.QUIET
        elif a == "--config" and i + 1 < len(argv):
            config_path = argv[i + 1]
            i += 1
        elif a.startswith("--config="):
            config_path = a.split("=", 1)[1]
        elif a in HOT_COMMANDS:
            args = argv[i + 1:]
            stores: list[str] = []
            while a == "fetch" and args and args[0].startswith("--store"):
                if args[0] == "--store" and len(args) > 1:
                    stores.append(args[1])
                    args = args[2:]
                elif args[0].startswith("--store="):
                    stores.append(args[0].split("=", 1)[1])
                    args = args[1:]
                else:
                    return None
            if len(args) != 2 or any(x.startswith("-") and x != "-" for x in args):
                return None
            log.level = level
            if a == "push":
                return _push(config_path, *args)
            return _fetch(config_path, *args, stores)
        else:
            return None
        i += 1
    return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    code = _fast_path(argv)
    if code is not None:
        # push and fetch leave nothing to tear down (files are closed, threads joined,
        # stores closed): exit without the interpreter's ~2 ms of module teardown.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(_click_main(argv))


def _click_main(argv: list[str]) -> int:
    import click

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
        sys.exit(_push(config_path, wal_path, wal_name))

    @cli.command()
    @click.option("--store", "stores", multiple=True, metavar="NAME",
                  help="Try only this store (repeatable; default: every store, in order).")
    @click.argument("wal_name")
    @click.argument("dest_path")
    @click.pass_obj
    def fetch(config_path, stores, wal_name, dest_path):
        """Restore one WAL file from the first store with a good copy (restore_command)."""
        sys.exit(_fetch(config_path, wal_name, dest_path, stores))

    def run(command: str, fn, target: str = "") -> None:
        sys.exit(_run(command, target, ctx_config(), fn))

    def ctx_config():
        return click.get_current_context().find_root().obj

    def emit_json(data: dict) -> None:
        import json

        click.echo(json.dumps(data, indent=2, default=str))

    @cli.command()
    @click.option("--label", help="A label stored with the backup.")
    @click.option("--progress/--no-progress", default=None,
                  help="Progress bar (default: on a terminal).")
    @click.option("--json", "as_json", is_flag=True, help="Print the backup's metadata as JSON.")
    def basebackup(label, progress, as_json):
        """Take a base backup with pg_basebackup into every store."""
        def go(cfg):
            from walkeeper.backups import basebackup as backup

            show = sys.stderr.isatty() if progress is None else progress
            info = backup.take_basebackup(cfg, label, show and log.level > log.QUIET)
            if as_json:
                emit_json(info.to_json())
            else:
                click.echo(f"backup {info.id} complete: {info.start_wal} .. {info.stop_wal}, "
                           f"{log.human_bytes(info.database_bytes)} of data, stored as "
                           + ", ".join(f"{log.human_bytes(n)} in {s}" for s, n in info.stored_bytes.items()))
        run("basebackup", go, label or "")

    @cli.command("list")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def list_(as_json):
        """Base backups, dumps, and WAL ranges per timeline with any gaps."""
        def go(cfg):
            from walkeeper.reports import list as listing

            data = listing.list_data(cfg)
            if as_json:
                emit_json(data)
            else:
                click.echo(listing.render_text(data), nl=False)
        run("list", go)

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
        from walkeeper.errors import UsageError

        chosen = [(k, v) for k, v in (("time", target_time), ("lsn", target_lsn),
                                      ("xid", target_xid), ("name", target_name),
                                      ("immediate", immediate or None),
                                      ("latest", latest or None)) if v is not None]
        if len(chosen) != 1:
            raise click.UsageError("give exactly one target: --target-time, --target-lsn, "
                                   "--target-xid, --target-name, --immediate or --latest")
        if target_timeline not in ("latest", "current") and not target_timeline.isdigit():
            raise click.UsageError(f"--target-timeline {target_timeline!r}: use latest, "
                                   f"current or a timeline number")

        def go(cfg):
            from walkeeper.catalog import planner
            from walkeeper.backups import recover as restore

            kind, value = chosen[0]
            try:
                target = planner.Target.parse(kind, value if isinstance(value, str) else None)
            except ValueError as exc:
                raise UsageError(f"--target-{kind}: {exc}") from None
            tl = int(target_timeline) if target_timeline.isdigit() else target_timeline
            options = restore.RecoveryOptions(tl, target_action, not exclusive, port,
                                              None if archive is None else archive == "on")
            plan = restore.recover(cfg, pgdata, target, options, backup_id, dry_run)
            if as_json:
                emit_json(plan.to_json())
                return
            click.echo(_describe_plan(plan, dry_run))
            click.echo(_describe_copy(plan, os.path.abspath(pgdata), dry_run))
            if not dry_run:
                var = cfg["encryption.passphrase_env"]
                env = f"{var}=... " if var else ""
                click.echo(f"restored into {os.path.abspath(pgdata)}; start it with: "
                           f"{env}pg_ctl -D {os.path.abspath(pgdata)} start"
                           + (f" (restore_command needs ${var})" if var else ""))
        run("recover", go)

    @cli.command()
    @click.option("--database", metavar="DB", help="Default: the conninfo's database.")
    @click.option("--json", "as_json", is_flag=True)
    def dump(database, as_json):
        """Logical backup of one database with pg_dump (custom format)."""
        def go(cfg):
            from walkeeper.backups import dump as dump_mod

            info = dump_mod.take_dump(cfg, database)
            if as_json:
                emit_json(info)
            else:
                click.echo(f"dump {info['id']} of {info['database']} complete")
        run("dump", go, database or "")

    @cli.command("restore-dump")
    @click.argument("dump_id")
    @click.option("--database", required=True, metavar="DB", help="Restore into this database.")
    @click.option("--clean", is_flag=True, help="Drop objects before recreating them.")
    def restore_dump(dump_id, database, clean):
        """Verify a dump's checksum, then pg_restore it into DB."""
        def go(cfg):
            from walkeeper.backups import dump as dump_mod

            dump_mod.restore_dump(cfg, dump_id, database, clean)
            click.echo(f"dump {dump_id} restored into {database}")
        run("restore-dump", go, dump_id)

    @cli.command()
    @click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def expire(dry_run, as_json):
        """Apply [retention]: delete old backups, dumps, and the WAL below the oldest kept."""
        def go(cfg):
            from walkeeper.maintenance import expire as expire_mod

            result = expire_mod.expire(cfg, dry_run)
            if as_json:
                emit_json(result)
                return
            verb = "would delete" if dry_run else "deleted"
            w = len(verb)
            lines = ["expire (dry run, nothing deleted):" if dry_run else "expire:"]
            lines += [f"  {'keep':<{w}}  backup {k['id']}  ({', '.join(k['reasons'])})"
                      for k in result["kept"]]
            lines += [f"  {verb}  backup {i}" for i in result["deleted_backups"]]
            lines += [f"  {verb}  incomplete backup {i} (left by an interrupted run)"
                      for i in result["deleted_incomplete"]]
            lines += [f"  {'keep':<{w}}  dump {k['id']}  ({', '.join(k['reasons'])})"
                      for k in result["kept_dumps"]]
            lines += [f"  {verb}  dump {i}" for i in result["deleted_dumps"]]
            cut = ", ".join(f"{s} on timeline {t}" for t, s in result["wal_cut"].items())
            lines.append(f"  WAL: {verb} {result['deleted_wal']} file(s)"
                         + (f", everything below {cut}" if cut else ""))
            click.echo("\n".join(lines))
        run("expire", go)

    @cli.command("verify-chain")
    @click.option("--store", "store_name", metavar="NAME", help="Check only this store.")
    @click.option("--quick", is_flag=True,
                  help="Presence, sizes and trailers only; do not read the objects through.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def verify_chain(store_name, quick, as_json):
        """Check every object decodes and verifies, and the WAL chain has no gap."""
        def go(cfg):
            from walkeeper.maintenance import verify_chain as verify
            from walkeeper.errors import OperationFailed

            show = sys.stderr.isatty() and log.level > log.QUIET
            report = verify.verify_chain(cfg, store_name, quick, show)
            if as_json:
                emit_json(report.to_json())
            else:
                click.echo(verify.render_text(report), nl=False)
            if not report.ok:
                kinds: dict[str, int] = {}
                for p in report.problems:
                    kinds[p.kind] = kinds.get(p.kind, 0) + 1
                raise OperationFailed(
                    f"{len(report.problems)} problem(s) found ("
                    + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")",
                    hint="see the list above" if not as_json else "see \"problems\"")
        run("verify-chain", go, store_name or "")

    @cli.command()
    @click.option("--from", "from_store", metavar="STORE", help="Copy only from this store.")
    @click.option("--to", "to_store", metavar="STORE", help="Copy only into this store.")
    @click.option("--dry-run", is_flag=True, help="Verify and list what would be copied.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def sync(from_store, to_store, dry_run, as_json):
        """Copy every verified object a store lacks (or holds corrupt) from another store."""
        def go(cfg):
            from walkeeper.errors import OperationFailed
            from walkeeper.maintenance import sync as sync_mod

            result = sync_mod.sync(cfg, from_store, to_store, dry_run, log.info)
            if as_json:
                emit_json(result)
            else:
                click.echo(sync_mod.render_text(result), nl=False)
            if not result["ok"]:
                raise OperationFailed(
                    f"{len(result['unrecoverable'])} object(s) without a good copy anywhere, "
                    f"{len(result['store_errors'])} store(s) not reachable",
                    hint="see \"unrecoverable\" and \"store_errors\"" if as_json
                    else "see the list above")
        run("sync", go, to_store or "")

    @cli.command()
    @click.option("--keep", is_flag=True, help="Keep the restored copy (its path is printed).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def drill(keep, as_json):
        """Restore test: restore the newest backup, start it, check it, stop it."""
        def go(cfg):
            from walkeeper.backups import drill as drill_mod

            result = drill_mod.run_drill(cfg, keep)
            if as_json:
                emit_json(result)
                return
            click.echo(f"drill passed: backup {result['backup']} restored and recovered to the "
                       f"end of the archive in {result['seconds']:.1f} s (until it accepted "
                       f"connections with recovery finished); {len(result['databases'])} "
                       f"database(s) checked"
                       + ("; [drill] sql ran" if result["sql"] else ""))
            if result["kept"]:
                click.echo(f"restored copy kept in {result['kept']} (stopped; start it with: "
                           f"pg_ctl -D {result['kept']} start)")
        run("drill", go)

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    @click.option("--prometheus", is_flag=True,
                  help="Prometheus text format, for node_exporter's textfile collector.")
    @click.option("--html", "html_file", metavar="FILE",
                  help="Write a self-contained HTML dashboard to FILE (atomically).")
    def status(as_json, prometheus, html_file):
        """What an operator's dashboard shows: pushes, lag, backups, drills, failures, stores."""
        if sum(map(bool, (as_json, prometheus, html_file))) > 1:
            raise click.UsageError("give at most one of --json, --prometheus and --html")

        def go(cfg):
            from walkeeper.reports import status as status_mod
            from walkeeper.reports.writers import WRITERS, write_atomic

            data = status_mod.collect(cfg)
            if html_file:
                write_atomic(html_file, WRITERS["html"](data))
                click.echo(f"wrote {os.path.abspath(html_file)}")
                return
            fmt = "json" if as_json else "prometheus" if prometheus else "text"
            click.echo(WRITERS[fmt](data), nl=False)
        run("status", go)

    @cli.command()
    @click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
                  help="How long to wait for the switched WAL segment to reach every store.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object, stable for scripts.")
    def check(timeout, as_json):
        """End-to-end check: config, stores, PostgreSQL settings, a WAL switch archived."""
        def go(cfg):
            from walkeeper.maintenance import check as check_mod
            from walkeeper.errors import OperationFailed

            def show(c):
                click.echo(check_mod.render_line(c))

            checks = check_mod.run_checks(cfg, timeout, None if as_json else show)
            bad = check_mod.failed(checks)
            if as_json:
                emit_json({"ok": not bad, "checks": [c._asdict() for c in checks]})
            if bad:
                raise OperationFailed(f"{len(bad)} of {len(checks)} checks failed: "
                                      + ", ".join(c.name for c in bad))
        run("check", go)

    try:
        cli.main(args=argv, prog_name="walkeeper", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.Abort:
        return EXIT_FAILED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
