"""Recovery planning: which backup, which timelines and which WAL reach a target, or
why nothing does. Pure: the catalog model and a target in, a plan or a refusal out.

The rules are PostgreSQL's own. A backup is consistent only from its stop LSN on;
the timeline path comes from the target timeline's history file (readTimeLineHistory);
a segment is read from the newest timeline of that path whose first segment is at or
before it (XLogFileReadAnyTLI), so the segment holding a switch point comes from the
child timeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo

from walkeeper.errors import OperationFailed, UnknownName
from walkeeper.catalog.model import ArchiveModel, BackupInfo, WalObject
from walkeeper.times import stored
from walkeeper.wal import (
    Segment, TimelineSpan, format_lsn, parse_lsn, timeline_of_point, timeline_path,
    valid_segment_size,
)

TARGET_KINDS = ("time", "lsn", "xid", "name", "immediate", "latest")

_XID_RE = re.compile("[0-9]+", re.ASCII)
_NAME_MAX_BYTES = 63          # PostgreSQL's MAXFNAMELEN - 1 for restore point names
_FIRST_NORMAL_XID = 3
_SETTINGS = {"time": "recovery_target_time", "lsn": "recovery_target_lsn",
             "xid": "recovery_target_xid", "name": "recovery_target_name",
             "immediate": "recovery_target"}


@dataclass(frozen=True)
class Target:
    kind: str
    value: object = None

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"unknown recovery target kind {self.kind!r}")
        if self.kind == "time" and not (isinstance(self.value, datetime)
                                        and self.value.utcoffset() is not None):
            raise ValueError("a time target needs a timezone-aware datetime")
        if self.kind in ("lsn", "xid") and not isinstance(self.value, int):
            raise ValueError(f"a {self.kind} target needs an int")

    @classmethod
    def parse(cls, kind: str, text: str | None = None, local_tz: tzinfo | None = None) -> Target:
        """Read a target as the operator typed it; ValueError says what is wrong."""
        if kind not in TARGET_KINDS:
            raise ValueError(f"unknown recovery target kind {kind!r}")
        if kind in ("immediate", "latest"):
            if text not in (None, ""):
                raise ValueError(f"--{kind} takes no value (got {text!r})")
            return cls(kind, None)
        if text is None or not text.strip():
            raise ValueError(f"empty recovery target {kind}")
        if kind == "time":
            return cls(kind, _parse_time(text, local_tz))
        if kind == "lsn":
            try:
                return cls(kind, parse_lsn(text.strip()))
            except ValueError:
                raise ValueError(f"invalid target LSN {text!r}: expected X/X, e.g. 0/5000028") from None
        if kind == "xid":
            s = text.strip()
            if not _XID_RE.fullmatch(s):
                raise ValueError(f"invalid target xid {text!r}: expected a transaction ID, e.g. 1234")
            xid = int(s)
            if not _FIRST_NORMAL_XID <= xid < 1 << 64:
                raise ValueError(f"invalid target xid {text!r}: not a normal transaction ID "
                                 f"(3 to 2^64-1)")
            return cls(kind, xid)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"invalid restore point name {text!r}: control characters")
        if len(text.encode()) > _NAME_MAX_BYTES:
            raise ValueError(f"restore point name too long ({len(text.encode())} bytes, "
                             f"PostgreSQL allows {_NAME_MAX_BYTES})")
        return cls(kind, text)

    def text(self) -> str:
        """The value as PostgreSQL reads it: times always with an explicit offset."""
        if self.kind == "time":
            return self.value.isoformat(sep=" ")
        if self.kind == "lsn":
            return format_lsn(self.value)
        return "immediate" if self.kind == "immediate" else str(self.value)

    def setting(self) -> tuple[str, str] | None:
        """The one recovery_target* setting for this target; None replays everything."""
        return None if self.kind == "latest" else (_SETTINGS[self.kind], self.text())

    def json_value(self):
        if self.kind in ("time", "lsn"):
            return self.value.isoformat() if self.kind == "time" else self.text()
        return self.value

    def describe(self) -> str:
        if self.kind == "latest":
            return "the end of the archive (latest)"
        if self.kind == "immediate":
            return "the end of the backup (immediate)"
        label = {"name": "restore point", "lsn": "LSN"}.get(self.kind, self.kind)
        return f"{label} {self.value!r}" if self.kind == "name" else f"{label} {self.text()}"


_UTC_NAMES = ("utc", "gmt", "z", "zulu", "etc/utc", "utc0")


def _zone_suffix(text: str) -> tuple[str, tzinfo | None]:
    """Split a trailing time zone name off a time: '... UTC' (as `date -u` and psql's
    `SET TIME ZONE 'UTC'` print it), '... GMT', or an IANA name such as
    '... Europe/Berlin'. (text, None) when the last word is not a zone name."""
    head, _, last = text.rpartition(" ")
    if not head.strip():
        return text, None
    if last.lower() in _UTC_NAMES:
        return head.strip(), timezone.utc
    if "/" in last:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return head.strip(), ZoneInfo(last)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"invalid target time {text!r}: unknown time zone {last!r} "
                             f"(use an offset such as +01, UTC, or a name such as "
                             f"Europe/Berlin)") from None
    return text, None


def _parse_time(text: str, local_tz: tzinfo | None) -> datetime:
    text = text.strip()
    body, zone = _zone_suffix(text)
    try:
        dt = datetime.fromisoformat(body)
    except ValueError:
        raise ValueError(f"invalid target time {text!r}: expected ISO 8601 such as "
                         "'2026-11-24 10:15:00+01', '2026-11-24 10:15:00 UTC' or "
                         "'2026-11-24T10:15:00' (local time)") from None
    if dt.tzinfo is not None:
        if zone is not None:
            raise ValueError(f"invalid target time {text!r}: give an offset or a time zone "
                             f"name, not both")
        return dt
    if zone is not None:
        local_tz = zone
    # A naive time is the operator's local wall time; the setting we write must carry
    # its offset, since PostgreSQL would read it in the server's timezone.
    try:
        aware = dt.replace(tzinfo=local_tz) if local_tz is not None else dt.astimezone()
        back = aware.astimezone(timezone.utc).astimezone(local_tz)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"target time {text!r} is out of range") from None
    if back.replace(tzinfo=None) != dt:
        raise ValueError(f"target time {text!r} does not exist in the local time zone "
                         f"(skipped by a daylight saving change); give an explicit offset")
    return aware.astimezone(timezone(aware.utcoffset()))


@dataclass
class RecoveryPlan:
    backup: BackupInfo
    timelines: list[int]          # from the backup's timeline to the target timeline
    target_timeline: int
    segments: list[str]           # every segment recovery fetches, in order
    first_wal: str
    last_wal: str
    bytes: int
    target: Target
    notes: list[str] = field(default_factory=list)
    # What recover decided around the plan (recover.py fills these in):
    stores: list[str] = field(default_factory=list)         # the stores planned from
    skipped_stores: dict[str, str] = field(default_factory=dict)   # unreadable: why
    widen_command: str | None = None     # restore_command over every store
    port: int | None = None              # None: the source's own
    archive: bool | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "backup": self.backup.id,
            "timelines": list(self.timelines),
            "target_timeline": self.target_timeline,
            "first_wal": self.first_wal,
            "last_wal": self.last_wal,
            "segments": len(self.segments),
            "bytes": self.bytes,
            "target": {"type": self.target.kind, "value": self.target.json_value()},
            "notes": list(self.notes),
            "stores": list(self.stores),
            "skipped_stores": dict(self.skipped_stores),
            "widen_restore_command": self.widen_command,
            "port": self.port,
            "archive": self.archive,
            "warnings": list(self.warnings),
        }


class PlanRefused(OperationFailed):
    """No backup reaches the target (exit 1); says why and what can be recovered."""

    def __init__(self, summary: str, reasons: list[str], windows: list[dict]):
        super().__init__(f"{summary}; recoverable windows: {_windows_text(windows)}")
        self.reasons = reasons
        self.windows = windows


def _windows_text(windows: list[dict]) -> str:
    if not windows:
        return "none"
    return ", ".join(f"timeline {w['timeline']} from {w['from_time']} ({w['from_lsn']}) "
                     f"to {w['to_time']} ({w['to_lsn']})" for w in windows)


# --- following a backup along a timeline path -------------------------------------

@dataclass
class _Route:
    backup: BackupInfo
    timeline: int                       # the target timeline
    path: list[TimelineSpan]            # the target timeline's whole path, from LSN 0
    run: list[tuple[int, int]]          # (tli, segno) present, contiguous from the start
    missing: tuple[int, int] | None     # the first segment absent after the run

    @property
    def end(self) -> tuple[int, int] | None:
        return self.run[-1] if self.run else None


def _path(archive: ArchiveModel, tli: int) -> list[TimelineSpan]:
    # As readTimeLineHistory: no history file means no parents.
    history = archive.histories.get(tli, [])
    previous = 0
    for entry in history:
        if not previous < entry.timeline < tli:
            raise ValueError(f"history of timeline {tli} lists timeline {entry.timeline} "
                             f"out of order")
        previous = entry.timeline
    return timeline_path(tli, history)


def _on_path(path: list[TimelineSpan], b: BackupInfo) -> bool:
    last = max(b.start_lsn, b.stop_lsn - 1)
    return (timeline_of_point(path, b.start_lsn) == b.timeline
            and timeline_of_point(path, last) == b.timeline)


def _fetch_timeline(path: list[TimelineSpan], segno: int, seg_size: int) -> int:
    for span in reversed(path):
        if span.begin // seg_size <= segno:
            return span.timeline
    return path[0].timeline


def _follow(archive: ArchiveModel, b: BackupInfo, tli: int, path: list[TimelineSpan],
            limit: int | None) -> _Route:
    seg_size = archive.wal_segment_size
    run: list[tuple[int, int]] = []
    segno = b.start_lsn // seg_size
    while limit is None or segno <= limit:
        seg_tli = _fetch_timeline(path, segno, seg_size)
        if segno not in archive.segments.get(seg_tli, {}):
            return _Route(b, tli, path, run, (seg_tli, segno))
        run.append((seg_tli, segno))
        segno += 1
    return _Route(b, tli, path, run, None)


def _later_wal(archive: ArchiveModel, route: _Route) -> tuple[int, int] | None:
    """The last segment on the route's path past its run, if the archive has any."""
    seg_size = archive.wal_segment_size
    after = route.end[1] if route.end else route.backup.start_lsn // seg_size - 1
    best = None
    for i, span in enumerate(route.path):
        lo = span.begin // seg_size
        hi = route.path[i + 1].begin // seg_size if i + 1 < len(route.path) else None
        for segno in archive.segments.get(span.timeline, {}):
            if segno > after and segno >= lo and (hi is None or segno < hi):
                if best is None or segno > best[1]:
                    best = (span.timeline, segno)
    return best


def _name(tli: int, segno: int, seg_size: int) -> str:
    return Segment.from_number(tli, segno, seg_size).name


def _utc(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime, timezone.utc)


def _aware(dt: datetime) -> datetime:
    return stored(dt)


def _stop_key(b: BackupInfo):
    return (b.stop_lsn, _aware(b.stop_time))


def _backup_bytes(b: BackupInfo) -> int:
    if b.files:
        return sum(f.stored_size for f in b.files)
    return max(b.stored_bytes.values(), default=0)


def _describe(b: BackupInfo) -> str:
    try:
        stop = format_lsn(b.stop_lsn)
    except ValueError:
        stop = f"invalid LSN {b.stop_lsn}"
    return f"backup {b.id} (stop {_aware(b.stop_time).isoformat()}, {stop})"


def _unusable(archive: ArchiveModel, b: BackupInfo) -> str | None:
    if archive.system_identifier not in (None, b.system_identifier):
        return f"it is from another cluster (system identifier {b.system_identifier})"
    if b.wal_segment_size != archive.wal_segment_size:
        return f"its WAL segments are {b.wal_segment_size} bytes, the archive's {archive.wal_segment_size}"
    if not 0 <= b.start_lsn <= b.stop_lsn < 1 << 64:
        return f"its recorded start and stop LSNs ({b.start_lsn:#x}, {b.stop_lsn:#x}) are inconsistent"
    return None


# --- choosing the target timeline -------------------------------------------------

def _candidate_timelines(archive: ArchiveModel) -> list[int]:
    return sorted(set(archive.timelines()) | {b.timeline for b in archive.backups}, reverse=True)


def _newest_reachable(archive: ArchiveModel, b: BackupInfo) -> tuple[int, list[TimelineSpan]] | None:
    for tli in _candidate_timelines(archive):
        try:
            path = _path(archive, tli)
            if _on_path(path, b):
                return tli, path
        except ValueError:
            continue
    return None


def parse_target_timeline(spec: str | int) -> str | int:
    """"latest", "current" or a timeline number; ValueError otherwise (exit 2)."""
    if isinstance(spec, bool):
        raise ValueError(f"invalid target timeline {spec!r}")
    if isinstance(spec, int):
        if not 1 <= spec < 1 << 32:
            raise ValueError(f"invalid target timeline {spec}")
        return spec
    text = str(spec).strip()
    if text in ("latest", "current"):
        return text
    if _XID_RE.fullmatch(text):
        return parse_target_timeline(int(text))
    raise ValueError(f"invalid target timeline {spec!r}: expected latest, current or a number")


# --- the planner ------------------------------------------------------------------

def _qualifies(b: BackupInfo, target: Target) -> bool:
    if target.kind == "time":
        return _aware(b.stop_time) <= target.value
    if target.kind == "lsn":
        return b.stop_lsn <= target.value
    return True


def _limit(b: BackupInfo, target: Target, seg_size: int) -> int | None:
    if target.kind == "lsn":
        return target.value // seg_size
    if target.kind == "immediate":
        return max(b.start_lsn, b.stop_lsn) // seg_size
    return None


def _check(archive: ArchiveModel, route: _Route, target: Target) -> tuple[str, str] | None:
    """(kind, reason) when the route cannot reach the target; kind is gap or after_end."""
    seg_size = archive.wal_segment_size
    b = route.backup
    stop_segno = max(b.start_lsn, b.stop_lsn) // seg_size
    end = route.end
    if end is None or end[1] < stop_segno:
        missing = _name(*route.missing, seg_size)
        return "gap", (f"{_describe(b)} cannot become consistent: WAL segment {missing} "
                       f"between its start and stop is missing")
    if target.kind == "lsn" and end[1] < target.value // seg_size:
        return _beyond(archive, route, target)
    if target.kind == "time":
        end_time = _utc(archive.segments[end[0]][end[1]].mtime)
        if target.value > end_time:
            return _beyond(archive, route, target)
    return None


def _beyond(archive: ArchiveModel, route: _Route, target: Target) -> tuple[str, str]:
    seg_size = archive.wal_segment_size
    tli, segno = route.end
    last = archive.segments[tli][segno]
    where = (f"the last WAL reachable from {_describe(route.backup)} on timeline "
             f"{route.timeline} is {last.name}, archived {_utc(last.mtime).isoformat()}")
    later = _later_wal(archive, route)
    if later is not None:
        return "gap", (f"{target.describe()} is past a gap: {where}; segment "
                       f"{_name(*route.missing, seg_size)} is missing, so later WAL up to "
                       f"{_name(*later, seg_size)} cannot be replayed")
    return "after_end", f"{target.describe()} is after the end of the archive: {where}"


def _build(archive: ArchiveModel, route: _Route, target: Target, notes: list[str]) -> RecoveryPlan:
    seg_size = archive.wal_segment_size
    b = route.backup
    names = [_name(tli, segno, seg_size) for tli, segno in route.run]
    objects: list[WalObject] = [archive.segments[tli][segno] for tli, segno in route.run]
    first = next(i for i, span in enumerate(route.path) if span.timeline == b.timeline)
    notes = list(notes)
    if target.kind in ("xid", "name", "latest"):
        later = _later_wal(archive, route)
        if later is not None:
            notes.append(f"WAL segment {_name(*route.missing, seg_size)} is missing: recovery "
                         f"ends at {names[-1]} although the archive holds WAL up to "
                         f"{_name(*later, seg_size)}")
    if target.kind in ("xid", "name"):
        notes.append(f"a {target.kind} target cannot be checked without reading the WAL; if it "
                     f"precedes {_describe(b)}, choose an older backup with --backup")
    return RecoveryPlan(
        backup=b,
        timelines=[span.timeline for span in route.path[first:]],
        target_timeline=route.timeline,
        segments=names,
        first_wal=names[0],
        last_wal=names[-1],
        bytes=_backup_bytes(b) + sum(o.stored_size for o in objects),
        target=target,
        notes=notes,
    )


def plan(archive: ArchiveModel, target: Target, target_timeline: str | int = "latest",
         backup_id: str | None = None) -> RecoveryPlan:
    """The newest complete backup that reaches target, or PlanRefused saying why not.

    target_timeline: "latest" (the newest timeline some backup lies on; PostgreSQL's
    own choice), "current" (each backup's timeline) or a timeline number. Write the
    plan's target_timeline as a number, not "latest": PostgreSQL would otherwise pick
    the newest history file even when the chosen backup is not on its path.
    """
    spec = parse_target_timeline(target_timeline)
    seg_size = archive.wal_segment_size

    def refuse(summary: str, reasons: list[str]) -> PlanRefused:
        return PlanRefused(f"cannot recover to {target.describe()}: {summary}", reasons,
                           recoverable_windows(archive, spec))

    if not valid_segment_size(seg_size):
        raise refuse(f"the archive's WAL segment size {seg_size} is invalid", [])
    backups = sorted(archive.backups, key=_stop_key, reverse=True)
    if backup_id is not None:
        backups = [b for b in backups if b.id == backup_id]
        if not backups:
            # A typo, not a refusal: exit 2, like every id that names nothing.
            raise UnknownName(f"no complete backup with id {backup_id!r}; see `walkeeper list`")
    notes = [f"{_describe(b)} is ignored: {_unusable(archive, b)}"
             for b in backups if _unusable(archive, b)]
    backups = [b for b in backups if not _unusable(archive, b)]
    if not backups:
        raise refuse(notes[0] if notes else "the archive holds no complete backup", notes)

    fixed: tuple[int, list[TimelineSpan]] | None = None
    if spec == "latest":
        fixed = _latest_timeline(archive, backups, notes)
        if fixed is None:
            raise refuse("no timeline in the archive is reachable from a complete backup", [])
    elif isinstance(spec, int):
        try:
            fixed = (spec, _path(archive, spec))
        except ValueError as exc:
            raise refuse(f"timeline {spec}: {exc}", [str(exc)]) from None

    skips: list[tuple[str, str]] = []      # (kind, reason) of each backup passed over
    for b in backups:
        try:
            tli, path = fixed if fixed is not None else (b.timeline, _path(archive, b.timeline))
            if not _qualifies(b, target):
                continue
            if not _on_path(path, b):
                skips.append(("path", f"{_describe(b)} (timeline {b.timeline}) is not on the "
                                      f"history of timeline {tli}"))
                continue
            route = _follow(archive, b, tli, path, _limit(b, target, seg_size))
            failure = _check(archive, route, target)
        except ValueError as exc:
            failure = ("bad", f"{_describe(b)}: {exc}")
        if failure is not None:
            skips.append(failure)
            continue
        return _build(archive, route, target,
                      notes + [f"{r}; using older backup {b.id}" for _, r in skips])

    reasons = [r for _, r in skips]
    failed = [(k, r) for k, r in skips if k in ("gap", "after_end", "bad")]
    if not failed:
        if target.kind in ("time", "lsn") and not any(_qualifies(b, target) for b in backups):
            by = (lambda b: _aware(b.stop_time)) if target.kind == "time" else _stop_key
            raise refuse(f"it is before the end of every backup (the earliest consistent "
                         f"point is the stop of {_describe(min(backups, key=by))})", reasons)
        raise refuse(reasons[0] if reasons else "no backup qualifies", reasons)
    if all(k == "after_end" for k, _ in failed):
        raise refuse(f"{failed[0][1]}; use --latest to replay everything archived", reasons)
    raise refuse(f"no backup has the WAL to reach it: {failed[0][1]}", reasons)


def _latest_timeline(archive: ArchiveModel, backups: list[BackupInfo],
                     notes: list[str]) -> tuple[int, list[TimelineSpan]] | None:
    for tli in _candidate_timelines(archive):
        try:
            path = _path(archive, tli)
        except ValueError as exc:
            notes.append(f"timeline {tli} is ignored: {exc}")
            continue
        if any(_on_path(path, b) for b in backups):
            return tli, path
        notes.append(f"timeline {tli} is newer, but no complete backup lies on its history")
    return None


# --- recoverable windows ----------------------------------------------------------

def recoverable_windows(archive: ArchiveModel, target_timeline: str | int = "latest") -> list[dict]:
    """Per timeline, the spans of time and LSN some complete backup can recover to:
    the one answer planning, `status` and `verify-chain` give.

    Each backup is followed to its newest reachable timeline ("latest"), its own
    ("current"), the one given, or ("all") to every timeline it can reach, from its
    stop to the end of the contiguous WAL. A window ends at its last segment's archive
    time in whole seconds (the same in every store: SFTP has no fractions), and never
    before the backup's stop.
    """
    everywhere = target_timeline == "all"
    spec = "latest" if everywhere else parse_target_timeline(target_timeline)
    seg_size = archive.wal_segment_size
    if not valid_segment_size(seg_size):
        return []
    raw: dict[int, list[list]] = {}
    for b in archive.backups:
        if _unusable(archive, b):
            continue
        if everywhere:
            routes = [(tli, None) for tli in _candidate_timelines(archive)]
        elif spec == "latest":
            found = _newest_reachable(archive, b)
            routes = [found] if found is not None else []
        else:
            routes = [(b.timeline if spec == "current" else spec, None)]
        for tli, path in routes:
            try:
                path = _path(archive, tli) if path is None else path
                if not _on_path(path, b):
                    continue
                route = _follow(archive, b, tli, path, None)
                if _check(archive, route, Target("immediate")) is not None:
                    continue
                end_tli, end_segno = route.end
                if everywhere and end_tli != tli:
                    continue            # stops short of this timeline: no window on it
                end_time = _utc(int(archive.segments[end_tli][end_segno].mtime))
                stop_time = _aware(b.stop_time)
                raw.setdefault(tli, []).append(
                    [b.stop_lsn, stop_time, (end_segno + 1) * seg_size, max(end_time, stop_time)])
            except ValueError:
                continue
    windows = []
    for tli in sorted(raw):
        merged: list[list] = []
        for w in sorted(raw[tli], key=lambda w: (w[0], w[1])):
            if merged and w[0] <= merged[-1][2]:
                if w[2] > merged[-1][2]:
                    merged[-1][2:] = w[2:]
            else:
                merged.append(list(w))
        for from_lsn, from_time, to_lsn, to_time in merged:
            windows.append({"timeline": tli, "from_time": from_time.isoformat(),
                            "to_time": to_time.isoformat(), "from_lsn": format_lsn(from_lsn),
                            "to_lsn": format_lsn(to_lsn)})
    return windows
