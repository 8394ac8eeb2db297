"""What an archive holds, as plain data: the model the catalog reads a store into and
the planner, verify, retention and status reason about. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from walkeeper.wal import HistoryEntry, Segment, format_lsn, parse_lsn


@dataclass
class BackupFile:
    name: str            # e.g. "base.tar"
    key: str             # object key in the store, relative to the store root
    size: int            # original bytes
    stored_size: int     # bytes of the stored object
    sha256: str


@dataclass
class BackupInfo:
    """A complete base backup: its metadata object exists (written last)."""

    id: str
    label: str
    start_time: datetime           # timezone-aware
    stop_time: datetime
    start_lsn: int
    stop_lsn: int
    timeline: int                  # the timeline the backup started on
    start_wal: str                 # segment names
    stop_wal: str
    pg_version: int                # server_version_num, e.g. 150018
    system_identifier: int
    wal_segment_size: int
    database_bytes: int
    stored_bytes: dict[str, int] = field(default_factory=dict)   # per store
    files: list[BackupFile] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["start_time"] = self.start_time.isoformat()
        d["stop_time"] = self.stop_time.isoformat()
        d["start_lsn"] = format_lsn(self.start_lsn)
        d["stop_lsn"] = format_lsn(self.stop_lsn)
        d["system_identifier"] = str(self.system_identifier)
        return d

    @classmethod
    def from_json(cls, d: dict) -> BackupInfo:
        d = dict(d)
        d["start_time"] = datetime.fromisoformat(d["start_time"])
        d["stop_time"] = datetime.fromisoformat(d["stop_time"])
        d["start_lsn"] = parse_lsn(d["start_lsn"])
        d["stop_lsn"] = parse_lsn(d["stop_lsn"])
        d["system_identifier"] = int(d["system_identifier"])
        d["files"] = [BackupFile(**f) for f in d.get("files", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def start_segment(self) -> Segment:
        return Segment.parse(self.start_wal)

    @property
    def stop_segment(self) -> Segment:
        return Segment.parse(self.stop_wal)


@dataclass(frozen=True)
class WalObject:
    name: str                      # PostgreSQL's file name
    key: str                       # object key in the store
    stored_size: int
    mtime: float                   # when it was archived (>= time of every record in it)


@dataclass
class ArchiveModel:
    """One store's view of one cluster's archive (or the union of several stores)."""

    wal_segment_size: int
    system_identifier: int | None = None
    backups: list[BackupInfo] = field(default_factory=list)          # complete only
    incomplete_backups: list[str] = field(default_factory=list)      # ids without metadata
    segments: dict[int, dict[int, WalObject]] = field(default_factory=dict)  # tli -> segno ->
    histories: dict[int, list[HistoryEntry]] = field(default_factory=dict)   # tli -> parsed
    other: list[WalObject] = field(default_factory=list)       # .partial and .backup files
    temporary: list[str] = field(default_factory=list)         # leftover .tmp- keys
    unreadable: dict[str, str] = field(default_factory=dict)   # key -> why it was left out
    misplaced: dict[str, str] = field(default_factory=dict)    # key -> what it holds instead

    def has_segment(self, seg: Segment) -> bool:
        return seg.number(self.wal_segment_size) in self.segments.get(seg.timeline, {})

    def segment(self, seg: Segment) -> WalObject | None:
        return self.segments.get(seg.timeline, {}).get(seg.number(self.wal_segment_size))

    def timelines(self) -> list[int]:
        return sorted(set(self.segments) | set(self.histories))

    def backups_by_stop(self) -> list[BackupInfo]:
        """Oldest first, ordered by recorded stop LSN then stop time: never by name or TLI."""
        return sorted(self.backups, key=lambda b: (b.stop_lsn, b.stop_time))
