"""push and fetch: PostgreSQL's archive_command and restore_command.

push stores one WAL file durably in every configured store, read once and fanned
out; fetch brings one back from the first store holding a good copy. Exit-code
semantics live in the errors raised here (see errors.py and CONTRACT.md).
"""

from __future__ import annotations

import json
import os
import time
from collections import namedtuple

from walkeeper import log, state
from walkeeper.config import Config
from walkeeper.errors import (ArchiveUnreadable, ConflictError, CorruptObject, NotInArchive,
                              ObjectExists, ObjectNotFound, OperationFailed, StoreError,
                              UsageError)
from walkeeper.layout import identity_key, wal_keys
from walkeeper.objects import TRAILER_SIZE, read_chunks, sha256_file, unpack_trailer
from walkeeper.transfer import fetch_to_file, put_stream
from walkeeper.stores import open_store, open_stores
from walkeeper.wal import (LONG_PAGE_HEADER_SIZE, WalKind, WalName, check_segment_header,
                           parse_long_page_header, parse_wal_name)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


def parse_name(name: str) -> WalName:
    try:
        return parse_wal_name(name)
    except ValueError as exc:
        raise UsageError(f"{name!r} is not a WAL file name: {exc}") from None


# trailer None: the stored copy is damaged
Existing = namedtuple("Existing", "key trailer")


def _find(store, keys: list[str]) -> Existing | None:
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


def _conflict(name: str, store, existing: Existing, size: int, digest: bytes) -> str | None:
    t = existing.trailer
    if t is None:
        return (f"{name}: the copy in store {store.name!r} ({existing.key}) is damaged and "
                f"cannot be compared; run verify-chain and repair it by hand")
    if t.sha256 == digest and t.original_size == size:
        return None
    return (f"{name}: store {store.name!r} already holds different content (stored sha256 "
            f"{t.checksum}, {t.original_size} bytes; new sha256 {digest.hex()}, {size} bytes); "
            f"not overwritten: a second cluster or a split brain may be writing to this archive")


def _check_identity(store, cluster: str, sysid: int, seg_size: int) -> None:
    """The archive remembers which cluster it belongs to; refuse WAL from another."""
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


def _upload(f, name: str, key: str, stores: list, config: Config, size: int):
    """One read of the source, encoded once, written to every store in `stores`.

    Returns (errors by store name, conflict messages).
    """
    f.seek(0)
    try:
        out = put_stream(stores, key, read_chunks(f), config["compression.algorithm"],
                         config["compression.level"], size)
    except OSError as exc:
        raise OperationFailed(f"cannot read {f.name}: {exc.strerror}") from None
    conflicts = []
    t = out.trailer
    for s in out.stored:
        log.debug(f"stored {name} in {s.name} ({s.location}): {t.original_size} bytes as "
                  f"{t.body_size}, sha256 {t.checksum}")
    for s in out.taken:
        # Someone stored the same name while we uploaded: same content is fine.
        existing = _find(s, [key])
        msg = _conflict(name, s, existing, t.original_size, t.sha256) if existing else None
        if msg:
            conflicts.append(msg)
    return out.errors, conflicts


def push(config: Config, wal_path: str, wal_name: str) -> list[str]:
    """Store WAL_PATH as WAL_NAME durably in every store; return where it was written."""
    wal = parse_name(wal_name)
    try:
        f = open(wal_path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{wal_path}: no such file") from None
    except OSError as exc:
        raise OperationFailed(f"cannot read {wal_path}: {exc.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        header = None
        if wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
            try:
                header = parse_long_page_header(f.read(LONG_PAGE_HEADER_SIZE))
                check_segment_header(wal.segment, header, size)
            except ValueError as exc:
                raise OperationFailed(f"{wal_name}: refusing to archive, its content does not "
                                      f"match its name ({exc}): corruption, or another "
                                      f"cluster's WAL") from None
        stores = open_stores(config)
        try:
            return _push(config, f, wal, size, header, stores)
        finally:
            for s in stores:
                s.close()


def _push(config: Config, f, wal: WalName, size: int, header, stores: list) -> list[str]:
    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    errors: dict[str, StoreError] = {}
    present: dict = {}
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
        f.seek(0)
        digest_size, digest = sha256_file(f)
        conflicts = [m for s, e in present.items() if (m := _conflict(wal.name, s, e, digest_size, digest))]
        if conflicts:
            raise ConflictError(conflicts[0])
        for s in present:
            log.debug(f"{wal.name} is already in {s.name} with the same content")
    todo = [s for s in stores if s not in present and s.name not in errors]
    written = []
    attempt = 0
    while todo:
        if header is not None:
            for s in list(todo):
                try:
                    _check_identity(s, config.cluster, header.system_identifier, header.segment_size)
                except StoreError as exc:
                    errors[s.name] = exc
                    todo.remove(s)
        errs, conflicts = _upload(f, wal.name, keys[0], todo, config, size)
        if conflicts:
            raise ConflictError(conflicts[0])
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
    state.record_success(config.state_dir, "push", wal=wal.name, stores=[s.name for s in stores])
    return written


def _retries(store, config: Config) -> int:
    for s in config.stores:
        if s.name == store.name:
            return s.retries if s.type != "local" else 1
    return 1


def _fetch_one(store, keys: list[str], dest: str) -> bool:
    """Write a verified copy to dest; False when the store has no such object."""
    for key in keys:
        try:
            fetch_to_file(store, key, dest)
        except ObjectNotFound:
            continue
        log.debug(f"fetched {key} from {store.name} ({store.location})")
        return True
    return False


def fetch(config: Config, wal_name: str, dest: str) -> str:
    """Bring WAL_NAME back to DEST from the first store with a good copy."""
    wal = parse_name(wal_name)
    dest = os.path.abspath(dest)
    if not os.path.isdir(os.path.dirname(dest)):
        raise UsageError(f"{os.path.dirname(dest)}: no such directory")
    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    absent = 0
    problems = []
    for cfg in config.stores:
        store = open_store(cfg)
        try:
            if _fetch_one(store, keys, dest):
                return store.name
            absent += 1
        except CorruptObject as exc:
            problems.append(f"store {store.name!r}: {wal.name} is corrupt ({exc})")
            log.warn(problems[-1] + "; trying the next store")
        except StoreError as exc:
            problems.append(str(exc))
            log.warn(problems[-1] + "; trying the next store")
        finally:
            store.close()
    if not problems:
        raise NotInArchive(f"{wal.name} is not in the archive ({absent} store"
                           f"{'s' if absent != 1 else ''} checked)")
    msg = f"{wal.name}: no good copy in any store ({'; '.join(problems)})"
    if config["fetch.on_error"] == "missing":
        raise NotInArchive(msg + "; reporting it missing as [fetch] on_error says")
    raise ArchiveUnreadable(msg + "; aborting recovery rather than ending it at the wrong point")
