"""The catalog: one store read into an ArchiveModel, and what follows from a model.

read_archive lists a cluster's directories (one listing per directory, so an SFTP
store holding thousands of segments costs a few dozen round trips) and reads only
small objects: identity.json, .history files and backup.json metadata. Every later
command (list, recover's planner, verify-chain, expire, status) reasons about the
model, never about the store.

Nothing the catalog cannot read makes it fail: a damaged history or metadata
object, or a misplaced file, is left out of the model and named in
`model.unreadable` for verify-chain to report. Store errors (unreachable, denied)
propagate as StoreError.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

from walkeeper import log
from walkeeper.errors import (CorruptObject, MisplacedObject, ObjectNotFound, OperationFailed,
                              StoreError)
from walkeeper.format.layout import (BACKUP_META, backup_dir, backups_dir, identity_key, is_temp,
                                     stored_name)
from walkeeper.catalog.model import ArchiveModel, BackupInfo, WalObject
# The only files an encrypted archive holds in clear: they say which system and which
# key the archive belongs to, and hold nothing of the database's content.
PLAIN_FILES = ("/identity.json", "/encryption.json")
from walkeeper.format import identity
from walkeeper.format.objects import HEADER_SIZE, SKIPPABLE_MAGIC, decode
from walkeeper.wal import DEFAULT_SEGMENT_SIZE, Segment, WalKind, parse_history, \
    parse_wal_name, valid_segment_size

# History and metadata objects are a few hundred bytes; anything far larger is not one.
SMALL_OBJECT_LIMIT = 1 << 20
_HEX16 = frozenset("0123456789ABCDEF")


def read_archive(store, cluster: str, *, with_history: bool = True) -> ArchiveModel:
    """Read one store's view of `cluster` into a model.

    with_history=False skips reading the .history objects (model.histories stays
    empty): for callers that only need segments and backups.
    BackupInfo.stored_bytes is replaced by what this store holds for the backup,
    measured from its listing: {store.name: bytes}.
    """
    model = ArchiveModel(wal_segment_size=DEFAULT_SEGMENT_SIZE)
    _read_identity(store, cluster, model)
    _read_wal(store, cluster, model, with_history)
    _read_backups(store, cluster, model)
    return model


def read_small(store, key: str, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
    """The content of a small object: a walkeeper object is decoded and verified, any
    other content (plain JSON metadata) is returned as stored. Raises ObjectNotFound,
    CorruptObject (also for an object larger than `limit`) or StoreError."""
    reader = store.open(key)
    try:
        raw = reader.read(limit + 1)
        while raw and len(raw) <= limit:
            more = reader.read(limit + 1 - len(raw))
            if not more:
                break
            raw += more
    finally:
        reader.close()
    if len(raw) > limit:
        raise CorruptObject(f"larger than {limit} bytes, too large for what it claims to be")
    if len(raw) >= HEADER_SIZE and int.from_bytes(raw[:4], "little") == SKIPPABLE_MAGIC:
        out = io.BytesIO()
        decode(io.BytesIO(raw).read, out.write, store.keyring, name=key)
        return out.getvalue()
    if store.keyring is not None and not key.endswith(PLAIN_FILES):
        raise CorruptObject("stored in clear, but this archive is encrypted: refusing it "
                            "(walkeeper never mixes plain and encrypted objects)")
    return raw


def read_json(store, key: str) -> dict:
    """A small JSON object (see read_small); CorruptObject when it does not parse."""
    return parse_json_object(read_small(store, key))


def parse_json_object(data: bytes) -> dict:
    """Metadata (backup.json, dump.json, identity.json) as a dict; CorruptObject when
    it is not one."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObject(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptObject("not a JSON object")
    return value


def _read_identity(store, cluster: str, model: ArchiveModel) -> None:
    try:
        ident = identity.read(store, cluster)
        if ident is None:
            return
        if not valid_segment_size(ident.wal_segment_size):
            raise ValueError(f"invalid wal_segment_size {ident.wal_segment_size}")
        model.system_identifier = ident.system_identifier
        model.wal_segment_size = ident.wal_segment_size
    except (CorruptObject, ValueError) as exc:
        model.unreadable[identity_key(cluster)] = \
            f"identity damaged ({exc}); assuming 16 MiB segments"


def _read_wal(store, cluster: str, model: ArchiveModel, with_history: bool) -> None:
    top = f"{cluster}/wal"
    subdirs = []
    # Sorted, so that of a .raw and a .zst copy of one file the choice is stable.
    for e in sorted(store.list(top), key=lambda e: e.name):
        if e.is_dir:
            if len(e.name) == 16 and set(e.name) <= _HEX16:
                subdirs.append(e.name)
            continue
        key = f"{top}/{e.name}"
        wal = _wal_entry(key, e.name, model)
        if wal is None:
            continue
        if wal.kind is not WalKind.HISTORY:
            model.unreadable[key] = "misplaced: WAL segments belong in a subdirectory"
            continue
        if with_history and wal.timeline not in model.histories:
            _read_history(store, key, wal.timeline, model)
    for d in subdirs:
        _read_wal_dir(store, f"{top}/{d}", d, model)


def _wal_entry(key: str, basename: str, model: ArchiveModel):
    """The WAL name an object stands for; None (and noted, for a leftover upload) when
    it stands for none."""
    if is_temp(basename):
        model.temporary.append(key)
        return None
    name = stored_name(basename)
    if name is None:
        return None
    try:
        return parse_wal_name(name)
    except ValueError:
        return None


def _read_history(store, key: str, timeline: int, model: ArchiveModel) -> None:
    try:
        text = read_small(store, key).decode("utf-8", errors="replace")
        model.histories[timeline] = parse_history(text, timeline)
    except ObjectNotFound:
        pass
    except MisplacedObject as exc:
        model.misplaced[key] = str(exc)
    except (CorruptObject, ValueError) as exc:
        model.unreadable[key] = f"history file unreadable: {exc}"


def _read_wal_dir(store, directory: str, dirname: str, model: ArchiveModel) -> None:
    seg_size = model.wal_segment_size
    for e in sorted(store.list(directory), key=lambda e: e.name):
        if e.is_dir:
            continue
        key = f"{directory}/{e.name}"
        wal = _wal_entry(key, e.name, model)
        if wal is None:
            continue
        if wal.kind is WalKind.HISTORY or not wal.name.startswith(dirname):
            # fetch looks for it elsewhere: it is not in the archive as far as recovery goes.
            model.unreadable[key] = f"misplaced: {wal.name} does not belong in {dirname}/"
            continue
        obj = WalObject(wal.name, key, e.size, e.mtime)
        if wal.kind is not WalKind.SEGMENT:
            if all(o.name != wal.name for o in model.other):
                model.other.append(obj)
            continue
        try:
            segno = wal.segment.number(seg_size)
        except ValueError as exc:
            model.unreadable[key] = str(exc)
            continue
        model.segments.setdefault(wal.timeline, {}).setdefault(segno, obj)


def _read_backups(store, cluster: str, model: ArchiveModel) -> None:
    top = backups_dir(cluster)
    for d in sorted(store.list(top), key=lambda e: e.name):
        if not d.is_dir or is_temp(d.name) or d.name.startswith("."):
            continue
        directory = backup_dir(cluster, d.name)
        entries = store.list(directory)
        if not entries:
            continue        # holds nothing: what expire leaves of a deleted backup
        measured = 0
        complete = False
        for e in entries:
            if e.is_dir:
                continue
            if is_temp(e.name):
                model.temporary.append(f"{directory}/{e.name}")
                continue
            measured += e.size
            complete = complete or e.name == BACKUP_META
        if not complete:
            model.incomplete_backups.append(d.name)
            continue
        key = f"{directory}/{BACKUP_META}"
        try:
            info = BackupInfo.from_json(read_json(store, key))
        except ObjectNotFound:
            model.incomplete_backups.append(d.name)     # removed while we looked
            continue
        except MisplacedObject as exc:
            model.misplaced[key] = str(exc)
            continue
        except (CorruptObject, KeyError, TypeError, ValueError) as exc:
            model.unreadable[key] = f"backup metadata unreadable: {type(exc).__name__}: {exc}"
            continue
        if info.id != d.name:
            model.misplaced[key] = (f"backup {d.name}'s {BACKUP_META} holds the metadata of "
                                    f"backup {info.id}: copied from another backup")
            continue
        info.stored_bytes = {store.name: measured}
        model.backups.append(info)


# ---------------------------------------------------------------- several stores

def merge(models: list[ArchiveModel]) -> ArchiveModel:
    """The union of several stores' models: what fetch, trying every store in order,
    can find. Where stores disagree the first (the primary) wins; a backup complete
    in any store is complete, and its stored_bytes gather every store's."""
    if not models:
        return ArchiveModel(wal_segment_size=DEFAULT_SEGMENT_SIZE)
    first = models[0]
    out = ArchiveModel(wal_segment_size=first.wal_segment_size)
    backups: dict[str, BackupInfo] = {}
    incomplete: list[str] = []
    for m in models:
        if m.wal_segment_size != out.wal_segment_size:
            raise OperationFailed(f"stores disagree on the WAL segment size "
                                  f"({out.wal_segment_size} and {m.wal_segment_size} bytes): "
                                  f"they hold archives of different clusters")
        if out.system_identifier is None:
            out.system_identifier = m.system_identifier
        for tli, segs in m.segments.items():
            mine = out.segments.setdefault(tli, {})
            for segno, obj in segs.items():
                mine.setdefault(segno, obj)
        for tli, hist in m.histories.items():
            out.histories.setdefault(tli, hist)
        names = {o.name for o in out.other}
        out.other += [o for o in m.other if o.name not in names]
        out.temporary += [k for k in m.temporary if k not in out.temporary]
        for k, why in m.unreadable.items():
            out.unreadable.setdefault(k, why)
        for b in m.backups:
            if b.id in backups:
                backups[b.id].stored_bytes.update(b.stored_bytes)
            else:
                backups[b.id] = replace(b, stored_bytes=dict(b.stored_bytes))
        incomplete += [i for i in m.incomplete_backups if i not in incomplete]
    out.backups = list(backups.values())
    out.incomplete_backups = [i for i in incomplete if i not in backups]
    return out


# ---------------------------------------------------------------- derived views

def read_merged(config, purpose: str, *, with_history: bool = True) -> ArchiveModel:
    """Every readable store of the cluster, merged: what fetch can find. A store that
    cannot be read is named on stderr; none at all is an error."""
    return read_stores(config, purpose, with_history=with_history)[0]


def read_stores(config, purpose: str, *, with_history: bool = True,
                only: list[str] | None = None) -> tuple[ArchiveModel, list[str], dict[str, str]]:
    """read_merged, and which stores it was made from: (model, the names of the
    stores read, {name: error} of those that could not be read). only: read just
    these stores (names, in the configured order)."""
    from walkeeper.stores import open_store

    models, read, failed = [], [], {}
    for cfg in config.stores:
        if only is not None and cfg.name not in only:
            continue
        store = open_store(cfg, config.keyring)
        try:
            models.append(read_archive(store, config.cluster, with_history=with_history))
            read.append(store.name)
        except StoreError as exc:
            failed[store.name] = str(exc)
            log.warn(f"{exc}; {purpose} goes on without this store")
        finally:
            store.close()
    if not models:
        raise OperationFailed(f"no store could be read; {purpose} is not possible")
    return merge(models), read, failed


def runs(segnos) -> list[tuple[int, int]]:
    """Segment numbers -> maximal runs of consecutive numbers (first, last)."""
    out: list[tuple[int, int]] = []
    for n in sorted(segnos):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def wal_ranges(model: ArchiveModel) -> list[dict]:
    """Per timeline holding segments: first and last segment present, the number
    present, and gaps as [first_missing, last_missing] segment names."""
    size = model.wal_segment_size
    out = []
    for tli in sorted(model.segments):
        present = runs(model.segments[tli])
        if not present:
            continue
        def name(n: int) -> str:
            return Segment.from_number(tli, n, size).name

        gaps = [[name(a[1] + 1), name(b[0] - 1)] for a, b in zip(present, present[1:])]
        out.append({"timeline": tli, "first": name(present[0][0]), "last": name(present[-1][1]),
                    "segments": len(model.segments[tli]), "gaps": gaps})
    return out


def recoverable_windows(model: ArchiveModel) -> list[dict]:
    """Where point-in-time recovery can reach, on every timeline: the planner's answer
    (one implementation for planning, `status` and `verify-chain`)."""
    from walkeeper.catalog.planner import recoverable_windows as windows

    return windows(model, "all")
