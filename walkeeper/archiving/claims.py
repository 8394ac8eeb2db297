"""Claims and completion records of the background pusher (archiving/pusher.py).

PostgreSQL runs archive_command for one segment at a time, oldest first. When push is
called for segment N inside pg_wal (push.parallel > 1) and other segments are marked
`.ready` in pg_wal/archive_status, archive.push makes sure a background pusher runs
for this cluster (one at a time, held by the lock file `.pusher`, started by
detach.py as the prefetcher is: fork, setsid, PostgreSQL's pipes closed). The pusher
stores the ready segments oldest first with push.parallel worker threads while
PostgreSQL's calls come and go, and writes one record per segment here once its
object is durable in every store.

Each segment being stored is claimed first: an flock on `<NAME>.claim` here. The
pusher takes claims without waiting and skips a segment someone else holds; a
foreground push of N waits for N's claim (the pusher is storing N right now), then
looks for N's record, and stores N itself when there is none (recording it too while
a pusher runs, so that the pusher does not store it again before PostgreSQL marks it
`.done`). The pusher exits after IDLE seconds without work, after MAX_PER_RUN
segments, when pg_wal or the records directory disappears, when the config file
changes, on SIGTERM (once the segments under way are stored) and on any unexpected
error; a kill at any moment leaves a temporary upload at worst, never a record.

When PostgreSQL asks for a segment, its record is trusted only for the same name and
the same file (device, inode, size, mtime and ctime: PostgreSQL never rewrites a
segment once it is ready, and recycling renames it, which changes its ctime), then
consumed. Anything else falls back to a full push, which compares with the stored
copy as usual.

Records live in <state_dir>/readahead/<cluster>/<NAME>.json. Nothing here writes in
pg_wal or marks anything `.done`: that is PostgreSQL's job. The pusher has no stdout
or stderr; a segment it could not store is noted in the state directory's failure log
(command `push-readahead`) and PostgreSQL's own call stores it, or fails loudly.
"""

from __future__ import annotations

import os

MAX_PER_RUN = 256       # segments one pusher run stores at most (a later push starts another)
IDLE = 1.0              # seconds with nothing to store before the pusher exits
SCAN = 0.05             # how often an idle pusher looks for newly ready segments
RESCAN = 0.5            # how often a busy one lists archive_status again
CLAIM_WAIT = 300.0      # longest wait of a foreground push for the pusher's claim on N
LOCK = ".pusher"        # held by the running pusher; holds its pid
CLAIM = ".claim"
_READY = ".ready"
_HEX = frozenset("0123456789ABCDEF")


def records_dir(state_dir: str, cluster: str) -> str:
    return os.path.join(state_dir, "readahead", cluster)


def _record(name: str, st: os.stat_result, sha256: str) -> bytes:
    """A record: the JSON `{"name", "file": {dev, ino, size, mtime_ns, ctime_ns},
    "sha256"}` (the file's identity), written and compared byte for byte (the fast
    path imports no json: it starts a process per segment). `name` is a checked WAL
    name and `sha256` hex: nothing to escape."""
    return (f'{{"name": "{name}", "file": {{"dev": {st.st_dev}, "ino": {st.st_ino}, '
            f'"size": {st.st_size}, "mtime_ns": {st.st_mtime_ns}, '
            f'"ctime_ns": {st.st_ctime_ns}}}, "sha256": "{sha256}"}}').encode()


def consume(directory: str, wal_path: str, name: str) -> bool:
    """True when a record says this very file is already durable in every store.

    The record is deleted whether or not it is trusted: a mismatch means the file
    changed, and the full push that follows decides.
    """
    path = os.path.join(directory, name + ".json")
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        return False
    except OSError:
        data = b""
    try:
        st = os.stat(wal_path)
    except OSError:
        st = None
    trusted = False
    if st is not None:
        head = _record(name, st, "")[:-2]            # everything before the checksum
        digest = data[len(head):-2]
        trusted = (data.startswith(head) and data.endswith(b'"}') and len(digest) == 64
                   and all(c in b"0123456789abcdef" for c in digest))
    try:
        os.unlink(path)
    except OSError:
        pass
    return trusted


def write_record(directory: str, name: str, st: os.stat_result, sha256: str) -> None:
    """Record that `name` (this file) is in every store: temp, fsync, rename.

    The pusher fsyncs the directory (sync_dir) before it releases the segment's
    claim. A record lost in a crash only means a full push later, which compares
    with the stored copy.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = _record(name, st, sha256)
    tmp = os.path.join(directory, f".{name}.json.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(directory, name + ".json"))


def sync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ready_segments(pg_wal: str) -> set[str] | None:
    """Segments marked `.ready` in pg_wal/archive_status; None when that cannot be
    read (not a pg_wal directory, or it is gone)."""
    try:
        entries = os.listdir(os.path.join(pg_wal, "archive_status"))
    except OSError:
        return None
    return {e[:24] for e in entries
            if len(e) == 24 + len(_READY) and e.endswith(_READY) and _HEX.issuperset(e[:24])}


# ------------------------------------------------------------------- claims

class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def claim(directory: str, name: str, wait: float = 0.0) -> int | None:
    """Claim segment `name`: an flock on `<name>.claim`. Returns the descriptor to give
    to release(), or None when someone else holds it (after waiting up to `wait`
    seconds; 0: no wait; waiting needs the main thread, it uses SIGALRM).

    The holder deletes the file on release; a claim is ours only once the locked file
    is still the one under that name (else another process may hold a new one).
    """
    import fcntl

    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name + CLAIM)
    deadline = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if wait <= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                _flock_within(fd, wait if deadline is None else deadline - _now())
        except (BlockingIOError, _Timeout):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if deadline is None:
            deadline = _now() + wait
        try:
            st = os.stat(path)
            fst = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)            # released and deleted meanwhile: claim the new file


def _now() -> float:
    import time

    return time.monotonic()


def _flock_within(fd: int, seconds: float) -> None:
    import fcntl
    try:
        import _signal as signal    # the C module: `signal` imports enum, ~3 ms a push
    except ImportError:
        import signal

    if seconds <= 0:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def release(directory: str, name: str, fd: int) -> None:
    """Give up a claim taken with claim(): delete its file while holding it, unlock."""
    unlink(os.path.join(directory, name + CLAIM))
    os.close(fd)


# --------------------------------------------------------------- starting it

def running(directory: str) -> bool:
    """True when a background pusher holds the lock of these records."""
    import fcntl

    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
