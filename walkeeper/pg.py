"""Talking to PostgreSQL and running its programs (pg_basebackup, pg_dump, pg_restore).

Ground layer: imports only errors and log. psycopg is imported inside the functions
that need it, never at module level: push and fetch must not pay for it.

Secrets: a password in the conninfo is never put on a command line (process titles
are world-readable); programs get the conninfo without it and PGPASSWORD instead.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

from walkeeper.errors import ConfigError, OperationFailed

_VERSION_DIR = re.compile(r"/usr/lib/postgresql/(\d+(?:\.\d+)?)/bin$")


def find_program(name: str, bindir: str = "") -> str:
    """Absolute path of a PostgreSQL program: `postgres.bindir`, else PATH, else the
    newest /usr/lib/postgresql/*/bin (Debian keeps server programs off PATH)."""
    if bindir:
        path = os.path.join(os.path.expanduser(bindir), name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise ConfigError(f"postgres.bindir {bindir}: no executable {name} there; "
                          f"point it at the directory holding PostgreSQL's programs")
    found = shutil.which(name)
    if found:
        return found
    candidates = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        m = _VERSION_DIR.search(d)
        if m and os.access(os.path.join(d, name), os.X_OK):
            candidates.append((tuple(int(x) for x in m.group(1).split(".")), d))
    if candidates:
        return os.path.join(max(candidates)[1], name)
    raise ConfigError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin; install the "
                      f"PostgreSQL client programs or set postgres.bindir")


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The conninfo (key=value or URI) as a dict; raises ConfigError if malformed."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    except ProgrammingError as exc:
        # libpq's message quotes no values, but stay safe: never echo the string.
        raise ConfigError(f"postgres.conninfo is not a valid connection string "
                          f"({_first_line(str(exc))})") from None


def make_conninfo(params: dict[str, str]) -> str:
    from psycopg.conninfo import make_conninfo as _make

    return _make("", **params)


def where(conninfo: str) -> str:
    """host/port/dbname for messages: never the password."""
    try:
        p = parse_conninfo(conninfo)
    except ConfigError:
        return "the configured server"
    env = os.environ
    host = p.get("host") or p.get("hostaddr") or env.get("PGHOST") or "local socket"
    port = p.get("port") or env.get("PGPORT") or "5432"
    db = p.get("dbname") or env.get("PGDATABASE") or ""
    return f"host={host} port={port}" + (f" dbname={db}" if db else "")


def program_env(conninfo: str, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment) for running a libpq program.

    Messages are forced to English (LC_ALL=C): walkeeper reads some of them.
    """
    params = parse_conninfo(conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    if dbname is not None:
        params["dbname"] = dbname
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return make_conninfo(params), env


def default_dbname(conninfo: str) -> str:
    """The database the conninfo connects to, as libpq decides."""
    p = parse_conninfo(conninfo)
    import getpass

    return (p.get("dbname") or os.environ.get("PGDATABASE") or p.get("user")
            or os.environ.get("PGUSER") or getpass.getuser())


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return text.strip()


def connect(conninfo: str, dbname: str | None = None):
    """An autocommit psycopg connection; OperationFailed naming host and port."""
    import psycopg

    params = parse_conninfo(conninfo)
    if dbname is not None:
        params["dbname"] = dbname
    params.setdefault("connect_timeout", "10")
    params.setdefault("application_name", "walkeeper")
    try:
        return psycopg.connect(make_conninfo(params), autocommit=True)
    except psycopg.Error as exc:
        raise OperationFailed(f"cannot connect to PostgreSQL at {where(conninfo)}: "
                              f"{_first_line(str(exc))}",
                              hint="check postgres.conninfo and that the server runs") from None


_INFO_SQL = """
SELECT current_setting('server_version_num')::int,
       current_setting('archive_mode'), current_setting('archive_command'),
       current_setting('wal_level'), current_setting('log_timezone'),
       (SELECT setting || ' ' || coalesce(unit, '') FROM pg_settings
         WHERE name = 'wal_segment_size'),
       pg_is_in_recovery()
"""
_SIZE_UNITS = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1 << 20, "": 1}


def server_info(conninfo: str) -> dict:
    """What backup and check need to know about the server, in one connection.

    Keys: server_version_num, system_identifier, wal_segment_size (bytes),
    data_directory (None without the privilege to read it), timeline,
    archive_mode, archive_command, wal_level, log_timezone, in_recovery, tablespaces
    ([{"name", "location"}], pg_default and pg_global excluded), database_bytes.
    """
    import psycopg

    with connect(conninfo) as conn:
        try:
            (version, archive_mode, archive_command, wal_level, log_tz,
             segsize, in_recovery) = conn.execute(_INFO_SQL).fetchone()
            value, unit = segsize.split(" ", 1)
            info = {
                "server_version_num": version, "archive_mode": archive_mode,
                "archive_command": archive_command, "wal_level": wal_level,
                "log_timezone": log_tz, "in_recovery": bool(in_recovery),
                "wal_segment_size": int(value) * _SIZE_UNITS.get(unit.strip(), 1),
            }
            info["system_identifier"] = int(conn.execute(
                "SELECT system_identifier FROM pg_control_system()").fetchone()[0])
            info["timeline"] = int(conn.execute(
                "SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
            info["tablespaces"] = [
                {"name": n, "location": loc} for n, loc in conn.execute(
                    "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                    "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname")]
        except psycopg.errors.InsufficientPrivilege as exc:
            raise OperationFailed(f"PostgreSQL at {where(conninfo)}: {_first_line(str(exc))}",
                                  hint="connect as a superuser or a member of pg_monitor") \
                from None
        except psycopg.Error as exc:
            raise OperationFailed(f"PostgreSQL at {where(conninfo)}: cannot read the server's "
                                  f"settings: {_first_line(str(exc))}") from None
        info["data_directory"] = _optional(conn, "SELECT current_setting('data_directory')")
        info["database_bytes"] = int(_optional(
            conn, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database "
                  "WHERE has_database_privilege(oid, 'CONNECT')") or 0)
    return info


_TIMELINE_SQL = """
SELECT (SELECT system_identifier FROM pg_control_system()),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (SELECT timeline_id FROM pg_control_checkpoint())
"""


def current_timeline(conninfo: str, system_identifier: int | None = None) -> int | None:
    """The timeline the cluster at conninfo is on (a primary's insert timeline, else
    its last checkpoint's); None when it cannot be reached or asked, or when it is
    not the system `system_identifier` (another cluster answering on that socket)."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            sysid, walfile, checkpoint_tli = conn.execute(_TIMELINE_SQL).fetchone()
    except (OperationFailed, psycopg.Error):
        return None
    if system_identifier is not None and int(sysid) != system_identifier:
        return None
    return int(walfile[:8], 16) if walfile else int(checkpoint_tli)


def ensure_database(conninfo: str, name: str) -> bool:
    """Create database `name` (from template0, as restoring a dump wants) unless it
    exists; True when it was created."""
    import psycopg
    from psycopg import sql

    with connect(conninfo) as conn:
        try:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                sql.Identifier(name)))
        except psycopg.Error as exc:
            raise OperationFailed(f"cannot create database {name!r} at {where(conninfo)}: "
                                  f"{_first_line(str(exc))}") from None
    return True


def _optional(conn, query: str):
    import psycopg

    try:
        return conn.execute(query).fetchone()[0]
    except psycopg.Error:
        return None


def start(argv: list[str], env: dict[str, str], stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start a program with stdin closed and stdout/stderr piped (binary)."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        raise OperationFailed(f"cannot run {argv[0]}: {exc.strerror}") from None


def run(argv: list[str], env: dict[str, str], timeout: float | None = None) -> str:
    """Run a program to completion; OperationFailed with its last stderr line on failure.

    Returns its stderr (for the caller to log).
    """
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout)
    except OSError as exc:
        raise OperationFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{os.path.basename(argv[0])} did not finish within "
                              f"{timeout:.0f} s") from None
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise OperationFailed(f"{os.path.basename(argv[0])} failed (exit {proc.returncode}): "
                              f"{last_line(out)}")
    return out


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # "error:" lines say what went wrong; trailing hints and details say less.
    for ln in reversed(lines):
        if "error:" in ln or "FATAL:" in ln:
            return ln
    return lines[-1] if lines else "no message"


# ------------------------------------------- what pg_basebackup and the server write

class TarSniffer:
    """Watches the tar stream go by and keeps backup_label and the tail of
    backup_manifest (which pg_basebackup appends when writing to stdout)."""

    KEEP = {"backup_label": 1 << 16, "backup_manifest": 1 << 16}

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ended = False
        self._hdr = bytearray()
        self._remaining = 0      # bytes of the current member, padding included
        self._content = 0        # of which content
        self._name: str | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        mv = memoryview(data)
        pos = 0
        while pos < len(mv) and not self.ended:
            if self._remaining:
                n = min(self._remaining, len(mv) - pos)
                if self._name is not None and self._content:
                    take = min(n, self._content)
                    self._buf += mv[pos:pos + take]
                    self._content -= take
                    keep = self.KEEP[self._name]
                    if len(self._buf) > keep:
                        del self._buf[:len(self._buf) - keep]
                self._remaining -= n
                pos += n
                if not self._remaining and self._name is not None:
                    self.files[self._name] = bytes(self._buf)
                    self._name = None
                continue
            take = mv[pos:pos + 512 - len(self._hdr)]
            self._hdr += take
            pos += len(take)
            if len(self._hdr) == 512:
                self._header(bytes(self._hdr))
                self._hdr.clear()

    def _header(self, h: bytes) -> None:
        if h == bytes(512):
            self.ended = True
            return
        name = h[:100].split(b"\0", 1)[0].decode(errors="replace")
        if h[257:262] == b"ustar" and h[345]:
            name = h[345:500].split(b"\0", 1)[0].decode(errors="replace") + "/" + name
        field = h[124:136]
        if field[0] & 0x80:      # base-256, for members of 8 GiB and more
            size = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        else:
            size = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
        self._remaining = (size + 511) // 512 * 512
        self._content = size
        self._buf.clear()
        self._name = name if name in self.KEEP and h[156:157] in (b"0", b"\0") else None
        if self._name is not None and size == 0:
            self.files[self._name] = b""
            self._name = None


def parse_fields(text: str) -> dict[str, str]:
    """`KEY: value` lines of backup_label and of a .backup history file."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


_WAL_RANGE = re.compile(r'"Timeline":\s*(\d+),\s*"Start-LSN":\s*"([0-9A-Fa-f]+/[0-9A-Fa-f]+)",'
                        r'\s*"End-LSN":\s*"([0-9A-Fa-f]+/[0-9A-Fa-f]+)"')


def manifest_wal_ranges(tail: bytes) -> list[tuple[int, str, str]]:
    """(timeline, start LSN text, end LSN text) from the end of a backup_manifest."""
    return [(int(t), a, b) for t, a, b in _WAL_RANGE.findall(tail.decode(errors="replace"))]


def pg_time(text: str, log_timezone: str | None) -> datetime | None:
    """PostgreSQL's `%Y-%m-%d %H:%M:%S %Z` (in log_timezone) as an aware UTC time.

    The abbreviation alone is ambiguous (IST), so the zone comes from the server's
    log_timezone and the abbreviation only picks the side of a DST change.
    """
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)", text.strip())
    if m is None:
        return None
    naive = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    abbr = m.group(2)
    if abbr in ("UTC", "GMT", "UCT", "Z"):
        return naive.replace(tzinfo=timezone.utc)
    num = re.fullmatch(r"([+-])(\d\d)(\d\d)?", abbr)
    if num:
        delta = timedelta(hours=int(num.group(2)), minutes=int(num.group(3) or 0))
        tz = timezone(delta if num.group(1) == "+" else -delta)
        return naive.replace(tzinfo=tz).astimezone(timezone.utc)
    if log_timezone:
        try:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(log_timezone)
        except Exception:
            return None
        for fold in (0, 1):
            dt = naive.replace(tzinfo=zone, fold=fold)
            if dt.tzname() == abbr:
                return dt.astimezone(timezone.utc)
    return None
