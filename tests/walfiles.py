"""Synthetic WAL segments for tests that need many, big or hostile files quickly.

A segment here has a real long page header (the only part push checks) followed
by random or zero bytes; real WAL from real clusters is used wherever the test is
about PostgreSQL itself.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from walkeeper.wal import Segment

XLP_LONG_HEADER = 0x0002
PG15_MAGIC = 0xD110
SYSID = 7311111111111111111


def segment_bytes(name: str, seg_size: int = 16 << 20, sysid: int = SYSID,
                  random: bool = True, header_tli: int | None = None) -> bytes:
    seg = Segment.parse(name)
    header = struct.pack("<HHIQI4xQII", PG15_MAGIC, XLP_LONG_HEADER,
                         header_tli or seg.timeline, seg.start_lsn(seg_size), 0,
                         sysid, seg_size, 8192)
    body = os.urandom(seg_size - len(header)) if random else bytes(seg_size - len(header))
    return header + body


def write_segment(directory: Path, name: str, **kw) -> Path:
    path = Path(directory) / name
    path.write_bytes(segment_bytes(name, **kw))
    return path
