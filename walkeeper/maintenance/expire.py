"""`walkeeper expire`: apply `[retention]` to every store.

The plan is made once, on the union of the stores (retention.py decides); each
store then deletes what it holds of it. The order makes an interrupted run safe:

1. the metadata of every expired backup and dump, in every store (backup.json,
   dump.json): from then on none of them is listed or restored as complete;
2. their other objects (the tar, the dump, any temporary upload beside them);
3. WAL below the cut, oldest position first, so an interrupted run leaves the
   chain without a hole in the middle.

An interrupted run leaves directories without metadata: `list` and verify-chain
show them as incomplete. The next expire removes such a directory once every object
in it is older than the oldest kept backup's start and untouched for a day (a
basebackup still running writes into its directory all along). A directory emptied
by expire is removed with its last object. A .history file is removed once nothing is
left of its timeline and it branched off below the cut (retention.orphan_histories):
otherwise every later recover would be sent towards a timeline that is gone.

Every store must be readable: planning on a partial view could delete, in the
stores that answered, what the silent one was counted on to keep.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from walkeeper import log, state
from walkeeper.catalog.reader import merge, read_archive
from walkeeper.config import Config
from walkeeper.errors import OperationFailed, StoreError
from walkeeper.format.layout import BACKUP_META, DUMP_META, backup_dir, backup_meta_key, dump_dir, \
    dump_meta_key, stored_name
from walkeeper.wal import WalKind, parse_wal_name
from walkeeper.reports.list import read_dumps
from walkeeper.catalog.retention import COUNTS, cut_segments, orphan_histories, select, \
    select_dumps, utc, wal_to_delete
from walkeeper.stores import open_stores

# An incomplete backup directory untouched this long is not a basebackup at work.
STALE_AFTER = timedelta(days=1)


def policy_from_config(config: Config) -> dict:
    return {k: config[f"retention.{k}"] for k in COUNTS}


class _View:
    """One store, read: its model and its dumps."""

    def __init__(self, store, model, dumps):
        self.store, self.model, self.dumps = store, model, dumps
        self.error: str | None = None

    def holds_backup(self, bid: str) -> bool:
        return any(b.id == bid for b in self.model.backups) or bid in self.model.incomplete_backups

    def holds_dump(self, did: str) -> bool:
        return any(d["id"] == did for d in self.dumps)


def expire(config: Config, dry_run: bool = False, now: datetime | None = None) -> dict:
    """Apply the retention policy; with dry_run, only say what would go.

    Returns {"dry_run", "kept": [{"id", "reasons"}], "deleted_backups": [ids],
    "deleted_wal": count, "deleted_dumps": [ids], "kept_dumps": [{"id", "reasons"}],
    "deleted_incomplete": [ids], "wal_cut": {timeline: first segment kept},
    "aborted_uploads": {store: [keys]}} (uploads that never completed, started over a
    day ago: S3 multipart uploads and claims; see Store.abort_stale_uploads).
    Raises OperationFailed when a store cannot be read (nothing is deleted then) or
    a deletion fails (what is listed was planned; rerun expire to finish).
    """
    now = now or datetime.now(timezone.utc)
    policy = policy_from_config(config)
    cluster = config.cluster
    stores = open_stores(config)
    try:
        views = _read(stores, cluster)
        union = merge([v.model for v in views])
        sel = select(union.backups, policy, now)
        kept = [b for b in union.backups if b.id in sel.keep]
        all_dumps: dict[str, dict] = {}
        for v in views:
            for d in v.dumps:
                all_dumps.setdefault(d["id"], d)
        dump_sel = select_dumps(list(all_dumps.values()), policy, now)
        stale = _stale_incomplete(views, cluster, union, kept, now)
        result = {
            "dry_run": dry_run,
            "kept": [{"id": i, "reasons": r} for i, r in sel.keep.items()],
            "deleted_backups": list(sel.delete),
            "deleted_wal": len(wal_to_delete(union, kept)),
            "kept_dumps": [{"id": i, "reasons": r} for i, r in dump_sel.keep.items()],
            "deleted_dumps": list(dump_sel.delete),
            "deleted_incomplete": stale,
            "deleted_histories": [f"{t:08X}.history"
                                  for t in _orphans(union, kept)],
            "wal_cut": {str(t): name for t, name in cut_segments(union, kept).items()},
        }
        result["aborted_uploads"] = {}
        if not dry_run:
            _delete(views, cluster, sel.delete, dump_sel.delete, stale, kept,
                    set(_orphans(union, kept)))
        before = (now - STALE_AFTER).timestamp()
        for v in views:
            if v.error is None:
                try:
                    gone = v.store.abort_stale_uploads(cluster, before, dry_run)
                except StoreError as exc:
                    v.error = str(exc)
                    log.warn(f"expire: {exc}")
                    continue
                if gone:
                    result["aborted_uploads"][v.store.name] = gone
        if not dry_run:
            errors = [f"store {v.store.name!r}: {v.error}" for v in views if v.error]
            if errors:
                raise OperationFailed(
                    "expire did not finish: " + "; ".join(errors),
                    hint="expired backups' metadata goes first, so nothing half-deleted is "
                         "listed as complete; rerun expire once the store is reachable")
    finally:
        for s in stores:
            s.close()
    if not dry_run:
        state.record_success(config.state_dir, "expire", kept=len(result["kept"]),
                             deleted_backups=len(result["deleted_backups"]),
                             deleted_wal=result["deleted_wal"],
                             deleted_dumps=len(result["deleted_dumps"]))
    return result


def _read(stores: list, cluster: str) -> list[_View]:
    views = []
    for store in stores:
        try:
            views.append(_View(store, read_archive(store, cluster),
                               read_dumps(store, cluster)))
        except StoreError as exc:
            raise OperationFailed(f"{exc}; expire reads every store before deleting anything, "
                                  f"and nothing was deleted") from None
    return views


def _stale_incomplete(views: list[_View], cluster: str, union, kept: list,
                      now: datetime) -> list[str]:
    """Backup directories without metadata in any store that no basebackup is
    writing: every object older than the oldest kept backup's start and than a day."""
    if not kept:
        return []
    oldest = min(utc(b.start_time) for b in kept)
    limit = min(oldest, now - STALE_AFTER).timestamp()
    complete = {b.id for b in union.backups}
    stale = []
    for bid in union.incomplete_backups:
        if bid in complete:
            continue
        newest = 0.0
        for v in views:
            if bid not in v.model.incomplete_backups:
                continue
            try:
                entries = v.store.list(backup_dir(cluster, bid))
            except StoreError:
                newest = float("inf")       # cannot tell: leave it
                break
            newest = max([newest] + [e.mtime for e in entries])
        if newest < limit:
            stale.append(bid)
    return stale


def _history_keys(v: _View, cluster: str) -> dict[int, str]:
    """{timeline: key} of the .history objects in one store."""
    out = {}
    for e in v.store.list(f"{cluster}/wal"):
        name = None if e.is_dir else stored_name(e.name)
        try:
            wal = parse_wal_name(name) if name else None
        except ValueError:
            continue
        if wal is not None and wal.kind is WalKind.HISTORY:
            out[wal.timeline] = f"{cluster}/wal/{e.name}"
    return out


def _orphans(union, kept: list) -> list[int]:
    return orphan_histories(union, kept, union.histories)


def _remove_dir(store, directory: str) -> None:
    """An emptied directory goes too (a store without directories has no remove_dir)."""
    remove = getattr(store, "remove_dir", None)
    if remove is not None:
        remove(directory)


def _delete(views: list[_View], cluster: str, backups: list[str], dumps: list[str],
            stale: list[str], kept: list, orphans: set[int] = frozenset()) -> None:
    """Metadata everywhere, then the rest, then WAL, then history files left without a
    timeline; emptied directories go with their last object. A store that fails is
    left alone from then on (its error is kept in view.error)."""
    def each(fn) -> None:
        for v in views:
            if v.error is None:
                try:
                    fn(v)
                except StoreError as exc:
                    v.error = str(exc)
                    log.warn(f"expire: {exc}")

    def metadata(v: _View) -> None:
        for bid in backups:
            if any(b.id == bid for b in v.model.backups):
                v.store.delete(backup_meta_key(cluster, bid))
        for did in dumps:
            if v.holds_dump(did):
                v.store.delete(dump_meta_key(cluster, did))

    def contents(v: _View) -> None:
        for bid in backups + stale:
            if v.holds_backup(bid):
                _empty(v.store, backup_dir(cluster, bid), BACKUP_META)
                _remove_dir(v.store, backup_dir(cluster, bid))
        for did in dumps:
            if v.holds_dump(did):
                _empty(v.store, dump_dir(cluster, did), DUMP_META)
                _remove_dir(v.store, dump_dir(cluster, did))

    def wal(v: _View) -> None:
        emptied = set()
        for obj in wal_to_delete(v.model, kept):
            v.store.delete(obj.key)
            emptied.add(obj.key.rsplit("/", 1)[0])
        for d in sorted(emptied):
            if d != f"{cluster}/wal" and not v.store.list(d):
                _remove_dir(v.store, d)

    def histories(v: _View) -> None:
        if not orphans:
            return
        for tli, key in sorted(_history_keys(v, cluster).items()):
            if tli in orphans:
                v.store.delete(key)

    each(metadata)
    each(contents)
    each(wal)
    each(histories)


def _empty(store, directory: str, meta: str) -> None:
    """Delete every object in directory, its metadata first (if still there)."""
    entries = [e for e in store.list(directory) if not e.is_dir]
    for e in sorted(entries, key=lambda e: e.name != meta):
        store.delete(f"{directory}/{e.name}")
