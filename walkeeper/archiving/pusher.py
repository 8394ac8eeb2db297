"""The background pusher: a detached worker storing the segments marked `.ready` in
pg_wal, oldest first, with push.parallel threads, and recording each completion
(claims.py says how the pusher and the foreground push of PostgreSQL share work).
"""

from __future__ import annotations

import os

from walkeeper.archiving.claims import (_READY, CLAIM, IDLE, LOCK, MAX_PER_RUN, RESCAN, SCAN, claim,
                                        ready_segments, release, sync_dir, unlink,
                                        write_record)


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

        from walkeeper.archiving import wal_store
        from walkeeper.stores.pool import StorePool

        pool = StorePool(self.config.stores, self.config.keyring)
        lock = threading.Lock()
        seal: list = []

        def seal_of(stores: list):
            # One look at the archive's encryption for the whole run.
            with lock:
                if not seal:
                    seal.append(wal_store.seal_for(self.config, stores))
            return seal[0]

        self.stores_of_this_thread = pool.all
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
            pool.close()

    def _one(self, name: str) -> str:
        """Store one segment under its claim: 'ok', 'skipped', 'failed' or 'fatal'."""
        from walkeeper import state
        from walkeeper.archiving import wal_store
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
            _, digest, st = wal_store.push_path(self.config, path, parse_wal_name(name),
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
                unlink(os.path.join(self.dir, e))
            elif e.endswith(CLAIM) and e[:-len(CLAIM)] not in ready:
                name = e[:-len(CLAIM)]
                try:
                    fd = claim(self.dir, name)
                except OSError:
                    continue
                if fd is not None:
                    release(self.dir, name, fd)
            elif e.startswith(".") and ".json." in e and e[1:25] not in ready:
                unlink(os.path.join(self.dir, e))
        return recorded
