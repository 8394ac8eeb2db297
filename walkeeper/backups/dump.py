"""dump and restore-dump: logical backups of one database with pg_dump -Fc.

    pg_dump -Fc  ->  encode once  ->  every store's <cluster>/dumps/<ID>/<DATABASE>.dump.zst
                                      then <cluster>/dumps/<ID>/dump.json (written last)

With zstd, pg_dump's own compression is turned off (-Z 0): zstd compresses better
and faster than zlib, and compressing twice only costs CPU. restore-dump brings the
dump back into a file under state_dir, verified before pg_restore sees a byte.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

from walkeeper import log, pg, state
from walkeeper.backups.basebackup import new_id, stored_size, stream_program, write_metadata
from walkeeper.catalog.reader import read_json
from walkeeper.format.crypto import writer_key
from walkeeper.config import Config
from walkeeper.errors import CorruptObject, ObjectNotFound, OperationFailed, StoreError, \
    UnknownName
from walkeeper.format.layout import dump_file_key, dump_meta_key, dumps_dir, is_temp
from walkeeper.stores import open_store, open_stores
from walkeeper.archiving.transfer import fetch_to_file

_ID_RE = re.compile(r"^\d{8}T\d{6}Z(?:-\d+)?$")


def take_dump(config: Config, database: str | None = None, name: str | None = None) -> dict:
    """pg_dump -Fc of one database (default: the conninfo's) into every store.

    Returns the metadata written to dump.json: id, database, time, key, size,
    stored_bytes (per store), sha256, format; and name when given (a second handle
    for restore_dump, e.g. the Django runbook's <db>_<YYYYmmdd_HHMMSS>).
    """
    conninfo = config["postgres.conninfo"]
    dump_id = ""
    try:
        database = database or pg.default_dbname(conninfo)
        codec = config["compression.algorithm"]
        stores = open_stores(config)
        try:
            dump_id = new_id(stores, dumps_dir(config.cluster))
            key = dump_file_key(config.cluster, dump_id, database, codec)
            clean_conninfo, env = pg.program_env(conninfo, dbname=database)
            argv = [pg.find_program("pg_dump", config["postgres.bindir"]), "-Fc",
                    "--no-password", "-d", clean_conninfo]
            if codec != "none":
                argv[2:2] = ["-Z", "0"]
            seal = writer_key(config.keyring, stores, config.cluster)
            started = datetime.now(timezone.utc)
            trailer, _ = stream_program(argv, env, stores, key, config, seal=seal)
            doc = {"id": dump_id, "database": database, "time": started.isoformat(),
                   "key": key, "format": "pg_dump -Fc", "size": trailer.original_size,
                   "stored_bytes": {s.name: stored_size(trailer) for s in stores},
                   "sha256": trailer.checksum}
            if name:
                doc["name"] = name
            try:
                write_metadata(stores, dump_meta_key(config.cluster, dump_id), doc, seal)
            except BaseException:
                for s in stores:
                    _delete(s, key)
                raise
        finally:
            for s in stores:
                s.close()
    except StoreError as exc:
        raise OperationFailed(f"{exc}; no dump was completed") from None
    state.record_success(config.state_dir, "dump", id=dump_id, database=database,
                         size=doc["size"], stores=list(doc["stored_bytes"]))
    return doc


def _delete(store, key: str) -> None:
    try:
        store.delete(key)
    except StoreError as exc:
        log.warn(f"cannot remove {key} from {store.name}: {exc}")


def list_dumps(store, cluster: str) -> list[dict]:
    """Complete dumps (those with dump.json) in one store, oldest first."""
    out = []
    for entry in store.list(dumps_dir(cluster)):
        if not entry.is_dir or is_temp(entry.name):
            continue
        doc = _read_meta(store, cluster, entry.name)
        if doc is not None:
            out.append(doc)
    return sorted(out, key=lambda d: (d.get("time", ""), d.get("id", "")))


def _read_meta(store, cluster: str, dump_id: str) -> dict | None:
    try:
        doc = read_json(store, dump_meta_key(cluster, dump_id))
        if not {"id", "database", "key", "sha256"} <= doc.keys():
            raise ValueError
        return doc
    except ObjectNotFound:
        return None
    except (ValueError, CorruptObject):
        log.warn(f"store {store.name!r}: {dump_meta_key(cluster, dump_id)} is damaged")
        return None


def restore_dump(config: Config, dump_id: str, database: str, clean: bool = False) -> dict:
    """Verify dump `dump_id`, then pg_restore it into `database` (created if absent).

    Returns {"id", "database", "store", "created"}. Nothing reaches pg_restore
    (and no database is created) unless a store gave a copy matching its checksum.
    """
    state_dir = config.state_dir
    state.ensure_state_dir(state_dir)
    dest = os.path.join(state_dir, f"restore-dump-{os.urandom(4).hex()}.dump")
    try:
        found = _fetch(config, dump_id, dest)
        conninfo = config["postgres.conninfo"]
        created = pg.ensure_database(conninfo, database)
        if created:
            log.info(f"created database {database!r}")
        clean_conninfo, env = pg.program_env(conninfo, dbname=database)
        argv = [pg.find_program("pg_restore", config["postgres.bindir"]), "--no-password",
                "--exit-on-error", "-d", clean_conninfo]
        if clean:
            argv += ["--clean", "--if-exists"]
        output = pg.run(argv + [dest], env)
        if output.strip():
            log.debug(output.strip())
    finally:
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
    state.record_success(config.state_dir, "restore-dump", id=dump_id, database=database)
    return {"id": dump_id, "database": database, "store": found, "created": created}


def _fetch(config: Config, dump_id: str, dest: str) -> str:
    """A verified copy of the dump at dest; returns the store's name."""
    problems: list[str] = []
    known: set[str] = set()
    for n, cfg in enumerate(config.stores, 1):
        more = "; trying the next store" if n < len(config.stores) else ""
        store = open_store(cfg, config.keyring)
        try:
            doc = _read_meta(store, config.cluster, dump_id) if _ID_RE.match(dump_id) else None
            if doc is None:     # a dump's name (take_dump's `name`) works too
                doc = next((d for d in list_dumps(store, config.cluster)
                            if d.get("name") == dump_id), None)
            if doc is None:
                known |= {d["id"] for d in list_dumps(store, config.cluster)}
                continue
            trailer = fetch_to_file(store, doc["key"], dest)
            if trailer.checksum != doc["sha256"]:
                os.unlink(dest)
                raise CorruptObject(f"content sha256 {trailer.checksum} differs from "
                                    f"dump.json's {doc['sha256']}")
            log.debug(f"dump {dump_id} fetched from {store.name} ({store.location})")
            return store.name
        except (CorruptObject, ObjectNotFound) as exc:
            problems.append(f"store {store.name!r}: dump {dump_id} is damaged or incomplete "
                            f"({exc})")
            log.warn(problems[-1] + more)
        except StoreError as exc:
            problems.append(str(exc))
            log.warn(problems[-1] + more)
        finally:
            store.close()
    if problems:
        raise OperationFailed(f"no good copy of dump {dump_id}: {'; '.join(problems)}; "
                              f"nothing was restored")
    ids = ", ".join(sorted(known)) or "none"
    raise UnknownName(f"no dump {dump_id!r} in cluster {config.cluster!r}; known dumps: {ids}",
                      hint="see `walkeeper list`")
