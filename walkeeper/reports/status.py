"""`walkeeper status`: what an operator's dashboard shows, as data (walkeeper.output
renders it as text, JSON, Prometheus and HTML).

collect() gathers one JSON-ready object (the `status --json` shape of docs/contract.md,
plus what the dashboard draws): the last push and backup (from the state directory,
and from the archive itself when that is newer: push may run as another user with
another state directory), the last drill, recent failures, each store's backups,
bytes and free space, the archive lag, and the archive's WAL coverage, gaps and
recoverable windows. Nothing here fails because a store or the server cannot be
reached: that is what status is for showing.

The output writers (text, JSON, Prometheus, HTML) are in status_writers.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from walkeeper import state
from walkeeper.catalog.reader import merge, read_archive, recoverable_windows, runs, wal_ranges
from walkeeper.config import Config
from walkeeper.errors import ConfigError, OperationFailed, StoreError
from walkeeper.reports.list import read_dumps
from walkeeper.stores import open_store
from walkeeper.stores.registry import location
from walkeeper.times import parse_stored
from walkeeper.wal import Segment, WalKind, parse_wal_name

RECENT_FAILURES = timedelta(hours=24)
MAX_RECENT_FAILURES = 20
# Commands whose failure counter is printed even at zero, so that rate() and
# increase() see the first failure.
COUNTED_COMMANDS = ("push", "fetch", "basebackup", "dump", "drill", "expire", "verify-chain",
                    "check")


# ---------------------------------------------------------------- collecting

def collect(config: Config, now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc).astimezone()
    stores, models, dumps = _stores(config)
    union = merge(models) if models else None
    failures, counts, last_failed = _failures(config.state_dir, now)
    server = _server(config, union)
    return {
        "cluster": config.cluster,
        "generated": now.isoformat(timespec="seconds"),
        "last_push": _last_push(config.state_dir, models),
        "last_backup": _last_backup(config.state_dir, union),
        "last_drill": _last_drill(config.state_dir),
        "failures": failures,
        "failure_counts": counts,
        "last_failure_times": last_failed,
        "stores": stores,
        "archive_lag_bytes": server["lag"],
        "postgres": server["info"],
        "backups": _backups(union, [s["name"] for s in stores]),
        "incomplete_backups": union.incomplete_backups if union else [],
        "wal": _coverage(union) if union else [],
        "windows": recoverable_windows(union) if union else [],
        "warnings": _warnings(config, union, server["info"]),
        "dumps": dumps,
        "last_dump": dumps[0] if dumps else None,
    }


def _warnings(config: Config, union, info: dict) -> list[str]:
    """What an operator must look at that is not a failure: a timeline in the archive
    newer than the one the cluster is on (a restored copy archiving into it)."""
    if union is None or not info.get("reachable") or info.get("error"):
        return []
    from walkeeper import pg

    own = pg.current_timeline(config["postgres.conninfo"], union.system_identifier)
    newer = [t for t in union.timelines() if own is not None and t > own]
    if not newer:
        return []
    return [f"the archive holds timeline {max(newer)}, newer than timeline {own} that the "
            f"cluster is on: a restored copy promoted with archiving on may be writing into "
            f"this archive (recover --latest would follow it; see "
            f"docs/runbook.md)"]


def _stores(config: Config) -> tuple[list[dict], list, list[dict]]:
    """(a row per store, the archive model of each readable store, every complete dump
    newest first: {"id", "name", "database", "time", "stored_bytes": {store: bytes}})."""
    rows, models, all_dumps = [], [], {}
    for cfg in config.stores:
        where = location(cfg)
        row = {"name": cfg.name, "type": cfg.type, "location": where, "reachable": False,
               "error": None,
               "backups": None, "bytes": None, "backup_bytes": None, "wal_bytes": None,
               "dump_bytes": None, "wal_segments": None, "newest_wal": None,
               "free_bytes": None}
        store = None
        try:
            store = open_store(cfg, config.keyring)
            model = read_archive(store, config.cluster)
            dumps = read_dumps(store, config.cluster)
            row["free_bytes"] = store.free_bytes()
        except (StoreError, ConfigError) as exc:
            row["error"] = exc.line() if isinstance(exc, ConfigError) else str(exc)
            rows.append(row)
            continue
        finally:
            if store is not None:
                store.close()
        models.append(model)
        segs = [o for by_no in model.segments.values() for o in by_no.values()]
        backup_bytes = sum(b.stored_bytes.get(cfg.name, 0) for b in model.backups)
        wal_bytes = sum(o.stored_size for o in segs) + sum(o.stored_size for o in model.other)
        dump_bytes = sum(d["stored_bytes"].get(cfg.name, 0) for d in dumps)
        for d in dumps:
            all_dumps.setdefault(d["id"], {**d, "stored_bytes": {}})["stored_bytes"].update(
                d["stored_bytes"])
        newest = _newest_by_position(model)
        row.update(reachable=True, backups=len(model.backups), backup_bytes=backup_bytes,
                   wal_bytes=wal_bytes, dump_bytes=dump_bytes,
                   bytes=backup_bytes + wal_bytes + dump_bytes, wal_segments=len(segs),
                   newest_wal=newest.name if newest else None,
                   newest_wal_time=_from_ts(newest.mtime) if newest else None)
        rows.append(row)
    dumps = sorted(all_dumps.values(), key=lambda d: (str(d["time"]), d["id"]), reverse=True)
    return rows, models, dumps


def _position(name: str | None) -> tuple[int, int] | None:
    """(timeline, segment number) of a segment, .partial or .backup file name; None
    for a history file or anything else. Within a timeline, the name orders as the
    position; across timelines, the newer timeline is the newer WAL."""
    try:
        wal = parse_wal_name(str(name))
    except ValueError:
        return None
    if wal.kind is WalKind.HISTORY or wal.segment is None:
        return None
    return (wal.timeline, int(wal.name[8:24], 16))


def _newest_by_position(model):
    """The segment object furthest along the WAL: the highest timeline, then the
    highest segment on it. Never by file time: a `touch`, or a store copied without
    its times, must not hide an archiving stall."""
    tlis = [t for t, by_no in model.segments.items() if by_no]
    if not tlis:
        return None
    by_no = model.segments[max(tlis)]
    return by_no[max(by_no)]


def _from_ts(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(int(ts), timezone.utc).astimezone().isoformat()


def parse_time(text) -> datetime | None:
    """An ISO 8601 time (state records write +0000 offsets) as an aware datetime;
    naive means UTC (walkeeper.times)."""
    return parse_stored(text)


def _iso(text) -> str | None:
    t = parse_time(text)
    return t.isoformat() if t else None


def _last_push(state_dir: str, models: list) -> dict | None:
    rec = state.read_json(state_dir, "last_push.json")
    out = None
    if rec and rec.get("wal"):
        out = {"name": rec["wal"], "time": _iso(rec.get("time")), "stores": rec.get("stores"),
               "source": "state"}
    newest = None
    for m in models:
        o = _newest_by_position(m)
        if o is not None and (newest is None or _position(o.name) > _position(newest.name)):
            newest = o
    if newest is not None:
        # The archive wins only when it holds WAL further along than this host's record
        # (push may run as another user, with another state directory); the time shown
        # is then that object's archive time.
        recorded = _position(out["name"]) if out else None
        if out is None or recorded is None or _position(newest.name) > recorded:
            out = {"name": newest.name, "time": _from_ts(newest.mtime), "stores": None,
                   "source": "archive"}
    return out


def _last_backup(state_dir: str, union) -> dict | None:
    rec = state.read_json(state_dir, "last_backup.json")
    newest = union.backups_by_stop()[-1] if union and union.backups else None
    if newest is not None:
        recorded = rec if rec and rec.get("id") == newest.id else {}
        return {"id": newest.id, "time": _iso(recorded.get("time")) or newest.stop_time.isoformat(),
                "stop_time": newest.stop_time.isoformat(), "timeline": newest.timeline,
                "size": recorded.get("size") or sum(f.size for f in newest.files)
                or newest.database_bytes,
                "database_bytes": newest.database_bytes,
                "stored_bytes": dict(newest.stored_bytes),
                "stores": sorted(newest.stored_bytes), "source": "archive"}
    if rec and rec.get("id") and union is None:
        # No store could be read: say what this host last did.
        return {"id": rec["id"], "time": _iso(rec.get("time")),
                "stop_time": _iso(rec.get("stop_time")), "timeline": None,
                "size": rec.get("size"), "database_bytes": None,
                "stored_bytes": rec.get("stored_bytes") or {},
                "stores": rec.get("stores") or [], "source": "state"}
    return None


def _last_drill(state_dir: str) -> dict | None:
    rec = state.read_json(state_dir, "last_drill.json")
    if not rec:
        return None
    rec = dict(rec)
    rec["time"] = _iso(rec.get("time"))
    rec["ok"] = bool(rec.get("ok"))
    return rec


def _failures(state_dir: str, now: datetime) -> tuple[list[dict], dict, dict]:
    """(recent failures newest first, {command: count in the log}, {command: last time})."""
    entries = []
    for name in (state.FAILURES + ".1", state.FAILURES):
        try:
            with open(os.path.join(state_dir, name), errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue            # a line cut short by a full disk
            if isinstance(e, dict) and e.get("command"):
                entries.append(e)
    counts: dict[str, int] = {c: 0 for c in COUNTED_COMMANDS}
    last: dict[str, str] = {}
    recent = []
    for e in entries:
        cmd = str(e["command"])
        counts[cmd] = counts.get(cmd, 0) + 1
        t = parse_time(e.get("time"))
        if t is not None:
            last[cmd] = t.isoformat()
            if now - t <= RECENT_FAILURES:
                recent.append({"time": t.isoformat(), "command": cmd,
                               "target": e.get("target") or "", "reason": e.get("reason", "")})
    recent.reverse()
    return recent[:MAX_RECENT_FAILURES], counts, last


def _backups(union, names: list[str]) -> list[dict]:
    if union is None:
        return []
    return [{"id": b.id, "label": b.label, "start_time": b.start_time.isoformat(),
             "stop_time": b.stop_time.isoformat(), "timeline": b.timeline,
             "start_wal": b.start_wal, "stop_wal": b.stop_wal,
             "database_bytes": b.database_bytes,
             "stored_bytes": {n: b.stored_bytes.get(n, 0) for n in names}}
            for b in union.backups_by_stop()]


def _coverage(model) -> list[dict]:
    """wal_ranges of the union (what fetch can find in some store), each with its
    contiguous runs and their archive times, for the dashboard's timeline."""
    size = model.wal_segment_size
    out = []
    for r in wal_ranges(model):
        tli = r["timeline"]
        segs = model.segments[tli]
        r["runs"] = [{"first": Segment.from_number(tli, a, size).name,
                      "last": Segment.from_number(tli, b, size).name,
                      "from_time": _from_ts(segs[a].mtime), "to_time": _from_ts(segs[b].mtime)}
                     for a, b in runs(sorted(segs))]
        out.append(r)
    return out


# ---------------------------------------------------------------- the server

_ARCHIVER_SQL = """
SELECT pg_is_in_recovery(),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       current_setting('archive_mode'),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT coalesce(unit, '') FROM pg_settings WHERE name = 'wal_segment_size'),
       a.last_archived_wal, a.last_archived_time, a.archived_count,
       a.failed_count, a.last_failed_wal, a.last_failed_time
FROM pg_stat_archiver a
"""
_UNITS = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1 << 20, "": 1}


def _server(config: Config, union) -> dict:
    """{"lag": archive lag in bytes or None, "info": what the server said, or its error}."""
    from walkeeper import pg

    try:
        import psycopg

        with pg.connect(config["postgres.conninfo"]) as conn:
            row = conn.execute(_ARCHIVER_SQL).fetchone()
    except OperationFailed as exc:
        return {"lag": None, "info": {"reachable": False, "error": exc.line()}}
    except psycopg.Error as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"lag": None, "info": {"reachable": True, "error": msg}}
    (in_recovery, current, current_wal, archive_mode, segsize, unit, last_wal, last_time,
     archived, failed, failed_wal, failed_time) = row
    size = int(segsize) * _UNITS.get(unit, 1)
    info = {"reachable": True, "error": None, "in_recovery": in_recovery,
            "current_lsn": _lsn(current), "archive_mode": archive_mode,
            "last_archived_wal": last_wal,
            "last_archived_time": last_time.isoformat() if last_time else None,
            "archived_count": archived, "failed_count": failed, "last_failed_wal": failed_wal,
            "last_failed_time": failed_time.isoformat() if failed_time else None}
    lag = None
    if current is not None and archive_mode != "off":
        end = _archived_end(last_wal, size)
        if end is None and union is not None and current_wal:
            end = _archive_end(union, int(current_wal[:8], 16))
        if end is not None:
            current_segment_start = current // size * size
            lag = 0 if end >= current_segment_start else max(0, current - end)
    return {"lag": lag, "info": info}


def _lsn(n: int | None) -> str | None:
    from walkeeper.wal import format_lsn

    return format_lsn(n) if n is not None else None


def _archived_end(name: str | None, size: int) -> int | None:
    """The LSN just past the segment pg_stat_archiver last archived (a .partial or a
    .backup file counts as its segment); None when that was a history file or nothing."""
    if not name:
        return None
    try:
        wal = parse_wal_name(name)
    except ValueError:
        return None
    if wal.kind is WalKind.HISTORY:
        return None
    return (wal.segment.number(size) + 1) * size


def _archive_end(model, timeline: int) -> int | None:
    segs = model.segments.get(timeline)
    if not segs:
        return None
    return (max(segs) + 1) * model.wal_segment_size
