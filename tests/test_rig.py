"""Tests of the test rig itself (PostgreSQL and sshd harnesses). They do not
import walkeeper, so they pass even while the package is half-written."""

from __future__ import annotations

import os
import re
import socket
import time

import paramiko
import pytest

from pgharness import quote_setting

WAL_NAME = re.compile(r"^[0-9A-F]{24}$")


def test_cluster_runs_sql_and_switches_wal(cluster):
    assert cluster.sql("SELECT 1, 'a'") == [(1, "a")]
    assert cluster.sql("SELECT current_setting('fsync'), current_setting('wal_level')") == [
        ("off", "replica")]
    cluster.execute("CREATE TABLE t (i int)")
    cluster.execute("INSERT INTO t SELECT generate_series(1, 100)")
    assert cluster.sql("SELECT count(*) FROM t") == [(100,)]
    assert cluster.sql("CREATE TABLE u (i int); SELECT 7") == [(7,)]
    first = cluster.switch_wal()
    second = cluster.switch_wal()
    assert WAL_NAME.match(first) and WAL_NAME.match(second)
    assert second > first
    assert len(str(cluster.socket_dir / f".s.PGSQL.{cluster.port}")) < 107
    # reachable over TCP on loopback as well
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=5):
        pass


def test_cluster_archives_switched_segments(pg, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    c = pg.new(archive_mode="on", archive_command=f"cp %p {archive}/%f")
    with c:
        names = [c.switch_wal() for _ in range(3)]
        stats = c.wait_archived(names[-1], timeout=30)
        assert stats["failed_count"] == 0
        for name in names:
            assert (archive / name).stat().st_size == 16 * 1024 * 1024
    assert not c.is_running()


def test_small_segments_and_restart(pg):
    c = pg.new(wal_segsize_mb=1)
    assert c.sql("SHOW wal_segment_size") == [("1MB",)]
    c.conf(work_mem="7MB")
    c.restart()
    assert c.sql("SHOW work_mem") == [("7MB",)]
    c.kill9()
    assert not c.is_running()
    c.start()  # crash recovery
    assert c.sql("SELECT 1") == [(1,)]
    c.stop()


def test_wait_archived_reports_failures(pg):
    c = pg.new(archive_mode="on", archive_command="exit 1")
    try:
        name = c.switch_wal()
        with pytest.raises(RuntimeError, match="failed_count=[1-9]"):
            c.wait_archived(name, timeout=2)
    finally:
        c.stop("immediate")  # a fast stop would retry the failing archive_command


def test_from_pgdata_starts_copied_directory(pg, tmp_path):
    src = pg.new()
    src.execute("CREATE TABLE marker AS SELECT 42 AS v")
    src.stop()
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(src.pgdata, copy, symlinks=True)
    os.chmod(copy, 0o700)
    c = pg.from_pgdata(copy, start=True)
    assert c.port != src.port
    assert c.sql("SELECT v FROM marker") == [(42,)]
    c.stop()


def test_quote_setting():
    assert quote_setting(True) == "on"
    assert quote_setting(5) == "5"
    assert quote_setting("it's a \\path") == "'it''s a \\\\path'"


def _sftp(sshd, known_hosts=None):
    client = sshd.paramiko_client(known_hosts)
    return client, client.open_sftp()


def test_sshd_sftp_with_key_and_known_hosts(sshd, tmp_path):
    client, sftp = _sftp(sshd)
    try:
        (sshd.directory / "hello.txt").write_text("hi")
        assert sftp.listdir(str(sshd.directory)) == ["hello.txt"]
        with sftp.open(str(sshd.directory / "up.bin"), "wb") as f:
            f.write(b"x" * 1000)
        assert (sshd.directory / "up.bin").stat().st_size == 1000
    finally:
        client.close()
    assert oct(sshd.key_file.stat().st_mode & 0o777) == "0o600"
    assert sshd.directory.is_absolute()


def test_sshd_refuses_wrong_host_key(sshd, tmp_path):
    wrong = sshd.wrong_known_hosts(tmp_path / "wrong_known_hosts")
    with pytest.raises(paramiko.BadHostKeyException):
        sshd.paramiko_client(wrong)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        sshd.paramiko_client(empty)


def test_sshd_password_auth(sshd):
    if sshd.password is None:
        pytest.skip("no test password (bin/test sets one for wktest when run as root)")
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(sshd.host, port=sshd.port, username=sshd.user, password=sshd.password,
                       look_for_keys=False, allow_agent=False, timeout=10)
        sftp = client.open_sftp()
        assert sftp.listdir(str(sshd.directory)) == []
    finally:
        client.close()
    bad = paramiko.SSHClient()
    bad.load_host_keys(str(sshd.known_hosts))
    bad.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        bad.connect(sshd.host, port=sshd.port, username=sshd.user, password="wrong-password",
                    look_for_keys=False, allow_agent=False, timeout=10)
    bad.close()


def test_kill_connections_breaks_open_session(sshd):
    client, sftp = _sftp(sshd)
    try:
        assert sftp.listdir(str(sshd.directory)) == []
        pids = sshd.wait_connections(1)
        assert pids
        assert sshd.kill_connections()
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            for _ in range(50):
                sftp.listdir(str(sshd.directory))
                time.sleep(0.05)
    finally:
        client.close()
    # the listener survives and accepts new connections
    client, sftp = _sftp(sshd)
    try:
        assert sftp.listdir(str(sshd.directory)) == []
    finally:
        client.close()


def test_freeze_connections_hangs_until_timeout(sshd):
    client, sftp = _sftp(sshd)
    try:
        sftp.listdir(str(sshd.directory))
        sshd.wait_connections(1)
        assert sshd.freeze_connections()
        sftp.get_channel().settimeout(1.0)
        # A frozen server does not fail fast: only the channel timeout ends the wait.
        with pytest.raises(TimeoutError):
            sftp.listdir(str(sshd.directory))
        sshd.thaw_connections()
    finally:
        client.close()
