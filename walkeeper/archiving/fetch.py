"""fetch: PostgreSQL's restore_command.

fetch brings one WAL file back from the first store holding a good copy. A segment
is served from the prefetch spool when a detached prefetcher already brought it
(prefetcher.py), and fetch starts that prefetcher for the segments after it.
"""

from __future__ import annotations

import os

from walkeeper import log
from walkeeper.config import Config
from walkeeper.errors import (ArchiveUnreadable, CorruptObject, MisplacedObject,
                              NotInArchive, ObjectNotFound, StoreError, UsageError)
# The fast paths (a push that read-ahead already did, a fetch served from the prefetch
# spool) must start and exit within ~2x `python -c pass`: the modules that only the
# store paths need (layout, objects, transfer, stores, state, json) are imported in
# the functions that use them.
from walkeeper.wal import WalKind, WalName, wal_name_argument



def _fetch_one(store, keys: list[str], dest: str, config: Config, wal: WalName) -> bool:
    """Write a verified copy to dest, once its content proved to be WAL's file of this
    name (wal_store.content_check); False when the store has no such object."""
    from walkeeper.archiving.transfer import fetch_to_file
    from walkeeper.archiving.wal_store import content_check

    check, keep = content_check(store, config.cluster, config["compression.algorithm"], wal)
    for key in keys:
        try:
            fetch_to_file(store, key, dest, check, keep)
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
    from walkeeper.archiving.wal_store import find
    from walkeeper.stores import open_store

    try:
        store = open_store(config.stores[0], config.keyring)
        try:
            found = find(store, keys)
        finally:
            store.close()
    except StoreError:
        return
    if found is not None and found.trailer is not None:
        prefetcher.kick(config, wal, found.trailer.original_size)


def restrict(config: Config, only) -> None:
    """Keep only the stores named in `only` (fetch --store, repeatable), in the
    configured order. A name that is not configured any more aborts recovery (exit
    255): reporting the file missing would end recovery at the wrong point."""
    if not only:
        return
    names = [c.name for c in config.stores]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ArchiveUnreadable(f"--store {unknown[0]}: no such store; configured: "
                                f"{', '.join(names)}; fix restore_command")
    config.stores = [c for c in config.stores if c.name in only]


def fetch(config: Config, wal_name: str, dest: str, only=None) -> str:
    """Bring WAL_NAME back to DEST from the first store with a good copy; only: the
    names of the stores to try (default: every configured store)."""
    restrict(config, only)
    wal = wal_name_argument(wal_name)
    dest = os.path.abspath(dest)
    if not os.path.isdir(os.path.dirname(dest)):
        raise UsageError(f"{os.path.dirname(dest)}: no such directory")
    prefetcher = None
    if wal.kind is WalKind.SEGMENT and config["fetch.prefetch"] > 0:
        from walkeeper.archiving import prefetcher

        if prefetcher.serve(config, wal, dest):
            prefetcher.kick(config, wal, os.path.getsize(dest))
            return "spool"
    from walkeeper.format.layout import wal_keys
    from walkeeper.stores import open_store

    keys = wal_keys(config.cluster, wal, config["compression.algorithm"])
    from walkeeper.stores.registry import store_type

    # A shared store (a local directory) opens without a connection thread, so the
    # prefetcher can fork before this call decodes.
    if prefetcher is not None and store_type(config.stores[0].type).shared:
        _prefetch_early(prefetcher, config, wal, keys)
    absent = 0
    problems = []
    found = None
    for n, cfg in enumerate(config.stores, 1):
        store = open_store(cfg, config.keyring)
        more = "; trying the next store" if n < len(config.stores) else ""
        try:
            if _fetch_one(store, keys, dest, config, wal):
                found = store.name
                break
            absent += 1
        except MisplacedObject as exc:
            problems.append(f"store {store.name!r}: {wal.name} is corrupt, the object "
                            f"stored under that name is another file: {exc}")
            if more:
                log.warn(problems[-1] + more)
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
