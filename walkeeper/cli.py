"""The command line: parsing, printing, and exit codes in one place.

push and fetch run once per WAL file, so they bypass click (about 25 ms of imports)
through a tiny parser for exactly their synopsis; everything else, `--help`
included, goes through click.
"""

from __future__ import annotations

import sys

from walkeeper import __version__, log
from walkeeper.errors import EXIT_ARCHIVE_UNREADABLE, EXIT_FAILED, EXIT_USAGE, WalkeeperError

HOT_COMMANDS = ("push", "fetch")


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
        from walkeeper import archive

        archive.push(cfg, wal_path, wal_name)

    return _run("push", wal_name, config_path, go)


def _fetch(config_path, wal_name, dest) -> int:
    def go(cfg):
        from walkeeper import archive

        archive.fetch(cfg, wal_name, dest)

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
            if len(args) != 2 or any(x.startswith("-") and x != "-" for x in args):
                return None
            log.level = level
            return (_push if a == "push" else _fetch)(config_path, *args)
        else:
            return None
        i += 1
    return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    code = _fast_path(argv)
    if code is None:
        code = _click_main(argv)
    sys.exit(code)


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
    @click.argument("wal_name")
    @click.argument("dest_path")
    @click.pass_obj
    def fetch(config_path, wal_name, dest_path):
        """Restore one WAL file from the first store with a good copy (restore_command)."""
        sys.exit(_fetch(config_path, wal_name, dest_path))

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
