"""drill: prove that the newest backup restores, by restoring it.

The newest complete backup is restored with `recover --latest` into a scratch
directory under the state directory and started with pg_ctl on a free loopback
port, with its unix socket in a private directory, archiving off (a drill never
writes to the archive) and an hba file of its own (trust, reachable only through
that 0700 socket directory). Once it accepts connections with recovery finished,
every database that allows connections must connect and read its catalog, and
`[drill] sql` must run without error. The copy is then stopped and removed (unless
--keep). Whatever fails, the server is stopped and the scratch copy removed before
the error is raised; the server log of the last drill stays in the state directory.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from walkeeper import log, pg, state
from walkeeper.archiving import hooks
from walkeeper.config import Config
from walkeeper.errors import ConfigError, OperationFailed, StoreError, WalkeeperError
from walkeeper.catalog.planner import Target
from walkeeper.backups.recover import RecoveryOptions, recover
from walkeeper.wal import Segment, format_lsn, parse_lsn

READY_TIMEOUT = 6 * 3600      # seconds of replay a drill may take before it is called stuck
STOP_TIMEOUT = 120
LAST_LOG = "last_drill_postgres.log"
RECOVERING = "recovering (replaying the archived WAL)"
_SEGMENT = re.compile(r"\b[0-9A-F]{24}\b")
# FATALs of the drill's own connection attempts while the copy starts up.
_ROUTINE = re.compile(r"the database system is (starting up|not yet accepting connections|"
                      r"shutting down)|role \".*\" does not exist")


def run_drill(config: Config, keep: bool = False) -> dict:
    """Restore, start, check, stop; return the recorded result. OperationFailed says
    which step failed (and which segment, when recovery met a corrupt one)."""
    state.ensure_state_dir(config.state_dir)
    scratch = tempfile.mkdtemp(prefix="drill-", dir=config.state_dir)
    # Unix socket paths are limited to ~107 bytes: a short directory under /tmp.
    sockets = tempfile.mkdtemp(prefix="wkdrill-", dir="/tmp")
    server = _Server(pg.find_program("pg_ctl", config["postgres.bindir"]),
                     os.path.join(scratch, "data"), os.path.join(scratch, "postgres.log"),
                     _free_port(), sockets)
    import psycopg

    step, backup_id = "planning", None
    try:
        started = time.monotonic()
        newest, end, sysid = _newest_backup(config)
        backup_id = newest.id
        # The timeline the configured cluster is on, when it answers: the archive's
        # newest may be a stray one (a restored copy promoted with archiving on).
        own = pg.current_timeline(config["postgres.conninfo"], sysid)
        step = f"restoring backup {backup_id}"
        plan = recover(config, server.pgdata, Target("latest"),
                       RecoveryOptions("latest" if own is None else own, "promote", True),
                       backup_id=backup_id)
        _check_reaches_end(plan, end)
        _configure(server)
        step = "starting PostgreSQL"
        server.start()
        step = RECOVERING
        user = server.wait_ready(started + READY_TIMEOUT)
        seconds = time.monotonic() - started
        _check_replayed(server, user, plan)
        step = "checking the databases"
        databases = _check_databases(server, user)
        sql = config["drill.sql"]
        if sql.strip():
            step = "running [drill] sql"
            _run_sql(server, user, pg.default_dbname(config["postgres.conninfo"] or ""), sql)
        step = "stopping PostgreSQL"
        server.stop()
    except (WalkeeperError, StoreError, OSError, psycopg.Error) as exc:
        reason = f"drill failed while {step}: {_message(exc)}"
        recovery_error = server.failure_reason()
        if recovery_error and step in ("starting PostgreSQL", RECOVERING):
            reason += f": {recovery_error}"
        if keep:
            reason += f"; the restored copy is kept in {server.pgdata}"
        state.record_success(config.state_dir, "drill", ok=False, seconds=None,
                             backup=backup_id, reason=reason)
        # A wrong or missing key stays a configuration error (exit 3), as in every command.
        error = ConfigError if isinstance(exc, ConfigError) else OperationFailed
        # Point at the server log only when there is one: a drill that failed before
        # PostgreSQL started (no backup, a store down) has none.
        hint = (f"server log: {os.path.join(config.state_dir, LAST_LOG)}"
                if os.path.exists(server.log) else None)
        raise error(reason, hint=hint) from None
    finally:
        server.ensure_stopped()
        _keep_log(server.log, config.state_dir)
        shutil.rmtree(sockets, ignore_errors=True)
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    result = {"ok": True, "seconds": round(seconds, 3), "backup": backup_id,
              "timeline": plan.target_timeline, "last_wal": plan.last_wal,
              "databases": databases, "sql": bool(sql.strip()),
              "kept": server.pgdata if keep else None, "reason": None,
              "warnings": list(plan.warnings)}
    state.record_success(config.state_dir, "drill", **result)
    return result


def _message(exc: BaseException) -> str:
    if isinstance(exc, WalkeeperError):
        return exc.line()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """psycopg's message comes first; LINE and caret lines follow it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------- planning

def _newest_backup(config: Config):
    """The newest complete backup in any store (by stop LSN and time) and, per
    timeline, the newest segment the stores hold."""
    from walkeeper.catalog.reader import read_merged

    archive = read_merged(config, "the drill", with_history=False)
    backups = archive.backups_by_stop()
    if not backups:
        raise OperationFailed("the archive holds no complete backup",
                              hint="take one with `walkeeper basebackup`")
    ends = {tli: (max(segs), archive.wal_segment_size)
            for tli, segs in archive.segments.items() if segs}
    return backups[-1], ends, archive.system_identifier


def _check_reaches_end(plan, ends: dict) -> None:
    """Recovery to `latest` stops silently at the first missing segment and promotes:
    a drill that did so would pass while proving less than the archive holds."""
    last = Segment.parse(plan.last_wal)
    end = ends.get(last.timeline)
    if end is not None and last.number(end[1]) < end[0]:
        newest = Segment.from_number(last.timeline, end[0], end[1]).name
        raise OperationFailed(f"recovery would end at {plan.last_wal}, but the archive holds "
                              f"WAL up to {newest}: the segment after it is missing "
                              f"(run verify-chain)")


# ---------------------------------------------------------------- the server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def _configure(server: _Server) -> None:
    """Settings appended last win over what the backup brought along."""
    pgdata = server.pgdata
    hba = os.path.join(os.path.dirname(pgdata), "drill_hba.conf")
    ident = os.path.join(os.path.dirname(pgdata), "drill_ident.conf")
    with open(hba, "w") as f:
        f.write("# walkeeper drill: only local connections, through a 0700 socket directory\n"
                "local all all trust\n")
    open(ident, "w").close()
    conf = os.path.join(pgdata, "postgresql.conf")
    if not os.path.exists(conf):        # Debian keeps it in /etc: not in the backup
        open(conf, "w").close()
    settings = {
        "port": str(server.port), "listen_addresses": "127.0.0.1",
        "unix_socket_directories": server.sockets, "archive_mode": "off",
        "hba_file": hba, "ident_file": ident,
        # Never the production server's (Debian sets one in /var/run/postgresql).
        "external_pid_file": os.path.join(os.path.dirname(pgdata), "drill.pid"),
        "ssl": "off", "logging_collector": "off", "log_destination": "stderr",
        "synchronous_standby_names": "", "primary_conninfo": "",
        "cluster_name": "walkeeper-drill",
        # The production server may be running on this machine with most of its memory.
        "shared_buffers": "128MB", "huge_pages": "try",
    }
    with open(os.path.join(pgdata, "postgresql.auto.conf"), "a") as f:
        f.write("# walkeeper drill: a private, non-archiving copy\n")
        f.writelines(f"{k} = {hooks.conf_value(v)}\n" for k, v in settings.items())


class _Server:
    def __init__(self, pg_ctl: str, pgdata: str, log_path: str, port: int, sockets: str):
        self.pg_ctl, self.pgdata, self.log, self.port, self.sockets = \
            pg_ctl, pgdata, log_path, port, sockets
        self.started = False

    def _ctl(self, *args: str, timeout: float = STOP_TIMEOUT + 30) -> subprocess.CompletedProcess:
        env = dict(os.environ, LC_ALL="C")
        try:
            return subprocess.run([self.pg_ctl, "-D", self.pgdata, *args], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OperationFailed(f"pg_ctl {args[-1]}: {exc}") from None

    def start(self) -> None:
        # -W: pg_ctl would stop waiting once a hot standby accepts connections, and
        # give up after its timeout however well replay is going; wait_ready decides.
        self.started = True
        proc = self._ctl("-l", self.log, "-W", "start")
        if proc.returncode != 0:
            raise OperationFailed(f"pg_ctl start failed: {pg.last_line(proc.stdout)}")

    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.pgdata, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def conninfo(self, user: str, dbname: str) -> str:
        return pg.make_conninfo({"host": self.sockets, "port": str(self.port), "user": user,
                                 "dbname": dbname, "connect_timeout": "10",
                                 "application_name": "walkeeper drill"})

    def wait_ready(self, deadline: float) -> str:
        """Wait until the copy accepts connections with recovery finished; return a
        role that can connect (the current OS user's, else postgres)."""
        import psycopg

        users = list(dict.fromkeys([getpass.getuser(), "postgres"]))
        seen = False
        begun = time.monotonic()
        while True:
            if self.alive():
                seen = True
            elif seen or time.monotonic() - begun > 30:
                raise OperationFailed("PostgreSQL stopped before recovery finished")
            for user in list(users):
                try:
                    with psycopg.connect(self.conninfo(user, "template1"), autocommit=True) as c:
                        if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                            return user
                    break
                except psycopg.OperationalError as exc:
                    if "does not exist" in str(exc) and len(users) > 1:
                        users.remove(user)       # that role is not in the restored cluster
                        continue
                    break
            if time.monotonic() > deadline:
                raise OperationFailed(f"recovery did not finish within {READY_TIMEOUT} s")
            time.sleep(0.2)

    def stop(self) -> None:
        proc = self._ctl("-m", "fast", "-w", "-t", str(STOP_TIMEOUT), "stop")
        if proc.returncode != 0 and self.alive():
            raise OperationFailed(f"pg_ctl stop failed: {pg.last_line(proc.stdout)}")

    def ensure_stopped(self) -> None:
        if not self.started or not self.alive():
            return
        for mode in ("fast", "immediate"):
            self._ctl("-m", mode, "-w", "-t", "60", "stop", timeout=90)
            if not self.alive():
                return
        log.warn(f"the drill's PostgreSQL (pid {self.pid()}) did not stop; stop it by hand")

    def failure_reason(self) -> str | None:
        """What the server log says stopped recovery: walkeeper fetch's line about a
        corrupt segment first, else PostgreSQL's last FATAL or PANIC."""
        try:
            with open(self.log, errors="replace") as f:
                lines = f.read()[-(1 << 20):].splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("walkeeper fetch:") and "corrupt" in line:
                m = _SEGMENT.search(line)
                what = f"WAL segment {m.group(0)} is corrupt in the archive" if m else \
                    "a WAL file is corrupt in the archive"
                return f"{what} ({line.strip()})"
        for line in reversed(lines):
            if ("FATAL:" in line or "PANIC:" in line) and not _ROUTINE.search(line):
                return line.strip()
        return None


def _keep_log(path: str, state_dir: str) -> None:
    """The drill's server log, as the last drill's; a drill that never started a
    server leaves none (an older drill's log would mislead)."""
    kept = os.path.join(state_dir, LAST_LOG)
    try:
        if os.path.exists(path):
            shutil.copyfile(path, kept)
        else:
            os.unlink(kept)
    except OSError:
        pass


# ---------------------------------------------------------------- the checks

def _check_replayed(server: _Server, user: str, plan) -> None:
    import psycopg

    with psycopg.connect(server.conninfo(user, "template1"), autocommit=True) as c:
        replayed = c.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
    last = Segment.parse(plan.last_wal)
    size = plan.backup.wal_segment_size
    if replayed is not None and parse_lsn(replayed) < last.start_lsn(size):
        raise OperationFailed(f"recovery ended at {replayed}, before the last archived segment "
                              f"{plan.last_wal} ({format_lsn(last.start_lsn(size))})")


def _check_databases(server: _Server, user: str) -> list[str]:
    import psycopg

    with psycopg.connect(server.conninfo(user, "template1"), autocommit=True) as c:
        names = [r[0] for r in c.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")]
    for name in names:
        try:
            with psycopg.connect(server.conninfo(user, name), autocommit=True) as c:
                c.execute("SELECT count(*) FROM pg_class").fetchone()
        except psycopg.Error as exc:
            raise OperationFailed(f"database {name!r}: {_first_line(exc)}") from None
    return names


def _run_sql(server: _Server, user: str, dbname: str, sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(server.conninfo(user, dbname), autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as c:
            c.execute(sql)
    except psycopg.Error as exc:
        raise OperationFailed(f"[drill] sql failed in database {dbname!r}: "
                              f"{_first_line(exc)}") from None
