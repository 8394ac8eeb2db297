"""push and fetch end to end: a real PostgreSQL archiving through walkeeper into a
local store and a real OpenSSH server, and every failure mode the contract names."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from walfiles import SYSID, segment_bytes, write_segment
from conftest import make_config, need
from storeroot import root as store_root

SEG = "000000010000000000000005"


def write_config(tmp_path: Path, *, local: bool = True, sshd=None, extra: str = "",
                 sftp: str = "", name: str = "walkeeper.toml") -> Path:
    return make_config(tmp_path, local=local, sshd=sshd, extra=extra, name=name,
                       sshd_options="timeout = 5\nretries = 2\n" + sftp)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def objects(root: Path) -> list[Path]:
    return [p for p in stored_files(root) if p.suffix in (".zst", ".raw")
            and not p.name.startswith(".tmp-")]


def temps(root: Path) -> list[Path]:
    return [p for p in stored_files(root) if p.name.startswith(".tmp-")]


# --------------------------------------------------------------- real cluster

@pytest.mark.parametrize("segsize", [16, 1])
def test_cluster_archives_to_both_stores_and_fetches_back(pg, sshd, wk, tmp_path, segsize):
    cfg = write_config(tmp_path, sshd=sshd)
    copies = tmp_path / "copies"
    copies.mkdir()
    cluster = pg.new(wal_segsize_mb=segsize, archive_mode="on",
                     archive_command=f"{wk.path} --config {cfg} push %p %f && cp %p {copies}/%f")
    cluster.execute("CREATE TABLE t (id int, pad text)")
    last = None
    for i in range(12):
        cluster.execute(f"INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {500 * i}) g")
        last = cluster.switch_wal()
    stats = cluster.wait_archived(last)
    assert stats["failed_count"] == 0, stats
    names = sorted(p.name for p in copies.iterdir())
    assert len(names) >= 12
    for store_cfg in (write_config(tmp_path, sshd=None, name="local.toml"),
                      write_config(tmp_path, local=False, sshd=sshd, name="sftp.toml")):
        for name in names:
            dest = tmp_path / "restored" / name
            dest.parent.mkdir(exist_ok=True)
            r = wk("--config", store_cfg, "fetch", name, dest)
            assert r.returncode == 0, r.stderr
            assert dest.read_bytes() == (copies / name).read_bytes()
            dest.unlink()
    for p in objects(tmp_path / "local"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert len(objects(sshd.directory)) == len(names)
    assert not temps(tmp_path / "local") and not temps(sshd.directory)


def test_environment_only_configuration(pg, wk, tmp_path):
    """BACKUP_DIR=/x walkeeper push %p %f works with no config file at all."""
    store = store_root(tmp_path / "backups")
    cluster = pg.new(archive_mode="on",
                     archive_command=f"BACKUP_DIR={store} WALKEEPER_CLUSTER=ecar {wk.path} push %p %f")
    name = cluster.switch_wal()
    assert cluster.wait_archived(name)["failed_count"] == 0
    assert [p.name for p in objects(store / "ecar")] == [f"{name}.zst"]
    r = wk("fetch", name, tmp_path / "x", env={"BACKUP_DIR": store, "WALKEEPER_CLUSTER": "ecar"})
    assert r.returncode == 0, r.stderr


def test_segment_from_a_cluster_is_refused_under_another_name(pg, wk, tmp_path):
    cluster = pg.new()
    name = cluster.switch_wal()
    src = cluster.pgdata / "pg_wal" / name
    env = {"BACKUP_DIR": store_root(tmp_path / "s")}
    wrong = name[:-1] + ("9" if name[-1] != "9" else "8")
    r = wk("push", src, wrong, env=env)
    assert r.returncode == 1
    assert "does not match its name" in r.stderr
    assert not objects(tmp_path / "s")


# ------------------------------------------------------------ names and content

@pytest.fixture
def env(tmp_path):
    return {"BACKUP_DIR": str(store_root(tmp_path / "store")), "WALKEEPER_STATE_DIR": str(tmp_path / "state")}


def test_duplicate_and_conflicting_push(wk, tmp_path, env):
    seg = write_segment(tmp_path, SEG)
    assert wk("push", seg, SEG, env=env).returncode == 0
    [obj] = objects(tmp_path / "store")
    before = (obj.stat().st_ino, obj.stat().st_mtime_ns, obj.read_bytes())
    r = wk("push", seg, SEG, env=env)
    assert r.returncode == 0, r.stderr
    assert (obj.stat().st_ino, obj.stat().st_mtime_ns, obj.read_bytes()) == before
    other = tmp_path / "other"
    other.write_bytes(segment_bytes(SEG))
    r = wk("push", other, SEG, env=env)
    assert r.returncode == 1
    assert "different content" in r.stderr and r.stderr.count("sha256") == 2
    assert obj.read_bytes() == before[2]
    r = wk("fetch", SEG, tmp_path / "back", env=env)
    assert r.returncode == 0 and (tmp_path / "back").read_bytes() == seg.read_bytes()


@pytest.mark.parametrize("name", [
    "../000000010000000000000005", "000000010000000000000005/../../x", "/etc/passwd", "..",
    "", "00000001000000000000000g", "0000000100000000000000051", "000000000000000000000005",
    "foo.history", "00000002.history/../x", "000000010000000000000005.partial.zst",
    "000000010000000000000005 ", "000000010000000000000005\n",
])
def test_malformed_names_are_usage_errors_and_write_nothing(wk, tmp_path, env, name):
    seg = write_segment(tmp_path, SEG)
    r = wk("push", seg, name, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = wk("fetch", name, tmp_path / "dest", env=env)
    assert r.returncode == 2
    assert not list((tmp_path / "store").iterdir())
    assert not (tmp_path / "dest").exists()


def test_other_wal_file_kinds_round_trip(wk, tmp_path, env):
    files = {
        "00000002.history": b"1\t0/5000000\tno recovery target specified\n",
        "000000010000000000000005.00000028.backup": b"START WAL LOCATION: 0/5000028\n",
        "000000010000000000000005.partial": segment_bytes(SEG),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        r = wk("push", tmp_path / name, name, env=env)
        assert r.returncode == 0, r.stderr
    for name, data in files.items():
        r = wk("fetch", name, tmp_path / "RECOVERYXLOG", env=env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "RECOVERYXLOG").read_bytes() == data


def test_segment_of_another_system_is_refused(wk, tmp_path, env):
    assert wk("push", write_segment(tmp_path, SEG), SEG, env=env).returncode == 0
    nxt = "000000010000000000000006"
    r = wk("push", write_segment(tmp_path, nxt, sysid=SYSID + 1), nxt, env=env)
    assert r.returncode == 1
    assert "refusing to mix two clusters" in r.stderr
    assert len(objects(tmp_path / "store")) == 1


@pytest.mark.parametrize("seg_mb", [1, 64])
def test_other_segment_sizes(wk, tmp_path, env, seg_mb):
    name = "000000010000000200000003"
    seg = write_segment(tmp_path, name, seg_size=seg_mb << 20)
    assert wk("push", seg, name, env=env).returncode == 0
    assert wk("fetch", name, tmp_path / "back", env=env).returncode == 0
    assert (tmp_path / "back").read_bytes() == seg.read_bytes()


def test_fetch_of_missing_file_is_1_and_writes_nothing(wk, tmp_path, env):
    assert wk("push", write_segment(tmp_path, SEG), SEG, env=env).returncode == 0
    dest_dir = tmp_path / "pg_wal"
    dest_dir.mkdir()
    r = wk("fetch", "000000010000000000000006", dest_dir / "RECOVERYXLOG", env=env)
    assert r.returncode == 1
    assert "not in the archive" in r.stderr
    assert list(dest_dir.iterdir()) == []


# --------------------------------------------------------------------- faults

def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_kill_9_mid_push_leaves_nothing_fetch_would_return(wk, tmp_path, env):
    seg = write_segment(tmp_path, SEG, seg_size=64 << 20)
    cfg = write_config(tmp_path, extra="[compression]\nlevel = 19")
    proc = subprocess.Popen([str(wk.path), "--config", str(cfg), "push", str(seg), SEG],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: temps(tmp_path / "local")), "push never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not objects(tmp_path / "local")
    r = wk("--config", cfg, "fetch", SEG, tmp_path / "back")
    assert r.returncode == 1 and not (tmp_path / "back").exists()
    # PostgreSQL retries; the retry completes and the copy is whole (level 19 only made
    # the first push slow enough to kill; the retry need not take minutes on a busy box).
    cfg.write_text(cfg.read_text().replace("level = 19", "level = 3"))
    assert wk("--config", cfg, "push", seg, SEG).returncode == 0
    assert wk("--config", cfg, "fetch", SEG, tmp_path / "back").returncode == 0
    assert (tmp_path / "back").read_bytes() == seg.read_bytes()


def test_kill_9_mid_sftp_upload(wk, tmp_path, sshd):
    seg = write_segment(tmp_path, SEG, seg_size=64 << 20)
    cfg = write_config(tmp_path, local=False, sshd=sshd, extra="[compression]\nalgorithm = \"none\"")
    proc = subprocess.Popen([str(wk.path), "--config", str(cfg), "push", str(seg), SEG],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: temps(sshd.directory)), "upload never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not objects(sshd.directory)
    r = wk("--config", cfg, "fetch", SEG, tmp_path / "back")
    assert r.returncode == 1 and not (tmp_path / "back").exists()


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_sshd_gone_mid_upload_fails_in_bounded_time_then_recovers(wk, tmp_path, sshd, fault):
    seg = write_segment(tmp_path, SEG, seg_size=64 << 20)
    cfg = write_config(tmp_path, local=False, sshd=sshd,
                       extra="[compression]\nalgorithm = \"none\"", sftp="")
    cfg.write_text(cfg.read_text().replace("timeout = 5\nretries = 2", "timeout = 2\nretries = 1"))
    proc = subprocess.Popen([str(wk.path), "--config", str(cfg), "push", str(seg), SEG],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: temps(sshd.directory)), "upload never started"
    (sshd.kill_connections if fault == "kill" else sshd.freeze_connections)()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        sshd.thaw_connections()
    assert proc.returncode == 1, err
    assert "offsite" in err and "not durable" in err
    assert not objects(sshd.directory)
    r = wk("--config", cfg, "push", seg, SEG)
    assert r.returncode == 0, r.stderr
    assert wk("--config", cfg, "fetch", SEG, tmp_path / "back").returncode == 0
    assert (tmp_path / "back").read_bytes() == seg.read_bytes()


def test_full_local_disk_fails_cleanly(wk, tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("unshare is absent")
    mnt = tmp_path / "small"
    mnt.mkdir()
    seg = write_segment(tmp_path, SEG)
    cfg = write_config(tmp_path, local=False,
                       extra=f'[compression]\nalgorithm = "none"\n[[stores]]\nname = "tiny"\n'
                             f'type = "local"\npath = "{mnt}/store"')
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99; mkdir {mnt}/store; "
              f"{wk.path} --config {cfg} push {seg} {SEG}; echo rc=$?; "
              f"find {mnt} -type f; {wk.path} --config {cfg} fetch {SEG} {tmp_path}/back; "
              f"echo fetch=$?")
    r = subprocess.run(["unshare", "--user", "--map-current-user", "--mount", "--keep-caps",
                        "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if "rc=" not in r.stdout:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {r.stderr.strip()}")
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    assert "no space left on device" in r.stderr
    assert "fetch=1" in r.stdout
    leftovers = [line for line in r.stdout.splitlines() if line.startswith(str(mnt))
                 and not line.endswith("identity.json")]
    assert leftovers == [], leftovers


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_byte_is_caught_and_served_from_the_other_store(wk, tmp_path, sshd):
    seg = write_segment(tmp_path, SEG)
    cfg = write_config(tmp_path, sshd=sshd)
    assert wk("--config", cfg, "push", seg, SEG).returncode == 0
    [local_obj] = objects(tmp_path / "local")
    _flip_middle(local_obj)
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    r = wk("--config", cfg, "fetch", SEG, dest)
    assert r.returncode == 0, r.stderr
    assert "local" in r.stderr and "corrupt" in r.stderr
    assert dest.read_bytes() == seg.read_bytes()
    dest.unlink()
    [remote_obj] = objects(sshd.directory)
    _flip_middle(remote_obj)
    r = wk("--config", cfg, "fetch", SEG, dest)
    assert r.returncode == 255, r.stderr
    assert list(dest.parent.iterdir()) == []
    cfg.write_text(cfg.read_text() + '\n[fetch]\non_error = "missing"\n')
    r = wk("--config", cfg, "fetch", SEG, dest)
    assert r.returncode == 1
    assert list(dest.parent.iterdir()) == []


def test_unreachable_store_is_never_taken_for_a_missing_file(wk, tmp_path, sshd):
    cfg = write_config(tmp_path, sshd=sshd)
    sshd.stop()
    # The local store says "absent", the SFTP store cannot answer: that is doubt.
    r = wk("--config", cfg, "fetch", SEG, tmp_path / "x")
    assert r.returncode == 255, r.stderr
    assert "offsite" in r.stderr
    r = wk("--config", cfg, "push", write_segment(tmp_path, SEG), SEG)
    assert r.returncode == 1
    assert "not durable in every store" in r.stderr and "stored in local" in r.stderr


def test_unknown_host_key_is_refused(wk, tmp_path, sshd):
    seg = write_segment(tmp_path, SEG)
    for known_hosts in (sshd.wrong_known_hosts(tmp_path / "wrong_known_hosts"),
                        tmp_path / "empty_known_hosts"):
        Path(known_hosts).touch()
        cfg = write_config(tmp_path, local=False, sshd=sshd)
        cfg.write_text(cfg.read_text().replace(str(sshd.known_hosts), str(known_hosts)))
        r = wk("--config", cfg, "push", seg, SEG)
        assert r.returncode == 1
        assert "known_hosts" in r.stderr and "refus" in r.stderr
        assert wk("--config", cfg, "fetch", SEG, tmp_path / "x").returncode == 255
    assert not stored_files(sshd.directory)


def test_no_password_in_any_output(wk, tmp_path, sshd):
    need(bool(sshd.password), "the test user has no password (bin/test sets one when run as root)")
    seg = write_segment(tmp_path, SEG)
    secret_env = {"WK_TEST_PW": sshd.password}
    cfg = write_config(tmp_path, local=False, sshd=sshd)
    cfg.write_text(cfg.read_text().replace(f'key_file = "{sshd.key_file}"',
                                           'password_env = "WK_TEST_PW"'))
    r = wk("-v", "--config", cfg, "push", seg, SEG, env=secret_env)
    assert r.returncode == 0, r.stderr
    outputs = [r.stdout + r.stderr]
    wrong = "wrong-" + os.urandom(8).hex()
    for env in ({"WK_TEST_PW": wrong},
                {"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_HOST": sshd.host,
                 "BACKUP_SFTP_PORT": sshd.port, "BACKUP_SFTP_USER": sshd.user,
                 "BACKUP_SFTP_PASSWORD": wrong, "BACKUP_SFTP_DIRECTORY": sshd.directory,
                 "BACKUP_SFTP_KNOWN_HOSTS": sshd.known_hosts,
                 "WALKEEPER_CLUSTER": "test", "WALKEEPER_STATE_DIR": tmp_path / "state"}):
        args = ("--config", cfg) if "WK_TEST_PW" in env else ()
        for cmd in (("push", seg, SEG), ("fetch", SEG, tmp_path / "y")):
            r = wk("-v", *args, *cmd, env=env)
            assert r.returncode in (1, 255)
            assert "authentication" in r.stderr
            outputs.append(r.stdout + r.stderr)
    # the environment-only SFTP store works with the right password
    env["BACKUP_SFTP_PASSWORD"] = sshd.password
    r = wk("-v", "fetch", SEG, tmp_path / "z", env=env)
    assert r.returncode == 0, r.stderr
    outputs.append(r.stdout + r.stderr)
    outputs += [p.read_text() for p in stored_files(tmp_path / "state")]
    for text in outputs:
        assert sshd.password not in text and wrong not in text
