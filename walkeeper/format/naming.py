"""Does a WAL file's content belong to the name it was asked for? Pure checks, no I/O.

fetch, the prefetcher, verify-chain and drill's recovery ask these before anything
reaches the destination, because an object copied under another name is otherwise
self-consistent (its checksum and, encrypted, its tags hold): PostgreSQL would read
the page addresses of another segment, take them as the end of WAL and end recovery
at the wrong point.

- A segment or `.partial`: its first page carries the long header (magic, flags),
  `xlp_pageaddr` is the start LSN of the requested name, the segment size in the
  header gives that name at all, the block size is a power of two, and the system
  identifier is the archive's when the archive knows it (identity.json). The
  timeline follows PostgreSQL (XLogReaderValidatePageHeader never lets a page's
  timeline be above the one being replayed; xlogrecovery.c then wants the page's
  timeline in the history of the recovery target): the first page may carry an
  older timeline only where the timeline's history puts that segment's start on it,
  which is the first segment of a new timeline (copied from its parent up to the
  switch point). Without the history file the parent is taken on trust, as
  PostgreSQL would check it itself.
- A `.history` file: it parses, every parent it lists is below the timeline it is
  named for, and it agrees with the archive's other history files (the parent's own
  history is the prefix of its child's).
- A `.backup` file: the WAL file and offset it records are those of its name.

Every check raises MisplacedObject (the content is another name's, said by name) or
CorruptObject (it is not a WAL file of any name).
"""

from __future__ import annotations

from walkeeper.errors import CorruptObject, MisplacedObject
from walkeeper.wal import (LONG_PAGE_HEADER_SIZE, WAL_PAGE_MAGIC, XLP_LONG_HEADER,
                           HistoryEntry, PageHeader, Segment, WalKind, WalName, format_lsn,
                           parse_history, parse_long_page_header, timeline_of_point,
                           timeline_path, valid_segment_size)

XLP_ALL_FLAGS = 0x000F      # xlog_internal.h: the flags a page header may carry
HISTORY_LIMIT = 1 << 20     # a history file larger than this is not one

__all__ = ["LONG_PAGE_HEADER_SIZE", "segment_header", "needs_history", "check_segment",
           "check_history", "check_backup_file", "history_parent"]


def segment_header(wal: WalName, head: bytes) -> PageHeader:
    """The first page's long header; CorruptObject when it is not one."""
    try:
        return parse_long_page_header(head)
    except ValueError as exc:
        raise CorruptObject(f"{wal.name}: not a WAL file ({exc})") from None


def needs_history(wal: WalName, header: PageHeader) -> bool:
    """Whether check_segment needs the timeline's history to decide: the first page
    carries an older timeline (a new timeline's first segment, or a misplaced one)."""
    return header.timeline < wal.timeline


def _held(header: PageHeader) -> str:
    """The segment name a header belongs to, as far as it tells."""
    size = header.segment_size
    if valid_segment_size(size) and header.pageaddr % size == 0 and 1 <= header.timeline:
        seg = Segment.containing(header.timeline, header.pageaddr, size)
        return f"segment {seg.name}"
    return f"WAL at {format_lsn(header.pageaddr)}"


def check_segment(wal: WalName, header: PageHeader, size: int, sysid: int | None = None,
                  history: list[HistoryEntry] | None = None) -> None:
    """The page header of a segment or .partial (wal) against its name.

    size: the decoded file's size; sysid: the archive's system identifier, or None;
    history: the parents of wal's timeline (its .history file), or None when unknown.
    """
    name = wal.name
    if header.magic not in WAL_PAGE_MAGIC:
        raise CorruptObject(f"{name}: unknown WAL page magic {header.magic:#06x} (not a WAL "
                            f"file, or an unsupported PostgreSQL version)")
    if header.info & ~XLP_ALL_FLAGS or not header.info & XLP_LONG_HEADER:
        raise CorruptObject(f"{name}: invalid page header flags {header.info:#06x}")
    blcksz = header.block_size
    if not (1024 <= blcksz <= 65536 and blcksz & (blcksz - 1) == 0):
        raise CorruptObject(f"{name}: invalid WAL block size {blcksz} in the page header")
    seg_size = header.segment_size
    if not valid_segment_size(seg_size):
        raise CorruptObject(f"{name}: header segment size {seg_size} is not a power of two "
                            f"in [1 MiB, 1 GiB]")
    if sysid is not None and header.system_identifier != sysid:
        raise MisplacedObject(name, f"WAL of database system {header.system_identifier}",
                              f"the archive belongs to system {sysid}, identity.json")
    if size != seg_size:
        # A .partial is the whole segment file, renamed: the same size rule holds.
        raise CorruptObject(f"{name}: file is {size} bytes but its header says {seg_size}")
    try:
        expected = wal.segment.start_lsn(seg_size)
    except ValueError as exc:
        raise MisplacedObject(name, _held(header), f"the name does not fit the header's "
                              f"{seg_size}-byte segments: {exc}") from None
    if header.pageaddr != expected:
        raise MisplacedObject(name, _held(header), f"page address "
                              f"{format_lsn(header.pageaddr)}, {name} starts at "
                              f"{format_lsn(expected)}")
    tli = header.timeline
    if tli == wal.timeline:
        return
    if not 1 <= tli < wal.timeline:
        raise MisplacedObject(name, _held(header), f"page timeline {tli}, above "
                              f"{wal.timeline}: PostgreSQL never reads it as {name}")
    if history is None:
        return
    try:
        on = timeline_of_point(timeline_path(wal.timeline, history), expected)
    except ValueError:
        on = None
    if on != tli:
        where = f"timeline {on}" if on is not None else "no timeline"
        raise MisplacedObject(name, _held(header), f"page timeline {tli}, but the history of "
                              f"timeline {wal.timeline} puts {format_lsn(expected)} on {where}")


def history_parent(wal: WalName, text: str) -> list[HistoryEntry]:
    """The parsed history a .history file's content gives for its name's timeline."""
    try:
        return parse_history(text, wal.timeline)
    except ValueError as exc:
        listed = _listed(text)
        if listed and max(listed) >= wal.timeline:
            raise MisplacedObject(wal.name, f"the history of a timeline above {max(listed)} "
                                  f"(it lists {', '.join(map(str, listed))})",
                                  f"timeline {wal.timeline} cannot have them as "
                                  f"parents") from None
        raise CorruptObject(f"{wal.name}: not a timeline history file ({exc})") from None


def _listed(text: str) -> list[int]:
    out = []
    for line in text.split("\n"):
        field = line.strip().split(None, 1)[:1]
        if field and field[0].isascii() and field[0].isdigit():
            out.append(int(field[0]))
    return out


def check_history(wal: WalName, data: bytes,
                  known: dict[int, list[HistoryEntry]] | None = None) -> list[HistoryEntry]:
    """A .history file's content against its name and the archive's other histories
    (known: timeline -> its parsed history, what the caller could read); returns the
    parsed entries."""
    if len(data) > HISTORY_LIMIT:
        raise CorruptObject(f"{wal.name}: {len(data)} bytes, too large for a history file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptObject(f"{wal.name}: not a timeline history file (not text)") from None
    entries = history_parent(wal, text)
    if not entries:
        raise CorruptObject(f"{wal.name}: a history file that lists no parent timeline")
    for tli, theirs in (known or {}).items():
        if tli == wal.timeline:
            continue
        if tli < wal.timeline:
            # An ancestor's own history must be our prefix up to it.
            mine = [e for e in entries if e.timeline < tli]
            if any(e.timeline == tli for e in entries) and not _same(mine, theirs):
                raise MisplacedObject(wal.name, _describe(entries),
                                      f"disagrees with {tli:08X}.history about the "
                                      f"timelines before {tli}")
        else:
            # A descendant that lists us must agree with us about our ancestors.
            if any(e.timeline == wal.timeline for e in theirs):
                prefix = [e for e in theirs if e.timeline < wal.timeline]
                if not _same(entries, prefix):
                    raise MisplacedObject(wal.name, _describe(entries),
                                          f"disagrees with {tli:08X}.history, whose "
                                          f"timeline descends from {wal.timeline}")
    return entries


def _same(a: list[HistoryEntry], b: list[HistoryEntry]) -> bool:
    return [(e.timeline, e.switch_lsn) for e in a] == [(e.timeline, e.switch_lsn) for e in b]


def _describe(entries: list[HistoryEntry]) -> str:
    return "a history listing " + ", ".join(
        f"{e.timeline} (to {format_lsn(e.switch_lsn)})" for e in entries)


def check_backup_file(wal: WalName, data: bytes, seg_size: int | None = None) -> None:
    """A .backup file (pg_stop_backup's backup history file): the WAL file it records
    (`START WAL LOCATION: X/X (file NAME)`) is its name's, and, when the segment size
    is known, so are the segment and offset of that LSN."""
    if wal.kind is not WalKind.BACKUP:
        raise ValueError(f"{wal.name} is not a .backup name")
    text = data[:1 << 16].decode("utf-8", errors="replace")
    start = None
    for line in text.split("\n"):
        if line.startswith("START WAL LOCATION:"):
            start = line[len("START WAL LOCATION:"):].strip()
            break
    if start is None:
        raise CorruptObject(f"{wal.name}: not a backup history file (no START WAL LOCATION)")
    lsn_text, _, rest = start.partition(" ")
    rest = rest.strip()
    recorded = None
    if rest.startswith("(file ") and rest.endswith(")"):
        recorded = rest[len("(file "):-1].strip()
    try:
        from walkeeper.wal import parse_lsn

        lsn = parse_lsn(lsn_text)
    except ValueError:
        raise CorruptObject(f"{wal.name}: backup history file with a bad START WAL "
                            f"LOCATION {start!r}") from None
    name = wal.name[:24]
    known = seg_size is not None and valid_segment_size(seg_size)
    if known:
        derived = Segment.containing(wal.timeline, lsn, seg_size).name
        holds = f"the backup history {recorded or derived}.{lsn % seg_size:08X}.backup"
    else:
        holds = f"the backup history of a backup starting at {lsn_text} in {recorded}"
    if recorded is not None and recorded != name:
        raise MisplacedObject(wal.name, holds, f"it records START WAL LOCATION "
                              f"{lsn_text} in {recorded}")
    if known and (derived != name or lsn % seg_size != wal.backup_offset):
        raise MisplacedObject(wal.name, holds, f"it records START WAL LOCATION {lsn_text}")
