"""Retention: which backups, dumps and WAL a `[retention]` policy keeps. Pure: the
catalog model and a policy in, a selection out; expire.py does the deleting.

A policy is a dict of counts: full_count, daily, weekly, monthly, yearly (a missing
key counts as 0; -1 keeps every one). The rules:

- Backups are ordered by recorded stop LSN, then stop time: never by id or timeline
  (WAL-G's retention deleted the newest backups after a pg_upgrade reset the
  timeline, wal-g#636).
- The `full_count` newest are kept.
- daily/weekly/monthly/yearly = N keeps the newest backup of each of the N most
  recent periods that hold a backup (a week without one does not use up a slot).
  Periods are UTC calendar days, ISO weeks, months and years of the stop time: the
  moment the backup became restorable.
- The newest backup is kept whatever the policy says.
- WAL is deleted only strictly below the segment holding the start of the oldest
  kept backup (the lowest start LSN of all kept backups), on every timeline,
  compared by position, never by name. .history files are always kept: they are
  tiny and recovery needs them to follow timelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from walkeeper.catalog.model import ArchiveModel, BackupInfo, WalObject
from walkeeper.times import stored
from walkeeper.wal import Segment, WalKind, parse_wal_name

PERIODS = ("daily", "weekly", "monthly", "yearly")
COUNTS = ("full_count",) + PERIODS


@dataclass
class Selection:
    keep: dict[str, list[str]] = field(default_factory=dict)   # id -> reasons, newest first
    delete: list[str] = field(default_factory=list)            # ids, oldest first


def utc(dt: datetime) -> datetime:
    # A naive stored time is UTC (walkeeper.times), not this machine's local time.
    return stored(dt).astimezone(timezone.utc)


def period_label(kind: str, when: datetime) -> str:
    """The UTC calendar period of `when`: "2026-11-24", "2026-W47", "2026-11", "2026"."""
    t = utc(when)
    if kind == "daily":
        return t.strftime("%Y-%m-%d")
    if kind == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if kind == "monthly":
        return t.strftime("%Y-%m")
    if kind == "yearly":
        return f"{t.year:04d}"
    raise ValueError(f"unknown retention period {kind!r}")


def _count(policy: dict, key: str) -> int:
    value = policy.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"retention.{key}: expected an integer >= -1, got {value!r}")
    return value


def _pick(items: list, policy: dict, when) -> dict[int, list[str]]:
    """items newest first; when(item) -> its time. Index in items -> reasons."""
    reasons: dict[int, list[str]] = {}
    if not items:
        return reasons
    reasons[0] = ["newest"]
    full = _count(policy, "full_count")
    for i in range(len(items) if full == -1 else min(full, len(items))):
        reasons.setdefault(i, []).append("full_count")
    for kind in PERIODS:
        n = _count(policy, kind)
        if n == 0:
            continue
        newest_of: dict[str, int] = {}     # label -> index of the newest item in that period
        for i, item in enumerate(items):
            newest_of.setdefault(period_label(kind, when(item)), i)
        # Labels sort chronologically (fixed-width, zero-padded): newest period first.
        labels = sorted(newest_of, reverse=True)
        for label in labels if n == -1 else labels[:n]:
            reasons.setdefault(newest_of[label], []).append(f"{kind} {label}")
    return reasons


def order_backups(backups: list[BackupInfo]) -> list[BackupInfo]:
    """Newest first, by stop LSN then stop time (stable for exact ties)."""
    return sorted(backups, key=lambda b: (b.stop_lsn, utc(b.stop_time)), reverse=True)


def select(backups: list[BackupInfo], policy: dict, now: datetime | None = None) -> Selection:
    """Which backups the policy keeps (with why) and which it deletes.

    `now` is accepted for time-relative rules; the count rules above do not depend
    on it (periods are counted among those that hold a backup, not back from now).
    """
    ordered = order_backups(backups)
    reasons = _pick(ordered, policy, lambda b: b.stop_time)
    sel = Selection()
    for i, b in enumerate(ordered):
        if i in reasons:
            sel.keep[b.id] = reasons[i]
    sel.delete = [b.id for b in reversed(ordered) if b.id not in sel.keep]
    return sel


# ---------------------------------------------------------------- WAL


def wal_cut(archive: ArchiveModel, kept: list[BackupInfo]) -> int | None:
    """The start LSN of the segment holding the lowest start of the kept backups:
    WAL below it is no kept backup's. None when nothing is kept (delete no WAL)."""
    if not kept:
        return None
    size = archive.wal_segment_size
    return min(b.start_lsn for b in kept) // size * size


def wal_to_delete(archive: ArchiveModel, kept: list[BackupInfo]) -> list[WalObject]:
    """Segments, .partial and .backup files wholly below the cut, on every
    timeline, oldest position first (an interrupted delete leaves no hole in the
    middle of the chain). .history files are never returned."""
    cut = wal_cut(archive, kept)
    if cut is None:
        return []
    size = archive.wal_segment_size
    doomed: list[tuple[int, int, WalObject]] = []
    for tli, segs in archive.segments.items():
        for segno, obj in segs.items():
            if segno * size < cut:
                doomed.append((segno, tli, obj))
    for obj in archive.other:
        try:
            wal = parse_wal_name(obj.name)
        except ValueError:
            continue
        if wal.kind is WalKind.HISTORY or wal.segment is None:
            continue
        try:
            segno = wal.segment.number(size)
        except ValueError:
            continue
        if segno * size < cut:
            doomed.append((segno, wal.timeline, obj))
    doomed.sort(key=lambda t: (t[0], t[1], t[2].name))
    return [obj for _, _, obj in doomed]


def orphan_histories(archive: ArchiveModel, kept: list[BackupInfo],
                     history_timelines) -> list[int]:
    """The timelines (of history_timelines, those with a .history file) whose history
    file is an orphan once wal_to_delete is gone: above every timeline that still
    holds WAL or a kept backup. Such a file only sends recovery (recovery_target_timeline
    = latest) towards a timeline of which nothing is left. Only a top range goes:
    PostgreSQL probes history files one timeline after another, so a hole below a
    timeline still holding WAL would hide it. And only a timeline that branched off
    below the cut: no kept backup can ever follow it, and a timeline just promoted (its
    history archived, its first segment not yet) is never one of them. A history that
    could not be read is kept."""
    cut = wal_cut(archive, kept)
    if cut is None:
        return []
    doomed = {id(o) for o in wal_to_delete(archive, kept)}
    held = {b.timeline for b in kept}
    held |= {tli for tli, segs in archive.segments.items()
             if any(id(o) not in doomed for o in segs.values())}
    for obj in archive.other:
        if id(obj) in doomed:
            continue
        try:
            held.add(parse_wal_name(obj.name).timeline)
        except ValueError:
            continue
    top = max(held) if held else 0
    return sorted(t for t in set(history_timelines)
                  if t > top and archive.histories.get(t)
                  and archive.histories[t][-1].switch_lsn < cut)


def cut_segments(archive: ArchiveModel, kept: list[BackupInfo]) -> dict[int, str]:
    """Per timeline holding WAL: the name of the first segment position kept."""
    cut = wal_cut(archive, kept)
    if cut is None:
        return {}
    size = archive.wal_segment_size
    tlis = set(archive.segments)
    for obj in archive.other:
        try:
            tlis.add(parse_wal_name(obj.name).timeline)
        except ValueError:
            continue
    return {tli: Segment.from_number(tli, cut // size, size).name for tli in sorted(tlis)}


# ---------------------------------------------------------------- dumps


def _dump_time(d: dict) -> datetime | None:
    try:
        return utc(datetime.fromisoformat(str(d.get("time"))))
    except (TypeError, ValueError):
        return None


def select_dumps(dumps: list[dict], policy: dict, now: datetime | None = None) -> Selection:
    """The same counts, applied to each database's dumps separately (ten dumps of
    one database must not push out the only dump of another), newest by time. A
    dump whose time cannot be read is kept: nothing is deleted on a guess."""
    sel = Selection()
    by_db: dict[str, list[tuple[datetime, dict]]] = {}
    for d in dumps:
        t = _dump_time(d)
        if t is None:
            sel.keep[str(d["id"])] = ["time unreadable"]
            continue
        by_db.setdefault(str(d.get("database")), []).append((t, d))
    doomed: list[tuple[datetime, str]] = []
    for db in sorted(by_db):
        ordered = sorted(by_db[db], key=lambda td: td[0], reverse=True)
        reasons = _pick(ordered, policy, lambda td: td[0])
        for i, (t, d) in enumerate(ordered):
            if i in reasons:
                sel.keep[str(d["id"])] = reasons[i]
            else:
                doomed.append((t, str(d["id"])))
    sel.delete = [i for _, i in sorted(doomed) if i not in sel.keep]
    return sel
