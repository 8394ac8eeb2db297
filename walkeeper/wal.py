"""WAL file names, LSNs, timeline history and segment page headers.

Pure functions only: this module is imported by ``walkeeper push`` once per
archived segment, so it must stay cheap to import and free of I/O: names are parsed
with string methods, not `re`, and WalKind is not an enum.Enum (`re` and `enum` cost
the fast paths of push and fetch ~5 ms of their ~20); the rarer parsers (LSNs,
history files) import `re` when first called.
"""

from walkeeper.errors import UsageError
from walkeeper.record import record

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30
DEFAULT_SEGMENT_SIZE = 16 << 20

_U32 = 1 << 32
_U64 = 1 << 64

# Explicit ASCII hex, never str.isdigit or a bare int(x, 16): both accept non-ASCII
# digits, and int(x, 16) alone would accept "_", "0x" and surrounding whitespace.
_UPPER_HEX = frozenset("0123456789ABCDEF")
_ANY_HEX = frozenset("0123456789ABCDEFabcdef")
_LSN_PATTERN = "([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})"
_compiled: dict = {}


def _regex(pattern: str, flags: int = 0):
    """re.compile, imported and compiled on first use only (see the module doc)."""
    key = (pattern, flags)
    if key not in _compiled:
        import re

        _compiled[key] = re.compile(pattern, flags)
    return _compiled[key]


def _is_hex(text: str, n: int, digits: frozenset = _UPPER_HEX) -> bool:
    return len(text) == n and all(c in digits for c in text)


def valid_segment_size(n: int) -> bool:
    return MIN_SEGMENT_SIZE <= n <= MAX_SEGMENT_SIZE and n & (n - 1) == 0


def _segments_per_log(seg_size: int) -> int:
    if not valid_segment_size(seg_size):
        raise ValueError(f"invalid WAL segment size {seg_size}")
    return _U32 // seg_size


def parse_lsn(text: str) -> int:
    # PostgreSQL's pg_lsn input accepts either hex case, so we do too.
    m = _regex(_LSN_PATTERN).fullmatch(text)
    if m is None:
        raise ValueError(f"invalid LSN {text!r}: expected X/X with up to 8 hex digits each")
    return int(m.group(1), 16) << 32 | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    if not 0 <= lsn < _U64:
        raise ValueError(f"LSN out of range: {lsn}")
    return "%X/%08X" % (lsn >> 32, lsn & 0xFFFFFFFF)


# Named tuples rather than dataclasses: importing dataclasses (and inspect with it)
# would cost push ~8 ms of start-up, once per archived segment.
class Segment(record("Segment", "timeline log seg")):
    __slots__ = ()

    def __new__(cls, timeline: int, log: int, seg: int):
        if not 1 <= timeline < _U32:
            raise ValueError(f"invalid timeline {timeline}")
        if not (0 <= log < _U32 and 0 <= seg < _U32):
            raise ValueError(f"segment log/seg out of range: {log}/{seg}")
        return super().__new__(cls, timeline, log, seg)

    @property
    def name(self) -> str:
        return "%08X%08X%08X" % (self.timeline, self.log, self.seg)

    @classmethod
    def parse(cls, name: str) -> "Segment":
        if not _is_hex(name, 24):
            raise ValueError(f"not a WAL segment name: {name!r}")
        return cls(int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16))

    def number(self, seg_size: int) -> int:
        per_log = _segments_per_log(seg_size)
        # A seg field past the per-log count names a file PostgreSQL can never
        # write at this segment size, usually a sign the size is wrong.
        if self.seg >= per_log:
            raise ValueError(
                f"{self.name}: segment field {self.seg:#x} impossible with "
                f"{seg_size}-byte segments (max {per_log - 1:#x})")
        return self.log * per_log + self.seg

    @classmethod
    def from_number(cls, timeline: int, segno: int, seg_size: int) -> "Segment":
        per_log = _segments_per_log(seg_size)
        if segno < 0:
            raise ValueError(f"negative segment number {segno}")
        log, seg = divmod(segno, per_log)
        return cls(timeline, log, seg)

    def next(self, seg_size: int) -> "Segment":
        return Segment.from_number(self.timeline, self.number(seg_size) + 1, seg_size)

    def prev(self, seg_size: int) -> "Segment":
        n = self.number(seg_size)
        if n == 0:
            raise ValueError(f"{self.name} is the first possible segment")
        return Segment.from_number(self.timeline, n - 1, seg_size)

    def start_lsn(self, seg_size: int) -> int:
        return self.number(seg_size) * seg_size

    @classmethod
    def containing(cls, timeline: int, lsn: int, seg_size: int) -> "Segment":
        if not 0 <= lsn < _U64:
            raise ValueError(f"LSN out of range: {lsn}")
        _segments_per_log(seg_size)
        return cls.from_number(timeline, lsn // seg_size, seg_size)


class _Kind:
    """One WalKind member: compared by identity, with .name and .value as an Enum's."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<WalKind.{self.name}: {self.value!r}>"


class WalKind:
    SEGMENT = _Kind("SEGMENT", "segment")
    PARTIAL = _Kind("PARTIAL", "partial")
    HISTORY = _Kind("HISTORY", "history")
    BACKUP = _Kind("BACKUP", "backup")


WalName = record("WalName", "kind name timeline segment backup_offset")


def parse_wal_name(name: str) -> WalName:
    # The name becomes part of a storage key, so anything short of an exact
    # match is refused rather than normalised: no case folding, no trimming.
    if not isinstance(name, str):
        raise TypeError(f"WAL file name must be str, not {type(name).__name__}")
    if not name:
        raise ValueError("empty WAL file name")
    parts = _split_wal_name(name)
    if parts is None:
        if "/" in name or "\\" in name or name in (".", ".."):
            reason = "contains a path component"
        elif _split_wal_name(name.lower(), _ANY_HEX) is not None:
            reason = "wrong letter case (PostgreSQL writes uppercase hex)"
        else:
            reason = "not a segment, .partial, .history or .backup name"
        raise ValueError(f"invalid WAL file name {name!r}: {reason}")
    kind, head, offset = parts
    if kind is WalKind.HISTORY:
        tli = int(head, 16)
        if tli == 0:
            raise ValueError(f"invalid WAL file name {name!r}: timeline 0")
        return WalName(WalKind.HISTORY, name, tli, None, None)
    if head.startswith("00000000"):
        raise ValueError(f"invalid WAL file name {name!r}: timeline 0")
    segment = Segment.parse(head)
    return WalName(kind, name, segment.timeline, segment,
                   int(offset, 16) if offset is not None else None)


def wal_name_argument(name: str) -> WalName:
    """parse_wal_name for a name PostgreSQL or an operator passed to push or fetch: a
    bad one is a usage error (exit 2) naming it."""
    try:
        return parse_wal_name(name)
    except ValueError as exc:
        raise UsageError(f"{name!r} is not a WAL file name: {exc}") from None


def _split_wal_name(name: str, digits: frozenset = _UPPER_HEX):
    """(kind, hex head, backup offset or None) for an exact WAL file name, else None:
    24 uppercase hex digits, optionally `.partial` or `.XXXXXXXX.backup`, or 8
    uppercase hex digits and `.history`."""
    if len(name) == 24:
        return (WalKind.SEGMENT, name, None) if _is_hex(name, 24, digits) else None
    if len(name) == 32 and name.endswith(".partial"):
        return (WalKind.PARTIAL, name[:24], None) if _is_hex(name[:24], 24, digits) else None
    if len(name) == 40 and name[24] == "." and name.endswith(".backup"):
        head, off = name[:24], name[25:33]
        ok = _is_hex(head, 24, digits) and _is_hex(off, 8, digits)
        return (WalKind.BACKUP, head, off) if ok else None
    if len(name) == 16 and name.endswith(".history"):
        return (WalKind.HISTORY, name[:8], None) if _is_hex(name[:8], 8, digits) else None
    return None


# One line of NNNNNNNN.history: the parent timeline, the LSN where it ended, why.
HistoryEntry = record("HistoryEntry", "timeline switch_lsn reason")


# PostgreSQL writes "%u\t%X/%X\t%s"; its reader uses sscanf("%u\t%X/%X"),
# where the tab matches any whitespace run and the rest of the line is ignored.
_HISTORY_LINE_PATTERN = r"([0-9]+)\s+([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})(?:\s+(.*))?"
_ASCII = 256    # re.ASCII, without importing re


def parse_history(text: str, timeline: int) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    # Split on "\n" only, as PostgreSQL does; splitlines() would also break
    # on \v, \f and Unicode separators inside a reason.
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _regex(_HISTORY_LINE_PATTERN, _ASCII).fullmatch(line)
        if m is None:
            raise ValueError(f"timeline {timeline} history line {lineno}: "
                             f"expected 'TLI<TAB>X/X<TAB>reason', got {raw!r}")
        tli = int(m.group(1))
        if not 1 <= tli < _U32:
            raise ValueError(f"timeline {timeline} history line {lineno}: bad timeline {tli}")
        if entries and tli <= entries[-1].timeline:
            raise ValueError(f"timeline {timeline} history line {lineno}: "
                             f"timeline IDs must be in increasing sequence")
        lsn = int(m.group(2), 16) << 32 | int(m.group(3), 16)
        entries.append(HistoryEntry(tli, lsn, (m.group(4) or "").strip()))
    if entries and entries[-1].timeline >= timeline:
        raise ValueError(f"timeline {timeline} history: timeline IDs must be less "
                         f"than the child's ({entries[-1].timeline} >= {timeline})")
    return entries


# [begin, end) of one timeline on a path; end None: the open, newest one.
TimelineSpan = record("TimelineSpan", "timeline begin end")


def timeline_path(timeline: int, history: list[HistoryEntry]) -> list[TimelineSpan]:
    spans: list[TimelineSpan] = []
    begin = 0
    for entry in history:
        # PostgreSQL does not check this, but a span ending before it begins
        # would make every later lookup silently wrong.
        if entry.switch_lsn < begin:
            raise ValueError(f"timeline {entry.timeline} ends at {format_lsn(entry.switch_lsn)}, "
                             f"before it begins at {format_lsn(begin)}")
        spans.append(TimelineSpan(entry.timeline, begin, entry.switch_lsn))
        begin = entry.switch_lsn
    spans.append(TimelineSpan(timeline, begin, None))
    return spans


def timeline_of_point(path: list[TimelineSpan], lsn: int) -> int:
    for span in path:
        if span.begin <= lsn and (span.end is None or lsn < span.end):
            return span.timeline
    raise ValueError(f"LSN {lsn:#x} is not covered by the timeline history")


XLP_LONG_HEADER = 0x0002

# XLOG_PAGE_MAGIC per major version. 15 was read from a live initdb; the
# others from PostgreSQL's xlog_internal.h as transcribed by pgBackRest and
# release-branch copies. Unknown magic means a WAL format we cannot vouch for.
WAL_PAGE_MAGIC = {
    0xD097: 10, 0xD098: 11, 0xD101: 12, 0xD106: 13,
    0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18,
}

LONG_PAGE_HEADER_SIZE = 40
# XLogLongPageHeaderData, little-endian: magic u16, info u16, timeline u32, pageaddr
# u64, rem_len u32, 4 bytes of padding, system identifier u64, segment size u32, block
# size u32 (struct "<HHIQI4xQII"; read with int.from_bytes, so that the fast paths,
# which check one header, do not import struct).
_LONG_HEADER_FIELDS = ((0, 2), (2, 4), (4, 8), (8, 16), (16, 20), (24, 32), (32, 36), (36, 40))


PageHeader = record("PageHeader", "magic info timeline pageaddr rem_len system_identifier "
                                       "segment_size block_size")


def parse_long_page_header(buf: bytes) -> PageHeader:
    if len(buf) < LONG_PAGE_HEADER_SIZE:
        raise ValueError(f"WAL page header truncated: {len(buf)} bytes, need {LONG_PAGE_HEADER_SIZE}")
    head = bytes(buf[:LONG_PAGE_HEADER_SIZE])
    header = PageHeader(*[int.from_bytes(head[a:b], "little") for a, b in _LONG_HEADER_FIELDS])
    if not header.info & XLP_LONG_HEADER:
        raise ValueError(f"first WAL page lacks the long header flag (xlp_info={header.info:#06x})")
    return header


def check_segment_header(segment: Segment, header: PageHeader, file_size: int) -> None:
    name = segment.name
    if header.magic not in WAL_PAGE_MAGIC:
        raise ValueError(f"{name}: unknown WAL page magic {header.magic:#06x} "
                         f"(not a WAL file, or an unsupported PostgreSQL version)")
    size = header.segment_size
    if not valid_segment_size(size):
        raise ValueError(f"{name}: header segment size {size} is not a power of two in [1 MiB, 1 GiB]")
    if size != file_size:
        raise ValueError(f"{name}: file is {file_size} bytes but its header says {size}")
    try:
        expected = segment.start_lsn(size)
    except ValueError as exc:
        raise ValueError(f"{name}: name does not fit the header segment size: {exc}") from None
    # A recycled segment that was renamed but not yet rewritten still carries
    # its old pageaddr; archiving it would store stale WAL under a new name.
    if header.pageaddr != expected:
        raise ValueError(f"{name}: header page address {format_lsn(header.pageaddr)} != "
                         f"{format_lsn(expected)} expected from the name (stale or misnamed file)")
    # Not "==": the first segment of a new timeline is copied from the parent
    # and keeps the parent's TLI in its first page header.
    if not 1 <= header.timeline <= segment.timeline:
        raise ValueError(f"{name}: header timeline {header.timeline} is not in 1..{segment.timeline}")
