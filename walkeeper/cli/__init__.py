"""The command line: parsing, printing, and exit codes in one place.

push and fetch run once per WAL file, so they bypass click (about 25 ms of imports)
through a tiny parser for exactly their synopsis; everything else, `--help`
included, goes through click (walkeeper.cli.app). run() is the one place where an
error becomes a line on stderr and an exit code.
"""

from __future__ import annotations

import os
import sys

from walkeeper import log
from walkeeper.errors import EXIT_ARCHIVE_UNREADABLE, EXIT_FAILED, EXIT_USAGE, WalkeeperError, \
    counts_as_failure, from_os_error

HOT_COMMANDS = ("push", "fetch")


def run(command: str, target: str, config_path: str | None, fn) -> int:
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
    except OSError as exc:  # a path nothing below anticipated: still one line naming it
        if log.level >= log.VERBOSE:
            import traceback

            traceback.print_exc()
        err = from_os_error(exc, fetch=command == "fetch")
        code, line = err.exit_code, err.line()
    except Exception as exc:  # a bug, or an error we did not anticipate
        if log.level >= log.VERBOSE:
            import traceback

            traceback.print_exc()
        code = EXIT_ARCHIVE_UNREADABLE if command == "fetch" else EXIT_FAILED
        line = f"unexpected error: {type(exc).__name__}: {exc} (rerun with -v for details)"
    if cfg is not None and counts_as_failure(command, code):
        from walkeeper import state

        state.record_failure(cfg.state_dir, command, target, line)
    if log.level > log.QUIET or code != EXIT_FAILED or command != "fetch":
        print(f"walkeeper {command}: {line}", file=sys.stderr, flush=True)
    return code


# push and fetch call their modules directly rather than through walkeeper.commands:
# one module less to load, once per WAL segment (commands.push/fetch are the same call).
def push_command(config_path, wal_path, wal_name) -> int:
    def work(cfg):
        from walkeeper.archiving import push as pushing

        pushing.push(cfg, wal_path, wal_name)

    return run("push", wal_name, config_path, work)


def fetch_command(config_path, wal_name, dest, stores=()) -> int:
    def work(cfg):
        from walkeeper.archiving import fetch as fetching

        fetching.fetch(cfg, wal_name, dest, list(stores))

    return run("fetch", wal_name, config_path, work)


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
                return push_command(config_path, *args)
            return fetch_command(config_path, *args, stores)
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

    from walkeeper.cli.app import cli

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
