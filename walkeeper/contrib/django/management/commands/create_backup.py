"""manage.py create_backup: a dump of the database into every store, then retention."""

from __future__ import annotations

import sys
from datetime import datetime

from walkeeper import log
from walkeeper.contrib.django import conf, signals
from walkeeper.contrib.django.commands import WalkeeperCommand
from walkeeper.errors import WalkeeperError


class Command(WalkeeperCommand):
    help = ("Back up the database: a pg_dump (named <db>_<YYYYmmdd_HHMMSS>) stored in every "
            "configured store, then the retention policy (count + daily/weekly/monthly). "
            "--base takes a walkeeper base backup instead.")

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--upload-to-sftp", action="store_true",
                            help="Store in the SFTP server too, even if BACKUP_SFTP_ENABLED "
                                 "is off.")
        parser.add_argument("--base", action="store_true",
                            help="A base backup of the whole cluster (pg_basebackup) instead "
                                 "of a dump, for point-in-time recovery.")

    def config_options(self, options) -> dict:
        return {"sftp": options["upload_to_sftp"]}

    def command_name(self, options) -> str:
        return "basebackup" if options["base"] else "dump"

    def target(self, options) -> str:
        return options["database"]

    def _send(self, signal, **kwargs) -> None:
        for receiver, result in signal.send_robust(sender=self.__class__, **kwargs):
            if isinstance(result, Exception):
                log.warn(f"a {signal_name(signal)} receiver ({receiver!r}) failed: {result}")

    def run(self, cfg, options) -> None:
        from walkeeper.backups import basebackup, dump
        from walkeeper.maintenance import expire

        alias = options["database"]
        kind = "base" if options["base"] else "dump"
        db = conf.database_name(alias)
        about = {"kind": kind, "database": db, "alias": alias}
        self._send(signals.backup_started, **about)
        show = self.progress(options)
        try:
            if kind == "base":
                info = basebackup.take_basebackup(cfg, f"django {db}", show).to_json()
            else:
                name = _unique(cfg, f"{db}_{datetime.now():%Y%m%d_%H%M%S}")
                if show:
                    print(f"dumping {db} into {', '.join(s.name for s in cfg.stores)} ...",
                          file=sys.stderr, flush=True)
                info = dump.take_dump(cfg, db, name=name)
        except WalkeeperError as exc:
            self._send(signals.backup_failed, **about, error=exc.line(), exit_code=exc.exit_code)
            raise
        self._send(signals.backup_finished, **about, info=info)
        try:
            retention = expire.expire(cfg)
        except WalkeeperError as exc:
            exc.message = f"backup {info['id']} is complete, but retention failed: {exc.message}"
            raise
        if options["as_json"]:
            self.emit_json({"kind": kind, "backup": info, "retention": retention})
            return
        what = f"dump {info.get('name') or info['id']} of {db}" if kind == "dump" \
            else f"base backup {info['id']}"
        stored = ", ".join(f"{log.human_bytes(n)} in {s}" for s, n in info["stored_bytes"].items())
        gone = len(retention["deleted_dumps"]) + len(retention["deleted_backups"])
        self.stdout.write(f"{what} complete: {stored}"
                          + (f"; retention removed {log.plural(gone, 'older backup')}" if gone else ""))


def _unique(cfg, name: str) -> str:
    """name, or name_2, name_3... when a dump already has it (two in one second)."""
    from walkeeper.backups.dump import list_dumps
    from walkeeper.errors import StoreError
    from walkeeper.stores import open_store

    store = open_store(cfg.stores[0], cfg.keyring)
    try:
        taken = {d.get("name") for d in list_dumps(store, cfg.cluster)}
    except StoreError:
        return name          # the dump itself will say what is wrong with the store
    finally:
        store.close()
    n, candidate = 1, name
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def signal_name(signal) -> str:
    for name in ("backup_started", "backup_finished", "backup_failed"):
        if getattr(signals, name) is signal:
            return name
    return "signal"
