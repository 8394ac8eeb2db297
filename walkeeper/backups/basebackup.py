"""basebackup: pg_basebackup streamed, compressed and checksummed into every store.

    pg_basebackup -D - -Ft -X none -> encode once -> <cluster>/backups/<ID>/base.tar.zst
                                                      in every store

With backup.compress = server (auto on a PostgreSQL 15+ primary), the server compresses
(--compress=server-zstd, no backup_manifest then) and its zstd stream is the object's
body as it comes; a thread decodes it on the way for backup_label and the size.

-X none: the WAL comes from our archive, and the server does not end the backup
before the WAL it needs is archived. The backup's start point comes from the
backup_label at the head of the tar stream (pg_basebackup -v prints no LSNs with
-X none); its stop point and times from the `.backup` history file PostgreSQL
archives at backup stop. The metadata (backup.json) is the completion mark: it is
written last, once every store holds the tar and the WAL from the start to the
stop segment. A crash before that leaves only `.tmp-` uploads or a backup without
metadata, which nothing takes for restorable.
"""

from __future__ import annotations

import collections
import io
import json
import queue
import threading
import time
from datetime import datetime, timezone

from walkeeper import log, pg, state
from walkeeper.progress import Progress
from walkeeper.config import Config
from walkeeper.errors import (ConfigError, CorruptObject, ObjectNotFound, OperationFailed,
                              StoreError, UsageError)
from walkeeper.format.layout import (backup_file_key, backup_meta_key, backups_dir,
                              wal_dir, wal_keys)
from walkeeper.catalog.model import BackupFile, BackupInfo
from walkeeper.format.objects import CHUNK, HEADER_SIZE, TRAILER_SIZE, Trailer, decode
from walkeeper.format import identity
from walkeeper.format.crypto import writer_key
from walkeeper.stores import open_stores
from walkeeper.archiving.transfer import put_stream
from walkeeper.wal import Segment, format_lsn, parse_lsn, parse_wal_name

WAL_WAIT = 60.0           # seconds for the backup's WAL to show up in every store
HISTORY_WAIT = 30.0       # seconds for the .backup history file
READ_AHEAD = 8            # chunks of a program's output read ahead of the encoder


# ------------------------------------------------------------------ streaming

class _Watch:
    """A backup must reach every store: the first store that fails stops the stream
    (put_stream alone would carry on with the others for hours)."""

    def __init__(self):
        self.error: StoreError | None = None


class _WatchedUpload:
    def __init__(self, upload, watch: _Watch):
        self.upload = upload
        self.watch = watch

    def write(self, data: bytes) -> None:
        try:
            self.upload.write(data)
        except StoreError as exc:
            self.watch.error = self.watch.error or exc
            raise

    def commit(self) -> None:
        self.upload.commit()

    def abort(self) -> None:
        self.upload.abort()


class _WatchedStore:
    def __init__(self, store, watch: _Watch):
        self.store = store
        self.name = store.name
        self.location = store.location
        self.watch = watch

    def begin_put(self, key: str) -> _WatchedUpload:
        try:
            return _WatchedUpload(self.store.begin_put(key), self.watch)
        except StoreError as exc:
            self.watch.error = self.watch.error or exc
            raise


class _Abandon(Exception):
    pass


class _Source:
    """The compressed chunks as a file-like read() for zstd's stream reader."""

    def __init__(self, feed: queue.Queue, stop: threading.Event):
        self.feed = feed
        self.stop = stop
        self.pending = b""
        self.ended = False

    def read(self, n: int = -1) -> bytes:
        while not self.pending and not self.ended:
            try:
                item = self.feed.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Abandon()
                continue
            if item is None:
                self.ended = True
            else:
                self.pending = item
        n = len(self.pending) if n is None or n < 0 else n
        data, self.pending = self.pending[:n], self.pending[n:]
        return data


class _Decoder:
    """A zstd stream (what PostgreSQL compressed on the server) decoded as it goes
    by, in a thread of its own (zstd releases the GIL, so on a second core): the
    decoded bytes go to `observe` (backup_label, progress) and are counted, which is
    the stored object's original size. At most a chunk of each side in memory,
    whatever the compression ratio."""

    def __init__(self, observe):
        self.observe = observe
        self.size = 0
        self.error: BaseException | None = None
        self.feed: queue.Queue = queue.Queue(READ_AHEAD)
        self.stop = threading.Event()
        self.source = _Source(self.feed, self.stop)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import zstandard

        try:
            reader = zstandard.ZstdDecompressor().stream_reader(self.source, read_size=CHUNK)
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                self.size += len(data)
                if self.observe is not None:
                    self.observe(data)
            if self.source.read(1):
                raise OperationFailed("the server's zstd stream goes on after its end")
        except _Abandon:
            pass
        except BaseException as exc:
            self.error = exc
        self.stop.set()

    def put(self, data: bytes | None) -> None:
        while True:
            if self.stop.is_set():
                self._raise()
                raise OperationFailed("the server's zstd stream ended before "
                                      "pg_basebackup's output did")
            try:
                self.feed.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Once the stream has ended: raise unless it decoded cleanly (then `size` is
        what it decodes to)."""
        self.put(None)
        self.thread.join()
        self._raise()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _raise(self) -> None:
        exc = self.error
        if isinstance(exc, OperationFailed):
            raise exc
        if exc is not None:
            raise OperationFailed(f"cannot decode the server's zstd stream: {exc}") from None


def stream_program(argv: list[str], env: dict[str, str], stores: list, key: str,
                   config: Config, observe=None, seal=None, compressed: bool = False,
                   threads: int = 2) -> tuple[Trailer, str]:
    """Run a program and store its stdout under `key` in every store, or in none.

    Returns (trailer, the program's stderr). The object is committed only if the
    program exited 0 and every store took every byte; otherwise OperationFailed,
    and the uploads are aborted (a kill -9 of walkeeper leaves `.tmp-` objects).
    compressed: the program writes a zstd stream (pg_basebackup --compress=server-zstd),
    stored as it is and decoded on the way for `observe` and the original size.
    threads: zstd worker threads when walkeeper compresses.
    """
    program = argv[0].rsplit("/", 1)[-1]
    proc = pg.start(argv, env)
    errlines: collections.deque[str] = collections.deque(maxlen=200)

    def drain():
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            errlines.append(line)
            log.debug(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    watch = _Watch()
    # The program's output is read by a thread of its own, up to READ_AHEAD chunks
    # ahead, and through a 1 MiB pipe: otherwise the program (and the server
    # behind pg_basebackup) stands still whenever this thread hashes and compresses.
    try:
        import fcntl

        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass
    ahead: queue.Queue = queue.Queue(READ_AHEAD)
    stop = threading.Event()

    def pump():
        item: bytes | BaseException
        while True:
            try:
                item = proc.stdout.read(CHUNK)
            except BaseException as exc:
                item = exc
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or not isinstance(item, bytes) or not item:
                return

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()

    decoder = _Decoder(observe) if compressed else None

    def chunks():
        while True:
            if watch.error is not None:
                raise _Abandon()
            data = ahead.get()
            if isinstance(data, BaseException):
                raise data
            if not data:
                break
            if decoder is not None:
                decoder.put(data)
            elif observe is not None:
                observe(data)
            yield data
        rc = proc.wait()
        reader.join(timeout=10)
        if rc != 0:
            raise OperationFailed(f"{program} failed (exit {rc}): "
                                  f"{pg.last_line(chr(10).join(errlines))}")
        if decoder is not None:
            decoder.finish()

    try:
        out = put_stream([_WatchedStore(s, watch) for s in stores], key, chunks(),
                         config["compression.algorithm"], config["compression.level"],
                         threads=threads, seal=seal,
                         original_size=(lambda: decoder.size) if compressed else None)
    except _Abandon:
        raise OperationFailed(f"{watch.error}; abandoned: the copy must reach every store") \
            from None
    finally:
        if decoder is not None:
            decoder.close()
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
                proc.wait()
        pumper.join(timeout=10)
        reader.join(timeout=10)
    problems = [str(e) for e in out.errors.values()]
    problems += [f"store {s.name!r}: {key} already exists" for s in out.taken]
    if problems or out.trailer is None:
        for s in out.stored:
            _delete(s.store, key)
        raise OperationFailed("; ".join(problems) or f"{key} was stored nowhere")
    return out.trailer, "\n".join(errlines)


def _delete(store, key: str) -> None:
    try:
        store.delete(key)
    except StoreError as exc:
        log.warn(f"cannot remove {key} from {store.name}: {exc}")


def stored_size(t: Trailer) -> int:
    return HEADER_SIZE + t.body_size + TRAILER_SIZE


def new_id(stores: list, parent: str, now: datetime | None = None) -> str:
    """UTC time YYYYMMDDTHHMMSSZ, with -2, -3, ... if a store already has it."""
    base = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    taken: set[str] = set()
    for s in stores:
        taken |= {e.name for e in s.list(parent)}
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def write_metadata(stores: list, key: str, doc: dict, seal=None) -> None:
    """backup.json / dump.json: plain JSON, or with `seal` (an encrypted archive) a
    stored object, since labels, database names and sizes describe the content."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    if seal is not None:
        from walkeeper.format.objects import encode_bytes

        data = encode_bytes(data, "zstd", seal, name=key)
    failed = []
    for s in stores:
        try:
            s.put_bytes(key, data)
        except StoreError as exc:
            failed.append(str(exc))
    if failed:
        ok = len(stores) - len(failed)
        raise OperationFailed(f"cannot write {key}: {'; '.join(failed)}"
                              + (f" (complete in {log.plural(ok, 'other store')})" if ok else ""))


# ---------------------------------------------------------------- WAL checks

def read_wal_file(stores: list, cluster: str, name: str, codec: str) -> bytes | None:
    """The verified content of an archived WAL-layout file from the first store
    holding a good copy; None when no store has one."""
    keys = wal_keys(cluster, parse_wal_name(name), codec)
    for s in stores:
        for key in keys:
            try:
                reader = s.open(key)
            except ObjectNotFound:
                continue
            except StoreError as exc:
                log.debug(str(exc))
                break
            buf = io.BytesIO()
            try:
                decode(reader.read, buf.write, s.keyring, name=key)
                return buf.getvalue()
            except (CorruptObject, StoreError) as exc:
                log.warn(f"store {s.name!r}: {key}: {exc}; trying the next store")
                break
            finally:
                reader.close()
    return None


def missing_wal(store, cluster: str, segments: list[Segment], codec: str) -> list[str]:
    """Names of the segments absent from this store (one listing per directory)."""
    listed: dict[str, set[str]] = {}
    missing = []
    for seg in segments:
        wal = parse_wal_name(seg.name)
        d = wal_dir(cluster, wal)
        if d not in listed:
            listed[d] = {e.name for e in store.list(d) if not e.is_dir}
        if not any(k.rsplit("/", 1)[1] in listed[d] for k in wal_keys(cluster, wal, codec)):
            missing.append(seg.name)
    return missing


def wait_for_wal(stores: list, cluster: str, segments: list[Segment], codec: str,
                 timeout: float | None = None) -> None:
    timeout = WAL_WAIT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        problems = []
        for s in stores:
            try:
                gone = missing_wal(s, cluster, segments, codec)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if gone:
                more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
                problems.append(f"store {s.name!r} lacks {gone[0]}{more}")
        if not problems:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the WAL of the backup ({segments[0].name} to {segments[-1].name}) is not in "
                f"every store after {timeout:.0f} s: {'; '.join(problems)}",
                hint="check archive_command and pg_stat_archiver; the backup was not completed")
        time.sleep(0.5)


def _check_identity(stores: list, cluster: str, sysid: int) -> None:
    for s in stores:
        try:
            ident = identity.read(s, cluster)
        except ValueError:
            continue              # damaged: push refuses and says so; verify-chain reports it
        identity.refuse_other(ident, s, cluster, sysid, "a base backup")


# ---------------------------------------------------------------- the backup

def take_basebackup(config: Config, label: str | None = None,
                    progress: bool = False) -> BackupInfo:
    """Take a base backup into every store; return its metadata (written last)."""
    backup_id = ""
    try:
        info = pg.server_info(config["postgres.conninfo"])
        _refuse(info)
        if label is not None and (not label.strip() or "\n" in label or len(label) > 1000):
            raise UsageError("--label must be one line of at most 1000 characters")
        stores = open_stores(config)
        try:
            _check_identity(stores, config.cluster, info["system_identifier"])
            backup_id = new_id(stores, backups_dir(config.cluster))
            result = _take(config, info, backup_id, label or f"walkeeper {backup_id}",
                           progress, stores)
        finally:
            for s in stores:
                s.close()
    except StoreError as exc:
        raise OperationFailed(f"{exc}; no backup was completed") from None
    state.record_success(config.state_dir, "backup", id=result.id,
                         stop_time=result.stop_time.isoformat(),
                         size=result.files[0].size, stored_bytes=result.stored_bytes,
                         stores=list(result.stored_bytes))
    return result


def _no_zstd(message: str) -> bool:
    text = message.lower()
    return "zstd" in text and ("not supported" in text or "does not support" in text)


def client_reason(setting: str, codec: str, info: dict) -> str | None:
    """Where the backup is compressed (backup.compress): None on the server with zstd
    (PostgreSQL 15+), else why walkeeper compresses it here. Not on a standby: it
    archives no backup history file, so the stop point comes from backup_manifest,
    which a server-compressed stream cannot carry. `server` where that cannot be is a
    ConfigError."""
    if codec != "zstd":
        problem, reason = "compression.algorithm is not zstd", "compression.algorithm = none"
    elif info["server_version_num"] < 150000:
        problem, reason = "the server is older than PostgreSQL 15", "PostgreSQL before 15"
    elif info.get("in_recovery"):
        problem = ("the server is a standby (its backup's stop point is in backup_manifest, "
                   "which a server-compressed stream cannot carry)")
        reason = "a standby"
    else:
        problem = reason = None
    if setting == "client":
        return reason or "backup.compress = client"
    if problem and setting == "server":
        raise ConfigError(f"backup.compress = \"server\" but {problem}",
                          hint='set backup.compress = "client" or "auto"')
    return reason


def compress_on_server(setting: str, codec: str, info: dict) -> bool:
    return client_reason(setting, codec, info) is None


def _refuse(info: dict) -> None:
    if info["tablespaces"]:
        spaces = ", ".join(f"{t['name']} ({t['location']})" for t in info["tablespaces"])
        raise OperationFailed(f"the cluster has tablespaces outside the data directory: "
                              f"{spaces}; walkeeper cannot back them up yet (pg_basebackup "
                              f"writes only one tablespace to a stream)")
    if info["archive_mode"] == "off":
        raise OperationFailed("archive_mode is off: a backup without archived WAL cannot be "
                              "restored", hint="set archive_mode = on and archive_command = "
                              "'walkeeper push %p %f', then restart PostgreSQL")


def _take(config: Config, info: dict, backup_id: str, label: str, progress: bool,
          stores: list) -> BackupInfo:
    cluster = config.cluster
    codec = config["compression.algorithm"]
    seg_size = info["wal_segment_size"]
    conninfo, env = pg.program_env(config["postgres.conninfo"])
    on_server = compress_on_server(config["backup.compress"], codec, info)
    workers = config["backup.workers"]
    key = backup_file_key(cluster, backup_id, "base.tar", codec)
    seal = writer_key(config.keyring, stores, cluster)

    def attempt(on_server: bool) -> tuple[Trailer, pg.TarSniffer]:
        argv = [pg.find_program("pg_basebackup", config["postgres.bindir"]),
                *(["-d", conninfo] if conninfo else []),
                "-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v", "--no-password",
                "-l", label]
        if on_server:
            # pg_basebackup cannot put backup_manifest into a stream it did not compress.
            argv += ["--no-manifest",
                     f"--compress=server-zstd:level={config['compression.level']}"
                     + (f",workers={workers}" if workers else "")]
        sniffer = pg.TarSniffer()
        bar = Progress(info["database_bytes"], progress)

        def observe(data: bytes) -> None:
            sniffer.feed(data)
            bar.update(len(data))

        log.debug(f"backup {backup_id}: {argv[0]} {argv[-1] if on_server else ''} into {key}")
        try:
            trailer, _ = stream_program(argv, env, stores, key, config, observe, seal,
                                        compressed=on_server, threads=workers)
        finally:
            bar.finish()
        return trailer, sniffer

    started = datetime.now(timezone.utc)
    try:
        trailer, sniffer = attempt(on_server)
    except OperationFailed as exc:
        # A server built without zstd says so before it starts the backup.
        if not (on_server and config["backup.compress"] == "auto" and _no_zstd(exc.message)):
            raise
        log.warn(f"the server cannot compress with zstd ({exc.message}); walkeeper "
                 f"compresses this backup itself (set backup.compress = \"client\" to go "
                 f"there directly)")
        trailer, sniffer = attempt(False)
    ended = datetime.now(timezone.utc)
    try:
        if not sniffer.ended:
            raise OperationFailed("pg_basebackup's tar stream has no end-of-archive marker: "
                                  "the backup is incomplete; nothing was completed")
        meta = _locate(config, info, stores, sniffer, started, ended)
        stop_seg = Segment.containing(meta["stop_tli"], max(meta["stop_lsn"] - 1, 0), seg_size)
        start_seg = Segment.containing(meta["start_tli"], meta["start_lsn"], seg_size)
        segments = [Segment.from_number(stop_seg.timeline, n, seg_size)
                    for n in range(start_seg.number(seg_size), stop_seg.number(seg_size) + 1)]
        if start_seg.timeline != stop_seg.timeline:
            segments[0] = start_seg
        wait_for_wal(stores, cluster, segments, codec)
        result = BackupInfo(
            id=backup_id, label=meta["label"] or label, start_time=meta["start_time"],
            stop_time=meta["stop_time"], start_lsn=meta["start_lsn"], stop_lsn=meta["stop_lsn"],
            timeline=meta["start_tli"], start_wal=start_seg.name, stop_wal=stop_seg.name,
            pg_version=info["server_version_num"], system_identifier=info["system_identifier"],
            wal_segment_size=seg_size, database_bytes=info["database_bytes"],
            stored_bytes={s.name: stored_size(trailer) for s in stores},
            files=[BackupFile("base.tar", key, trailer.original_size, stored_size(trailer),
                              trailer.checksum)])
        write_metadata(stores, backup_meta_key(cluster, backup_id), result.to_json(), seal)
    except BaseException:
        for s in stores:
            _delete(s, key)
        raise
    log.debug(f"backup {backup_id} complete: {format_lsn(result.start_lsn)} to "
              f"{format_lsn(result.stop_lsn)}, {trailer.original_size} bytes")
    return result


def _location(value: str) -> int:
    """`0/2000028 (file 000000010000000000000002)` -> the LSN."""
    return parse_lsn(value.split(" ", 1)[0])


def _locate(config: Config, info: dict, stores: list, sniffer: pg.TarSniffer,
            started: datetime, ended: datetime) -> dict:
    """Start and stop of the backup: backup_label from the stream, then the archived
    .backup history file; the manifest's WAL range when there is none (a standby)."""
    seg_size = info["wal_segment_size"]
    tz = info.get("log_timezone")
    if "backup_label" not in sniffer.files:
        raise OperationFailed("pg_basebackup's output has no backup_label: not a base backup "
                              "tar stream; nothing was completed")
    lab = pg.parse_fields(sniffer.files["backup_label"].decode(errors="replace"))
    try:
        start_lsn = _location(lab["START WAL LOCATION"])
        start_tli = int(lab.get("START TIMELINE", info["timeline"]))
    except (KeyError, ValueError):
        raise OperationFailed("cannot read the start point from backup_label") from None
    meta = {"start_lsn": start_lsn, "start_tli": start_tli, "label": lab.get("LABEL", ""),
            "start_time": pg.pg_time(lab.get("START TIME", ""), tz) or started}
    start_seg = Segment.containing(start_tli, start_lsn, seg_size)
    name = f"{start_seg.name}.{start_lsn % seg_size:08X}.backup"
    ranges = pg.manifest_wal_ranges(sniffer.files.get("backup_manifest", b""))
    # A standby writes no history file; a primary has archived it before the
    # backup ended (the server waits for it), so the wait is for slow listings.
    wait = 0 if lab.get("BACKUP FROM") == "standby" and ranges else HISTORY_WAIT
    deadline = time.monotonic() + wait
    content = read_wal_file(stores, config.cluster, name, config["compression.algorithm"])
    while content is None and time.monotonic() < deadline:
        time.sleep(0.5)
        content = read_wal_file(stores, config.cluster, name, config["compression.algorithm"])
    if content is not None:
        hist = pg.parse_fields(content.decode(errors="replace"))
        try:
            meta["stop_lsn"] = _location(hist["STOP WAL LOCATION"])
            meta["stop_tli"] = int(hist.get("STOP TIMELINE", start_tli))
        except (KeyError, ValueError):
            raise OperationFailed(f"{name} in the archive is not a backup history file") \
                from None
        meta["start_time"] = pg.pg_time(hist.get("START TIME", ""), tz) or meta["start_time"]
        meta["stop_time"] = pg.pg_time(hist.get("STOP TIME", ""), tz) or ended
        meta["label"] = hist.get("LABEL", meta["label"])
        return meta
    if not ranges:
        raise OperationFailed(f"{name} did not reach the archive within {HISTORY_WAIT:.0f} s "
                              f"and the backup manifest has no WAL range",
                              hint="check archive_command and pg_stat_archiver")
    log.warn(f"{name} is not in the archive; the stop point comes from backup_manifest")
    meta["stop_tli"], meta["stop_lsn"] = ranges[-1][0], parse_lsn(ranges[-1][2])
    meta["stop_time"] = ended
    return meta
