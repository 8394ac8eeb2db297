"""`walkeeper list`: base backups, WAL ranges per timeline and dumps.

list_data gives the `list --json` object of CONTRACT.md; render_text the table a
person reads. Every store is read (each backup's stored size is measured per store
from its objects, never taken from metadata); a store that cannot be read is named
in "store_errors" and the others are still listed.
"""

from __future__ import annotations

from datetime import datetime

from walkeeper.format.crypto import check_key
from walkeeper.catalog.reader import read_archive, read_json, merge, wal_ranges
from walkeeper.errors import CorruptObject, ObjectNotFound, OperationFailed, StoreError
from walkeeper.format.layout import DUMP_META, dump_dir, dump_meta_key, dumps_dir, is_temp
from walkeeper.log import human_bytes
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
        check_key(config.keyring, stores, config.cluster)
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


# ---------------------------------------------------------------- text


def _time(text) -> str:
    if not text:
        return "-"
    try:
        return datetime.fromisoformat(text).isoformat(sep=" ", timespec="seconds")
    except (TypeError, ValueError):
        return str(text)


def _stored(per_store: dict) -> str:
    return ", ".join(f"{n} {human_bytes(v) if v else '-'}" for n, v in per_store.items())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [header, *rows]]


def _gaps(gaps: list) -> str:
    if not gaps:
        return "no gaps"
    return ", ".join(a if a == b else f"{a}..{b}" for a, b in gaps)


def render_text(data: dict) -> str:
    lines = [f"Backups ({len(data['backups'])})"]
    if data["backups"]:
        lines += _table(
            ["ID", "LABEL", "START", "STOP", "START LSN", "STOP LSN", "TLI", "DB SIZE", "STORED"],
            [[b["id"], b["label"] or "-", _time(b["start_time"]), _time(b["stop_time"]),
              b["start_lsn"], b["stop_lsn"], str(b["timeline"]), human_bytes(b["database_bytes"]),
              _stored(b["stored_bytes"])] for b in data["backups"]])
    else:
        lines.append("  none")
    if data.get("incomplete_backups"):
        lines.append("  incomplete (not restorable): " + ", ".join(data["incomplete_backups"]))
    lines += ["", "WAL"]
    if data["wal"]:
        lines += _table(["TLI", "FIRST", "LAST", "SEGMENTS", "GAPS"],
                        [[str(w["timeline"]), w["first"], w["last"], str(w.get("segments", "?")),
                          _gaps(w["gaps"])] for w in data["wal"]])
    else:
        lines.append("  none")
    lines += ["", f"Dumps ({len(data['dumps'])})"]
    if data["dumps"]:
        named = any(d.get("name") for d in data["dumps"])      # Django's create_backup
        lines += _table(["ID", "DATABASE", "TIME", "STORED"] + (["NAME"] if named else []),
                        [[d["id"], str(d["database"]), _time(d["time"]), _stored(d["stored_bytes"])]
                         + ([d.get("name") or "-"] if named else []) for d in data["dumps"]])
    else:
        lines.append("  none")
    for name, msg in data.get("store_errors", {}).items():
        lines.append(f"warning: not listed: {msg}")
    return "\n".join(lines) + "\n"
