"""Output writers of `walkeeper status`, one signature each: status data -> text.

WRITERS["text"] is the short dashboard for a terminal, "json" the `status --json`
object, "prometheus" the text format for node_exporter's textfile collector (HELP and
TYPE lines; a value that is unknown is left out, so absent() can alert on it), and
"html" the self-contained page of walkeeper.reports.dashboard.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from walkeeper.errors import OperationFailed, UsageError
from walkeeper.log import human_bytes, plural
from walkeeper.reports.list import backup_size_text
from walkeeper.reports.status import RECENT_FAILURES, parse_time


def render_json(data: dict) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def _age(text, now: datetime) -> str:
    t = parse_time(text)
    if t is None:
        return ""
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _when(text) -> str:
    t = parse_time(text)
    return t.isoformat(sep=" ", timespec="seconds") if t else "-"


def render_text(data: dict) -> str:
    now = parse_time(data["generated"]) or datetime.now(timezone.utc)
    lines = [f"walkeeper status of cluster {data['cluster']} at {_when(data['generated'])}", ""]
    p = data["last_push"]
    lines.append("last push     " + (f"{p['name']} at {_when(p['time'])} ({_age(p['time'], now)})"
                                     if p else "never"))
    lag = data["archive_lag_bytes"]
    srv = data["postgres"]
    if lag is not None:
        lag_text = "caught up" if lag == 0 else f"{human_bytes(lag)} not yet archived"
    elif srv.get("error"):
        lag_text = f"unknown ({srv['error']})"
    else:
        lag_text = "unknown (archive_mode is off)" if srv.get("archive_mode") == "off" else "unknown"
    lines.append(f"archive lag   {lag_text}")
    if srv.get("failed_count") and srv.get("last_failed_time") and \
            (srv.get("last_archived_time") or "") < srv["last_failed_time"]:
        lines.append(f"archiver      FAILING: {srv['last_failed_wal']} failed at "
                     f"{_when(srv['last_failed_time'])}")
    b = data["last_backup"]
    lines.append("last backup   " + (
        f"{b['id']} at {_when(b['time'])} ({_age(b['time'], now)}), "
        f"{backup_size_text(b.get('database_bytes'), b.get('stored_bytes') or {})}" if b else "none"))
    d = data["last_drill"]
    if d is None:
        lines.append("last drill    never")
    elif d["ok"]:
        lines.append(f"last drill    passed at {_when(d['time'])} ({_age(d['time'], now)}): backup "
                     f"{d.get('backup')} ready in {float(d.get('seconds') or 0):.1f} s")
    else:
        lines.append(f"last drill    FAILED at {_when(d['time'])}: {d.get('reason') or '?'}")
    for w in data["windows"]:
        lines.append(f"recoverable   timeline {w['timeline']}: {_when(w['from_time'])} .. "
                     f"{_when(w['to_time'])}")
    if not data["windows"]:
        lines.append("recoverable   nothing: no backup with its WAL")
    for r in data["wal"]:
        if r["gaps"]:
            lines.append(f"WAL gaps      timeline {r['timeline']}: " + ", ".join(
                a if a == b else f"{a}..{b}" for a, b in r["gaps"]))
    lines += ["", "stores"]
    for s in data["stores"]:
        if not s["reachable"]:
            lines.append(f"  {s['name']:<12} UNREACHABLE: {s['error']}")
            continue
        lines.append(f"  {s['name']:<12} {plural(s['backups'], 'backup')}, {human_bytes(s['bytes'])} "
                     f"stored, {human_bytes(s['free_bytes'])} free, newest WAL "
                     f"{s['newest_wal'] or '-'}")
    recent = data["failures"]
    lines += ["", f"failures in the last {int(RECENT_FAILURES.total_seconds() // 3600)} h: "
                  f"{len(recent)}" + (" (newest first)" if recent else "")]
    for f in recent[:10]:
        target = f" {f['target']}" if f["target"] else ""
        lines.append(f"  {_when(f['time'])}  {f['command']}{target}: {f['reason']}")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _ts(text) -> float | None:
    t = parse_time(text)
    return t.timestamp() if t else None


class _Metrics:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str, samples) -> None:
        """samples: [(labels dict, value)]; a None value is left out, and a family
        without samples is left out whole (absent() then alerts on it)."""
        samples = [(labels, v) for labels, v in samples if v is not None]
        if not samples:
            return
        self.lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for labels, v in samples:
            lab = ",".join(f'{k}="{_label(x)}"' for k, x in labels.items())
            value = repr(float(v)) if isinstance(v, float) else str(int(v))
            self.lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")


def render_prometheus(data: dict) -> str:
    m = _Metrics()
    one = lambda v: [({}, v)]        # noqa: E731
    p, b, d = data["last_push"], data["last_backup"], data["last_drill"]
    m.family("walkeeper_status_timestamp_seconds", "gauge",
             "When walkeeper status wrote these metrics.", one(_ts(data["generated"])))
    m.family("walkeeper_last_push_timestamp_seconds", "gauge",
             "Time of the last successful WAL push.", one(_ts(p["time"]) if p else None))
    m.family("walkeeper_last_push_info", "gauge", "The WAL file pushed last.",
             [({"wal": p["name"]}, 1)] if p else [])
    m.family("walkeeper_archive_lag_bytes", "gauge",
             "WAL bytes written by the server and not yet archived (0: caught up).",
             one(data["archive_lag_bytes"]))
    m.family("walkeeper_postgres_up", "gauge", "1 if the server answered status' query.",
             one(1 if data["postgres"].get("reachable") and not data["postgres"].get("error")
                 else 0))
    m.family("walkeeper_last_backup_timestamp_seconds", "gauge",
             "Completion time of the newest complete base backup.",
             one(_ts(b["time"]) if b else None))
    m.family("walkeeper_last_backup_size_bytes", "gauge",
             "Size of the newest base backup (uncompressed tar).", one(b["size"] if b else None))
    m.family("walkeeper_last_drill_success", "gauge",
             "1 if the last restore drill passed, 0 if it failed.",
             one((1 if d["ok"] else 0) if d else None))
    m.family("walkeeper_last_drill_duration_seconds", "gauge",
             "Measured recovery time of the last restore drill.",
             one(float(d["seconds"]) if d and d.get("seconds") is not None else None))
    m.family("walkeeper_last_drill_timestamp_seconds", "gauge", "Time of the last restore drill.",
             one(_ts(d["time"]) if d else None))
    m.family("walkeeper_failures_total", "counter",
             "Failed walkeeper commands in the failure log of the state directory.",
             [({"command": c}, n) for c, n in sorted(data["failure_counts"].items())])
    m.family("walkeeper_last_failure_timestamp_seconds", "gauge",
             "Time of the last failure of each command.",
             [({"command": c}, _ts(t)) for c, t in sorted(data["last_failure_times"].items())])
    stores = data["stores"]
    m.family("walkeeper_store_up", "gauge", "1 if the store could be listed.",
             [({"store": s["name"]}, 1 if s["reachable"] else 0) for s in stores])
    m.family("walkeeper_store_backups", "gauge", "Complete base backups in the store.",
             [({"store": s["name"]}, s["backups"]) for s in stores])
    m.family("walkeeper_store_bytes", "gauge", "Bytes this cluster's archive takes in the store.",
             [({"store": s["name"]}, s["bytes"]) for s in stores])
    m.family("walkeeper_store_free_bytes", "gauge", "Free bytes on the store's file system.",
             [({"store": s["name"]}, s["free_bytes"]) for s in stores])
    m.family("walkeeper_store_wal_segments", "gauge", "WAL segments in the store.",
             [({"store": s["name"]}, s["wal_segments"]) for s in stores])
    m.family("walkeeper_wal_gaps", "gauge", "Gaps in the archived WAL, per timeline.",
             [({"timeline": str(r["timeline"])}, len(r["gaps"])) for r in data["wal"]])
    ends = [_ts(w["to_time"]) for w in data["windows"]]
    m.family("walkeeper_recoverable_until_timestamp_seconds", "gauge",
             "The latest point in time a recovery can reach.", one(max(ends) if ends else None))
    return "\n".join(m.lines) + "\n"


def render_html(data: dict) -> str:
    from walkeeper.reports.dashboard import render

    return render(data)


WRITERS = {"text": render_text, "json": render_json, "prometheus": render_prometheus,
           "html": render_html}


def write_atomic(path: str, text: str) -> None:
    """Write a file so that a reader sees the old or the new content, never a part."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        import errno

        bad_path = exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR,
                                 errno.ENOTDIR, errno.EROFS)
        cls = UsageError if bad_path else OperationFailed    # a typo is not a failure
        raise cls(f"cannot write {path}: {exc.strerror or exc}",
                  hint="give a file path in an existing directory this user can write"
                  if bad_path else None) from None
