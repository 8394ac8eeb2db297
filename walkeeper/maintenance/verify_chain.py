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
lacks are "store_mismatch". Reading runs on a few threads (zstd and hashlib release
the GIL), one store connection per thread, one object at a time per thread, so
memory stays bounded whatever the archive's size.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from walkeeper import log, state
from walkeeper.catalog.reader import merge, read_archive, recoverable_windows, runs
from walkeeper.config import Config
from walkeeper.errors import CorruptObject, ObjectNotFound, StoreError, UnknownName
from walkeeper.format.layout import BACKUP_META, backup_dir, is_temp, stored_name
from walkeeper.catalog.model import ArchiveModel
from walkeeper.format.objects import CHUNK, HEADER_SIZE, TRAILER_SIZE, ObjectReader, \
    unpack_trailer
from walkeeper.record import record
from walkeeper.stores import open_store
from walkeeper.stores.registry import store_type
from walkeeper.wal import LONG_PAGE_HEADER_SIZE, Segment, WalKind, check_segment_header, \
    parse_long_page_header, parse_wal_name

KINDS = ("corrupt", "missing", "gap", "incomplete_backup", "leftover", "store_mismatch")
WORKERS = 3

Problem = record("Problem", "kind store object detail")


@dataclass
class _Item:
    """One stored object to read back."""
    store: int                       # index into the stores checked
    key: str
    listed: int | None               # size in the listing; None: not listed (missing)
    segment: Segment | None = None   # a WAL segment: check its page header too
    sha256: str | None = None        # a backup file: the checksum its metadata records
    size: int | None = None          # and its original size


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    quick: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "problems": [p._asdict() for p in self.problems],
                "windows": self.windows}


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
        pool = _StorePool(cfgs, stores, config.keyring)
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
    return scans



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
            scan.items.append(_Item(scan.index, scan.histories[name], e.size))
    for tli in sorted(m.segments):
        for obj in m.segments[tli].values():
            scan.items.append(_Item(scan.index, obj.key, obj.stored_size, Segment.parse(obj.name)))
    scan.items += [_Item(scan.index, o.key, o.stored_size) for o in m.other]
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
                                    size=f.size))
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

class _StorePool:
    """One store object per worker thread: an SFTP connection serves one reader
    at a time. Local stores are shared (they hold no connection)."""

    def __init__(self, cfgs: list, stores: list, keyring=None):
        self.cfgs = cfgs
        self.keyring = keyring
        self.stores = stores
        self.local = threading.local()
        self.opened: list = []
        self.lock = threading.Lock()

    def get(self, index: int):
        if store_type(self.cfgs[index].type).shared:
            return self.stores[index]
        mine = getattr(self.local, "stores", None)
        if mine is None:
            mine = self.local.stores = {}
        if index not in mine:
            mine[index] = open_store(self.cfgs[index], self.keyring)
            with self.lock:
                self.opened.append(mine[index])
        return mine[index]

    def close(self) -> None:
        for s in self.opened:
            s.close()


class _Progress:
    """A \\r line on stderr: objects and bytes checked, rate."""

    def __init__(self, enabled: bool, objects: int, total: int):
        self.enabled, self.objects, self.total = enabled, objects, total
        self.done = self.bytes = 0
        self.started = self.shown = time.monotonic()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.shown < 0.5 and not force):
            return
        self.shown = now
        rate = self.bytes / max(now - self.started, 1e-6) / (1 << 20)
        pct = 100.0 * self.bytes / self.total if self.total else 100.0
        sys.stderr.write(f"\rverified {self.done}/{self.objects} objects, "
                         f"{self.bytes / (1 << 20):.0f} MiB ({pct:3.0f}%), {rate:.0f} MiB/s   ")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self.draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _check_objects(scans: list[_Scan], pool: _StorePool, quick: bool, show: bool,
                   report: Report) -> set[tuple[int, str]]:
    """Read every listed object back; return the (store index, key) of those that failed."""
    items = [it for s in scans for it in s.items]
    stored = sum(it.listed or 0 for it in items)
    progress = _Progress(show, len(items), TRAILER_SIZE * len(items) if quick else stored)
    check = _check_quick if quick else _check_deep
    sysids = {s.index: s.model.system_identifier for s in scans if s.model is not None}
    bad: set[tuple[int, str]] = set()
    pending: set = set()
    todo = iter(items)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="verify") as ex:
        while True:
            # A bounded window of futures: a million segments are never all queued.
            for it in todo:
                pending.add(ex.submit(_guarded, check, pool, it, sysids[it.store], progress))
                if len(pending) >= 4 * WORKERS:
                    break
            if not pending:
                break
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                it, kind, detail = fut.result()
                progress.done += 1
                report.objects += 1
                if kind is not None:
                    bad.add((it.store, it.key))
                    report.problems.append(Problem(kind, scans[it.store].name, it.key, detail))
            progress.draw()
    progress.finish()
    report.bytes = progress.bytes
    return bad


def _guarded(check, pool: _StorePool, it: _Item, sysid: int | None, progress: _Progress):
    try:
        return it, None, check(pool.get(it.store), it, sysid, progress)
    except CorruptObject as exc:
        return it, "corrupt", str(exc)
    except ObjectNotFound:
        return it, "missing", "listed, then gone before it could be read (expire running?)"
    except StoreError as exc:
        return it, "missing", f"could not be read: {exc}"


def _fail(detail: str):
    raise CorruptObject(detail)


def _check_quick(store, it: _Item, sysid, progress: _Progress) -> None:
    trailer = unpack_trailer(store.read_tail(it.key, TRAILER_SIZE))
    progress.add(TRAILER_SIZE)
    whole = HEADER_SIZE + trailer.body_size + TRAILER_SIZE
    if it.listed is not None and whole != it.listed:
        _fail(f"object is {it.listed} bytes, its trailer says {whole} "
              f"(body {trailer.body_size} + {HEADER_SIZE + TRAILER_SIZE}): truncated or damaged")
    _compare_recorded(it, trailer)


def _compare_recorded(it: _Item, trailer) -> None:
    if it.sha256 is not None and trailer.checksum != it.sha256:
        _fail(f"checksum {trailer.checksum} differs from backup.json's {it.sha256}")
    if it.size is not None and trailer.original_size != it.size:
        _fail(f"content is {trailer.original_size} bytes, backup.json says {it.size}")


def _check_deep(store, it: _Item, sysid, progress: _Progress) -> None:
    raw = store.open(it.key)
    try:
        reader = ObjectReader(_Counted(raw.read, progress).read, store.keyring)
        head = b""
        size = 0
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            if len(head) < LONG_PAGE_HEADER_SIZE:
                head += data[:LONG_PAGE_HEADER_SIZE - len(head)]
            size += len(data)
    finally:
        raw.close()
    _compare_recorded(it, reader.trailer)
    if it.segment is not None:
        try:
            header = parse_long_page_header(head)
            check_segment_header(it.segment, header, size)
        except ValueError as exc:
            _fail(f"decodes and verifies, but its page header is wrong: {exc}")
        if sysid is not None and header.system_identifier != sysid:
            _fail(f"WAL of database system {header.system_identifier}, but the archive "
                  f"(identity.json) belongs to system {sysid}")


class _Counted:
    def __init__(self, read, progress: _Progress):
        self._read = read
        self.progress = progress

    def read(self, n: int) -> bytes:
        data = self._read(n)
        self.progress.add(len(data))
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


# ---------------------------------------------------------------- text

def render_text(report: Report) -> str:
    lines = ["recoverable windows:" if report.windows else "recoverable windows: none"]
    for w in report.windows:
        lines.append(f"  timeline {w['timeline']}: {w['from_time']} ({w['from_lsn']}) .. "
                     f"{w['to_time']} ({w['to_lsn']})")
    if report.problems:
        lines.append(f"problems ({len(report.problems)}):")
        width = max(len(p.kind) for p in report.problems)
        for p in report.problems:
            lines.append(f"  {p.kind:<{width}}  {p.store}  {p.object}: {p.detail}")
    mode = "quick (trailers and sizes)" if report.quick else "deep (decoded and verified)"
    lines.append(f"checked {log.plural(report.objects, 'object')} ({report.bytes / (1 << 20):.1f} MiB read) "
                 f"in {', '.join(report.stores)}, {mode}: "
                 + ("no problem" if report.ok else log.plural(len(report.problems), "problem")))
    return "\n".join(lines) + "\n"
