"""A small PostgreSQL harness for the walkeeper tests.

pytest-postgresql cannot start a restored data directory (its executor re-runs
initdb), so this harness does the simple things itself:

* ``ClusterFactory`` runs initdb once per WAL segment size per session into a
  template directory and copies that template for each new cluster.
* ``Cluster`` wraps one data directory: start/stop with ``pg_ctl -w -l LOG``,
  SQL through psycopg (autocommit), WAL switches and archiver waits.

Every cluster listens on 127.0.0.1 on a free port and puts its unix socket in a
short directory under /tmp (socket paths must stay under 107 bytes).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from procs import descendants, free_port

PG_BIN = Path(os.environ.get("WALKEEPER_PG_BIN", "/usr/lib/postgresql/15/bin"))

# Settings every test cluster gets (fast and replication-ready). fsync=off is
# only for the clusters under test, never for what walkeeper writes.
BASE_SETTINGS: dict[str, object] = {
    "listen_addresses": "127.0.0.1",
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": True,
    "wal_level": "replica",
    "max_wal_senders": 4,
    "archive_timeout": 0,
}


class PgHarnessError(RuntimeError):
    pass


def quote_setting(value: object) -> str:
    """Render a value for postgresql.conf / postgresql.auto.conf."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    # The GUC file parser reads backslash escapes inside quotes and '' as '.
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(content[-lines:])


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        **kw,
    )
    return proc


class Cluster:
    """One PostgreSQL data directory managed with pg_ctl."""

    def __init__(self, pgdata: Path, port: int, socket_dir: Path, log: Path,
                 pg_bin: Path = PG_BIN, user: str | None = None):
        self.pgdata = Path(pgdata)
        self.port = port
        self.socket_dir = Path(socket_dir)
        self.log = Path(log)
        self.pg_bin = Path(pg_bin)
        self.user = user or getpass.getuser()

    def __repr__(self) -> str:
        return f"<Cluster {self.pgdata} port={self.port}>"

    # ------------------------------------------------------------ connection
    @property
    def conninfo(self) -> str:
        return f"host={self.socket_dir} port={self.port} dbname=postgres user={self.user}"

    def conninfo_for(self, dbname: str) -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={self.user}"

    @property
    def env(self) -> dict[str, str]:
        """libpq variables pointing at this cluster (for subprocesses)."""
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port),
                "PGUSER": self.user, "PGDATABASE": "postgres"}

    # -------------------------------------------------------------- lifecycle
    def _pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([self.pg_bin / "pg_ctl", "-D", self.pgdata, *args], timeout=timeout)

    def start(self, timeout: int = 60) -> "Cluster":
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        # Port and socket on the command line as well, so a restored data
        # directory carrying another cluster's settings starts here too.
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}")
        proc = self._pg_ctl("-l", str(self.log), "-w", "-t", str(timeout), "-o", opts, "start",
                            timeout=timeout + 30)
        if proc.returncode != 0:
            raise PgHarnessError(
                f"pg_ctl start of {self.pgdata} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}\n--- log tail ({self.log}) ---\n{_tail(self.log)}")
        return self

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None or _is_zombie(pid):
            return False
        return self._pg_ctl("status").returncode == 0

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        if not self.is_running():
            return
        proc = self._pg_ctl("-m", mode, "-w", "-t", str(timeout), "stop", timeout=timeout + 30)
        if proc.returncode != 0 and self.is_running():
            raise PgHarnessError(
                f"pg_ctl stop -m {mode} of {self.pgdata} failed:\n{proc.stdout}\n"
                f"--- log tail ---\n{_tail(self.log)}")

    def restart(self, mode: str = "fast") -> "Cluster":
        self.stop(mode)
        return self.start()

    def reload(self) -> None:
        proc = self._pg_ctl("reload")
        if proc.returncode != 0:
            raise PgHarnessError(f"pg_ctl reload failed: {proc.stdout}")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill9(self, timeout: float = 10) -> None:
        """Crash the cluster: SIGKILL the postmaster and all its children."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid] + descendants(pid)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Wait until the processes are gone, reaped zombies included: a
        # postmaster.pid naming a zombie makes the next start refuse to run.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(Path(f"/proc/{p}").exists() for p in victims):
                return
            time.sleep(0.01)
        alive = [p for p in victims if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            raise PgHarnessError(f"processes of {self.pgdata} survived SIGKILL: {alive}")

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        except Exception:
            self.stop("immediate")

    # ---------------------------------------------------------- configuration
    def conf(self, **settings: object) -> None:
        """Append settings to postgresql.auto.conf (later lines win).

        Takes effect at the next reload()/restart(), as PostgreSQL decides.
        Strings are quoted, bools become on/off, numbers stay bare.
        """
        lines = "".join(f"{k} = {quote_setting(v)}\n" for k, v in settings.items())
        with open(self.pgdata / "postgresql.auto.conf", "a") as f:
            f.write(lines)

    # -------------------------------------------------------------------- SQL
    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg
        return psycopg.connect(self.conninfo_for(dbname), autocommit=autocommit,
                               cursor_factory=psycopg.ClientCursor, connect_timeout=10)

    def sql(self, query: str, params=None, dbname: str = "postgres") -> list[tuple]:
        """Run query (autocommit) and return the rows of its last result.

        Several ';'-separated statements are allowed when params is None.
        """
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            rows: list[tuple] = []
            while True:
                if cur.description is not None:
                    rows = cur.fetchall()
                if not cur.nextset():
                    break
            return rows

    def execute(self, query: str, params=None, dbname: str = "postgres") -> None:
        with self.connect(dbname) as conn:
            conn.execute(query, params)

    def scalar(self, query: str, params=None, dbname: str = "postgres"):
        rows = self.sql(query, params, dbname)
        return rows[0][0] if rows else None

    # -------------------------------------------------------------------- WAL
    def switch_wal(self, ensure_activity: bool = True) -> str:
        """Switch to a new WAL segment; return the name of the one switched out.

        pg_switch_wal() does nothing when no WAL was written since the last
        switch, so by default a transaction id is consumed first (which writes a
        commit record) to guarantee that a segment really is completed.
        """
        with self.connect() as conn:
            if ensure_activity:
                conn.execute("SELECT pg_current_xact_id()")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        return row[0]

    def current_wal(self) -> str:
        return self.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")

    def archiver_stats(self) -> dict:
        with self.connect() as conn:
            cur = conn.execute("SELECT * FROM pg_stat_archiver")
            names = [d.name for d in cur.description]
            return dict(zip(names, cur.fetchone()))

    def wait_archived(self, wal_name: str, timeout: float = 30) -> dict:
        """Wait until the archiver has archived wal_name (or something later).

        Returns pg_stat_archiver's row. On timeout raises with the failure
        counters and the server log tail.
        """
        done_file = self.pgdata / "pg_wal" / "archive_status" / f"{wal_name}.done"
        deadline = time.monotonic() + timeout
        stats: dict = {}
        settle = None
        while True:
            stats = self.archiver_stats()
            last = stats.get("last_archived_wal") or ""
            if last == wal_name or last[:24] > wal_name[:24]:
                return stats
            # The archiver marks .done just before it reports to pg_stat_archiver:
            # give the statistics a moment to catch up, then trust the file.
            if done_file.exists():
                settle = settle or time.monotonic() + 2.0
                if time.monotonic() > settle:
                    return stats
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise PgHarnessError(
            f"{wal_name} not archived within {timeout}s by {self.pgdata}: "
            f"last_archived_wal={stats.get('last_archived_wal')} "
            f"archived_count={stats.get('archived_count')} "
            f"failed_count={stats.get('failed_count')} "
            f"last_failed_wal={stats.get('last_failed_wal')} "
            f"last_failed_time={stats.get('last_failed_time')}\n"
            f"--- log tail ({self.log}) ---\n{_tail(self.log)}")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat[stat.rfind(")") + 2:].split()[0] == "Z"
    except OSError:
        return True


class ClusterFactory:
    """Creates clusters from per-session initdb templates; stops them at close()."""

    def __init__(self, base_dir: Path, pg_bin: Path = PG_BIN):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.pg_bin = Path(pg_bin)
        self.user = getpass.getuser()
        self.clusters: list[Cluster] = []
        self._templates: dict[int, Path] = {}
        self._socket_dirs: list[Path] = []
        self._counter = 0

    def template(self, wal_segsize_mb: int = 16) -> Path:
        if wal_segsize_mb not in self._templates:
            path = self.base_dir / f"template-seg{wal_segsize_mb}"
            proc = _run([self.pg_bin / "initdb", "-D", path, "-A", "trust", "-U", self.user,
                         "-E", "UTF8", "--locale=C.UTF-8", f"--wal-segsize={wal_segsize_mb}",
                         "--no-sync"])
            if proc.returncode != 0:
                raise PgHarnessError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout}")
            self._templates[wal_segsize_mb] = path
        return self._templates[wal_segsize_mb]

    def _new_socket_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix="wk", dir="/tmp"))
        self._socket_dirs.append(d)
        return d

    def _next_name(self, prefix: str) -> Path:
        self._counter += 1
        return self.base_dir / f"{prefix}{self._counter}"

    def new(self, wal_segsize_mb: int = 16, start: bool = True, keep: bool = False,
            **settings: object) -> Cluster:
        """A fresh cluster copied from the template, started unless start=False.

        Clusters are stopped and deleted when the test that made them ends, unless
        keep (for module-scoped fixtures): those live until the session ends.

        **settings go to postgresql.auto.conf after the base settings, e.g.
        ``pg.new(archive_mode="on", archive_command="walkeeper push %p %f")``.
        """
        template = self.template(wal_segsize_mb)
        home = self._next_name("cluster")
        home.mkdir()
        pgdata = home / "data"
        shutil.copytree(template, pgdata, symlinks=True)
        os.chmod(pgdata, 0o700)
        cluster = Cluster(pgdata, free_port(), self._new_socket_dir(), home / "postgres.log",
                          self.pg_bin, self.user)
        cluster.keep = keep
        cluster.conf(**{**BASE_SETTINGS, "port": cluster.port,
                        "unix_socket_directories": str(cluster.socket_dir), **settings})
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def from_pgdata(self, pgdata: Path | str, start: bool = False, **settings: object) -> Cluster:
        """Wrap an existing (e.g. restored) data directory with a fresh port and socket.

        The data directory is not modified unless settings are given (then they
        are appended to postgresql.auto.conf); port and socket are passed on the
        pg_ctl command line. Not started unless start=True.
        """
        pgdata = Path(pgdata).resolve()
        log = pgdata.parent / f"{pgdata.name}.postgres.log"
        cluster = Cluster(pgdata, free_port(), self._new_socket_dir(), log, self.pg_bin, self.user)
        if settings:
            cluster.conf(**settings)
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def release(self) -> None:
        """Stop the clusters a finished test made (not the kept ones) and delete the
        data directories this factory created for them."""
        kept = [c for c in self.clusters if getattr(c, "keep", False)]
        self.clusters = [c for c in self.clusters if not getattr(c, "keep", False)]
        try:
            self.close(remove=True, socket_dirs=False)
        finally:
            self.clusters = kept

    def close(self, remove: bool = False, socket_dirs: bool = True) -> None:
        """Stop every cluster; with remove, also delete the data directories this
        factory created (the templates stay)."""
        errors = []
        for cluster in reversed(self.clusters):
            try:
                cluster.stop("fast", timeout=30)
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                try:
                    cluster.stop("immediate", timeout=30)
                except Exception:
                    errors.append(f"{cluster}: {exc}")
                    continue
            home = cluster.pgdata.parent
            if remove and home.parent == self.base_dir and home.name.startswith("cluster"):
                shutil.rmtree(home, ignore_errors=True)
        self.clusters.clear()
        if socket_dirs:
            for d in self._socket_dirs:
                shutil.rmtree(d, ignore_errors=True)
            self._socket_dirs.clear()
        if errors:
            raise PgHarnessError("could not stop clusters: " + "; ".join(errors))
