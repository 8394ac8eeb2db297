"""What every walkeeper management command shares: --json and --database, walkeeper's
messages at Django's verbosity, and one CommandError carrying the CLI's exit code
(CONTRACT.md: 1 failed, 2 bad input, 3 configuration) with the CLI's one line.
A failure is recorded in walkeeper's state directory, as the CLI records it, so
the dashboard's "failures" shows it."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from walkeeper import log, state
from walkeeper.contrib.django import conf
from walkeeper.errors import EXIT_FAILED, WalkeeperError


class WalkeeperCommand(BaseCommand):
    walkeeper_command = ""        # the CLI's name, for the failure log
    requires_system_checks: list = []   # a backup must not wait on unrelated checks

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="One JSON object on stdout, stable for scripts.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, metavar="ALIAS",
                            help="The DATABASES alias (default: %(default)s).")

    # subclasses: run(cfg, options) -> None; config_options(options) -> load() kwargs
    def config_options(self, options) -> dict:
        return {}

    def target(self, options) -> str:
        return ""

    def command_name(self, options) -> str:
        return self.walkeeper_command

    def progress(self, options) -> bool:
        """Progress output: on a terminal, unless --json or -v 0."""
        return sys.stderr.isatty() and not options["as_json"] and options["verbosity"] >= 1

    def emit_json(self, data) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))

    def write(self, command: str, data, options) -> None:
        """data as the CLI writes it: walkeeper.output's text, or JSON with --json."""
        from walkeeper.output.writers import render

        self.stdout.write(render(command, data, "json" if options["as_json"] else "text"),
                          ending="")

    def handle(self, *args, **options):
        previous = log.level
        v = options["verbosity"]
        log.level = log.QUIET if v == 0 else log.VERBOSE if v >= 2 else log.NORMAL
        cfg = None
        try:
            cfg = conf.load(options["database"], **self.config_options(options))
            self.run(cfg, options)
        except WalkeeperError as exc:
            self.failed(cfg, options, exc.line())
            raise CommandError(exc.line(), returncode=exc.exit_code) from None
        except KeyboardInterrupt:
            self.failed(cfg, options, "interrupted")
            raise CommandError("interrupted", returncode=EXIT_FAILED) from None
        finally:
            log.level = previous

    def failed(self, cfg, options, line: str) -> None:
        if cfg is not None and self.command_name(options):
            state.record_failure(cfg.state_dir, self.command_name(options), self.target(options),
                                 line)

    def run(self, cfg, options) -> None:
        raise NotImplementedError
