"""verify-chain: prove that what the stores hold decodes, verifies and chains up.

Per store: every WAL object and backup file is read back through ObjectReader
(decompressed and hashed, never written anywhere) and checked against its trailer,
the backup metadata's checksum, and, for a segment, its first page header against
its name and the archive's system identifier. `--quick` reads only each object's
64-byte trailer and checks its sizes against the listing and the metadata.

Then, on the union of the stores checked (what fetch, trying every store, can
find): each complete backup has its WAL from start to stop segment ("missing"),
and every timeline is continuous from the oldest backup's start to its newest
segment, following the .history files ("gap"). Objects one store holds and another
lacks are "store_mismatch". An object that verifies but holds another name's content
(format/naming.py: a segment's page header, a history file's parents, a .backup's
WAL file; the name a version 3 object records; a backup file whose checksum is
another backup's) is "misplaced", with both names. Objects of a format version
before 3 (which record no name) are counted: `old_format_objects`. Reading runs on a few threads (zstd and hashlib release
the GIL), one store connection per thread, one object at a time per thread, so
memory stays bounded whatever the archive's size.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from walkeeper import log, state
from walkeeper.catalog.reader import merge, read_archive, recoverable_windows, runs
from walkeeper.config import Config
from walkeeper.errors import CorruptObject, MisplacedObject, ObjectNotFound, StoreError, \
    UnknownName
from walkeeper.format import naming
from walkeeper.format.layout import BACKUP_META, backup_dir, is_temp, stored_name
from walkeeper.catalog.model import ArchiveModel
from walkeeper.format.objects import CHUNK, FORMAT_VERSION, HEADER_SIZE, TRAILER_SIZE, \
    ObjectReader, unpack_trailer
from walkeeper.progress import Progress
from walkeeper.record import record
from walkeeper.stores import open_store
from walkeeper.stores.pool import StorePool
from walkeeper.wal import LONG_PAGE_HEADER_SIZE, Segment, WalKind, WalName, parse_wal_name

KINDS = ("no_archive", "corrupt", "misplaced", "missing", "gap", "incomplete_backup",
         "leftover", "store_mismatch")
WORKERS = 3

Problem = record("Problem", "kind store object detail")


@dataclass
class _Item:
    """One stored object to read back."""
    store: int                       # index into the stores checked
    key: str
    listed: int | None               # size in the listing; None: not listed (missing)
    wal: WalName | None = None       # a WAL file: check its content against its name
    sha256: str | None = None        # a backup file: the checksum its metadata records
    size: int | None = None          # and its original size
    backup: str | None = None        # and the id of its backup


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    old_format: int = 0              # objects of a format version before FORMAT_VERSION
    quick: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "problems": [p._asdict() for p in self.problems],
                "windows": self.windows, "old_format_objects": self.old_format}


# ---------------------------------------------------------------- the entry point

def verify_chain(config: Config, only: str | None = None, quick: bool = False,
                 progress: bool = False) -> Report:
    cfgs = [s for s in config.stores if only is None or s.name == only]
    if only is not None and not cfgs:
        raise UnknownName(f"--store {only}: no such store; configured: "
                         + ", ".join(s.name for s in config.stores))
    report = Report(stores=[c.name for c in cfgs], quick=quick)
    stores = [open_store(c, config.keyring) for c in cfgs]
    try:
        scans = _scan(config, stores, report)
        pool = StorePool(cfgs, config.keyring, stores)
        try:
            bad = _check_objects(scans, pool, quick, progress, report)
        finally:
            pool.close()
        _leftovers(stores, scans, report)
    finally:
        for s in stores:
            s.close()
    readable = [s for s in scans if s.model is not None]
    if len(readable) > 1:
        _mismatches(config.cluster, readable, report)
    if readable:
        scope = ",".join(s.name for s in readable)
        present = merge([s.model for s in readable])
        _chain(present, scope, config.cluster, report)
        # Windows leave out what failed its check: recovery would stop there.
        report.windows = recoverable_windows(merge([_without(s, bad) for s in readable]))
    report.problems.sort(key=lambda p: (KINDS.index(p.kind), p.store, p.object))
    if report.ok:
        state.record_success(config.state_dir, "verify", quick=quick, stores=report.stores,
                             objects=report.objects, bytes=report.bytes)
    return report


# ---------------------------------------------------------------- listing

@dataclass
class _Scan:
    name: str
    index: int
    model: ArchiveModel | None = None
    histories: dict[str, str] = field(default_factory=dict)    # WAL name -> key
    items: list[_Item] = field(default_factory=list)


def _scan(config: Config, stores: list, report: Report) -> list[_Scan]:
    """Read each store into a model, list what to read back, note what the
    listing alone shows (incomplete backups, unreadable metadata)."""
    scans = []
    for i, store in enumerate(stores):
        scan = _Scan(store.name, i)
        scans.append(scan)
        try:
            scan.model = read_archive(store, config.cluster)
            empty = _no_archive(store, config.cluster, scan.model)
            if empty is not None:
                # Nothing to check is a problem, not "0 objects, no problem"; and an
                # empty store is left out of the comparisons (one line, not hundreds
                # of store_mismatch).
                scan.model = None
                report.problems.append(Problem("no_archive", store.name, store.location, empty))
                continue
            _list_items(store, config.cluster, scan, report)
        except StoreError as exc:
            scan.model = None
            report.problems.append(Problem("missing", store.name, store.location,
                                           f"the store could not be read: {exc}"))
            continue
        m = scan.model
        for bid in m.incomplete_backups:
            report.problems.append(Problem(
                "incomplete_backup", store.name, backup_dir(config.cluster, bid),
                "no backup.json: an interrupted (or running) basebackup, never restorable"))
        for key, why in sorted(m.unreadable.items()):
            report.problems.append(Problem("corrupt", store.name, key, why))
        for key, why in sorted(m.misplaced.items()):
            report.problems.append(Problem("misplaced", store.name, key, why))
    return scans



def _no_archive(store, cluster: str, m: ArchiveModel) -> str | None:
    """Why the store holds no archive of `cluster` (its root is missing, or nothing of
    the cluster is in it), or None when it holds one."""
    root_exists = getattr(store, "root_exists", None)
    if root_exists is not None and not root_exists():
        return (f"the store's root {store.location} does not exist: not mounted, or "
                f"mistyped? (`walkeeper check` creates it on first-time setup)")
    if m.segments or m.histories or m.other or m.backups or m.incomplete_backups \
            or m.unreadable or store.list(f"{cluster}/dumps"):
        return None
    return (f"the store holds no archive of cluster {cluster!r} (no WAL, backup or dump): "
            f"a wrong path or cluster name, an empty mount point, or a store never "
            f"synced (`walkeeper sync`)")


def _list_items(store, cluster: str, scan: _Scan, report: Report) -> None:
    m = scan.model
    for e in store.list(f"{cluster}/wal"):
        name = stored_name(e.name)
        if e.is_dir or is_temp(e.name) or name is None:
            continue
        try:
            wal = parse_wal_name(name)
        except ValueError:
            continue
        if wal.kind is WalKind.HISTORY and name not in scan.histories:
            scan.histories[name] = f"{cluster}/wal/{e.name}"
            scan.items.append(_Item(scan.index, scan.histories[name], e.size, wal))
    for tli in sorted(m.segments):
        for obj in m.segments[tli].values():
            scan.items.append(_Item(scan.index, obj.key, obj.stored_size,
                                    parse_wal_name(obj.name)))
    scan.items += [_Item(scan.index, o.key, o.stored_size, parse_wal_name(o.name))
                   for o in m.other]
    for b in m.backups:
        listed = {e.name: e.size for e in store.list(backup_dir(cluster, b.id)) if not e.is_dir}
        for f in b.files:
            base = f.key.rsplit("/", 1)[-1]
            if base not in listed:
                report.problems.append(Problem("missing", store.name, f.key,
                                               f"file {f.name} of backup {b.id} is not in the "
                                               f"store (backup.json lists it)"))
                continue
            scan.items.append(_Item(scan.index, f.key, listed[base], sha256=f.sha256,
                                    size=f.size, backup=b.id))
            if listed[base] != f.stored_size:
                report.problems.append(Problem("corrupt", store.name, f.key,
                                               f"stored as {listed[base]} bytes, backup.json "
                                               f"says {f.stored_size}"))


def _leftovers(stores: list, scans: list[_Scan], report: Report) -> None:
    """Temporary uploads still there after the check: a push in flight finishes
    within seconds, so what remains was left by an interrupted one."""
    for scan in scans:
        if scan.model is None:
            continue
        store = stores[scan.index]
        for key in scan.model.temporary:
            try:
                if not store.exists(key):
                    continue
            except StoreError:
                pass
            report.problems.append(Problem("leftover", scan.name, key,
                                           "temporary upload left by an interrupted push or "
                                           "backup; safe to delete once nothing is running"))


# ---------------------------------------------------------------- reading back

def _check_objects(scans: list[_Scan], pool: StorePool, quick: bool, show: bool,
                   report: Report) -> set[tuple[int, str]]:
    """Read every listed object back; return the (store index, key) of those that failed."""
    items = [it for s in scans for it in s.items]
    stored = sum(it.listed or 0 for it in items)
    progress = Progress(TRAILER_SIZE * len(items) if quick else stored, show, "verified",
                        objects=len(items))
    check = _check_quick if quick else _check_deep
    contexts = {s.index: _Context(s.model) for s in scans if s.model is not None}
    bad: set[tuple[int, str]] = set()
    pending: set = set()
    todo = iter(items)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="verify") as ex:
        while True:
            # A bounded window of futures: a million segments are never all queued.
            for it in todo:
                pending.add(ex.submit(_guarded, check, pool, it, contexts[it.store], progress))
                if len(pending) >= 4 * WORKERS:
                    break
            if not pending:
                break
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                it, kind, detail = fut.result()
                progress.object_done()
                report.objects += 1
                if kind is None and detail is not None and detail < FORMAT_VERSION:
                    report.old_format += 1
                if kind is not None:
                    bad.add((it.store, it.key))
                    report.problems.append(Problem(kind, scans[it.store].name, it.key, detail))
            progress.draw()
    progress.finish()
    report.bytes = progress.bytes
    return bad


class _Context:
    """What a store's archive says that an object's content must agree with."""

    def __init__(self, model: ArchiveModel):
        self.sysid = model.system_identifier
        self.seg_size = model.wal_segment_size
        self.histories = model.histories
        # checksum -> "file F of backup B", to name what a swapped backup file holds
        self.checksums = {f.sha256: (b.id, f.name) for b in model.backups for f in b.files}


def _guarded(check, pool: StorePool, it: _Item, ctx: _Context, progress: Progress):
    try:
        return it, None, check(pool.get(it.store), it, ctx, progress)
    except MisplacedObject as exc:
        return it, "misplaced", str(exc)
    except CorruptObject as exc:
        return it, "corrupt", str(exc)
    except ObjectNotFound:
        return it, "missing", "listed, then gone before it could be read (expire running?)"
    except StoreError as exc:
        return it, "missing", f"could not be read: {exc}"


def _fail(detail: str):
    raise CorruptObject(detail)


def _check_quick(store, it: _Item, ctx: _Context, progress: Progress) -> int:
    """Returns the object's format version."""
    trailer = unpack_trailer(store.read_tail(it.key, TRAILER_SIZE))
    progress.update(TRAILER_SIZE)
    whole = HEADER_SIZE + trailer.body_size + TRAILER_SIZE
    if it.listed is not None and whole != it.listed:
        _fail(f"object is {it.listed} bytes, its trailer says {whole} "
              f"(body {trailer.body_size} + {HEADER_SIZE + TRAILER_SIZE}): truncated or damaged")
    _compare_recorded(it, trailer, ctx)
    return trailer.version


def _compare_recorded(it: _Item, trailer, ctx: _Context) -> None:
    if it.sha256 is not None and trailer.checksum != it.sha256:
        other = ctx.checksums.get(trailer.checksum)
        if other is not None:
            raise MisplacedObject(f"file {it.key.rsplit('/', 1)[-1]} of backup {it.backup}",
                                  f"file {other[1]} of backup {other[0]}",
                                  "its checksum is the one that backup's backup.json records")
        _fail(f"checksum {trailer.checksum} differs from backup.json's {it.sha256}")
    if it.size is not None and trailer.original_size != it.size:
        _fail(f"content is {trailer.original_size} bytes, backup.json says {it.size}")


def _check_deep(store, it: _Item, ctx: _Context, progress: Progress) -> int:
    """Returns the object's format version."""
    wal = it.wal
    keep = 0 if wal is None else (LONG_PAGE_HEADER_SIZE if wal.kind in (
        WalKind.SEGMENT, WalKind.PARTIAL) else naming.HISTORY_LIMIT + 1)
    raw = store.open(it.key)
    try:
        reader = ObjectReader(_Counted(raw.read, progress).read, store.keyring, name=it.key)
        head = b""
        size = 0
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            if len(head) < keep:
                head += data[:keep - len(head)]
            size += len(data)
    finally:
        raw.close()
    _compare_recorded(it, reader.trailer, ctx)
    if wal is None:
        pass
    elif wal.kind is WalKind.HISTORY:
        naming.check_history(wal, head, ctx.histories)
    elif wal.kind is WalKind.BACKUP:
        naming.check_backup_file(wal, head, ctx.seg_size)
    else:
        header = naming.segment_header(wal, head)
        naming.check_segment(wal, header, size, ctx.sysid, ctx.histories.get(wal.timeline))
    return reader.version


class _Counted:
    def __init__(self, read, progress: Progress):
        self._read = read
        self.progress = progress

    def read(self, n: int) -> bytes:
        data = self._read(n)
        self.progress.update(len(data))
        return data


def _without(scan: _Scan, bad: set[tuple[int, str]]) -> ArchiveModel:
    m = scan.model
    if not any(i == scan.index for i, _ in bad):
        return m
    segments = {tli: {n: o for n, o in segs.items() if (scan.index, o.key) not in bad}
                for tli, segs in m.segments.items()}
    backups = [b for b in m.backups
               if not any((scan.index, f.key) in bad for f in b.files)]
    return replace(m, segments=segments, backups=backups)


# ---------------------------------------------------------------- across stores

def _inventory(cluster: str, scan: _Scan) -> dict[str, str]:
    """What a store holds, by what it is (not by codec suffix) -> its key."""
    m = scan.model
    out = {name: key for name, key in scan.histories.items()}
    for segs in m.segments.values():
        out.update({o.name: o.key for o in segs.values()})
    out.update({o.name: o.key for o in m.other})
    out.update({f"backup {b.id}": f"{backup_dir(cluster, b.id)}/{BACKUP_META}"
                for b in m.backups})
    return out


def _mismatches(cluster: str, scans: list[_Scan], report: Report) -> None:
    held = {s.name: _inventory(cluster, s) for s in scans}
    incomplete = {s.name: {f"backup {b}" for b in s.model.incomplete_backups} for s in scans}
    for what in sorted(set().union(*held.values())):
        have = [n for n in held if what in held[n]]
        for s in scans:
            if what in held[s.name] or what in incomplete[s.name]:
                continue
            key = held[have[0]][what]
            report.problems.append(Problem("store_mismatch", s.name, key,
                                           f"{what} is in {', '.join(have)} but not in "
                                           f"{s.name}"))


# ---------------------------------------------------------------- the chain

def _chain(m: ArchiveModel, scope: str, cluster: str, report: Report) -> None:
    """Each backup's own WAL, then continuity per timeline (on the union of stores)."""
    size = m.wal_segment_size
    reported: set[tuple[int, int]] = set()
    for b in m.backups_by_stop():
        try:
            start, stop = b.start_segment, b.stop_segment
        except ValueError as exc:
            report.problems.append(Problem("corrupt", scope, backup_dir(cluster, b.id),
                                           f"backup.json: {exc}"))
            continue
        needed = [(stop.timeline, n)
                  for n in range(start.number(size), stop.number(size) + 1)]
        needed[0] = (start.timeline, start.number(size))
        for tli, n in needed:
            if n not in m.segments.get(tli, {}) and (tli, n) not in reported:
                reported.add((tli, n))
                report.problems.append(Problem(
                    "missing", scope, Segment.from_number(tli, n, size).name,
                    f"backup {b.id} needs it (its WAL is {b.start_wal} .. {b.stop_wal}): "
                    f"the backup cannot be restored"))
    starts = []
    for b in m.backups:
        try:
            starts.append(b.start_segment.number(size))
        except ValueError:
            pass
    oldest = min(starts) if starts else None
    parents = {c: h[-1] for c, h in m.histories.items() if h}
    for tli in sorted(set(m.segments) | set(parents)):
        present = m.segments.get(tli, {})
        begin = parents[tli].switch_lsn // size if tli in parents else 0
        if tli > 1 and tli not in parents and present:
            report.problems.append(Problem(
                "missing", scope, f"{tli:08X}.history",
                f"timeline {tli} has segments but no history file: recovery cannot follow "
                f"the switch onto it"))
            begin = min(present)
        lo = max(begin, oldest if oldest is not None else (min(present) if present else 0))
        ends = [max(present)] if present else []
        # A parent timeline must reach the switch segment of each child in use.
        ends += [p.switch_lsn // size - 1 for c, p in parents.items()
                 if p.timeline == tli and m.segments.get(c)]
        hi = max(ends, default=-1)
        missing = [n for n in range(lo, hi + 1) if n not in present and (tli, n) not in reported]
        for first, last in runs(missing):
            a = Segment.from_number(tli, first, size).name
            z = Segment.from_number(tli, last, size).name
            count = last - first + 1
            report.problems.append(Problem(
                "gap", scope, a if first == last else f"{a}..{z}",
                f"{count} segment{'s' if count > 1 else ''} missing on timeline {tli}, "
                f"in no store checked: replay along this timeline stops before {a}"))


def failure(report: Report):
    """OperationFailed naming the problems by kind, or None when the report is clean."""
    from walkeeper.errors import OperationFailed

    if report.ok:
        return None
    kinds: dict[str, int] = {}
    for p in report.problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    return OperationFailed(
        f"{log.plural(len(report.problems), 'problem')} found ("
        + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")",
        hint="see the problems listed (\"problems\" in --json)")

