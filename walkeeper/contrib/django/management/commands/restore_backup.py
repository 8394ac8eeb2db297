"""manage.py restore_backup: a walkeeper dump, or a .sql / .sql.gz / .dump file."""

from __future__ import annotations

import os
import sys

from django.core.management.base import CommandError
from django.db import connections

from walkeeper import pg
from walkeeper.contrib.django import conf
from walkeeper.contrib.django.commands import WalkeeperCommand
from walkeeper.errors import EXIT_FAILED

FILE_SUFFIXES = (".sql", ".sql.gz", ".gz", ".dump", ".tar", ".backup")


class Command(WalkeeperCommand):
    help = ("Restore the database from a walkeeper dump (its id or name, see list_backups) "
            "or from a file made by pg_dump: plain .sql, .sql.gz, or custom format .dump. "
            "The backup is verified before anything is changed; the restore runs in one "
            "transaction.")
    walkeeper_command = "restore-dump"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("target", metavar="FILE_OR_ID")
        parser.add_argument("--clean", action="store_true",
                            help="Drop what the database holds first (a file: every schema; "
                                 "a walkeeper dump: the objects it contains).")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Do not ask for confirmation.")

    def target(self, options) -> str:
        return options["target"]

    def run(self, cfg, options) -> None:
        from walkeeper.backups import dump, restore_file

        target = options["target"]
        alias = options["database"]
        db = conf.database_name(alias)
        is_file = os.path.exists(target) or target.endswith(FILE_SUFFIXES) or os.sep in target
        if is_file:
            info = restore_file.inspect(target, cfg["postgres.bindir"])   # verified first
            what = f"file {info['path']} ({info['format']})"
        else:
            what = f"walkeeper dump {target}"
        if options["interactive"] and sys.stdin.isatty():
            where = pg.where(cfg["postgres.conninfo"])
            answer = input(f"This restores {what} into database {db!r} ({where})"
                           + (", dropping what it holds first" if options["clean"] else "")
                           + ".\nType 'yes' to continue, or 'no' to cancel: ")
            if answer.strip().lower() != "yes":
                raise CommandError("restore cancelled; nothing was changed", returncode=EXIT_FAILED)
        connections[alias].close()
        if is_file:
            result = restore_file.restore_file(cfg, target, db, options["clean"])
        else:
            result = dump.restore_dump(cfg, target, db, options["clean"])
        if options["as_json"]:
            self.emit_json(result)
        else:
            self.stdout.write(f"restored {what} into database {db!r}")
