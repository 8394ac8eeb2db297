"""Restore a file that pg_dump made: plain SQL (`.sql`), gzipped SQL (`.sql.gz`), or
pg_dump's custom or tar format (`.dump`, `.tar`): the files an application's own
runbook procedures produced before walkeeper kept its dumps.

    inspect(path)  ->  the format, told by the file's first bytes (not its name), and
                       the whole file read through: a gzip stream checked to its CRC,
                       a custom dump read to its end by pg_restore; nothing is touched
                       in any database before this has passed
    restore_file() ->  every format becomes one SQL stream (pg_restore -f - for an
                       archive) fed to ONE psql transaction with ON_ERROR_STOP: a
                       restore that fails half-way is rolled back, and exits non-zero

With clean=True every schema of the target database (but the system's) is dropped
first, inside that same transaction: a failed restore rolls the drop back too.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import threading
import zlib

from walkeeper import log, pg, state
from walkeeper.config import Config
from walkeeper.errors import OperationFailed, UsageError

CHUNK = 1 << 20
PLAIN, GZIP, ARCHIVE = "sql", "sql.gz", "pg_dump archive"

# Dropped before a clean restore, in the restore's own transaction.
CLEAN_SQL = """DO $walkeeper$
DECLARE s name;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
            WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  CREATE SCHEMA public;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_database_owner') THEN
    ALTER SCHEMA public OWNER TO pg_database_owner;
  END IF;
  GRANT USAGE ON SCHEMA public TO PUBLIC;
END $walkeeper$;"""


def _format(head: bytes) -> str:
    if head.startswith(b"PGDMP") or head[257:262] == b"ustar":
        return ARCHIVE
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    return PLAIN


def _not_text(chunk: bytes) -> bool:
    return b"\0" in chunk


def inspect(path: str, bindir: str = "") -> dict:
    """{"path", "format", "bytes"} of a restorable file, read through end to end.

    UsageError (exit 2) for a file that is missing, unreadable, or not a dump;
    OperationFailed (exit 1) for a damaged one (truncated gzip, a CRC mismatch, an
    archive pg_restore cannot read to its end).
    """
    path = os.path.abspath(os.path.expanduser(path))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(512)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; give a walkeeper dump id or a file made by "
                         f"pg_dump (.sql, .sql.gz, .dump)") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; give a file made by pg_dump (.sql, "
                         f".sql.gz, .dump)") from None
    except PermissionError:
        raise UsageError(f"{path} is not readable by this user") from None
    kind = _format(head)
    if not head:
        raise UsageError(f"{path} is empty: nothing to restore")
    if kind == PLAIN:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                if _not_text(chunk):
                    raise UsageError(f"{path} is neither SQL text nor a gzip file nor a "
                                     f"pg_dump archive; nothing was restored")
    elif kind == GZIP:
        first = True
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    if first and _not_text(chunk[:CHUNK]):
                        raise UsageError(f"{path}: the gzip file does not hold SQL text; "
                                         f"nothing was restored")
                    first = False
        except (OSError, EOFError, zlib.error) as exc:
            raise OperationFailed(f"{path} is damaged ({exc}); nothing was restored") from None
    else:
        out = pg.start([pg.find_program("pg_restore", bindir), "-f", os.devnull, path],
                       _env(), stdout=subprocess.DEVNULL)
        err = out.stderr.read().decode(errors="replace")
        if out.wait() != 0:
            raise OperationFailed(f"{path} is damaged or not a pg_dump archive "
                                  f"(pg_restore: {pg.last_line(err)}); nothing was restored")
    return {"path": path, "format": kind, "bytes": size}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


def _chunks(path: str, kind: str, bindir: str, procs: list):
    if kind == ARCHIVE:
        p = pg.start([pg.find_program("pg_restore", bindir), "-f", "-", path], _env())
        procs.append(p)
        while chunk := p.stdout.read(CHUNK):
            yield chunk
        return
    opener = gzip.open if kind == GZIP else open
    with opener(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln or "FATAL:" in ln or "error:" in ln:
            return ln
    return lines[-1] if lines else "no message"


def restore_file(config: Config, path: str, database: str, clean: bool = False) -> dict:
    """Verify `path` (inspect), then restore it into `database` (which must exist) in
    one transaction. Returns {"file", "format", "bytes", "database", "clean"}."""
    bindir = config["postgres.bindir"]
    info = inspect(path, bindir)
    clean_conninfo, env = pg.program_env(config["postgres.conninfo"], dbname=database)
    argv = [pg.find_program("psql", bindir), "--no-password", "-X", "-q",
            "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", clean_conninfo]
    if clean:
        argv += ["-c", CLEAN_SQL]
    argv += ["-f", "-"]
    try:
        psql = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        raise OperationFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(psql.stderr.read()), daemon=True)
    reader.start()
    procs: list = []
    stopped_early = False
    try:
        for chunk in _chunks(info["path"], info["format"], bindir, procs):
            try:
                psql.stdin.write(chunk)
            except BrokenPipeError:      # psql stopped at an error: its message says which
                stopped_early = True
                break
        try:
            psql.stdin.close()
        except BrokenPipeError:
            pass
    finally:
        for p in procs:
            if stopped_early and p.poll() is None:
                p.kill()
        code = psql.wait()
        reader.join()
    message = (errors[0] if errors else b"").decode(errors="replace")
    for p in procs:
        perr = p.stderr.read().decode(errors="replace")
        if p.wait() != 0 and not stopped_early and code == 0:
            raise OperationFailed(f"pg_restore failed reading {info['path']}: "
                                  f"{pg.last_line(perr)}")
    if code != 0:
        raise OperationFailed(
            f"restore of {info['path']} into database {database!r} failed (psql exit {code}): "
            f"{_error_line(message)}",
            hint="the restore ran in one transaction and was rolled back: the database is "
                 "as it was before")
    if message.strip():
        log.debug(message.strip())
    state.record_success(config.state_dir, "restore-file", file=info["path"],
                         format=info["format"], database=database)
    return {"file": info["path"], "format": info["format"], "bytes": info["bytes"],
            "database": database, "clean": clean}
