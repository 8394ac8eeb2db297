"""`walkeeper list`: base backups, WAL ranges per timeline and dumps.

list_data gives the `list --json` object of docs/contract.md (walkeeper.output.text
turns it into the table a person reads). Every store is read (each backup's stored size is measured per store
from its objects, never taken from metadata); a store that cannot be read is named
in "store_errors" and the others are still listed.
"""

from __future__ import annotations


from walkeeper.format.crypto import verify_passphrase
from walkeeper.catalog.reader import read_archive, read_json, merge, wal_ranges
from walkeeper.errors import CorruptObject, ObjectNotFound, OperationFailed, StoreError
from walkeeper.format.layout import DUMP_META, dump_dir, dump_meta_key, dumps_dir, is_temp
from walkeeper.stores import open_stores

BACKUP_KEYS = ("id", "label", "start_time", "stop_time", "start_lsn", "stop_lsn", "timeline",
               "start_wal", "stop_wal", "pg_version", "system_identifier", "database_bytes")


def read_dumps(store, cluster: str) -> list[dict]:
    """Complete dumps in one store (those with dump.json): id, database, time, and
    stored_bytes {store: bytes measured from the listing}. Damaged metadata is skipped."""
    top = dumps_dir(cluster)
    out = []
    for d in sorted(store.list(top), key=lambda e: e.name):
        if not d.is_dir or d.name.startswith("."):
            continue
        entries = store.list(dump_dir(cluster, d.name))
        if not any(e.name == DUMP_META for e in entries):
            continue
        try:
            meta = read_json(store, dump_meta_key(cluster, d.name))
        except (ObjectNotFound, CorruptObject):
            continue
        measured = sum(e.size for e in entries if not e.is_dir and not is_temp(e.name))
        row = {"id": str(meta.get("id", d.name)), "database": meta.get("database"),
               "time": meta.get("time"), "stored_bytes": {store.name: measured}}
        if meta.get("name"):        # a second handle, e.g. Django's <db>_<YYYYmmdd_HHMMSS>
            row["name"] = str(meta["name"])
        out.append(row)
    return out


def list_data(config) -> dict:
    """The `list --json` object: {"backups", "wal", "dumps"} as CONTRACT.md gives them,
    plus "incomplete_backups" (ids without metadata in every store) and
    "store_errors" ({store: message}, empty when every store was read).
    Raises OperationFailed when no store could be read."""
    names = [s.name for s in config.stores]
    models, dumps, errors = [], {}, {}
    stores = open_stores(config)
    try:
        verify_passphrase(config.keyring, stores, config.cluster)
        for store in stores:
            try:
                model = read_archive(store, config.cluster)
                store_dumps = read_dumps(store, config.cluster)
            except StoreError as exc:
                errors[store.name] = str(exc)
                continue
            models.append(model)
            for d in store_dumps:
                if d["id"] in dumps:
                    dumps[d["id"]]["stored_bytes"].update(d["stored_bytes"])
                else:
                    dumps[d["id"]] = d
    finally:
        for store in stores:
            store.close()
    if not models:
        raise OperationFailed("no store could be read: " + "; ".join(errors.values()))
    union = merge(models)
    backups = []
    for b in union.backups_by_stop():
        row = {k: v for k, v in b.to_json().items() if k in BACKUP_KEYS}
        row["stored_bytes"] = {n: b.stored_bytes.get(n, 0) for n in names}
        backups.append(row)
    for d in dumps.values():
        d["stored_bytes"] = {n: d["stored_bytes"].get(n, 0) for n in names}
    return {
        "backups": backups,
        # WAL ranges from the first store that answered: the primary, normally. A
        # segment only another store holds still shows as a gap here, on purpose:
        # the primary is what an operator restores from first.
        "wal": wal_ranges(models[0]),
        "dumps": sorted(dumps.values(), key=lambda d: (str(d["time"]), d["id"])),
        "incomplete_backups": union.incomplete_backups,
        "store_errors": errors,
    }
