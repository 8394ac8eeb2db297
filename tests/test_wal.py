import struct

import pytest
from hypothesis import given, strategies as st

from walkeeper.wal import (
    DEFAULT_SEGMENT_SIZE, LONG_PAGE_HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
    WAL_PAGE_MAGIC, XLP_LONG_HEADER, HistoryEntry, PageHeader, Segment, TimelineSpan,
    WalKind, check_segment_header, format_lsn, parse_history, parse_long_page_header,
    parse_lsn, parse_wal_name, timeline_of_point, timeline_path, valid_segment_size,
)

MiB = 1 << 20
SIZES = [1 << k for k in range(20, 31)]
seg_sizes = st.sampled_from(SIZES)

# First 40 bytes of real PostgreSQL 15 segments (initdb + two archive recoveries).
REAL_16M = bytes.fromhex(  # 000000010000000000000001, fresh cluster
    "10d1020001000000000000010000000000000000000000005f5c25576bfb046b0000000100200000")
REAL_TL3_FIRST = bytes.fromhex(  # 000000030000000000000003: header still says TLI 2
    "10d1060002000000000000030000000000000000000000005f5c25576bfb046b0000000100200000")
REAL_RECYCLED = bytes.fromhex(  # 000000030000000000000004: recycled, still 0/2000000
    "10d1060001000000000000020000000000000000000000005f5c25576bfb046b0000000100200000")
REAL_1M = bytes.fromhex(  # 000000010000000000000006 from initdb --wal-segsize=1
    "10d10700010000000000600000000000d1000000000000006d9c0be36bfb046b0000100000200000")
# 00000003.history exactly as PostgreSQL 15 wrote it (note the blank line).
REAL_HISTORY_3 = ("1\t0/2000318\tno recovery target specified\n\n"
                  "2\t0/3000318\tno recovery target specified\n")


def test_segment_size_validity():
    assert all(valid_segment_size(n) for n in SIZES)
    assert DEFAULT_SEGMENT_SIZE in SIZES and SIZES[0] == MIN_SEGMENT_SIZE and SIZES[-1] == MAX_SEGMENT_SIZE
    for n in (0, -MiB, MiB // 2, MAX_SEGMENT_SIZE * 2, 3 * MiB, DEFAULT_SEGMENT_SIZE + 1):
        assert not valid_segment_size(n)


@pytest.mark.parametrize("text,value", [
    ("0/0", 0), ("16/B374D848", 0x16B374D848), ("0/2000318", 0x2000318),
    ("ffffffff/ffffffff", 2**64 - 1), ("0/00000001", 1),
])
def test_parse_lsn(text, value):
    assert parse_lsn(text) == value


@pytest.mark.parametrize("bad", [
    "", "0", "/", "0/", "/0", "0/0/0", " 0/0", "0/0\n", "1_0/0", "0x1/0", "123456789/0",
    "0/123456789", "-1/0", "g/0", "\u0661/0",
])
def test_parse_lsn_rejects(bad):
    with pytest.raises(ValueError):
        parse_lsn(bad)


@given(st.integers(0, 2**64 - 1))
def test_lsn_round_trip(lsn):
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn and text == text.upper() and len(text.split("/")[1]) == 8


def test_format_lsn():
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0x2000318) == "0/02000318"
    with pytest.raises(ValueError):
        format_lsn(2**64)


@given(st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_segment_name_round_trip(tli, log, seg):
    s = Segment(tli, log, seg)
    assert len(s.name) == 24 and Segment.parse(s.name) == s


@given(seg_sizes, st.integers(1, 0xFFFF), st.integers(0, (2**64 >> 20) - 2))
def test_next_prev_inverse(size, tli, n):
    n %= 2**64 // size - 1
    s = Segment.from_number(tli, n, size)
    assert s.number(size) == n and s.start_lsn(size) == n * size
    assert s.next(size).prev(size) == s and s.next(size).number(size) == n + 1
    assert s.next(size) > s and Segment.parse(s.next(size).name) == s.next(size)
    if n:
        assert s.prev(size).next(size) == s
    assert Segment.containing(tli, s.start_lsn(size) + size - 1, size) == s


@pytest.mark.parametrize("size", SIZES)
def test_log_wrap_every_size(size):
    last = Segment(1, 7, 2**32 // size - 1)
    assert last.next(size) == Segment(1, 8, 0)
    assert Segment(1, 8, 0).prev(size) == last
    with pytest.raises(ValueError):
        Segment(1, 7, 2**32 // size).number(size)


def test_log_wrap_16mib_names():
    s = Segment.parse("0000000100000000000000FF")
    assert s.next(DEFAULT_SEGMENT_SIZE).name == "000000010000000100000000"
    assert Segment.parse("000000010000000100000000").prev(DEFAULT_SEGMENT_SIZE) == s
    assert s.start_lsn(DEFAULT_SEGMENT_SIZE) == parse_lsn("0/FF000000")
    assert Segment.containing(1, parse_lsn("16/B374D848"), DEFAULT_SEGMENT_SIZE).name == \
        "0000000100000016000000B3"
    with pytest.raises(ValueError):  # 0x100 cannot exist with 16 MiB segments
        Segment.parse("000000010000000000000100").next(DEFAULT_SEGMENT_SIZE)
    with pytest.raises(ValueError):
        Segment(1, 0, 0).prev(DEFAULT_SEGMENT_SIZE)
    with pytest.raises(ValueError):
        Segment(1, 0, 0).next(3 * MiB)


@pytest.mark.parametrize("name,kind,tli,offset", [
    ("000000010000000000000001", WalKind.SEGMENT, 1, None),
    ("0000000A00000016000000B3.partial", WalKind.PARTIAL, 10, None),
    ("00000003.history", WalKind.HISTORY, 3, None),
    ("000000010000000000000002.00000028.backup", WalKind.BACKUP, 1, 0x28),
])
def test_parse_wal_name(name, kind, tli, offset):
    w = parse_wal_name(name)
    assert (w.kind, w.name, w.timeline, w.backup_offset) == (kind, name, tli, offset)
    if kind is WalKind.HISTORY:
        assert w.segment is None
    else:
        assert w.segment.name == name[:24]


@pytest.mark.parametrize("bad", [
    "", "/", ".", "..", "../000000010000000000000001", "000000010000000000000001/..",
    "/000000010000000000000001", "pg_wal/000000010000000000000001", "..\\000000010000000000000001",
    "00000001000000000000000a", "0000000a.history", "00000001000000000000001",
    "0000000100000000000000001", "000000000000000000000001", "00000000.history",
    "000000000000000000000001.partial", "000000010000000000000001.partial.partial",
    "000000010000000000000001.gz", "000000010000000000000001.00000028.backup.gz",
    "000000010000000000000001.0028.backup", "0000001.history", "00000001.history.tmp",
    "000000010000000000000001\x00", " 000000010000000000000001", "000000010000000000000001\n",
    "000000010000000000000001.PARTIAL", "\uff10" * 24, "archive_status",
])
def test_parse_wal_name_rejects(bad):
    with pytest.raises(ValueError):
        parse_wal_name(bad)
    if len(bad) == 24:
        with pytest.raises(ValueError):
            Segment.parse(bad)


def test_real_history_file():
    entries = parse_history(REAL_HISTORY_3, 3)
    assert entries == [HistoryEntry(1, 0x2000318, "no recovery target specified"),
                       HistoryEntry(2, 0x3000318, "no recovery target specified")]
    path = timeline_path(3, entries)
    assert path == [TimelineSpan(1, 0, 0x2000318), TimelineSpan(2, 0x2000318, 0x3000318),
                    TimelineSpan(3, 0x3000318, None)]
    for lsn, tli in [(0, 1), (0x2000317, 1), (0x2000318, 2), (0x3000317, 2),
                     (0x3000318, 3), (2**64 - 1, 3)]:
        assert timeline_of_point(path, lsn) == tli


def test_history_tolerant_forms():
    text = ("# comment\n   \n  # indented comment\r\n1 0/10\r\n"
            "4   A/0\tbefore 2024-01-02 03:04:05+00\n7\t1F/FFFFFFFF\n")
    assert parse_history(text, 9) == [HistoryEntry(1, 0x10, ""),
                                      HistoryEntry(4, 0xA00000000, "before 2024-01-02 03:04:05+00"),
                                      HistoryEntry(7, 0x1FFFFFFFFF, "")]
    assert parse_history("", 1) == [] and timeline_path(1, []) == [TimelineSpan(1, 0, None)]


@pytest.mark.parametrize("text,tli", [
    ("x\t0/10\treason\n", 2),          # non-numeric TLI
    ("1\n", 2),                         # no switchpoint
    ("1\t0/10reason\n", 2),             # reason glued to the LSN
    ("10/10\treason\n", 20),            # no separator between TLI and LSN
    ("1\t0/123456789\n", 2),            # LSN half too long
    ("1\t0-10\n", 2),
    ("2\t0/10\n1\t0/20\n", 3),          # not increasing
    ("1\t0/10\n1\t0/20\n", 3),          # duplicate
    ("1\t0/10\n2\t0/20\n", 2),          # parent not below the child
    ("0\t0/10\n", 2),
])
def test_history_rejects(text, tli):
    with pytest.raises(ValueError):
        parse_history(text, tli)


def test_timeline_path_rejects_backwards_switch():
    with pytest.raises(ValueError):
        timeline_path(3, [HistoryEntry(1, 0x300, ""), HistoryEntry(2, 0x200, "")])
    with pytest.raises(ValueError):
        timeline_of_point([TimelineSpan(2, 0x100, None)], 0x10)


def make_header(magic=0xD110, info=XLP_LONG_HEADER, tli=1, pageaddr=0x1000000, size=DEFAULT_SEGMENT_SIZE):
    return struct.pack("<HHIQI4xQII", magic, info, tli, pageaddr, 0, 0x1234, size, 8192)


def test_parse_constructed_header():
    raw = make_header(tli=5, pageaddr=0x16B3000000) + b"\xff" * 100
    h = parse_long_page_header(raw)
    assert h == PageHeader(0xD110, XLP_LONG_HEADER, 5, 0x16B3000000, 0, 0x1234, DEFAULT_SEGMENT_SIZE, 8192)
    with pytest.raises(ValueError):
        parse_long_page_header(raw[:LONG_PAGE_HEADER_SIZE - 1])
    with pytest.raises(ValueError):
        parse_long_page_header(make_header(info=0x0005))


def test_real_headers():
    h = parse_long_page_header(REAL_16M)
    assert WAL_PAGE_MAGIC[h.magic] == 15 and h.timeline == 1 and h.block_size == 8192
    assert h.system_identifier == 0x6B04FB6B57255C5F and h.segment_size == DEFAULT_SEGMENT_SIZE
    check_segment_header(Segment.parse("000000010000000000000001"), h, DEFAULT_SEGMENT_SIZE)

    tl3 = parse_long_page_header(REAL_TL3_FIRST)
    assert tl3.timeline == 2  # inherited from the parent timeline
    check_segment_header(Segment.parse("000000030000000000000003"), tl3, DEFAULT_SEGMENT_SIZE)

    with pytest.raises(ValueError, match="page address"):
        check_segment_header(Segment.parse("000000030000000000000004"),
                             parse_long_page_header(REAL_RECYCLED), DEFAULT_SEGMENT_SIZE)

    small = parse_long_page_header(REAL_1M)
    assert small.segment_size == MiB and small.rem_len == 0xD1
    check_segment_header(Segment.parse("000000010000000000000006"), small, MiB)


def test_magic_table():
    assert WAL_PAGE_MAGIC[0xD110] == 15 and len(set(WAL_PAGE_MAGIC.values())) == len(WAL_PAGE_MAGIC)
    assert all(0xD000 < m < 0xD200 for m in WAL_PAGE_MAGIC)


@pytest.mark.parametrize("kwargs,file_size,name,match", [
    (dict(pageaddr=0x2000000), DEFAULT_SEGMENT_SIZE, "000000010000000000000001", "page address"),
    ({}, DEFAULT_SEGMENT_SIZE - 1, "000000010000000000000001", "bytes"),
    (dict(size=MiB), DEFAULT_SEGMENT_SIZE, "000000010000000000000001", "bytes"),
    (dict(size=3 * MiB), 3 * MiB, "000000010000000000000001", "segment size"),
    (dict(magic=0xD093), DEFAULT_SEGMENT_SIZE, "000000010000000000000001", "magic"),
    (dict(tli=2), DEFAULT_SEGMENT_SIZE, "000000010000000000000001", "timeline"),
    (dict(tli=0), DEFAULT_SEGMENT_SIZE, "000000010000000000000001", "timeline"),
    (dict(pageaddr=0x100000000), DEFAULT_SEGMENT_SIZE, "000000010000000000000100", "segment size"),
])
def test_check_segment_header_mismatches(kwargs, file_size, name, match):
    header = parse_long_page_header(make_header(**kwargs))
    with pytest.raises(ValueError, match=match):
        check_segment_header(Segment.parse(name), header, file_size)


@given(seg_sizes, st.integers(0, 2**32 - 1))
def test_check_segment_header_accepts_consistent(size, n):
    seg = Segment.from_number(7, n, size)
    header = parse_long_page_header(make_header(tli=3, pageaddr=seg.start_lsn(size), size=size))
    check_segment_header(seg, header, size)
