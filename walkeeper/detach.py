"""Detached workers: the background pusher (archiving/pusher.py) and the prefetcher
(archiving/prefetcher.py) run in a child that push or fetch forks and leaves behind.

The child holds the worker's lock file (an flock, so one worker per cluster), leaves
PostgreSQL's process group and pipes (the archiver and the startup process wait on
neither), keeps no other descriptor of its parent, and ends with os._exit: it never
returns into the code that forked it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# glibc hands blocks of 128 KiB and more back to the kernel as they are freed, so a
# worker that decodes or encodes in 1 MiB pieces page-faults its way through every
# segment again: ~1,600 faults and ~3 ms of CPU per 16 MiB segment (measured on the
# prefetcher). Workers keep freed memory instead; what they hold at once is bounded.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 64 << 20


def spawn(lock_fd: int, work: Callable[[], None]) -> bool:
    """Fork a detached child that keeps lock_fd and runs work(); the child exits 0
    when work returns, 1 when it raises. In the parent: True once started (lock_fd is
    closed there, the child holds it), False if fork failed. Fork before this process
    starts any thread."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        pid = os.fork()
    except OSError:
        os.close(lock_fd)
        return False
    if pid:
        os.close(lock_fd)
        return True
    code = 0
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, lock_fd)
        os.closerange(lock_fd + 1, 1 << 16)
        keep_freed_memory()
        work()
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed blocks for reuse (a no-op elsewhere)."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (ImportError, OSError, AttributeError):
        pass
