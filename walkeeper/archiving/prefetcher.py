"""Prefetching fetch: a spool of the segments recovery will ask for next.

When recovery fetches segment N, a detached prefetcher (a forked child, one at a time
per cluster, held by a lock file) fetches N+1 .. N+K of the same timeline in parallel
into <state_dir>/spool/<cluster>/. Each one is decoded and verified (objects.py: the
sizes and zstd's checksum of the original bytes, which every byte written must pass;
the stored body's SHA-256 where the object is not zstd or is encrypted, and then
every chunk's tag; then its first page against the name and the archive's system
identifier, format/naming.py) while written under a temporary name (`.NAME.tmp-*`), and only then
renamed to `NAME.<checksum>.<boot>`: an entry's name is the proof it was verified.
<boot> is the start of the kernel's boot id, so an entry a crash may have left with
unwritten pages (spool files are not fsynced) is never served after the reboot; where
there is no boot id the prefetcher fsyncs each entry before naming it.

A later fetch serves the entry for its exact name and this boot only, after checking
its size and its first page header against the name (timeline, segment number,
segment size), by renaming it to DEST_PATH (copying when the spool is on another
filesystem). It does not re-read the content: like pgBackRest, WAL-G and Barman, it
trusts what it verified seconds ago on the same machine, which keeps a served fetch
close to an interpreter's start-up. Nothing is ever written inside pg_wal except
DEST_PATH.

The prefetcher follows the newest requested name (the `.wanted` file), stops at the
first segment the archive lacks, keeps the spool under fetch.spool_max_bytes, and
once no new request came for fetch.prefetch_idle seconds it empties the spool and
exits.
"""

from __future__ import annotations

import os
import time

from walkeeper import log
from walkeeper.errors import CorruptObject, ObjectNotFound, StoreError
from walkeeper.wal import (LONG_PAGE_HEADER_SIZE, Segment, WalName, check_segment_header,
                           parse_long_page_header, valid_segment_size)

STALE = 600.0              # spool entries older than this are dropped
INFLIGHT_WAIT = 30.0       # longest wait for an entry being written by the prefetcher
WANTED = ".wanted"
LOCK = ".lock"
_COPY_CHUNK = 1 << 20
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
NO_BOOT = "00000000"


def boot_tag() -> str:
    """8 hex digits of this boot's id; NO_BOOT where the system has none."""
    try:
        with open(_BOOT_ID) as f:
            tag = f.read(8)
    except OSError:
        return NO_BOOT
    return tag if len(tag) == 8 else NO_BOOT


def spool_dir(state_dir: str, cluster: str) -> str:
    return os.path.join(state_dir, "spool", cluster)


def _entry(names: list[str], name: str, boot: str) -> str | None:
    """The verified entry for NAME written during this boot."""
    for n in names:
        if len(n) == len(name) + 74 and n.startswith(name + ".") and n.endswith(boot):
            return n
    return None


def _inflight(names: list[str], name: str) -> list[str]:
    prefix = f".{name}.tmp-"
    return [n for n in names if n.startswith(prefix)]


# ------------------------------------------------------------------ serving

def serve(config, wal: WalName, dest: str) -> bool:
    """Move the verified spool entry for exactly this name to DEST; False: not spooled
    (or not good), fetch it from the stores."""
    d = spool_dir(config.state_dir, config.cluster)
    boot = boot_tag()
    deadline = time.monotonic() + INFLIGHT_WAIT
    while True:
        try:
            names = os.listdir(d)
        except OSError:
            return False
        entry = _entry(names, wal.name, boot)
        if entry is not None:
            break
        # The prefetcher may be writing it right now: wait rather than fetch twice.
        busy = False
        for n in _inflight(names, wal.name):
            try:
                busy |= time.time() - os.stat(os.path.join(d, n)).st_mtime < 5.0
            except OSError:
                pass
        if not busy or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    path = os.path.join(d, entry)
    try:
        ok = _check(path, wal)
    except OSError:
        return False
    if not ok:
        _unlink(path)
        return False
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return False
    except OSError:
        if not _copy(path, dest):
            return False
        _unlink(path)
    log.debug(f"served {wal.name} from the prefetch spool {d}")
    return True


def _check(path: str, wal: WalName) -> bool:
    """The entry is a whole segment and its first page is WAL's page for this name."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(LONG_PAGE_HEADER_SIZE)
    try:
        check_segment_header(wal.segment, parse_long_page_header(head), size)
    except ValueError as exc:
        log.warn(f"prefetch spool: {path} does not hold {wal.name} ({exc}); not served, "
                 f"fetching from the stores")
        return False
    return True


def _copy(src: str, dest: str) -> bool:
    directory, base = os.path.split(dest)
    tmp = os.path.join(directory, f".{base}.wk-{os.urandom(4).hex()}")
    try:
        with open(src, "rb") as fi, open(tmp, "xb") as fo:
            while chunk := fi.read(_COPY_CHUNK):
                fo.write(chunk)
        os.replace(tmp, dest)
        return True
    except OSError:
        _unlink(tmp)
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ------------------------------------------------------------ starting it

def kick(config, wal: WalName, seg_size: int) -> None:
    """After N reached DEST: tell the prefetcher about N, starting one if none runs.
    Never fails the fetch."""
    if config["fetch.prefetch"] <= 0 or not valid_segment_size(seg_size):
        return
    d = spool_dir(config.state_dir, config.cluster)
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, f"{WANTED}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(f"{wal.name} {seg_size}\n")
        os.replace(tmp, os.path.join(d, WANTED))
        lock_fd = os.open(os.path.join(d, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warn(f"prefetch disabled: cannot use the spool {d} ({exc.strerror})")
        return
    import fcntl

    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)           # a prefetcher runs and will see .wanted
        return
    from walkeeper.detach import spawn

    spawn(lock_fd, Prefetcher(config, d).run)


# ---------------------------------------------------------- the prefetcher

class Prefetcher:
    def __init__(self, config, directory: str):
        self.config = config
        self.dir = directory
        self.depth = config["fetch.prefetch"]
        self.max_bytes = config["fetch.spool_max_bytes"]
        self.idle = config["fetch.prefetch_idle"]
        self.boot = boot_tag()

    def _wanted(self, last=None):
        """(segment, size, change key) of the newest request; None once .wanted is
        gone. walkeeper fetch replaces the file whole; walkeeper-fast rewrites it in
        place, so a line caught half-written means the last request still stands."""
        path = os.path.join(self.dir, WANTED)
        try:
            with open(path) as f:
                text = f.read()
            st = os.stat(path)
        except OSError:
            return None
        try:
            name, size = text.split()
            return Segment.parse(name), int(size), (name, st.st_ino, st.st_mtime_ns)
        except ValueError:
            return last

    def _clean(self, current: Segment | None, keep: set[str], everything: bool = False) -> int:
        """Drop entries already passed, stale ones, those of an earlier boot and orphaned
        temporaries; return the bytes the spool holds."""
        total = 0
        now = time.time()
        try:
            names = os.listdir(self.dir)
        except OSError:
            return 0
        for n in names:
            if n in (WANTED, LOCK) or n.startswith(WANTED + "."):
                continue
            path = os.path.join(self.dir, n)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if n.startswith("."):
                if n in keep:
                    total += st.st_size
                elif everything or now - st.st_mtime > STALE:
                    _unlink(path)
                continue
            name = n[:24]
            passed = (current is not None and name[:8] == current.name[:8]
                      and name <= current.name)
            if everything or passed or now - st.st_mtime > STALE or not n.endswith(self.boot):
                _unlink(path)
            else:
                total += st.st_size
        return total

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        import threading

        from walkeeper.format.layout import wal_keys
        from walkeeper.stores.pool import StorePool
        from walkeeper.wal import parse_wal_name

        local = threading.local()
        pool = StorePool(self.config.stores, self.config.keyring)
        stores = pool.all

        identities: dict = {}

        def identity(store):
            """identity.json of a store, read once per run."""
            from walkeeper.archiving.wal_store import archive_identity

            if store.name not in identities:
                identities[store.name] = archive_identity(store, self.config.cluster)
            return identities[store.name]

        def fetch(name: str, tmp: str) -> str:
            """'ok', 'missing' (every store said absent) or 'error'; the temporary is
            gone unless renamed to the entry."""
            result = "error"
            try:
                result = fetch_into(name, tmp)
            finally:
                if result != "ok":
                    _unlink(os.path.join(self.dir, tmp))
            return result

        def fetch_into(name: str, tmp: str) -> str:
            buffer = getattr(local, "buffer", None)
            if buffer is None:
                buffer = local.buffer = bytearray(_COPY_CHUNK)
            keys = wal_keys(self.config.cluster, parse_wal_name(name),
                            self.config["compression.algorithm"])
            absent = 0
            all_stores = stores()
            for store in all_stores:
                try:
                    for key in keys:
                        try:
                            if self._fetch_key(store, key, name, tmp, buffer,
                                               lambda: identity(store)):
                                return "ok"
                        except ObjectNotFound:
                            continue
                    absent += 1
                except (StoreError, CorruptObject, OSError) as exc:
                    log.debug(f"prefetch {name} from {store.name}: {exc}")
            return "missing" if absent == len(all_stores) else "error"

        inflight: dict[str, tuple] = {}       # name -> (future, temp file name)
        fetched: set[str] = set()             # spooled by this run (maybe served already)
        stop: Segment | None = None           # first segment the archive could not give
        last_change = time.monotonic()
        last_mtime = None
        # One worker per core: decompression and sha256 release the GIL, and the
        # fetch processes serving the spool need CPU too.
        workers = max(1, min(os.cpu_count() or 2, self.depth))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                w = None
                while True:
                    w = self._wanted(w)
                    if w is None:
                        break
                    current, seg_size, mtime = w
                    if mtime != last_mtime:
                        last_mtime = mtime
                        last_change = time.monotonic()
                        if stop is not None and (stop.timeline != current.timeline
                                                 or stop <= current):
                            stop = None
                    for name, (fut, tmp) in list(inflight.items()):
                        if fut.done():
                            del inflight[name]
                            result = fut.result() if not fut.exception() else "error"
                            if result == "ok":
                                fetched.add(name)
                            else:
                                seg = Segment.parse(name)
                                stop = seg if stop is None or seg < stop else stop
                    spooled = self._clean(current, {t for _, t in inflight.values()})
                    names = os.listdir(self.dir)
                    nxt = current
                    for _ in range(self.depth):
                        nxt = nxt.next(seg_size)
                        if stop is not None and nxt.timeline == stop.timeline and nxt >= stop:
                            break
                        if nxt.name in inflight or nxt.name in fetched \
                                or _entry(names, nxt.name, self.boot):
                            continue
                        if spooled + (len(inflight) + 1) * seg_size > self.max_bytes:
                            break
                        tmp = f".{nxt.name}.tmp-{os.urandom(4).hex()}"
                        # The temporary exists from now on, not from when a worker
                        # starts on it: a fetch asking for the segment meanwhile waits
                        # for this one rather than decoding it a second time.
                        try:
                            os.close(os.open(os.path.join(self.dir, tmp),
                                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                        except OSError:
                            break
                        inflight[nxt.name] = (pool.submit(fetch, nxt.name, tmp), tmp)
                    if not inflight and time.monotonic() - last_change > self.idle:
                        break
                    time.sleep(0.02)
            finally:
                for fut, _ in inflight.values():
                    fut.cancel()
        self._clean(None, set(), everything=True)
        _unlink(os.path.join(self.dir, WANTED))
        pool.close()

    def _fetch_key(self, store, key: str, name: str, tmp: str, buffer: bytearray,
                   identity=None) -> bool:
        from walkeeper.archiving.wal_store import content_check
        from walkeeper.format.objects import ObjectReader
        from walkeeper.wal import parse_wal_name

        check, _ = content_check(store, self.config.cluster,
                                 self.config["compression.algorithm"], parse_wal_name(name),
                                 identity)

        reader = store.open(key)
        path = os.path.join(self.dir, tmp)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb", buffering=0) as f:
                # Decoded into this worker's buffer. The last readinto raises
                # CorruptObject unless the object verifies; the zstd frame's XXH64
                # checks the content, so the body's SHA-256 is skipped.
                obj = ObjectReader(reader.read, store.keyring, body_checksum=False, name=key)
                view = memoryview(buffer)
                head = b""
                size = 0
                while n := obj.readinto(buffer):
                    if not head:
                        head = bytes(view[:LONG_PAGE_HEADER_SIZE])
                    size += n
                    chunk = view[:n]
                    while chunk:
                        chunk = chunk[f.write(chunk):]
                trailer = obj.trailer
                # Verified: now prove it is the segment asked for (its first page
                # against the name, the archive's system identifier, the history of
                # a new timeline's first segment) before it may be served as one.
                check(head, size)
                if self.boot == NO_BOOT:
                    os.fsync(f.fileno())     # no boot id to tell a crash's leftovers by
            os.rename(path, os.path.join(self.dir, f"{name}.{trailer.checksum}.{self.boot}"))
            return True
        except BaseException:
            _unlink(path)
            raise
        finally:
            reader.close()
