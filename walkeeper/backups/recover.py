"""recover: plan, restore the chosen base backup, write the recovery settings.

The backup's tar is streamed from the first store with a good copy, decoded and
extracted on the fly; its checksum is confirmed when the stream ends, and a
mismatch wipes what was extracted. PostgreSQL then replays WAL through
restore_command (walkeeper fetch) when the operator starts it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass

from walkeeper import log
from walkeeper.archiving import hooks
from walkeeper.config import Config
from walkeeper.errors import (CorruptObject, MisplacedObject, ObjectNotFound, OperationFailed,
                              StoreError, UsageError)
from walkeeper.format.objects import CHUNK, ThreadedObjectReader
from walkeeper.stores import open_stores

RECOVERY_KEYS = ("restore_command", "recovery_target", "recovery_target_time",
                 "recovery_target_lsn", "recovery_target_xid", "recovery_target_name",
                 "recovery_target_timeline", "recovery_target_action",
                 "recovery_target_inclusive")


# Server settings recover writes for the restored copy: a copy must neither take the
# source's port nor archive into its archive unless it replaces the source.
SERVER_KEYS = ("port", "archive_mode", "archive_command")


@dataclass
class RecoveryOptions:
    target_timeline: str = "latest"     # latest | current | N
    target_action: str = "pause"        # pause | promote | shutdown
    inclusive: bool = True
    port: int | None = None             # None: keep the source's port setting
    archive: bool | None = None         # None: on only when DIR is [postgres] pgdata


def check_target_dir(pgdata: str) -> None:
    """DIR must not exist or be empty; never touch a directory holding a cluster. It
    must also be creatable and writable by this user: said now, before any planning."""
    if not os.path.exists(pgdata):
        parent = os.path.dirname(pgdata.rstrip("/")) or "/"
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise UsageError(f"cannot create {pgdata}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"cannot create {pgdata}: {parent} is not writable by this user",
                             hint=f"recover into a directory this user may create, or create "
                                  f"{pgdata} (mode 0700) owned by this user first")
        return
    if not os.path.isdir(pgdata):
        raise UsageError(f"{pgdata} exists and is not a directory")
    if os.path.exists(os.path.join(pgdata, "postmaster.pid")):
        raise UsageError(f"{pgdata} holds a running (or crashed) cluster: postmaster.pid "
                         f"exists; refusing to touch it")
    try:
        entries = os.listdir(pgdata)
    except PermissionError:
        raise UsageError(f"{pgdata} is not readable by this user",
                         hint="recover into a new or empty directory this user owns") from None
    if entries:
        raise UsageError(f"{pgdata} is not empty; recover into a new or empty directory")
    if not os.access(pgdata, os.W_OK | os.X_OK) or os.stat(pgdata).st_uid != os.getuid():
        raise UsageError(f"{pgdata} is not writable by this user or not owned by it",
                         hint="chown it to this user (PostgreSQL needs it owned by the user "
                              "that runs the server, mode 0700), or recover elsewhere")


def _safe_member(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "\0" in name:
        raise OperationFailed(f"backup archive holds an unsafe path {member.name!r}; refusing")
    return name


class _TarStream:
    """The bytes of a tar stream, taken as they come from `read` (no re-buffering:
    file contents go from the decoded chunks straight to os.write)."""

    def __init__(self, read):
        self._read = read
        self._view = memoryview(b"")

    def views(self, n: int):
        """Memoryviews over exactly the next n bytes; tarfile.ReadError if the stream
        ends first."""
        while n:
            if not self._view:
                chunk = self._read(CHUNK)
                if not chunk:
                    raise tarfile.ReadError("unexpected end of the tar stream")
                self._view = memoryview(chunk)
            v = self._view[:n]
            self._view = self._view[len(v):]
            n -= len(v)
            yield v

    def block(self) -> bytes:
        """The next 512-byte header block, b"" at a clean end of the stream."""
        if not self._view:
            chunk = self._read(CHUNK)
            if not chunk:
                return b""
            self._view = memoryview(chunk)
        return b"".join(bytes(v) for v in self.views(tarfile.BLOCKSIZE))


_EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.GNUTYPE_SPARSE,
               tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def extract(reader, pgdata: str) -> int:
    """Extract a tar stream into pgdata (0700 dirs, 0600 files); returns bytes written.

    A plain ustar reader, which is all pg_basebackup writes (names and link targets
    of at most 99 bytes, base-256 sizes beyond 8 GiB): file contents go from the
    reader's chunks to os.write with no copy, where tarfile's stream mode reads in
    10 KiB records and copies every byte again in joins, slices and a buffered
    reader (on a 1.5 GB backup, extraction alone took ~2x `tar -x`; now ~0.85x).
    Headers are still parsed (and checksum-checked) by tarfile.TarInfo.frombuf.
    """
    total = 0
    src = _TarStream(reader.read)
    while True:
        header = src.block()
        if not header or header == bytes(tarfile.BLOCKSIZE):
            break                                  # end of archive
        member = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        if member.type in _EXTENSIONS:
            raise OperationFailed(f"backup archive uses a tar extension ({member.type!r} "
                                  f"header) that pg_basebackup does not write; refusing")
        name = _safe_member(member)
        path = os.path.join(pgdata, name)
        if member.isdir():
            os.makedirs(path, mode=0o700, exist_ok=True)
        elif member.isreg():
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for view in src.views(member.size):
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            total += member.size
            for _ in src.views(-member.size % tarfile.BLOCKSIZE):      # padding
                pass
        elif member.issym() and not member.linkname.startswith("/") \
                and ".." not in member.linkname.split("/"):
            os.symlink(member.linkname, path)
        else:
            raise OperationFailed(f"backup archive member {member.name!r} is of a kind "
                                  f"walkeeper does not restore (tablespace link?)")
    # The tar end marker may come before the end of the object: drain to verify.
    while reader.read(CHUNK):
        pass
    return total


def restore_backup(config: Config, backup, pgdata: str, only: list[str] | None = None) -> str:
    """Extract every file of `backup` into pgdata from the first good store (of those
    named in `only`, when given)."""
    problems = []
    for store in open_stores(config):
        if only is not None and store.name not in only:
            store.close()
            continue
        try:
            for f in backup.files:
                raw = store.open(f.key)
                reader = None
                try:
                    # name: a version 3 object records the key it was written under,
                    # which holds the backup's id: a part of another backup is refused
                    # before a byte is extracted.
                    reader = ThreadedObjectReader(raw.read, store.keyring, name=f.key)
                    target = pgdata if f.name == "base.tar" else os.path.join(
                        pgdata, "pg_tblspc", f.name.removesuffix(".tar"))
                    os.makedirs(target, mode=0o700, exist_ok=True)
                    extract(reader, target)
                    _check_recorded(backup, f, reader.trailer)
                finally:
                    if reader is not None:
                        reader.close()
                    raw.close()
            return store.name
        except MisplacedObject as exc:
            problems.append(f"store {store.name!r}: {exc}")
            log.warn(f"{problems[-1]}; trying the next store")
            _empty(pgdata)
        except (ObjectNotFound, CorruptObject, StoreError, tarfile.TarError) as exc:
            problems.append(f"store {store.name!r}: {exc}")
            log.warn(f"{problems[-1]}; trying the next store")
            _empty(pgdata)
        finally:
            store.close()
    raise OperationFailed(f"backup {backup.id} could not be restored from any store "
                          f"({'; '.join(problems)}); {pgdata} was left empty")


def _check_recorded(backup, f, trailer) -> None:
    """The part is the one backup.json describes: its checksum and size (for an object
    that records no name, the only thing that binds it to its backup)."""
    if trailer.checksum == f.sha256 and trailer.original_size == f.size:
        return
    raise MisplacedObject(f"file {f.name} of backup {backup.id}",
                          f"another object (checksum {trailer.checksum}, "
                          f"{trailer.original_size} bytes)",
                          f"backup.json records checksum {f.sha256}, {f.size} bytes")


def _empty(pgdata: str) -> None:
    for entry in os.listdir(pgdata):
        p = os.path.join(pgdata, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)



def recovery_settings(config: Config, plan, options: RecoveryOptions,
                      only: list[str] | None = None) -> list[tuple[str, str]]:
    settings = [("restore_command", hooks.restore_command(config, only))]
    target = plan.target.setting()
    if target is not None:
        settings.append(target)
        if plan.target.kind not in ("immediate",):
            settings.append(("recovery_target_inclusive", "on" if options.inclusive else "off"))
    # Always the planned timeline's number: "latest" would let PostgreSQL pick the
    # newest history file, which may not be the timeline the plan was made for.
    settings.append(("recovery_target_timeline", str(plan.target_timeline)))
    if target is not None:
        settings.append(("recovery_target_action", options.target_action))
    return settings


def server_settings(config: Config, options: RecoveryOptions) -> list[tuple[str, str]]:
    """port and archiving of the restored copy (see RecoveryOptions)."""
    out = []
    if options.port is not None:
        out.append(("port", str(options.port)))
    if options.archive:
        out += [("archive_mode", "on"), ("archive_command", hooks.archive_command(config))]
    else:
        # archive_command too: an operator who turns archive_mode back on must not
        # find the source's command, pushing into the source's archive.
        out += [("archive_mode", "off"), ("archive_command", "")]
    return out


def write_recovery_settings(pgdata: str, pg_version: int, settings: list[tuple[str, str]],
                            server: list[tuple[str, str]] = ()) -> None:
    lines = [f"{k} = {hooks.conf_value(v)}\n" for k, v in settings]
    header = "# Recovery settings written by walkeeper recover\n"
    replaced = {k for k, _ in server}
    if pg_version and pg_version < 120000:
        with open(os.path.join(pgdata, "recovery.conf"), "w") as f:
            f.write(header + "standby_mode = 'off'\n" + "".join(lines))
        lines = []
        replaced_keys = replaced
    else:
        replaced_keys = replaced | set(RECOVERY_KEYS)
    lines += [f"{k} = {hooks.conf_value(v)}\n" for k, v in server]
    auto = os.path.join(pgdata, "postgresql.auto.conf")
    kept = []
    if os.path.exists(auto):
        with open(auto) as f:
            for line in f:
                key = line.split("=", 1)[0].strip()
                kept.append(f"# walkeeper: stale, commented out: {line}"
                            if key in replaced_keys else line)
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    fd = os.open(auto, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(kept) + header + "".join(lines))
    if pg_version and pg_version < 120000:
        return
    fd = os.open(os.path.join(pgdata, "recovery.signal"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def replaces_cluster(config: Config, pgdata: str) -> bool:
    """Whether DIR is the configured cluster's own data directory ([postgres] pgdata)."""
    own = config["postgres.pgdata"]
    return bool(own) and os.path.realpath(os.path.expanduser(own)) == os.path.realpath(pgdata)


def newer_timeline_warning(config: Config, archive) -> str | None:
    """A warning when the archive holds a timeline newer than the one the configured
    cluster is on (a restored copy promoted and archiving into this archive?); None
    when it does not, or when the cluster cannot be reached."""
    from walkeeper import pg

    own = pg.current_timeline(config["postgres.conninfo"], archive.system_identifier)
    if own is None:
        return None
    newer = [t for t in archive.timelines() if t > own]
    if not newer:
        return None
    return (f"the archive holds timeline {max(newer)}, newer than timeline {own} that the "
            f"cluster at {pg.where(config['postgres.conninfo'])} is on: a restored copy "
            f"promoted with archiving on may have written it; `--target-timeline {own}` "
            f"follows the cluster")


def verify_plan(config: Config, plan, only: list[str]) -> int:
    """Read back everything the recovery will read (the backup's files, the history
    files and every segment) from the stores `only`, as fetch would: each must have a
    good copy in one of them. Returns the objects checked; OperationFailed names
    those without a good copy."""
    from walkeeper.format.layout import wal_keys
    from walkeeper.format.objects import decode
    from walkeeper.stores import open_store
    from walkeeper.wal import parse_wal_name

    codec = config["compression.algorithm"]
    wanted = [(f"backup {plan.backup.id} {f.name}", [f.key]) for f in plan.backup.files]
    for tli in plan.timelines:
        if tli > 1:
            name = f"{tli:08X}.history"
            wanted.append((name, wal_keys(config.cluster, parse_wal_name(name), codec)))
    wanted += [(n, wal_keys(config.cluster, parse_wal_name(n), codec)) for n in plan.segments]
    stores = [open_store(c, config.keyring) for c in config.stores if c.name in only]
    bad = []
    try:
        for what, keys in wanted:
            problems = []
            for store in stores:
                try:
                    if _verify_one(store, keys, decode):
                        break
                    problems.append(f"absent from store {store.name!r}")
                except CorruptObject as exc:
                    problems.append(f"corrupt in store {store.name!r} ({exc})")
                except StoreError as exc:
                    problems.append(str(exc))
            else:
                bad.append(f"{what}: {'; '.join(problems)}")
    finally:
        for store in stores:
            store.close()
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise OperationFailed(f"dry run: {len(bad)} of the {len(wanted)} objects this recovery "
                              f"reads have no good copy: {bad[0]}{more}",
                              hint="run verify-chain; the real run would fail there")
    return len(wanted)


def _verify_one(store, keys: list[str], decode) -> bool:
    for key in keys:
        try:
            raw = store.open(key)
        except ObjectNotFound:
            continue
        try:
            decode(raw.read, None, store.keyring)
        finally:
            raw.close()
        return True
    return False


def recover(config: Config, pgdata: str, target, options: RecoveryOptions,
            backup_id: str | None = None, dry_run: bool = False):
    """Plan the recovery to `target`; unless dry_run, restore and configure pgdata.

    The plan is made from the stores that could be read, and the restore_command
    written fetches from exactly those: a store unreachable now would otherwise make
    fetch abort (exit 255) at the end of the archive, and recovery end in FATAL.
    """
    from walkeeper.catalog import reader as catalog
    from walkeeper.catalog import planner

    pgdata = os.path.abspath(pgdata)
    check_target_dir(pgdata)
    archive, read, failed = catalog.read_stores(config, "recovery planning")
    plan = planner.plan(archive, target, options.target_timeline, backup_id)
    for note in plan.notes:
        log.warn(f"recover: {note}")
    only = read if failed else None
    plan.stores, plan.skipped_stores = list(read), dict(failed)
    if failed:
        plan.widen_command = hooks.restore_command(config)
    archive_on = replaces_cluster(config, pgdata) if options.archive is None else options.archive
    plan.port, plan.archive = options.port, archive_on
    warning = newer_timeline_warning(config, archive)
    if warning:
        plan.warnings.append(warning)
        log.warn(warning)
    if dry_run:
        verify_plan(config, plan, read)
        return plan
    os.makedirs(pgdata, mode=0o700, exist_ok=True)
    os.chmod(pgdata, 0o700)
    store = restore_backup(config, plan.backup, pgdata, only)
    write_recovery_settings(pgdata, plan.backup.pg_version,
                            recovery_settings(config, plan, options, only),
                            server_settings(config, RecoveryOptions(
                                options.target_timeline, options.target_action,
                                options.inclusive, options.port, archive_on)))
    log.debug(f"restored backup {plan.backup.id} from {store} into {pgdata}")
    return plan
