"""sync: give a store every verified object another store holds and it lacks.

For each target store (--to, default every store) and each object of the cluster
that a source store (--from, default every other store) holds:

- the target holds it and its copy verifies: nothing to do, whatever the source
  holds (a good object is never overwritten);
- the target lacks it, or holds a copy that fails verification: the object is
  streamed from the first source whose copy verifies, as stored (compressed and
  encrypted bytes unchanged), verified on the way, and placed with the store's
  no-clobber put. A corrupt copy in the target is deleted only once the good copy
  is fully uploaded under its temporary name, just before it is placed.

Verification is the one verify-chain makes of an object: a walkeeper object is
decoded (codec, sizes, checksums, authentication tags); a plain JSON metadata file
(identity.json, backup.json of an unencrypted archive) must parse. Completion marks
(backup.json, dump.json) are copied after the files of their directory, so an
interrupted sync never leaves a backup that looks complete and is not. Interrupted,
a sync leaves at most a temporary upload (never read as data); run it again and it
goes on where it stopped, since what it copied now verifies in the target.

Only the store interface (stores/base.py: list, open, begin_put, delete) is used:
every store type works with sync unchanged.
"""

from __future__ import annotations


from walkeeper import log
from walkeeper.catalog.reader import PLAIN_FILES, parse_json_object
from walkeeper.config import Config
from walkeeper.errors import CorruptObject, ObjectExists, ObjectNotFound, OperationFailed, \
    StoreError, UsageError
from walkeeper.format import identity
from walkeeper.format.layout import BACKUP_META, DUMP_META, identity_key, is_temp, stored_name
from walkeeper.format.objects import CHUNK, HEADER_SIZE, SKIPPABLE_MAGIC, decode
from walkeeper.stores import open_store

SMALL_LIMIT = 1 << 20
_MARKS = (BACKUP_META, DUMP_META)


def sync(config: Config, from_store: str | None = None, to_store: str | None = None,
         dry_run: bool = False, progress=None) -> dict:
    """Copy what the targets lack (or hold corrupt) from the sources; return the
    `sync --json` object. progress(text), if given, is told of each object copied."""
    names = [s.name for s in config.stores]
    for opt, value in (("--from", from_store), ("--to", to_store)):
        if value is not None and value not in names:
            raise UsageError(f"{opt} {value}: no such store; configured: {', '.join(names)}")
    if from_store is not None and from_store == to_store:
        raise UsageError(f"--from and --to name the same store ({from_store})")
    sources = [from_store] if from_store else names
    targets = [to_store] if to_store else names
    if len(set(sources) | set(targets)) < 2:
        raise UsageError("sync needs two stores; only one is configured")
    result = {"ok": True, "dry_run": dry_run, "copied": [], "checked": 0, "good": 0,
              "unrecoverable": [], "skipped": [], "store_errors": {}}
    involved = [c for c in config.stores if c.name in sources or c.name in targets]
    stores, inventories = {}, {}
    try:
        for cfg in involved:
            store = stores[cfg.name] = open_store(cfg, config.keyring)
            try:
                inventories[cfg.name] = _inventory(store, config.cluster)
            except StoreError as exc:
                result["store_errors"][cfg.name] = str(exc)
                log.warn(f"{exc}; sync goes on without this store")
        _check_identities(config, stores, inventories)
        for target in targets:
            if target not in inventories:
                continue
            srcs = [s for s in sources if s != target and s in inventories]
            if srcs:
                _sync_to(config, stores, inventories, target, srcs, dry_run, progress, result)
    finally:
        for store in stores.values():
            store.close()
    result["ok"] = not (result["unrecoverable"] or result["store_errors"])
    return result


# ---------------------------------------------------------------- listing

def _inventory(store, cluster: str) -> dict[str, int]:
    """Every object key under the cluster's directory -> its stored size (temporary
    uploads left out)."""
    out: dict[str, int] = {}
    pending = [cluster]
    while pending:
        prefix = pending.pop()
        for e in store.list(prefix):
            if is_temp(e.name):
                continue
            key = f"{prefix}/{e.name}"
            if e.is_dir:
                pending.append(key)
            else:
                out[key] = e.size
    return out


def _order(key: str) -> tuple:
    """Completion marks after everything else, so that they are placed last."""
    return (key.rsplit("/", 1)[-1] in _MARKS, key)


def _syncable(key: str) -> bool:
    base = key.rsplit("/", 1)[-1]
    return stored_name(base) is not None or base.endswith(".json")


def _check_identities(config: Config, stores: dict, inventories: dict) -> None:
    """Stores holding archives of different systems under one cluster name must never
    be mixed: refuse before copying anything."""
    key = identity_key(config.cluster)
    seen: dict[str, int] = {}
    for name, inv in inventories.items():
        if key not in inv:
            continue
        try:
            ident = identity.read(stores[name], config.cluster)
        except (ObjectNotFound, StoreError, ValueError):
            continue
        if ident is not None and ident.system_identifier is not None:
            seen[name] = ident.system_identifier
    if len(set(seen.values())) > 1:
        raise OperationFailed(
            "the stores hold archives of different systems under cluster "
            f"{config.cluster!r} (" + ", ".join(f"{n}: {s}" for n, s in seen.items())
            + "); sync refuses to mix them")


# ---------------------------------------------------------------- verifying

class _Source:
    """A store's object read through `read`, its stored bytes passed to `sink`."""

    def __init__(self, raw, sink=None):
        self.raw, self.sink, self.pending, self.bytes = raw, sink, b"", 0

    def read(self, n: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
            return data
        data = self.raw.read(n)
        if data:
            self.bytes += len(data)
            if self.sink is not None:
                self.sink(data)
        return data


def _verify(store, key: str, keyring, sink=None) -> int:
    """Read the object at key in full (its stored bytes to sink) and verify it;
    return its stored size. CorruptObject when it fails, ObjectNotFound if absent."""
    raw = store.open(key)
    try:
        src = _Source(raw, sink)
        head = b""
        while len(head) < HEADER_SIZE:
            more = src.read(HEADER_SIZE - len(head))
            if not more:
                break
            head += more
        src.pending = head
        if len(head) >= 4 and int.from_bytes(head[:4], "little") == SKIPPABLE_MAGIC:
            decode(src.read, None, keyring)
            if src.read(1):
                raise CorruptObject("bytes after the end of the object")
        else:
            data = b""
            while True:
                more = src.read(CHUNK)
                if not more:
                    break
                data += more
                if len(data) > SMALL_LIMIT:
                    raise CorruptObject("not a walkeeper object, and too large for metadata")
            _check_plain(key, data, keyring)
        return src.bytes
    finally:
        raw.close()


def _check_plain(key: str, data: bytes, keyring) -> None:
    base = key.rsplit("/", 1)[-1]
    if not base.endswith(".json"):
        raise CorruptObject("not a walkeeper object (no object header)")
    if keyring is not None and not key.endswith(PLAIN_FILES):
        raise CorruptObject("stored in clear, but this archive is encrypted")
    parse_json_object(data)


def _read_small(store, key: str, keyring, name: str) -> bytes:
    chunks = []
    _verify(store, key, keyring, chunks.append)
    data = b"".join(chunks)
    if int.from_bytes(data[:4], "little") == SKIPPABLE_MAGIC:
        import io

        out = io.BytesIO()
        decode(io.BytesIO(data).read, out.write, keyring)
        return out.getvalue()
    return data


# ---------------------------------------------------------------- copying

def _sync_to(config: Config, stores: dict, inventories: dict, target: str, sources: list[str],
             dry_run: bool, progress, result: dict) -> None:
    dst = stores[target]
    have = inventories[target]
    wanted = sorted({k for s in sources for k in inventories[s]} | set(have), key=_order)
    for key in wanted:
        holders = [s for s in sources if key in inventories[s]]
        if not _syncable(key):
            if holders and key not in have:
                result["skipped"].append({"key": key, "store": target,
                                          "detail": "not a walkeeper object: not copied"})
            continue
        replace = False
        if key in have:
            result["checked"] += 1
            try:
                _verify(dst, key, config.keyring)
                result["good"] += 1
                continue
            except CorruptObject as exc:
                replace = True
                why = f"corrupt in {target} ({exc})"
            except ObjectNotFound:
                why = f"removed from {target} while sync ran"
            except StoreError as exc:
                result["store_errors"][target] = str(exc)
                log.warn(f"{exc}; sync to {target} stops here")
                return
        else:
            why = f"absent from {target}"
        if not holders:
            result["unrecoverable"].append({"key": key, "store": target,
                                            "detail": f"{why}, and no other store holds it"})
            continue
        try:
            copied = _copy(config, stores, key, target, holders, replace, dry_run)
        except StoreError as exc:
            if exc.store == target:
                result["store_errors"][target] = str(exc)
                log.warn(f"{exc}; sync to {target} stops here")
                return
            raise
        if isinstance(copied, str):         # no source had a good copy
            result["unrecoverable"].append({"key": key, "store": target,
                                            "detail": f"{why}; {copied}"})
            continue
        source, size = copied
        row = {"key": key, "from": source, "to": target, "bytes": size, "replaced": replace}
        result["copied"].append(row)
        if progress is not None:
            verb = "would copy" if dry_run else "copied"
            progress(f"{verb} {key} from {source} to {target} ({log.human_bytes(size)}"
                     + (", replacing a corrupt copy)" if replace else ")"))


def _copy(config: Config, stores: dict, key: str, target: str, holders: list[str],
          replace: bool, dry_run: bool):
    """(source, bytes) once the object is placed in the target (or, dry_run, once a
    source's copy verified); a string saying why no source could give it."""
    dst = stores[target]
    problems = []
    for name in holders:
        src = stores[name]
        upload = None
        try:
            if dry_run:
                size = _verify(src, key, config.keyring)
                return name, size
            upload = dst.begin_put(key)
            size = _verify(src, key, config.keyring, upload.write)
            if replace:
                dst.delete(key)
            upload.commit()
            upload = None
            return name, size
        except CorruptObject as exc:
            problems.append(f"corrupt in {name} ({exc})")
        except ObjectNotFound:
            problems.append(f"removed from {name} while sync ran")
        except ObjectExists:
            upload = None
            # Written meanwhile (a push running alongside): keep it if it verifies.
            try:
                _verify(dst, key, config.keyring)
                return name, 0
            except CorruptObject as exc:
                problems.append(f"a copy written meanwhile in {target} is corrupt ({exc})")
        except StoreError as exc:
            if exc.store == target:
                raise
            problems.append(str(exc))
        finally:
            if upload is not None:
                upload.abort()
    return "no store has a good copy: " + "; ".join(problems)


# ---------------------------------------------------------------- text

def failure(result: dict):
    """OperationFailed when some object has no good copy anywhere or a store was not
    reachable; None when the sync is complete."""
    from walkeeper.errors import OperationFailed

    if result["ok"]:
        return None
    return OperationFailed(
        f"{log.plural(len(result['unrecoverable']), 'object')} without a good copy anywhere, "
        f"{log.plural(len(result['store_errors']), 'store')} not reachable",
        hint="see the list above (\"unrecoverable\" and \"store_errors\" in --json)")
