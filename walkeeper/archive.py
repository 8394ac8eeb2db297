"""push and fetch: PostgreSQL's archive_command and restore_command.

push stores one WAL file durably in every configured store, read once and fanned
out; fetch brings one back from the first store holding a good copy. Exit-code
semantics live in the errors raised here (see errors.py and CONTRACT.md).

push of a segment inside pg_wal starts a detached background pusher that stores the
other segments marked `.ready` with push.parallel workers and records each completion
(readahead.py), so PostgreSQL's later calls for them return at once, or wait for the
segment the pusher is storing. fetch of a segment serves it from the prefetch
spool when a detached prefetcher already brought it (prefetch.py), and starts that
prefetcher for the segments after it.
"""

from __future__ import annotations

import os

from walkeeper import log
from walkeeper.config import Config
from walkeeper.errors import (ArchiveUnreadable, ConflictError, CorruptObject, NotInArchive,
                              ObjectExists, ObjectNotFound, OperationFailed, StoreError,
                              UsageError)
# The fast paths (a push that read-ahead already did, a fetch served from the prefetch
# spool) must start and exit within ~2x `python -c pass`: the modules that only the
# store paths need (layout, objects, transfer, stores, state, json) are imported in
# the functions that use them.
from walkeeper.record import record
from walkeeper.wal import (LONG_PAGE_HEADER_SIZE, WalKind, WalName, check_segment_header,
                           parse_long_page_header, parse_wal_name)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


def parse_name(name: str) -> WalName:
    try:
        return parse_wal_name(name)
    except ValueError as exc:
        raise UsageError(f"{name!r} is not a WAL file name: {exc}") from None


# trailer None: the stored copy is damaged
Existing = record("Existing", "key trailer")


def _find(store, keys: list[str]) -> Existing | None:
    from walkeeper.objects import TRAILER_SIZE, unpack_trailer

    for key in keys:
        try:
            tail = store.read_tail(key, TRAILER_SIZE)
        except ObjectNotFound:
            continue
        try:
            return Existing(key, unpack_trailer(tail))
        except CorruptObject:
            return Existing(key, None)
    return None


def _content_sha256(store, existing: Existing) -> bytes | None:
    """SHA-256 of the original bytes of a stored object; None when it is damaged.
    A version 1 trailer records it; a version 2 object is decoded (rare path)."""
    import hashlib

    from walkeeper.objects import decode

    t = existing.trailer
    if t is None:
        return None
    if t.version == 1:
        return t.sha256
    digest = hashlib.sha256()
    reader = store.open(existing.key)
    try:
        decode(reader.read, digest.update, store.keyring)
    except CorruptObject:
        return None
    finally:
        reader.close()
    return digest.digest()


def _conflict(name: str, store, existing: Existing, size: int, digest: bytes) -> str | None:
    """None when the stored copy holds exactly `size` bytes with SHA-256 `digest`."""
    t = existing.trailer
    stored = _content_sha256(store, existing) if t and t.original_size == size else None
    if t is None or t.original_size == size and stored is None:
        return (f"{name}: the copy in store {store.name!r} ({existing.key}) is damaged and "
                f"cannot be compared; run verify-chain and repair it by hand")
    if stored == digest:
        return None
    shown = stored.hex() if stored else "not computed"
    return (f"{name}: store {store.name!r} already holds different content (stored sha256 "
            f"{shown}, {t.original_size} bytes; new sha256 {digest.hex()}, {size} bytes); "
            f"not overwritten: a second cluster or a split brain may be writing to this archive")


def _same_bytes(store, key: str, f) -> bool | None:
    """Whether the stored object decodes to exactly the bytes of file f (None: the
    stored copy is damaged). A byte comparison as the object decodes: cheaper than
    hashing both sides, which matters because PostgreSQL re-archives after a crash and
    that push should stay quick (issue 2's start-up bar)."""
    from walkeeper.objects import CHUNK, ObjectReader

    f.seek(0)
    raw = store.open(key)
    try:
        reader = ObjectReader(raw.read, store.keyring)
        while True:
            data = reader.read(CHUNK)
            if not data:
                return f.read(1) == b""
            if f.read(len(data)) != data:
                return False
    except CorruptObject:
        return None
    finally:
        raw.close()


def _compare_existing(name: str, store, existing: Existing, f, size: int) -> str | None:
    """None when the stored copy holds the content of f; else the conflict message."""
    from walkeeper.objects import sha256_file

    t = existing.trailer
    if t is not None and t.version >= 2 and t.original_size == size:
        same = _same_bytes(store, existing.key, f)
        if same:
            return None
        if same is None:
            existing = Existing(existing.key, None)
    f.seek(0)
    size, digest = sha256_file(f)
    return _conflict(name, store, existing, size, digest)


def _check_identity(store, cluster: str, sysid: int, seg_size: int) -> None:
    """The archive remembers which cluster it belongs to; refuse WAL from another."""
    import json

    from walkeeper.layout import identity_key

    key = identity_key(cluster)
    mine = {"system_identifier": str(sysid), "wal_segment_size": seg_size}
    for _ in range(2):
        try:
            reader = store.open(key)
        except ObjectNotFound:
            try:
                store.put_bytes(key, (json.dumps(mine) + "\n").encode())
                return
            except ObjectExists:
                continue
        try:
            data = reader.read(1 << 16)
        finally:
            reader.close()
        try:
            theirs = json.loads(data)
            stored = int(theirs["system_identifier"])
        except (ValueError, KeyError, TypeError):
            raise OperationFailed(f"store {store.name!r}: {key} is damaged; it records which "
                                  f"cluster the archive belongs to, restore it by hand") from None
        if stored != sysid:
            raise OperationFailed(
                f"WAL from database system {sysid} but store {store.name!r} holds the archive "
                f"of system {stored} under cluster {cluster!r}: refusing to mix two clusters; "
                f"give this one its own `cluster` name")
        return


def _upload(f, name: str, key: str, stores: list, config: Config, size: int,
            zstd_threads: int = 2, seal=None):
    """One read of the source, encoded once, written to every store in `stores`.

    Returns (errors by store name, conflict messages, trailer of what was written).
    """
    from walkeeper.objects import read_chunks
    from walkeeper.transfer import put_stream

    f.seek(0)
    try:
        out = put_stream(stores, key, read_chunks(f), config["compression.algorithm"],
                         config["compression.level"], size, zstd_threads, seal)
    except OSError as exc:
        raise OperationFailed(f"cannot read {f.name}: {exc.strerror}") from None
    conflicts = []
    t = out.trailer
    for s in out.stored:
        log.debug(f"stored {name} in {s.name} ({s.location}): {t.original_size} bytes as "
                  f"{t.body_size}, body sha256 {t.checksum}")
    for s in out.taken:
        # Someone stored the same name while we uploaded: same content is fine.
        existing = _find(s, [key])
        msg = _compare_existing(name, s, existing, f, size) if existing else None
        if msg:
            conflicts.append(msg)
    return out.errors, conflicts, t


def push(config: Config, wal_path: str, wal_name: str) -> list[str]:
    """Store WAL_PATH as WAL_NAME durably in every store; return where it was written.

    A segment inside pg_wal gets a background pusher storing the other ready segments
    (read-ahead, see readahead.py); a segment that it already stored returns at once.
    """
    wal = parse_name(wal_name)
    if wal.kind is not WalKind.SEGMENT:
        return _push_alone(config, wal_path, wal)
    from walkeeper import readahead

    records = readahead.records_dir(config.state_dir, config.cluster)
    if readahead.consume(records, wal_path, wal.name):
        log.debug(f"{wal.name} was stored by read-ahead; nothing to do")
        return []
    if config["push.parallel"] <= 1:
        return _push_alone(config, wal_path, wal)
    pg_wal = os.path.dirname(os.path.abspath(wal_path))
    ready = readahead.ready_segments(pg_wal)
    if ready is None:                   # not pg_wal: no read-ahead
        return _push_alone(config, wal_path, wal)
    return _push_with_readahead(config, wal_path, wal, records, pg_wal, bool(ready - {wal.name}))


def _push_alone(config: Config, wal_path: str, wal: WalName,
                zstd_threads: int = 2) -> list[str]:
    return _push_file(config, wal_path, wal, zstd_threads)[0]


def _push_file(config: Config, wal_path: str, wal: WalName, zstd_threads: int = 2):
    """_push_path with this process's own store connections; records the success."""
    from walkeeper import state
    from walkeeper.stores import open_stores

    stores = open_stores(config)
    try:
        out = _push_path(config, wal_path, wal, stores, zstd_threads,
                         seal_of=lambda st: _writer_key(config, st))
    finally:
        for s in stores:
            s.close()
    state.record_success(config.state_dir, "push", wal=wal.name, stores=[s.name for s in stores])
    return out


def _push_with_readahead(config: Config, wal_path: str, wal: WalName, records: str,
                         pg_wal: str, others_ready: bool) -> list[str]:
    """Push N under its claim, with a background pusher storing the ready segments
    after it (started when other segments are ready and none runs).

    The pusher may be storing N right now: wait for its claim, then take its record.
    """
    from walkeeper import readahead

    try:
        fd = readahead.claim(records, wal.name)
    except OSError as exc:
        log.warn(f"read-ahead disabled: cannot use {records} ({exc.strerror})")
        return _push_alone(config, wal_path, wal)
    # kick forks: before this process starts any thread (zstd's included)
    running = (readahead.kick(config, pg_wal, records) if others_ready
               else readahead.running(records))
    if fd is None:
        log.debug(f"the background pusher is storing {wal.name}; waiting for it")
        try:
            fd = readahead.claim(records, wal.name, wait=readahead.CLAIM_WAIT)
        except OSError:
            fd = None
        if fd is None:
            log.warn(f"the background pusher still holds {wal.name} after "
                     f"{readahead.CLAIM_WAIT:.0f} s; pushing it alongside")
    try:
        if readahead.consume(records, wal_path, wal.name):
            log.debug(f"{wal.name} was stored by read-ahead; nothing to do")
            return []
        # With the pusher compressing on every core, zstd's own threads only contend.
        written, digest, st = _push_file(config, wal_path, wal, 0 if running else 2)
        if running and st is not None:
            # The pusher skips a recorded segment: it must not store N again in the
            # moment between this exit and PostgreSQL marking N .done.
            try:
                readahead.write_record(records, wal.name, st, digest.hex())
            except OSError:
                pass
        return written
    finally:
        if fd is not None:
            readahead.release(records, wal.name, fd)


def _writer_key(config: Config, stores: list):
    from walkeeper.crypto import writer_key

    return writer_key(config.keyring, stores, config.cluster)


def _push_path(config: Config, wal_path: str, wal: WalName, stores: list,
               zstd_threads: int = 2, seal_of=None):
    """Push one file; return (stores written, checksum, stat of the file when it did not
    change while it was read, else None). seal_of(stores): the archive's key, or None
    for a plain archive (see crypto.writer_key)."""
    try:
        f = open(wal_path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{wal_path}: no such file") from None
    except OSError as exc:
        raise OperationFailed(f"cannot read {wal_path}: {exc.strerror}") from None
    with f:
        before = os.fstat(f.fileno())
        size = before.st_size
        header = None
        if wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
            try:
                header = parse_long_page_header(f.read(LONG_PAGE_HEADER_SIZE))
                check_segment_header(wal.segment, header, size)
            except ValueError as exc:
                raise OperationFailed(f"{wal.name}: refusing to archive, its content does not "
                                      f"match its name ({exc}): corruption, or another "
                                      f"cluster's WAL") from None
        written, digest = _push(config, f, wal, size, header, stores, zstd_threads,
                                seal_of or (lambda st: _writer_key(config, st)))
        after = os.fstat(f.fileno())
    same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    return written, digest, before if same else None


def _push(config: Config, f, wal: WalName, size: int, header, stores: list,
          zstd_threads: int, seal_of):
    """Returns (names of the stores written, a checksum: of what was stored, or of the
    content when every store already held it)."""
    import time

    from walkeeper.layout import wal_keys

    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    errors: dict[str, StoreError] = {}
    present: dict = {}
    digest = None
    for s in stores:
        try:
            existing = _find(s, keys)
        except StoreError as exc:
            errors[s.name] = exc
            continue
        if existing:
            present[s] = existing
    if present:
        # Rare path (PostgreSQL re-archiving after a crash): compare before writing.
        conflicts = [m for s, e in present.items()
                     if (m := _compare_existing(wal.name, s, e, f, size))]
        if conflicts:
            raise ConflictError(conflicts[0])
        for s in present:
            log.debug(f"{wal.name} is already in {s.name} with the same content")
        digest = next(iter(present.values())).trailer.sha256
    todo = [s for s in stores if s not in present and s.name not in errors]
    written = []
    attempt = 0
    seal = seal_of(todo) if todo else None
    while todo:
        if header is not None:
            for s in list(todo):
                try:
                    _check_identity(s, config.cluster, header.system_identifier, header.segment_size)
                except StoreError as exc:
                    errors[s.name] = exc
                    todo.remove(s)
        errs, conflicts, trailer = _upload(f, wal.name, keys[0], todo, config, size,
                                           zstd_threads, seal)
        if conflicts:
            raise ConflictError(conflicts[0])
        if trailer is not None:
            digest = trailer.sha256
        written += [s.name for s in todo if s.name not in errs]
        errors.update(errs)
        retry = [s for s in todo if s.name in errs and attempt + 1 < _retries(s, config)]
        if not retry:
            break
        for s in retry:
            log.warn(f"{errs[s.name]}; retrying")
        time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        attempt += 1
        for s in retry:
            del errors[s.name]
        todo = retry
    if errors:
        detail = "; ".join(str(e) for e in errors.values())
        ok = [s.name for s in stores if s.name not in errors]
        raise OperationFailed(f"{wal.name} is not durable in every store ({detail})"
                              + (f"; stored in {', '.join(ok)}" if ok else ""))
    return written, digest


def _retries(store, config: Config) -> int:
    for s in config.stores:
        if s.name == store.name:
            return s.retries if s.type != "local" else 1
    return 1


def _fetch_one(store, keys: list[str], dest: str) -> bool:
    """Write a verified copy to dest; False when the store has no such object."""
    from walkeeper.transfer import fetch_to_file

    for key in keys:
        try:
            fetch_to_file(store, key, dest)
        except ObjectNotFound:
            continue
        log.debug(f"fetched {key} from {store.name} ({store.location})")
        return True
    return False


def _prefetch_early(prefetcher, config: Config, wal: WalName, keys: list[str]) -> None:
    """Start the prefetcher on N+1.. before decoding N here, not after: on a machine
    with cores to spare they decode side by side (~40 ms sooner at the start of a
    recovery). The segment size comes from N's trailer in the first store, which a
    local store gives at once; an SFTP store would need its connection first, and a
    fork with paramiko's thread running, so for those the prefetcher starts after."""
    from walkeeper.stores import open_store

    try:
        store = open_store(config.stores[0], config.keyring)
        try:
            found = _find(store, keys)
        finally:
            store.close()
    except StoreError:
        return
    if found is not None and found.trailer is not None:
        prefetcher.kick(config, wal, found.trailer.original_size)


def fetch(config: Config, wal_name: str, dest: str) -> str:
    """Bring WAL_NAME back to DEST from the first store with a good copy."""
    wal = parse_name(wal_name)
    dest = os.path.abspath(dest)
    if not os.path.isdir(os.path.dirname(dest)):
        raise UsageError(f"{os.path.dirname(dest)}: no such directory")
    prefetcher = None
    if wal.kind is WalKind.SEGMENT and config["fetch.prefetch"] > 0:
        from walkeeper import prefetch as prefetcher

        if prefetcher.serve(config, wal, dest):
            prefetcher.kick(config, wal, os.path.getsize(dest))
            return "spool"
    from walkeeper.layout import wal_keys
    from walkeeper.stores import open_store

    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    if prefetcher is not None and config.stores[0].type == "local":
        _prefetch_early(prefetcher, config, wal, keys)
    absent = 0
    problems = []
    found = None
    for n, cfg in enumerate(config.stores, 1):
        store = open_store(cfg, config.keyring)
        more = "; trying the next store" if n < len(config.stores) else ""
        try:
            if _fetch_one(store, keys, dest):
                found = store.name
                break
            absent += 1
        except CorruptObject as exc:
            problems.append(f"store {store.name!r}: {wal.name} is corrupt ({exc})")
            if more:
                log.warn(problems[-1] + more)
        except StoreError as exc:
            problems.append(str(exc))
            if more:
                log.warn(problems[-1] + more)
        finally:
            store.close()
    if found is not None:
        if prefetcher is not None:
            prefetcher.kick(config, wal, os.path.getsize(dest))
        return found
    if not problems:
        raise NotInArchive(f"{wal.name} is not in the archive ({absent} store"
                           f"{'s' if absent != 1 else ''} checked)")
    msg = f"{wal.name}: no good copy in any store ({'; '.join(problems)})"
    if config["fetch.on_error"] == "missing":
        raise NotInArchive(msg + "; reporting it missing as [fetch] on_error says")
    raise ArchiveUnreadable(msg + "; aborting recovery rather than ending it at the wrong point")
