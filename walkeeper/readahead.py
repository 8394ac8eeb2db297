"""Read-ahead push: a detached background pusher and its completion records.

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
    _unlink(os.path.join(directory, name + CLAIM))
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


def kick(config, pg_wal: str, directory: str) -> bool:
    """Make sure a background pusher runs for this cluster's records; start one,
    detached, if none holds the lock. True when one runs. Never fails the push.
    Call it before any thread is started (it forks)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lock_fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    import fcntl

    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)           # a pusher runs and will see the ready segments
        return True
    from walkeeper.detach import spawn

    def work() -> None:
        import signal

        pusher = Pusher(config, pg_wal, directory)
        # SIGTERM: finish the segments being stored, then exit 0. Where PostgreSQL
        # is PID 1 (a container without an init), it reaps this orphan, and takes a
        # child killed by a signal for a crashed backend.
        signal.signal(signal.SIGTERM, lambda signum, frame: pusher.stop())
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        pusher.run()

    # The child leaves the claim of the foreground's segment to the parent: it keeps
    # no descriptor but the lock's.
    return spawn(lock_fd, work)


# --------------------------------------------------------------- the pusher

class Pusher:
    """Stores the ready segments of one pg_wal, oldest first, until nothing is left
    to do for IDLE seconds, MAX_PER_RUN segments are stored, pg_wal or the records
    directory disappears, the config file changes, or something unexpected fails."""

    def __init__(self, config, pg_wal: str, directory: str):
        self.config = config
        self.pg_wal = pg_wal
        self.dir = directory
        self.workers = config["push.parallel"]
        self.config_stamp = self._config_stamp()
        self.stopping = False

    def stop(self) -> None:
        """Start no new segment; run() returns once the ones under way are stored."""
        self.stopping = True

    def _config_stamp(self):
        path = getattr(self.config, "path", None)
        if not path:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return "gone"
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def run(self) -> None:
        import threading
        import time
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from walkeeper import archive
        from walkeeper.stores import open_stores

        local = threading.local()
        opened: list[list] = []
        lock = threading.Lock()
        seal: list = []

        def seal_of(stores: list):
            # One look at the archive's encryption for the whole run.
            with lock:
                if not seal:
                    seal.append(archive._writer_key(self.config, stores))
            return seal[0]

        def stores_of_this_thread() -> list:
            # A store connection (SFTP) is not shared between threads.
            stores = getattr(local, "stores", None)
            if stores is None:
                stores = local.stores = open_stores(self.config)
                with lock:
                    opened.append(stores)
            return stores

        self.stores_of_this_thread = stores_of_this_thread
        self.seal_of = seal_of
        self.state_lock = lock
        self.fatal = False
        self.last_stored = ""
        inflight: dict = {}           # name -> future
        seen: set[str] = set()        # taken up by this run: never again in it
        queue: list[str] = []         # ready, not recorded, not seen: oldest first
        scanned = 0.0
        idle_since = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                try:
                    while True:
                        for name, fut in list(inflight.items()):
                            if fut.done():
                                del inflight[name]
                                if fut.exception() is not None or fut.result() == "fatal":
                                    return
                        if self.stopping:
                            return
                        now = time.monotonic()
                        if len(inflight) < self.workers and (not queue or now - scanned > RESCAN):
                            # A long backlog is listed again only now and then.
                            ready = ready_segments(self.pg_wal)
                            if ready is None or not os.path.isdir(self.dir) \
                                    or self._config_stamp() != self.config_stamp:
                                return
                            queue = sorted(ready - self._prune(ready) - seen, reverse=True)
                            scanned = now
                        while queue and len(inflight) < self.workers and len(seen) < MAX_PER_RUN:
                            name = queue.pop()
                            seen.add(name)
                            inflight[name] = pool.submit(self._one, name)
                        if inflight:
                            wait(list(inflight.values()), timeout=SCAN,
                                 return_when=FIRST_COMPLETED)
                            idle_since = time.monotonic()
                        elif len(seen) >= MAX_PER_RUN or now - idle_since > IDLE:
                            return
                        else:
                            time.sleep(SCAN)
                finally:
                    for fut in inflight.values():
                        fut.cancel()
        finally:
            for stores in opened:
                for s in stores:
                    try:
                        s.close()
                    except Exception:
                        pass

    def _one(self, name: str) -> str:
        """Store one segment under its claim: 'ok', 'skipped', 'failed' or 'fatal'."""
        from walkeeper import archive, state
        from walkeeper.errors import ConfigError, StoreError, WalkeeperError
        from walkeeper.wal import parse_wal_name

        try:
            fd = claim(self.dir, name)
        except OSError:
            return "fatal"
        if fd is None:
            return "skipped"          # a foreground push of it is running
        if self.fatal:
            release(self.dir, name, fd)
            return "fatal"
        status = os.path.join(self.pg_wal, "archive_status", name + _READY)
        try:
            if not os.path.exists(status) or os.path.exists(os.path.join(self.dir, name + ".json")):
                return "skipped"      # archived meanwhile, or a foreground push stored it
            path = os.path.join(self.pg_wal, name)
            _, digest, st = archive._push_path(self.config, path, parse_wal_name(name),
                                               self.stores_of_this_thread(), 0, self.seal_of)
            if st is None:
                return "ok"           # the file changed while it was read: no record
            write_record(self.dir, name, st, digest.hex())
            sync_dir(self.dir)
            with self.state_lock:
                if name > self.last_stored:
                    self.last_stored = name
                    state.record_success(self.config.state_dir, "push", wal=name,
                                         stores=[s.name for s in self.config.stores])
            return "ok"
        except ConfigError as exc:
            # A wrong key fails every segment: stop, PostgreSQL's own call says why.
            with self.state_lock:
                first, self.fatal = not self.fatal, True
            if first:
                state.record_failure(self.config.state_dir, "push-readahead", name, exc.line())
            return "fatal"
        except (WalkeeperError, StoreError, OSError, ValueError) as exc:
            if os.path.exists(status):
                line = exc.line() if isinstance(exc, WalkeeperError) else str(exc)
                state.record_failure(self.config.state_dir, "push-readahead", name,
                                     f"{line}; PostgreSQL's own call will retry it")
            return "failed"
        except BaseException:
            return "fatal"
        finally:
            release(self.dir, name, fd)

    def _prune(self, ready: set[str]) -> set[str]:
        """Drop records, claims and temporary records of segments no longer ready
        (PostgreSQL will not ask for them); return the recorded names."""
        try:
            entries = os.listdir(self.dir)
        except OSError:
            return set()
        recorded = set()
        for e in entries:
            if e.endswith(".json") and not e.startswith("."):
                name = e[:-5]
                if name in ready:
                    recorded.add(name)
                    continue
                _unlink(os.path.join(self.dir, e))
            elif e.endswith(CLAIM) and e[:-len(CLAIM)] not in ready:
                name = e[:-len(CLAIM)]
                try:
                    fd = claim(self.dir, name)
                except OSError:
                    continue
                if fd is not None:
                    release(self.dir, name, fd)
            elif e.startswith(".") and ".json." in e and e[1:25] not in ready:
                _unlink(os.path.join(self.dir, e))
        return recorded


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
