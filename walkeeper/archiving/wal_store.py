"""Storing one WAL file in every store, and finding a stored copy: the work that
push (in the foreground) and the background pusher (pusher.py) share, and that fetch
uses to find an object's trailer. Exit-code semantics live in the errors raised here
(see errors.py and docs/contract.md)."""

from __future__ import annotations

import os

from walkeeper import log
from walkeeper.config import Config
from walkeeper.errors import (ConflictError, CorruptObject, ObjectNotFound, OperationFailed, StoreError,
                              UsageError)
# The fast paths (a push that read-ahead already did, a fetch served from the prefetch
# spool) must start and exit within ~2x `python -c pass`: the modules that only the
# store paths need (layout, objects, transfer, stores, state, json) are imported in
# the functions that use them.
from walkeeper.record import record
from walkeeper.wal import (LONG_PAGE_HEADER_SIZE, WalKind, WalName, check_segment_header,
                           parse_long_page_header, parse_wal_name)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


# trailer None: the stored copy is damaged
Existing = record("Existing", "key trailer")


def find(store, keys: list[str]) -> Existing | None:
    from walkeeper.format.objects import TRAILER_SIZE, unpack_trailer

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

    from walkeeper.format.objects import decode

    t = existing.trailer
    if t is None:
        return None
    if t.version == 1:
        return t.sha256
    digest = hashlib.sha256()
    reader = store.open(existing.key)
    try:
        decode(reader.read, digest.update, store.keyring, name=existing.key)
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
    from walkeeper.format.objects import CHUNK, ObjectReader

    f.seek(0)
    raw = store.open(key)
    try:
        reader = ObjectReader(raw.read, store.keyring, name=key)
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
    from walkeeper.format.objects import sha256_file

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


def _upload(f, name: str, key: str, stores: list, config: Config, size: int,
            zstd_threads: int = 2, seal=None):
    """One read of the source, encoded once, written to every store in `stores`.

    Returns (errors by store name, conflict messages, trailer of what was written).
    """
    from walkeeper.format.objects import read_chunks
    from walkeeper.archiving.transfer import put_stream

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
        existing = find(s, [key])
        msg = _compare_existing(name, s, existing, f, size) if existing else None
        if msg:
            conflicts.append(msg)
    return out.errors, conflicts, t


def store_retries(store, config: Config) -> int:
    from walkeeper.stores.registry import retries

    for s in config.stores:
        if s.name == store.name:
            return retries(s)
    return 1


def seal_for(config: Config, stores: list):
    """The key push encrypts with (crypto.writer_key), or None for a plain archive."""
    from walkeeper.format.crypto import writer_key

    return writer_key(config.keyring, stores, config.cluster)


def push_path(config: Config, wal_path: str, wal: WalName, stores: list,
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
                                seal_of or (lambda st: seal_for(config, st)))
        after = os.fstat(f.fileno())
    same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    return written, digest, before if same else None


def _push(config: Config, f, wal: WalName, size: int, header, stores: list,
          zstd_threads: int, seal_of):
    """Returns (names of the stores written, a checksum: of what was stored, or of the
    content when every store already held it)."""
    import time

    from walkeeper.format import identity
    from walkeeper.format.layout import wal_keys

    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    errors: dict[str, StoreError] = {}
    present: dict = {}
    digest = None
    for s in stores:
        try:
            existing = find(s, keys)
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
                    identity.claim(s, config.cluster, header.system_identifier, header.segment_size)
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
        retry = [s for s in todo if s.name in errs and attempt + 1 < store_retries(s, config)]
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


# ------------------------------------------------ does the content fit the name?

def archive_identity(store, cluster: str):
    """The store's identity (format/identity.Identity); both fields None when it has
    none or it is unreadable: the checks that need them are then skipped, as they are
    for an archive that predates it."""
    from walkeeper.format import identity

    try:
        ident = identity.read(store, cluster)
    except ValueError:
        log.warn(f"store {store.name!r}: {cluster}/identity.json is damaged; fetch cannot "
                 f"check the system identifier of what it serves")
        ident = None
    return ident if ident is not None else identity.Identity(None, None)


def read_history(store, cluster: str, timeline: int, codec: str):
    """The parsed history of `timeline` from this store, checked against its name;
    None when the store has no good copy."""
    import io

    from walkeeper.format.layout import wal_keys
    from walkeeper.format.naming import check_history
    from walkeeper.format.objects import decode

    wal = parse_wal_name(f"{timeline:08X}.history")
    for key in wal_keys(cluster, wal, codec):
        try:
            reader = store.open(key)
        except ObjectNotFound:
            continue
        out = io.BytesIO()
        try:
            decode(reader.read, out.write, store.keyring, name=key)
            return check_history(wal, out.getvalue())
        except CorruptObject as exc:
            log.debug(f"store {store.name!r}: {key}: {exc}")
            return None
        finally:
            reader.close()
    return None


def content_check(store, cluster: str, codec: str, wal: WalName, identity=None):
    """(check, keep) for transfer.fetch_to_file: prove the decoded content of an object
    fetched from `store` is the file `wal` asks for (format/naming.py). Reads the
    store's identity.json (a segment's system identifier, a .backup's segment size;
    identity: a callable giving it, to read it once for many checks) and, only when
    the content needs it, a history file."""
    from walkeeper.format import naming

    def archive_identity_(store, cluster):
        return identity() if identity is not None else archive_identity(store, cluster)

    if wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
        def check(head: bytes, size: int) -> None:
            header = naming.segment_header(wal, head)
            ident = archive_identity_(store, cluster)
            history = (read_history(store, cluster, wal.timeline, codec)
                       if naming.needs_history(wal, header) else None)
            naming.check_segment(wal, header, size,
                                 ident.system_identifier, history)
        return check, LONG_PAGE_HEADER_SIZE
    if wal.kind is WalKind.HISTORY:
        def check(head: bytes, size: int) -> None:
            entries = naming.check_history(wal, head)
            parent = entries[-1].timeline
            known = {}
            if parent > 1:
                theirs = read_history(store, cluster, parent, codec)
                if theirs is not None:
                    known[parent] = theirs
            naming.check_history(wal, head, known)
        return check, naming.HISTORY_LIMIT + 1
    def check(head: bytes, size: int) -> None:
        ident = archive_identity_(store, cluster)
        naming.check_backup_file(wal, head, ident.wal_segment_size)
    return check, 1 << 16
