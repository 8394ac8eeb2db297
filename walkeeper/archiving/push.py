"""push: PostgreSQL's archive_command.

push stores one WAL file durably in every configured store, read once and fanned
out (wal_store.py). push of a segment inside pg_wal starts a detached background
pusher that stores the other segments marked `.ready` with push.parallel workers and
records each completion (claims.py, pusher.py), so PostgreSQL's later calls for them
return at once, or wait for the segment the pusher is storing.
"""

from __future__ import annotations

import os

from walkeeper import log
from walkeeper.config import Config
# The fast paths (a push that read-ahead already did, a fetch served from the prefetch
# spool) must start and exit within ~2x `python -c pass`: the modules that only the
# store paths need (layout, objects, transfer, stores, state, json) are imported in
# the functions that use them.
from walkeeper.wal import WalKind, WalName, wal_name_argument



def push(config: Config, wal_path: str, wal_name: str) -> list[str]:
    """Store WAL_PATH as WAL_NAME durably in every store; return where it was written.

    A segment inside pg_wal gets a background pusher storing the other ready segments
    (read-ahead, see claims.py); a segment that it already stored returns at once.
    """
    wal = wal_name_argument(wal_name)
    if wal.kind is not WalKind.SEGMENT:
        return _push_alone(config, wal_path, wal)
    from walkeeper.archiving import claims

    records = claims.records_dir(config.state_dir, config.cluster)
    if claims.consume(records, wal_path, wal.name):
        log.debug(f"{wal.name} was stored by read-ahead; nothing to do")
        return []
    if config["push.parallel"] <= 1:
        return _push_alone(config, wal_path, wal)
    pg_wal = os.path.dirname(os.path.abspath(wal_path))
    ready = claims.ready_segments(pg_wal)
    if ready is None:                   # not pg_wal: no read-ahead
        return _push_alone(config, wal_path, wal)
    return _push_with_readahead(config, wal_path, wal, records, pg_wal, bool(ready - {wal.name}))


def _push_alone(config: Config, wal_path: str, wal: WalName,
                zstd_threads: int = 2) -> list[str]:
    return _push_file(config, wal_path, wal, zstd_threads)[0]


def _push_file(config: Config, wal_path: str, wal: WalName, zstd_threads: int = 2):
    """_push_path with this process's own store connections; records the success."""
    from walkeeper import state
    from walkeeper.archiving.wal_store import push_path, seal_for
    from walkeeper.stores import open_stores

    stores = open_stores(config)
    try:
        out = push_path(config, wal_path, wal, stores, zstd_threads,
                         seal_of=lambda st: seal_for(config, st))
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
    from walkeeper.archiving import claims

    try:
        fd = claims.claim(records, wal.name)
    except OSError as exc:
        log.warn(f"read-ahead disabled: cannot use {records} ({exc.strerror})")
        return _push_alone(config, wal_path, wal)
    # kick forks: before this process starts any thread (zstd's included)
    from walkeeper.archiving.pusher import kick

    running = (kick(config, pg_wal, records) if others_ready
               else claims.running(records))
    if fd is None:
        log.debug(f"the background pusher is storing {wal.name}; waiting for it")
        try:
            fd = claims.claim(records, wal.name, wait=claims.CLAIM_WAIT)
        except OSError:
            fd = None
        if fd is None:
            log.warn(f"the background pusher still holds {wal.name} after "
                     f"{claims.CLAIM_WAIT:.0f} s; pushing it alongside")
    try:
        if claims.consume(records, wal_path, wal.name):
            log.debug(f"{wal.name} was stored by read-ahead; nothing to do")
            return []
        # With the pusher compressing on every core, zstd's own threads only contend.
        written, digest, st = _push_file(config, wal_path, wal, 0 if running else 2)
        if running and st is not None:
            # The pusher skips a recorded segment: it must not store N again in the
            # moment between this exit and PostgreSQL marking N .done.
            try:
                claims.write_record(records, wal.name, st, digest.hex())
            except OSError:
                pass
        return written
    finally:
        if fd is not None:
            claims.release(records, wal.name, fd)
