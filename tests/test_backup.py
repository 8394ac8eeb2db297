"""Base backups end to end: a real PostgreSQL archiving through walkeeper, a backup
streamed by pg_basebackup into a local store (and an SFTP server), restored and
started, and the ways a backup must fail without ever looking complete."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pgharness import PG_BIN
from walkeeper import config as config_mod
from walkeeper.backups import basebackup as backup
from walkeeper.format import objects
from walkeeper.errors import OperationFailed
from walkeeper.catalog.model import BackupInfo
from walkeeper.wal import parse_lsn
from conftest import make_config
from storeroot import root as store_root


def write_config(tmp_path: Path, cluster=None, *, local: bool = True, sshd=None,
                 extra: str = "", conninfo: str | None = None,
                 name: str = "walkeeper.toml") -> Path:
    return make_config(tmp_path, conninfo=conninfo if conninfo is not None else cluster.conninfo,
                       local=local, sshd=sshd, extra=extra, name=name,
                       sshd_options="timeout = 10\nretries = 2\n")


def archiving_cluster(pg, wk, tmp_path, request=None, **kw):
    """A started cluster archiving with walkeeper push, and its config file.

    With an SFTP store, the cluster is stopped before the sshd fixture goes: a
    shutdown with an unreachable store would retry archiving for a long time.
    """
    cfg_path = tmp_path / "walkeeper.toml"
    cluster = pg.new(start=False, archive_mode="on",
                     archive_command=f"{wk.path} --config {cfg_path} push %p %f")
    write_config(tmp_path, cluster, **kw)
    cluster.start()
    if request is not None:
        request.addfinalizer(cluster.stop)
    return cluster, cfg_path


def pgbench_init(cluster, scale: int) -> None:
    r = subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", str(scale), "-q",
                        "-h", str(cluster.socket_dir), "-p", str(cluster.port), "postgres"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def files(root: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file()) if root.exists() else []


def decoded(path: Path) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as f:
        objects.decode(f.read, out.write)
    return out.getvalue()


def backup_jsons(root: Path) -> list[Path]:
    return files(root, "backup.json")


# --------------------------------------------------------------- the good path

def frame_checksummed(path: Path) -> bool:
    """Whether the zstd frame of a stored object's body carries a content checksum:
    walkeeper's encoder always writes one, PostgreSQL's server-side zstd does not, so
    it tells who compressed the backup."""
    import zstandard

    data = path.read_bytes()
    pos = objects.HEADER_SIZE
    while int.from_bytes(data[pos:pos + 4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        pos += 8 + int.from_bytes(data[pos + 4:pos + 8], "little")   # the name frame
    return zstandard.get_frame_parameters(data[pos:pos + 18]).has_checksum


@pytest.mark.parametrize("compress", ["auto", "client"])
def test_basebackup_restores_and_starts(pg, wk, tmp_path, capsys, compress):
    """auto on PostgreSQL 15: the server compresses (pg_basebackup then writes no
    backup_manifest); client: walkeeper does, and the manifest is in the tar."""
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path,
                                          extra=f'[backup]\ncompress = "{compress}"')
    pgbench_init(cluster, 2)
    cfg = config_mod.load(str(cfg_path))
    info = backup.take_basebackup(cfg, "nightly", progress=True)
    err = capsys.readouterr().err
    assert "\r" in err and "MiB read" in err

    [meta_path] = backup_jsons(tmp_path / "local")
    assert meta_path.parent.name == info.id
    assert re.fullmatch(r"\d{8}T\d{6}Z", info.id)
    meta = BackupInfo.from_json(json.loads(meta_path.read_text()))
    assert meta == info
    assert meta.label == "nightly" and meta.timeline == 1
    assert meta.system_identifier == int(cluster.scalar(
        "SELECT system_identifier FROM pg_control_system()"))
    assert meta.pg_version == int(cluster.scalar("SHOW server_version_num"))
    assert meta.start_time <= meta.stop_time and meta.start_time.utcoffset() is not None

    # The .backup history file PostgreSQL archived agrees, and so does pg_walfile_name.
    [hist] = files(tmp_path / "local" / "test" / "wal", "*.backup.zst")
    text = decoded(hist).decode()
    start = re.search(r"START WAL LOCATION: (\S+)", text).group(1)
    stop = re.search(r"STOP WAL LOCATION: (\S+)", text).group(1)
    assert meta.start_lsn == parse_lsn(start) and meta.stop_lsn == parse_lsn(stop)
    assert "LABEL: nightly" in text and "START TIMELINE: 1" in text
    assert hist.name == f"{meta.start_wal}.{parse_lsn(start) % meta.wal_segment_size:08X}.backup.zst"
    assert meta.start_wal == cluster.scalar("SELECT pg_walfile_name(%s::pg_lsn)", (start,))
    assert meta.stop_wal == cluster.scalar(
        "SELECT pg_walfile_name(%s::pg_lsn - 1)", (stop,))
    assert cluster.archiver_stats()["failed_count"] == 0

    # The stored tar is what the metadata says, and PostgreSQL starts from it.
    [tar_obj] = files(tmp_path / "local" / "test" / "backups", "base.tar.zst")
    [f] = meta.files
    assert f.key == f"test/backups/{meta.id}/base.tar.zst"
    assert f.stored_size == tar_obj.stat().st_size == meta.stored_bytes["local"]
    raw = decoded(tar_obj)
    assert len(raw) == f.size
    assert frame_checksummed(tar_obj) == (compress == "client")
    # The stock zstd tool reads the stored object (header, name and trailer are
    # skippable frames) whoever compressed it.
    r = subprocess.run(["zstd", "-dc", str(tar_obj)], capture_output=True)
    assert r.returncode == 0 and r.stdout == raw
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        tar.extractall(restored)
    assert "backup_label" in names
    assert ("backup_manifest" in names) == (compress == "client")
    if compress == "client":
        r = subprocess.run([str(PG_BIN / "pg_verifybackup"), "-n", str(restored)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    # Rows written after the backup must not be there with recovery_target=immediate.
    cluster.execute("DELETE FROM pgbench_accounts WHERE aid <= 1000")
    cluster.wait_archived(cluster.switch_wal())
    (restored / "recovery.signal").touch()
    copy = pg.from_pgdata(restored, archive_mode="off",
                          restore_command=f"{wk.path} --config {cfg_path} fetch %f %p",
                          recovery_target="immediate", recovery_target_action="promote")
    copy.start()
    try:
        deadline = time.monotonic() + 30
        while copy.scalar("SELECT pg_is_in_recovery()") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert copy.scalar("SELECT count(*) FROM pgbench_accounts") == 200000
        assert copy.scalar("SELECT count(*) FROM pgbench_branches") == 2
    finally:
        copy.stop()
    last = json.loads((tmp_path / "state" / "last_backup.json").read_text())
    assert last["id"] == meta.id


def test_backup_in_local_and_sftp_store(pg, wk, tmp_path, sshd, request):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path, request, sshd=sshd)
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
    cfg = config_mod.load(str(cfg_path))
    first = backup.take_basebackup(cfg, None, progress=False)
    assert set(first.stored_bytes) == {"local", "offsite"}
    assert first.label == f"walkeeper {first.id}"
    for root in (tmp_path / "local", sshd.directory):
        [meta] = backup_jsons(root)
        assert BackupInfo.from_json(json.loads(meta.read_text())) == first
        [obj] = files(root / "test" / "backups", "base.tar.zst")
        assert decoded(obj)[:512].startswith(b"backup_label")
        assert not files(root, ".tmp-*")
    local_obj = files(tmp_path / "local" / "test" / "backups", "base.tar.zst")[0]
    remote_obj = files(sshd.directory / "test" / "backups", "base.tar.zst")[0]
    assert local_obj.read_bytes() == remote_obj.read_bytes()
    # A second backup in the same second gets its own id.
    second = backup.take_basebackup(cfg, "again", progress=False)
    assert second.id != first.id and second.stop_lsn > first.stop_lsn
    assert len(backup_jsons(sshd.directory)) == 2


# ------------------------------------------------------------------- refusals

def test_tablespace_is_refused(pg, wk, tmp_path, tmp_short):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    location = tmp_short / "ts"
    location.mkdir()
    cluster.execute(f"CREATE TABLESPACE extra LOCATION '{location}'")
    with pytest.raises(OperationFailed) as exc:
        backup.take_basebackup(config_mod.load(str(cfg_path)), None, False)
    line = exc.value.line()
    assert "tablespace" in line and "extra" in line and str(location) in line
    assert "\n" not in line
    assert not (tmp_path / "local" / "test" / "backups").exists()
    r = wk("--config", cfg_path, "basebackup", "--no-progress")
    assert r.returncode == 1 and "tablespace" in r.stderr and r.stderr.count("\n") == 1
    failures = (tmp_path / "state" / "failures.jsonl").read_text()
    assert "tablespace" in failures
    cluster.execute("DROP TABLESPACE extra")


def test_archive_mode_off_is_refused(pg, tmp_path):
    cluster = pg.new()
    cfg = config_mod.load(str(write_config(tmp_path, cluster)))
    with pytest.raises(OperationFailed, match="archive_mode is off"):
        backup.take_basebackup(cfg, None, False)
    assert not (tmp_path / "local" / "test" / "backups").exists()


def test_unreachable_server_names_host_not_password(wk, tmp_path, tmp_short):
    conninfo = f"host={tmp_short} port=1 user=x dbname=y password=sekrit-42"
    cfg_path = write_config(tmp_path, conninfo=conninfo)
    cfg = config_mod.load(str(cfg_path))
    with pytest.raises(OperationFailed) as exc:
        backup.take_basebackup(cfg, None, False)
    line = exc.value.line()
    assert "port=1" in line and str(tmp_short) in line
    assert "sekrit" not in line
    r = wk("-v", "--config", cfg_path, "basebackup", "--no-progress")
    assert r.returncode == 1 and "sekrit" not in r.stderr + r.stdout
    assert "sekrit" not in (tmp_path / "state" / "failures.jsonl").read_text()


# --------------------------------------------------------------------- faults

RUN_BACKUP = ("import sys; from walkeeper import config; from walkeeper.backups import basebackup as backup; "
              "backup.take_basebackup(config.load(sys.argv[1]), None, False)")


def test_kill_9_mid_backup_leaves_no_complete_backup(pg, wk, tmp_path):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    pgbench_init(cluster, 5)
    # A slow compression level for the backup only (push keeps the fast one).
    slow = write_config(tmp_path, cluster, extra="[compression]\nlevel = 19", name="slow.toml")
    proc = subprocess.Popen([sys.executable, "-c", RUN_BACKUP, str(slow)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        streamed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            streamed = cluster.scalar("SELECT coalesce(max(backup_streamed), 0) "
                                      "FROM pg_stat_progress_basebackup")
            if streamed > 8 << 20 and files(tmp_path / "local" / "test" / "backups", ".tmp-*"):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert streamed > 8 << 20, "the backup never got going"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    backups = tmp_path / "local" / "test" / "backups"
    assert not backup_jsons(tmp_path / "local")
    assert not files(backups, "base.tar.zst")
    assert files(backups, ".tmp-*")
    # pg_basebackup dies of the broken pipe; the server ends that backup.
    deadline = time.monotonic() + 30
    while cluster.scalar("SELECT count(*) FROM pg_stat_progress_basebackup") and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.scalar("SELECT count(*) FROM pg_stat_progress_basebackup") == 0
    info = backup.take_basebackup(config_mod.load(str(cfg_path)), None, False)
    [meta] = backup_jsons(tmp_path / "local")
    assert meta.parent.name == info.id


def test_failing_store_fails_the_backup_and_writes_no_metadata(pg, wk, tmp_path, sshd, request):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path, request, sshd=sshd)
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    cfg = config_mod.load(str(cfg_path))
    # WAL already archived; now the SFTP store refuses new directories.
    backups = sshd.directory / "test" / "backups"
    backups.mkdir(parents=True)
    backups.chmod(0o500)
    try:
        with pytest.raises(OperationFailed) as exc:
            backup.take_basebackup(cfg, None, False)
    finally:
        backups.chmod(0o700)
    assert "offsite" in exc.value.line()
    assert not backup_jsons(tmp_path / "local") and not backup_jsons(sshd.directory)
    assert not files(tmp_path / "local" / "test" / "backups", "base.tar.zst")


def test_pg_basebackup_failure_is_one_line_and_stores_nothing(pg, wk, tmp_path):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    cluster.execute("CREATE ROLE plain LOGIN NOREPLICATION IN ROLE pg_monitor")
    cfg_path.write_text(cfg_path.read_text().replace(f"user={cluster.user}", "user=plain"))
    with pytest.raises(OperationFailed) as exc:
        backup.take_basebackup(config_mod.load(str(cfg_path)), None, False)
    line = exc.value.line()
    assert line.startswith("pg_basebackup failed (exit 1)") and "replication" in line
    assert "\n" not in line
    assert not files(tmp_path / "local" / "test" / "backups")


def test_wal_missing_from_a_store_means_no_metadata(pg, wk, tmp_path, monkeypatch):
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    # The backup goes to a second store that archive_command does not feed.
    both = write_config(tmp_path, cluster, name="both.toml", extra=(
        f'[[stores]]\nname = "second"\ntype = "local"\npath = "{store_root(tmp_path / "second")}"'))
    monkeypatch.setattr(backup, "WAL_WAIT", 2.0)
    with pytest.raises(OperationFailed) as exc:
        backup.take_basebackup(config_mod.load(str(both)), None, False)
    line = exc.value.line()
    assert "store 'second' lacks 0000000100000000000000" in line and "not completed" in line
    for root in (tmp_path / "local", tmp_path / "second"):
        assert not backup_jsons(root)
        assert not files(root / "test" / "backups")
