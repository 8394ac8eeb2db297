"""Read-ahead push: completion records for segments pushed before PostgreSQL asks.

PostgreSQL runs archive_command for one segment at a time. When push is called for
segment N inside pg_wal, archive.push also stores the segments already marked
`.ready` in pg_wal/archive_status, in parallel, and writes one record per segment
here once its object is durable in every store. When PostgreSQL later asks for such
a segment, the record is trusted only for the same name and the same file (device,
inode, size, mtime and ctime: PostgreSQL never rewrites a segment once it is ready,
and recycling renames it, which changes its ctime), then consumed. Anything else
falls back to a full push, which compares with the stored copy as usual.

Records live in <state_dir>/readahead/<cluster>/<NAME>.json. This module never
marks anything `.done`: that is PostgreSQL's job.
"""

from __future__ import annotations

import json
import os
import re

MAX_AHEAD = 16          # extra segments per push call: bounds the time one call takes
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_READY = ".ready"


def records_dir(state_dir: str, cluster: str) -> str:
    return os.path.join(state_dir, "readahead", cluster)


def identity(st: os.stat_result) -> dict:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def consume(directory: str, wal_path: str, name: str) -> bool:
    """True when a record says this very file is already durable in every store.

    The record is deleted whether or not it is trusted: a mismatch means the file
    changed, and the full push that follows decides.
    """
    path = os.path.join(directory, name + ".json")
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        rec = None
    try:
        st = os.stat(wal_path)
    except OSError:
        st = None
    trusted = (isinstance(rec, dict) and st is not None and rec.get("name") == name
               and rec.get("file") == identity(st) and bool(rec.get("sha256")))
    try:
        os.unlink(path)
    except OSError:
        pass
    return trusted


def write_record(directory: str, name: str, st: os.stat_result, sha256: str) -> None:
    """Record that `name` (this file) is in every store: temp, fsync, rename.

    The caller fsyncs the directory once after a batch (sync_dir) before it exits,
    that is before PostgreSQL can ask for `name`. A record lost in a crash only
    means a full push later, which compares with the stored copy.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = json.dumps({"name": name, "file": identity(st), "sha256": sha256}).encode()
    tmp = os.path.join(directory, f".{name}.json.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(directory, name + ".json"))


def sync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def candidates(wal_path: str, name: str, directory: str, limit: int) -> list[str]:
    """Segments besides `name` marked ready next to WAL_PATH and not yet recorded.

    Empty unless WAL_PATH's directory holds archive_status/ (that is, it is pg_wal).
    Records of segments no longer ready are pruned: PostgreSQL will not ask for them.
    """
    status = os.path.join(os.path.dirname(os.path.abspath(wal_path)), "archive_status")
    try:
        entries = os.listdir(status)
    except OSError:
        return []
    ready = {e[:-len(_READY)] for e in entries
             if e.endswith(_READY) and _SEGMENT.match(e[:-len(_READY)])}
    try:
        recorded = {e[:-5] for e in os.listdir(directory) if e.endswith(".json")}
    except OSError:
        recorded = set()
    for stale in recorded - ready - {name}:
        try:
            os.unlink(os.path.join(directory, stale + ".json"))
        except OSError:
            pass
    todo = sorted(ready - recorded - {name})
    # The archiver goes oldest first: the segments after N are the ones it asks next.
    after = [n for n in todo if n > name]
    before = [n for n in todo if n < name]
    return (after + before)[:limit]
