#!/usr/bin/env python3
"""What writing one 16 MiB WAL segment into a new file costs on this machine, now.

    python3 bench/page_cost.py [--dir DIR] [--files 16]

Both tools' fetch rows write every segment once into a new spool file (walkeeper's
prefetcher and pgBackRest's async archive-get alike), then rename it into place; the
push rows write the compressed copy. On a VM whose free memory the host takes back
(free page reporting), the page cache of a new file costs whatever the host charges for
pages it has to back again, and that changes from minute to minute. This prints the
median time to write N new 16 MiB files (fresh pages), then the same after unlinking
them (pages the kernel just freed and hands straight back): the difference is the
machine's, not either tool's, and it is the noise beside every fetch figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

SEGMENT = 16 << 20
CHUNK = 1 << 20


def write_files(directory: str, count: int, data: bytes) -> list[float]:
    times = []
    for i in range(count):
        path = os.path.join(directory, f"page-cost-{i}")
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(SEGMENT // CHUNK):
                os.write(fd, data)
        finally:
            os.close(fd)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to write (default: a new directory "
                                                "under /tmp, the benches' file system)")
    ap.add_argument("--files", type=int, default=16)
    a = ap.parse_args()
    data = os.urandom(CHUNK)
    with tempfile.TemporaryDirectory(prefix="wk-page-cost-", dir=a.dir or "/tmp") as d:
        fresh = write_files(d, a.files, data)
        for i in range(a.files):
            os.unlink(os.path.join(d, f"page-cost-{i}"))
        reused = write_files(d, a.files, data)
    print(f"16 MiB into a new file: {statistics.median(fresh):.1f} ms median "
          f"(min {min(fresh):.1f}, max {max(fresh):.1f}) with fresh pages; "
          f"{statistics.median(reused):.1f} ms (min {min(reused):.1f}, max {max(reused):.1f}) "
          f"with pages just freed")


if __name__ == "__main__":
    main()
