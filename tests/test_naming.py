"""The pure checks that a WAL file's content is the file its name asks for
(walkeeper/format/naming.py), and object format 3's recorded name (objects.py)."""

from __future__ import annotations

import io
import struct

import pytest

from conftest import need
from hypothesis import given, settings
from hypothesis import strategies as st

from walkeeper.errors import CorruptObject, MisplacedObject
from walkeeper.format import naming, objects
from walkeeper.format.crypto import Keyring
from walkeeper.format.objects import HEADER_SIZE, Encoder, decode
from walkeeper.wal import HistoryEntry, Segment, parse_wal_name

from walfiles import PG15_MAGIC, SYSID, XLP_LONG_HEADER

SIZES = [1 << 20, 16 << 20, 1 << 30]


def header(seg: Segment, seg_size: int, tli: int | None = None, sysid: int = SYSID,
           info: int = XLP_LONG_HEADER, magic: int = PG15_MAGIC, pageaddr: int | None = None,
           blcksz: int = 8192) -> bytes:
    return struct.pack("<HHIQI4xQII", magic, info, tli or seg.timeline,
                       seg.start_lsn(seg_size) if pageaddr is None else pageaddr, 0,
                       sysid, seg_size, blcksz)


def check(name: str, head: bytes, size: int, sysid=None, history=None) -> None:
    wal = parse_wal_name(name)
    naming.check_segment(wal, naming.segment_header(wal, head), size, sysid, history)


segments = st.builds(lambda tli, n: (tli, n), st.integers(1, 20), st.integers(0, 5000))


@settings(max_examples=300, deadline=None)
@given(a=segments, b=segments, seg_size=st.sampled_from(SIZES))
def test_a_header_proves_its_own_name_and_no_other(a, b, seg_size):
    x = Segment.from_number(a[0], a[1], seg_size)
    y = Segment.from_number(b[0], b[1], seg_size)
    head = header(x, seg_size)
    check(x.name, head, seg_size, SYSID)
    check(x.name + ".partial", head, seg_size, SYSID)
    if x == y:
        return
    if a[1] != b[1] or a[0] > b[0]:
        with pytest.raises(MisplacedObject) as e:
            check(y.name, head, seg_size, SYSID)
        assert y.name in str(e.value) and x.name in str(e.value)
    else:
        # Same segment number, older timeline: only the history can tell.
        check(y.name, head, seg_size, SYSID)
        with pytest.raises(MisplacedObject):
            # The history puts the segment's start on the child itself (switch at 0).
            check(y.name, head, seg_size, SYSID,
                  [HistoryEntry(t, 0, "") for t in range(1, b[0])])


def test_a_new_timelines_first_segment_carries_its_parent():
    size = 16 << 20
    # Timeline 2 branched from 1 at 0/5000100: segment 5 of timeline 2 starts with
    # timeline 1's pages, every later one with timeline 2's.
    history = [HistoryEntry(1, 0x5000100, "no recovery target specified")]
    first = Segment(2, 0, 5)
    check(first.name, header(first, size, tli=1), size, SYSID, history)
    check(first.name, header(first, size, tli=1), size, SYSID, None)   # history unknown
    later = Segment(2, 0, 6)
    check(later.name, header(later, size), size, SYSID, history)
    with pytest.raises(MisplacedObject, match="history of timeline 2"):
        check(later.name, header(later, size, tli=1), size, SYSID, history)
    # A switch exactly at a segment boundary: the first segment is the child's own.
    at_boundary = [HistoryEntry(1, 0x5000000, "")]
    check(first.name, header(first, size), size, SYSID, at_boundary)
    with pytest.raises(MisplacedObject):
        check(first.name, header(first, size, tli=1), size, SYSID, at_boundary)
    # Grandparent: timeline 3 from 2 at 0/7000000, 2 from 1 at 0/5000100.
    h3 = history + [HistoryEntry(2, 0x7000100, "")]
    s = Segment(3, 0, 7)
    check(s.name, header(s, size, tli=2), size, SYSID, h3)
    with pytest.raises(MisplacedObject):
        check(s.name, header(s, size, tli=1), size, SYSID, h3)
    # Never a timeline above the name's.
    with pytest.raises(MisplacedObject, match="above"):
        check(Segment(1, 0, 5).name, header(Segment(1, 0, 5), size, tli=2), size)


def test_system_identifier_size_and_garbage():
    size = 16 << 20
    s = Segment(1, 0, 5)
    with pytest.raises(MisplacedObject, match="database system 42"):
        check(s.name, header(s, size, sysid=42), size, SYSID)
    check(s.name, header(s, size, sysid=42), size, None)       # archive does not know it
    with pytest.raises(CorruptObject, match="file is"):
        check(s.name, header(s, size), size - 8192)
    with pytest.raises(CorruptObject, match="magic"):
        check(s.name, header(s, size, magic=0x1234), size)
    with pytest.raises(CorruptObject, match="flags"):
        check(s.name, header(s, size, info=XLP_LONG_HEADER | 0x0100), size)
    with pytest.raises(CorruptObject, match="block size"):
        check(s.name, header(s, size, blcksz=1000), size)
    with pytest.raises(CorruptObject, match="not a WAL file"):
        check(s.name, b"\0" * 40, size)
    with pytest.raises(CorruptObject, match="not a WAL file"):
        check(s.name, b"short", size)
    # A name impossible at the header's segment size: another file's content.
    big = Segment(1, 0, 0x300)
    with pytest.raises(MisplacedObject):
        check(big.name, header(Segment(1, 0, 3), 1 << 30), 1 << 30)


def hist(wal: str, text: str, known=None):
    return naming.check_history(parse_wal_name(wal), text.encode(), known)


def test_history_files():
    two = "1\t0/5000100\tno recovery target specified\n"
    three = two + "2\t0/7000100\tbefore 2026-12-03\n"
    assert [e.timeline for e in hist("00000003.history", three)] == [1, 2]
    # 3's content as 2's: it lists 2, not below 2.
    with pytest.raises(MisplacedObject) as e:
        hist("00000002.history", three)
    assert "00000002.history" in str(e.value) and "above 2" in str(e.value)
    # Consistent with the archive's other history files.
    known = {2: hist("00000002.history", two)}
    hist("00000003.history", three, known)
    other = "1\t0/6000000\tno recovery target specified\n2\t0/7000100\tx\n"
    with pytest.raises(MisplacedObject, match="00000002.history"):
        hist("00000003.history", other, known)
    # A child that descends from us must agree about our parents.
    with pytest.raises(MisplacedObject, match="00000003.history"):
        hist("00000002.history", "1\t0/6000000\tx\n", {3: hist("00000003.history", three)})
    with pytest.raises(CorruptObject):
        hist("00000002.history", "")
    with pytest.raises(CorruptObject):
        hist("00000002.history", "not a history\n")
    with pytest.raises(CorruptObject):
        naming.check_history(parse_wal_name("00000002.history"), b"\xff\xfe")


@given(parents=st.lists(st.integers(1, 50), min_size=1, max_size=6, unique=True),
       tli=st.integers(2, 60))
def test_history_parents_must_be_below_the_name(parents, tli):
    parents.sort()
    text = "".join(f"{p}\t0/{i + 1:X}000000\tx\n" for i, p in enumerate(parents))
    if max(parents) < tli:
        hist(f"{tli:08X}.history", text)
    else:
        with pytest.raises(MisplacedObject):
            hist(f"{tli:08X}.history", text)


def test_backup_files():
    real = (b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
            b"STOP WAL LOCATION: 0/5000100 (file 000000010000000000000005)\n"
            b"CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\n")
    ok = parse_wal_name("000000010000000000000005.00000028.backup")
    naming.check_backup_file(ok, real, 16 << 20)
    naming.check_backup_file(ok, real, None)
    with pytest.raises(MisplacedObject) as e:
        naming.check_backup_file(parse_wal_name("000000010000000000000007.00000028.backup"),
                                 real, 16 << 20)
    assert "000000010000000000000005.00000028.backup" in str(e.value)
    assert "000000010000000000000007.00000028.backup" in str(e.value)
    with pytest.raises(MisplacedObject, match="00000028.backup"):
        naming.check_backup_file(parse_wal_name("000000010000000000000005.00000060.backup"),
                                 real, 16 << 20)
    # Without "(file ...)", the LSN and the segment size decide.
    bare = b"START WAL LOCATION: 0/5000028\n"
    naming.check_backup_file(ok, bare, 16 << 20)
    with pytest.raises(MisplacedObject):
        naming.check_backup_file(parse_wal_name("000000010000000000000006.00000028.backup"),
                                 bare, 16 << 20)
    with pytest.raises(CorruptObject):
        naming.check_backup_file(ok, b"hello\n", 16 << 20)


# ------------------------------------------------------------ format 3 names

def ring_and_key(tmp_path):
    from walkeeper.format.crypto import ArchiveKey

    kf = tmp_path / "key"
    kf.write_bytes(b"k" * 48)
    kf.chmod(0o600)
    ring = Keyring(key_file=str(kf))
    params = ring.new_params()
    return ring, ArchiveKey(params, ring.master(params))


@pytest.mark.parametrize("codec", ["zstd", "none"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_an_object_records_its_name(tmp_path, codec, encrypted):
    ring, key = ring_and_key(tmp_path) if encrypted else (None, None)
    data = b"some WAL" * 5000
    name = "c/wal/0000000100000000/000000010000000000000005.zst"
    obj = b"".join(Encoder(codec, 3, len(data), 0, key, name=name).run([data]))
    assert objects.unpack_header(obj[:HEADER_SIZE]).version == 3
    out = io.BytesIO()
    t = decode(io.BytesIO(obj).read, out.write, ring, name=name)
    assert out.getvalue() == data and t.version == 3
    decode(io.BytesIO(obj).read, None, ring)             # a caller that does not know
    other = name.replace("05.zst", "06.zst")
    with pytest.raises(MisplacedObject) as e:
        decode(io.BytesIO(obj).read, None, ring, name=other)
    assert name in str(e.value) and other in str(e.value)
    # Editing the recorded name to the asked one: encrypted, every chunk fails; plain,
    # the body checksum does.
    forged = obj.replace(name.encode(), other.encode())
    with pytest.raises(CorruptObject) as e:
        decode(io.BytesIO(forged).read, None, ring, name=other)
    assert not isinstance(e.value, MisplacedObject)


def test_version_2_objects_stay_readable(tmp_path):
    ring, key = ring_and_key(tmp_path)
    for k, r in ((None, None), (key, ring)):
        obj = b"".join(Encoder("zstd", 3, 3, 0, k).run([b"abc"]))
        assert objects.unpack_header(obj[:HEADER_SIZE]).version == 2
        out = io.BytesIO()
        assert decode(io.BytesIO(obj).read, out.write, r, name="any/name.zst").version == 2
        assert out.getvalue() == b"abc"


def test_zstd_tool_still_decodes_a_plain_version_3_object(tmp_path):
    import shutil
    import subprocess

    need(shutil.which("zstd") is not None, "no zstd tool (bin/test installs it when run as root)")
    data = b"x" * 100000
    obj = b"".join(Encoder("zstd", 3, len(data), 0, None, name="c/wal/x.zst").run([data]))
    p = tmp_path / "o.zst"
    p.write_bytes(obj)
    assert subprocess.run(["zstd", "-dc", str(p)], capture_output=True).stdout == data


@pytest.mark.parametrize("doc", [
    {"system_identifier": "7311111111111111111", "wal_segment_size": 16777216},
    {"wal_segment_size": 1048576, "system_identifier": 42},
])
def test_identity_is_read_without_json(doc):
    """fetch reads identity.json's two numbers with string methods; anything else goes
    to json."""
    import json

    from walkeeper.format.identity import _identity_fields

    got = _identity_fields(json.dumps(doc).encode())
    assert got == {k: int(v) for k, v in doc.items()}
    assert _identity_fields(b'{"system_identifier": 5}') is None
    assert _identity_fields('{"system_identifier": "\u00e9"}'.encode()) is None
