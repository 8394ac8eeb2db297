"""`status --prometheus`: the text format for node_exporter's textfile collector.

HELP and TYPE lines; a value that is unknown is left out, so absent() can alert on it.
"""

from __future__ import annotations

from walkeeper.reports.status import parse_time


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
