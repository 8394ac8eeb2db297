"""Point-in-time recovery end to end: a real cluster archiving through walkeeper, a base
backup, marks in time, LSN and names, and recovered copies started by PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest

from conftest import make_config


def write_config(tmp_path, cluster) -> object:
    return make_config(tmp_path, cluster="pitr", conninfo=cluster.conninfo,
                       store=tmp_path / "store")


@pytest.fixture
def archiving(pg, wk, tmp_path):
    """A cluster archiving with walkeeper, its config, and a base backup taken."""
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    return cluster, cfg


def mark(cluster) -> str:
    time.sleep(0.3)
    t = cluster.scalar("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USOF')")
    time.sleep(0.3)
    return t


def archive_all(cluster) -> None:
    cluster.wait_archived(cluster.switch_wal())


def batches(cluster, count: int) -> list[str]:
    """Table t with `count` batches of 2000 rows, a WAL switch after each, all
    archived; returns the batch names in order."""
    cluster.execute("CREATE TABLE t (batch text, n int)")
    for i in range(count):
        cluster.execute(f"INSERT INTO t SELECT 'B{i:02}', g FROM generate_series(1, 2000) g")
        last = cluster.switch_wal()
    cluster.wait_archived(last)
    return [f"B{i:02}" for i in range(count)]


def wait_recovered(c, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not c.scalar("SELECT pg_is_in_recovery()"):
                return
            if c.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused":
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"recovery did not finish: {c.log.read_text()[-2000:]}")


_n = [0]


def recover(pg, wk, cfg, tmp_path, *target, archive=False, action="promote", expect=0):
    _n[0] += 1
    dest = tmp_path / f"restored{_n[0]}"
    r = wk("--config", cfg, "recover", "--pgdata", dest, *target, "--target-action", action,
           *(("--archive", "on") if archive else ()))
    assert r.returncode == expect, r.stderr
    if expect:
        return r
    assert "pg_ctl -D" in r.stdout
    c = pg.from_pgdata(dest, archive_mode="on" if archive else "off")
    c.start()
    wait_recovered(c)
    return c


def rows(c) -> list[str]:
    if not c.scalar("SELECT count(*) FROM pg_class WHERE relname = 't'"):
        return ["<dropped>"]
    # A statement timeout: a copy paused mid-transaction holds that transaction's
    # locks, and a query on its table would wait forever.
    return [r[0] for r in c.sql("SET statement_timeout = '30s'; "
                                "SELECT batch FROM t GROUP BY batch ORDER BY batch")]


def test_pitr_by_time_lsn_xid_and_name(pg, wk, tmp_path, archiving):
    cluster, cfg = archiving
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    t1 = mark(cluster)
    lsn1 = cluster.scalar("SELECT pg_current_wal_lsn()::text")
    cluster.execute("SELECT pg_create_restore_point('after_a')")
    with cluster.connect() as conn:
        with conn.transaction():
            xid_b = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
            conn.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
    t2 = mark(cluster)
    lsn2 = cluster.scalar("SELECT pg_current_wal_lsn()::text")
    cluster.execute("DROP TABLE t")
    archive_all(cluster)

    assert rows(recover(pg, wk, cfg, tmp_path, "--target-time", t1)) == ["A"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-time", t2)) == ["A", "B"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--latest")) == ["<dropped>"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-lsn", lsn1)) == ["A"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-lsn", lsn2)) == ["A", "B"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-name", "after_a")) == ["A"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-xid", xid_b)) == ["A", "B"]


def test_dry_run_prints_the_plan_and_writes_nothing(wk, tmp_path, archiving):
    cluster, cfg = archiving
    archive_all(cluster)
    dest = tmp_path / "never"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert {"backup", "timelines", "first_wal", "last_wal", "segments", "bytes",
            "target"} <= set(plan)
    assert plan["timelines"] == [1] and plan["target"]["type"] == "latest"
    assert plan["segments"] >= 1 and plan["bytes"] > 0
    assert not dest.exists()
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--dry-run")
    assert r.returncode == 0 and plan["backup"] in r.stdout and not dest.exists()


def test_timelines(pg, wk, tmp_path, archiving):
    cluster, cfg = archiving
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    t1 = mark(cluster)
    cluster.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
    t2 = mark(cluster)
    archive_all(cluster)
    cluster.stop()

    # Back to T1 and promote: timeline 2, which writes batch C and archives it.
    c2 = recover(pg, wk, cfg, tmp_path, "--target-time", t1, action="promote", archive=True)
    # (both lines as `walkeeper commands` prints them: walkeeper-fast first)
    auto = (c2.pgdata / "postgresql.auto.conf").read_text()
    assert f"archive_command = '{wk.path.parent / 'walkeeper-fast'} push " in auto
    assert f"restore_command = '{wk.path.parent / 'walkeeper-fast'} fetch " in auto
    assert c2.scalar("SELECT timeline_id FROM pg_control_checkpoint()") in (1, 2)
    assert rows(c2) == ["A"]
    c2.execute("INSERT INTO t SELECT 'C', g FROM generate_series(1, 100) g")
    c2.execute("CHECKPOINT")
    archive_all(c2)
    c2.stop()

    assert rows(recover(pg, wk, cfg, tmp_path, "--latest")) == ["A", "C"]
    assert rows(recover(pg, wk, cfg, tmp_path, "--target-time", t2,
                        "--target-timeline", "1")) == ["A", "B"]
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "x", "--latest", "--dry-run",
           "--json")
    assert json.loads(r.stdout)["timelines"] == [1, 2]


def test_gap_falls_back_to_an_older_backup_or_refuses_with_windows(pg, wk, tmp_path, archiving):
    cluster, cfg = archiving
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    cluster.execute("SELECT pg_create_restore_point('after_a')")
    archive_all(cluster)
    r = wk("--config", cfg, "basebackup", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    newest = json.loads(r.stdout)
    cluster.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
    archive_all(cluster)
    # Lose the newest backup's first segment.
    [obj] = (tmp_path / "store").rglob(newest["start_wal"] + ".zst")
    obj.unlink()
    c = recover(pg, wk, cfg, tmp_path, "--target-name", "after_a")
    assert rows(c) == ["A"]
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "plan", "--target-name",
           "after_a", "--dry-run", "--json")
    assert json.loads(r.stdout)["backup"] != newest["id"]
    # A target beyond the gap: nothing reaches it.
    lsn = cluster.scalar("SELECT pg_current_wal_lsn()::text")
    r = recover(pg, wk, cfg, tmp_path, "--target-lsn", lsn, expect=1)
    assert "window" in r.stderr
    assert not (tmp_path / f"restored{_n[0]}").exists() or \
        not any((tmp_path / f"restored{_n[0]}").iterdir())


def test_refusals(wk, tmp_path, archiving):
    cluster, cfg = archiving
    archive_all(cluster)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "PG_VERSION").write_text("15\n")
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "full", "--latest")
    assert r.returncode == 2 and "not empty" in r.stderr
    r = wk("--config", cfg, "recover", "--pgdata", cluster.pgdata, "--latest")
    assert r.returncode == 2 and "running" in r.stderr
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "a", "--target-time", "yesterday")
    assert r.returncode == 2
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "a", "--latest", "--immediate")
    assert r.returncode == 2
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "a",
           "--target-time", "2099-01-01 00:00:00+00")
    assert r.returncode == 1 and "--latest" in r.stderr
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "a",
           "--target-time", "2000-01-01 00:00:00+00")
    assert r.returncode == 1 and "window" in r.stderr
    assert not (tmp_path / "a").exists()


def test_recovery_settings_keep_existing_lines(pg, wk, tmp_path, archiving):
    cluster, cfg = archiving
    archive_all(cluster)
    dest = tmp_path / "r"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--target-time",
           "2026-11-24 10:15:00", "--dry-run")
    # a naive time is read in the local zone; the written setting carries an offset
    assert r.returncode in (0, 1)
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--immediate")
    assert r.returncode == 0, r.stderr
    auto = (dest / "postgresql.auto.conf").read_text()
    assert "archive_command" in auto            # the cluster's own settings are kept
    assert f"--config {cfg} fetch %f %p" in auto
    assert "recovery_target = 'immediate'" in auto
    assert (dest / "recovery.signal").exists()
    assert oct(dest.stat().st_mode & 0o777) == "0o700"


# ------------------------------------------------ extract: the ustar reader
def _tar(tmp_path, fmt, add):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        add(tar)
    return buf.getvalue()


def _member(tar, name, data=None, kind=None, link=""):
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    if kind is not None:
        info.type, info.linkname = kind, link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_extract_reads_ustar_in_any_read_sizes(tmp_path):
    import io
    import os
    import tarfile

    from walkeeper.backups.recover import extract

    big = os.urandom(3 * (1 << 20) + 123)

    def add(tar):
        _member(tar, "base", kind=tarfile.DIRTYPE)
        _member(tar, "base/1", kind=tarfile.DIRTYPE)
        _member(tar, "base/1/16384", big)
        _member(tar, "PG_VERSION", b"15\n")
        _member(tar, "empty", b"")
        _member(tar, "pg_wal", kind=tarfile.SYMTYPE, link="elsewhere/wal")
    blob = _tar(tmp_path, tarfile.USTAR_FORMAT, add) + b"\0" * 2048  # trailing zeros

    class Dribble:             # odd read sizes: headers and data split anywhere
        def __init__(self, data):
            self.f, self.n = io.BytesIO(data), 0

        def read(self, n):
            self.n += 1
            return self.f.read(min(n, (self.n * 7919) % 70000 + 1))

    for reader in (io.BytesIO(blob), Dribble(blob)):
        dest = tmp_path / f"out{id(reader)}"
        dest.mkdir()
        assert extract(reader, str(dest)) == len(big) + 3
        assert (dest / "base/1/16384").read_bytes() == big
        assert (dest / "PG_VERSION").read_bytes() == b"15\n"
        assert (dest / "empty").read_bytes() == b""
        assert os.readlink(dest / "pg_wal") == "elsewhere/wal"
        assert (dest / "base/1/16384").stat().st_mode & 0o777 == 0o600
        assert (dest / "base/1").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("case", ["unsafe", "absolute link", "pax", "truncated", "hardlink"])
def test_extract_refuses_what_it_does_not_restore(tmp_path, case):
    import io
    import tarfile

    from walkeeper.errors import OperationFailed
    from walkeeper.backups.recover import extract

    fmt = tarfile.PAX_FORMAT if case == "pax" else tarfile.USTAR_FORMAT

    def add(tar):
        if case == "unsafe":
            _member(tar, "../evil", b"x")
        elif case == "absolute link":
            _member(tar, "pg_wal", kind=tarfile.SYMTYPE, link="/etc")
        elif case == "pax":
            _member(tar, "d" * 150, b"x")        # long name: a pax header
        elif case == "hardlink":
            _member(tar, "a", b"x")
            _member(tar, "b", kind=tarfile.LNKTYPE, link="a")
        else:
            _member(tar, "f", b"x" * 5000)
    blob = _tar(tmp_path, fmt, add)
    if case == "truncated":
        blob = blob[:512 + 3000]
    with pytest.raises((OperationFailed, tarfile.TarError)):
        extract(io.BytesIO(blob), str(tmp_path))
