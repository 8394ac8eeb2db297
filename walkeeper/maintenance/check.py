"""`walkeeper check`: the whole setup, end to end, one line per check.

The configuration (loading it is the CLI's job: an invalid one never gets here, it
exits 3); each store (write, read back and delete a probe object); the PostgreSQL
connection; wal_level, archive_mode, archive_command (and archive_library, which
would silently take its place); the archiver's own record of failures; then a WAL
switch, waited on until that segment is in every store. A check whose premise
failed is skipped (ok None), never reported as passed.
"""

from __future__ import annotations

import os
import time

from walkeeper.config import Config
from walkeeper.errors import ConfigError, OperationFailed, StoreError
from walkeeper.log import plural
from walkeeper.format.layout import wal_keys
from walkeeper.record import record
from walkeeper.stores import open_store
from walkeeper.wal import parse_wal_name

SWITCH_TIMEOUT = 60.0
POLL = 0.5

# ok: True passed, False failed, None skipped (an earlier check failed)
Check = record("Check", "name ok detail fix", defaults=(None,))


def run_checks(config: Config, timeout: float = SWITCH_TIMEOUT, report=None) -> list[Check]:
    """Every check, in order. report(check), if given, is called as each one ends
    (so that a terminal sees progress while the WAL switch is waited on)."""
    out: list[Check] = []

    def add(c: Check) -> Check:
        out.append(c)
        if report is not None:
            report(c)
        return c

    names = ", ".join(f"{s.name} ({s.type})" for s in config.stores)
    add(Check("config", True, f"{config.path or 'environment only'}; cluster "
                              f"{config.cluster!r}; stores {names}"))
    add(_check_state_dir(config))
    stores_ok = all([add(_check_store(config, s)).ok for s in config.stores])
    if stores_ok:
        add(_check_encryption(config))
    else:
        add(Check("encryption", None, "a store failed its check above"))
    settings = _server_settings(config)
    if isinstance(settings, Check):
        add(settings)
        for name in ("wal_level", "archive_mode", "archive_command", "wal switch"):
            add(Check(name, None, "no connection to PostgreSQL"))
        return out
    add(Check("postgres", True, f"connected to {settings['where']} (PostgreSQL "
                                f"{settings['version']})"))
    add(_basebackup(config, settings))
    archiving = [add(c).ok for c in (_wal_level(settings), _archive_mode(settings),
                                     _archive_command(settings))]
    archiver = _archiver(settings)
    if archiver is not None:
        add(archiver)
    if not stores_ok:
        add(Check("wal switch", None, "a store failed its check above"))
    elif not all(archiving):
        add(Check("wal switch", None, "archiving is not set up (see above)"))
    elif settings["in_recovery"]:
        add(Check("wal switch", None, "the server is a standby in recovery: pg_switch_wal() "
                                      "is for the primary; run check there"))
    else:
        add(_wal_switch(config, timeout))
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


def failure(checks: list[Check]):
    """OperationFailed naming the failed checks, or None when none failed."""
    from walkeeper.errors import OperationFailed

    bad = failed(checks)
    if not bad:
        return None
    return OperationFailed(f"{len(bad)} of {len(checks)} checks failed: "
                           + ", ".join(c.name for c in bad))


def _check_state_dir(config: Config) -> Check:
    d = config.state_dir
    probe = os.path.join(d, f".check-{os.getpid()}")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        with open(probe, "w") as f:
            f.write("probe\n")
        os.unlink(probe)
    except OSError as exc:
        return Check("state_dir", False, f"{d}: {exc.strerror or exc}",
                     "set state_dir to a directory this user can write (failures and the "
                     "records status shows go there)")
    return Check("state_dir", True, f"{d} is writable")


# ---------------------------------------------------------------- stores

def _check_store(config: Config, cfg) -> Check:
    name = f"store {cfg.name}"
    key = f"{config.cluster}/probe/{os.urandom(8).hex()}"
    payload = f"walkeeper check probe {time.time()}\n".encode() + os.urandom(64)
    store = None
    step = "open"
    started = time.monotonic()
    created = False
    try:
        store = open_store(cfg)
        # First-time setup: the one place a missing store root is created (push,
        # basebackup and sync refuse it: a mistyped or unmounted path must fail).
        step = "write"
        create_root = getattr(store, "create_root", None)
        created = bool(create_root()) if create_root is not None else False
        store.put_bytes(key, payload)
        step = "read back"
        reader = store.open(key)
        try:
            got = b""
            while len(got) <= len(payload):
                chunk = reader.read(1 << 16)
                if not chunk:
                    break
                got += chunk
        finally:
            reader.close()
        if got != payload:
            return Check(name, False, f"{store.location}: the probe object read back differs "
                                      f"from what was written ({len(got)} of {len(payload)} "
                                      f"bytes)", "the store corrupts data: check its disk or "
                                                 "server before trusting it with WAL")
        step = "delete"
        store.delete(key)
        if store.exists(key):
            return Check(name, False, f"{store.location}: the probe object {key} is still there "
                                      f"after delete", "check the store's permissions")
    except ConfigError as exc:
        return Check(name, False, exc.line(), "fix the store's settings in the config file")
    except StoreError as exc:
        return Check(name, False, f"{step} failed: {exc}", _store_fix(cfg))
    finally:
        if store is not None:
            store.close()
    ms = (time.monotonic() - started) * 1000
    return Check(name, True, ("created the store's root (first-time setup); " if created else "")
                 + f"write, read back, delete ({store.location}, {ms:.0f} ms)")


def _check_encryption(config: Config) -> Check:
    """The configured key against the archive's (crypto.writer_key: what push does
    before it writes), so that a wrong key shows here and not in the archiver."""
    from walkeeper.format.crypto import writer_key

    stores = []
    try:
        stores = [open_store(s, config.keyring) for s in config.stores]
        key = writer_key(config.keyring, stores, config.cluster)
    except ConfigError as exc:
        return Check("encryption", False, exc.line(),
                     "configure the archive's key in [encryption] (docs/encryption.md)")
    except (StoreError, OperationFailed) as exc:
        return Check("encryption", False, str(exc), "see docs/encryption.md")
    finally:
        for s in stores:
            s.close()
    if key is None:
        return Check("encryption", True, "off: objects are stored unencrypted")
    return Check("encryption", True, f"on ({config.keyring.source()}); the key is the "
                                     f"archive's (key check {key.check.hex()[:8]})")


def _store_fix(cfg) -> str:
    from walkeeper.stores.registry import fix

    return fix(cfg)


# ---------------------------------------------------------------- PostgreSQL

_SETTINGS_SQL = """
SELECT current_setting('server_version'), current_setting('wal_level'),
       current_setting('archive_mode'),
       -- SHOW says "(disabled)" while archive_mode is off; reset_val is the setting.
       coalesce((SELECT reset_val FROM pg_settings WHERE name = 'archive_command'),
                current_setting('archive_command')),
       coalesce(current_setting('archive_library', true), ''), pg_is_in_recovery(),
       a.failed_count, a.last_failed_wal, a.last_failed_time, a.last_archived_time,
       current_setting('server_version_num')::int
FROM pg_stat_archiver a
"""


def _server_settings(config: Config) -> dict | Check:
    from walkeeper import pg

    conninfo = config["postgres.conninfo"]
    try:
        import psycopg

        with pg.connect(conninfo) as conn:
            row = conn.execute(_SETTINGS_SQL).fetchone()
    except OperationFailed as exc:
        return Check("postgres", False, exc.message,
                     "check postgres.conninfo (or the PG* variables) and that the server runs")
    except ConfigError as exc:
        return Check("postgres", False, exc.line(), "fix postgres.conninfo")
    except psycopg.Error as exc:
        return Check("postgres", False, f"connected to {pg.where(conninfo)} but cannot read "
                                        f"its settings: {str(exc).strip().splitlines()[0]}",
                     "connect as a superuser or a member of pg_monitor")
    keys = ("version", "wal_level", "archive_mode", "archive_command", "archive_library",
            "in_recovery", "failed_count", "last_failed_wal", "last_failed_time",
            "last_archived_time", "version_num")
    settings = dict(zip(keys, row))
    settings["where"] = pg.where(conninfo)
    return settings


def _basebackup(config: Config, s: dict) -> Check:
    """Where `basebackup` will compress (backup.compress), and what that means."""
    from walkeeper.backups.basebackup import client_reason

    try:
        why = client_reason(config["backup.compress"], config["compression.algorithm"],
                            {"server_version_num": s["version_num"],
                             "in_recovery": s["in_recovery"]})
    except ConfigError as exc:
        return Check("basebackup", False, exc.message, exc.hint)
    if why is None:
        return Check("basebackup", True, f"compressed by the server with zstd "
                     f"({config['backup.workers']} workers): the backups have no "
                     f"backup_manifest (backup.compress = \"client\" keeps one)")
    if config["compression.algorithm"] != "zstd":
        return Check("basebackup", True, f"stored uncompressed ({why})")
    return Check("basebackup", True, f"compressed by walkeeper ({why}), backup_manifest "
                                     f"included")


def _wal_level(s: dict) -> Check:
    if s["wal_level"] in ("replica", "logical"):
        return Check("wal_level", True, s["wal_level"])
    return Check("wal_level", False, s["wal_level"],
                 "set wal_level = replica in postgresql.conf and restart PostgreSQL")


def _archive_mode(s: dict) -> Check:
    if s["archive_mode"] in ("on", "always"):
        return Check("archive_mode", True, s["archive_mode"])
    return Check("archive_mode", False, s["archive_mode"],
                 "set archive_mode = on in postgresql.conf and restart PostgreSQL")


def _archive_command(s: dict) -> Check:
    cmd = s["archive_command"]
    fix = ("set archive_command = 'walkeeper --config /etc/walkeeper/walkeeper.toml push %p %f' "
           "(or the faster line `walkeeper commands` prints) in postgresql.conf and reload "
           "PostgreSQL")
    if s["archive_library"]:
        return Check("archive_command", False, f"archive_library = {s['archive_library']!r} is "
                                               f"set, so archive_command is not used",
                     "set archive_library = '' and " + fix[4:])
    if not cmd or cmd == "(disabled)":
        return Check("archive_command", False, "empty", fix)
    missing = [w for w in ("walkeeper", "push", "%p", "%f") if w not in cmd]
    if missing:
        return Check("archive_command", False, f"{cmd!r} does not contain "
                                               f"{', '.join(missing)}", fix)
    return Check("archive_command", True, cmd)


def _archiver(s: dict) -> Check | None:
    """pg_stat_archiver: is the archiver failing right now?"""
    failed_at, archived_at = s["last_failed_time"], s["last_archived_time"]
    if not s["failed_count"] or failed_at is None:
        return None
    if archived_at is not None and archived_at > failed_at:
        return Check("archiver", True, f"archiving; {plural(s['failed_count'], 'failed attempt')} "
                                       f"since the statistics were reset, the last at "
                                       f"{failed_at.isoformat(timespec='seconds')} "
                                       f"({s['last_failed_wal']}), archived since")
    return Check("archiver", False, f"the last attempt failed: {s['last_failed_wal']} at "
                                    f"{failed_at.isoformat(timespec='seconds')}, "
                                    f"{plural(s['failed_count'], 'failure')}",
                 "see `walkeeper status` and the PostgreSQL log for the reason; WAL piles up "
                 "in pg_wal until archiving works again")


def _wal_switch(config: Config, timeout: float) -> Check:
    from walkeeper import pg

    try:
        import psycopg

        with pg.connect(config["postgres.conninfo"]) as conn:
            conn.execute("SELECT pg_current_xact_id()")       # something to switch away from
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    except OperationFailed as exc:
        return Check("wal switch", False, exc.message, "check that the server runs")
    except psycopg.Error as exc:
        return Check("wal switch", False, f"pg_switch_wal() failed: "
                                          f"{str(exc).strip().splitlines()[0]}",
                     "run check as a superuser, or GRANT EXECUTE ON FUNCTION pg_switch_wal() "
                     "to this role")
    wal = parse_wal_name(segment)
    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    started = time.monotonic()
    waiting = {s.name: s for s in config.stores}
    errors: dict[str, str] = {}
    opened = {}
    try:
        while True:
            for name, cfg in list(waiting.items()):
                try:
                    store = opened.get(name) or opened.setdefault(name, open_store(cfg))
                    if any(store.exists(k) for k in keys):
                        del waiting[name]
                        errors.pop(name, None)
                except (StoreError, ConfigError) as exc:
                    errors[name] = str(exc)
            elapsed = time.monotonic() - started
            if not waiting:
                return Check("wal switch", True, f"{segment} reached every store in "
                                                 f"{elapsed:.1f} s")
            if elapsed >= timeout:
                break
            time.sleep(POLL)
    finally:
        for store in opened.values():
            store.close()
    detail = (f"{segment} not in {'store' if len(waiting) == 1 else 'stores'} {', '.join(waiting)} after {timeout:.0f} s"
              + "".join(f"; {e}" for e in errors.values()))
    return Check("wal switch", False, detail + _archiver_note(config),
                 "see the PostgreSQL log and `walkeeper status` (failures) for why "
                 "archive_command does not store it; check that archive_command uses this "
                 "config file")


def _archiver_note(config: Config) -> str:
    from walkeeper import pg

    try:
        with pg.connect(config["postgres.conninfo"]) as conn:
            wal, at = conn.execute("SELECT last_failed_wal, last_failed_time "
                                   "FROM pg_stat_archiver").fetchone()
    except Exception:
        return ""
    return f"; pg_stat_archiver: last failed {wal} at {at:%Y-%m-%d %H:%M:%S}" if wal else ""
