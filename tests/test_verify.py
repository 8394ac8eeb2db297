"""verify-chain end to end: a real cluster archiving through walkeeper with base
backups, then the store damaged by hand the way disks, people and crashes do it."""

from __future__ import annotations

import json
import shutil

import pytest

from pgharness import PG_BIN
from walkeeper.wal import Segment, format_lsn
from storeroot import root as store_root

CLUSTER = "pitr"
SEG = 16 << 20


def write_config(tmp_path, cluster, store, extra: str = ""):
    cfg = tmp_path / f"walkeeper-{store.name}.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[postgres]\nconninfo = "{cluster.conninfo}"\nbindir = "{PG_BIN}"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(store)}"\n' + extra)
    return cfg


def backup(wk, cfg) -> dict:
    r = wk("--config", cfg, "basebackup", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def switch(cluster, n: int = 1) -> list[str]:
    """n segments completed and archived, each holding a little work."""
    names = []
    for _ in range(n):
        cluster.execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        names.append(cluster.switch_wal())
    cluster.wait_archived(names[-1])
    return names


def verify(wk, cfg, *args):
    r = wk("--config", cfg, "verify-chain", "--json", *args, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"ok", "problems", "windows"}
    assert data["ok"] is (r.returncode == 0) is (not data["problems"])
    for p in data["problems"]:
        assert set(p) == {"kind", "store", "object", "detail"}
        assert p["kind"] in ("corrupt", "missing", "gap", "incomplete_backup", "leftover",
                             "store_mismatch")
    for w in data["windows"]:
        assert set(w) == {"timeline", "from_time", "to_time", "from_lsn", "to_lsn"}
    return r.returncode, data


def kinds(data) -> set[str]:
    return {p["kind"] for p in data["problems"]}


def wal_object(store, name: str):
    d = store / CLUSTER / "wal" / name[:16]
    [obj] = [d / f"{name}{suffix}" for suffix in (".zst", ".raw") if (d / f"{name}{suffix}").exists()]
    return obj


@pytest.fixture
def two_backups(pg, wk, tmp_path):
    """Backup A, three archived segments, backup B, two more segments."""
    cluster = pg.new()
    store = tmp_path / "store"
    cfg = write_config(tmp_path, cluster, store)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    cluster.execute("CREATE TABLE t (n int)")
    a = backup(wk, cfg)
    between = switch(cluster, 3)
    b = backup(wk, cfg)
    after = switch(cluster, 2)
    yield cluster, cfg, store, a, b, between, after
    cluster.stop()


def copy_of(tmp_path, cluster, store, name: str):
    """A config on a copy of the store, to damage without disturbing the others."""
    dest = tmp_path / name
    shutil.copytree(store, dest)
    return write_config(tmp_path, cluster, dest), dest


def test_healthy_archive(wk, two_backups):
    cluster, cfg, store, a, b, between, after = two_backups
    code, data = verify(wk, cfg)
    assert code == 0 and data["ok"] is True and data["problems"] == []
    assert [w["timeline"] for w in data["windows"]] == [1]
    [w] = data["windows"]
    assert w["from_lsn"] == a["stop_lsn"]
    end = Segment.parse(after[-1]).start_lsn(SEG) + SEG
    assert w["to_lsn"] == format_lsn(end)
    assert verify(wk, cfg, "--quick")[0] == 0
    r = wk("--config", cfg, "verify-chain")
    assert r.returncode == 0, r.stderr
    assert "recoverable windows:" in r.stdout and "timeline 1" in r.stdout
    assert "no problem" in r.stdout
    assert "\r" not in r.stderr          # no progress line when stderr is not a terminal
    r = wk("--config", cfg, "verify-chain", "--store", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr


def test_missing_segments_gap_and_backup_wal(wk, tmp_path, two_backups):
    cluster, cfg, store, a, b, between, after = two_backups
    # Between the backups: a gap, and the windows split around it.
    cfg1, copy1 = copy_of(tmp_path, cluster, store, "gap")
    wal_object(copy1, between[1]).unlink()
    code, data = verify(wk, cfg1)
    assert code == 1 and data["ok"] is False
    [gap] = data["problems"]
    assert gap["kind"] == "gap" and gap["object"] == between[1] and gap["store"] == "local"
    assert len(data["windows"]) == 2
    first, second = data["windows"]
    assert first["from_lsn"] == a["stop_lsn"]
    assert first["to_lsn"] == format_lsn(Segment.parse(between[1]).start_lsn(SEG))
    assert second["from_lsn"] == b["stop_lsn"]
    r = wk("--config", cfg1, "verify-chain")
    assert r.returncode == 1 and between[1] in r.stdout and "gap" in r.stdout
    assert "problem" in r.stderr and "Traceback" not in r.stderr

    # Inside backup B's own WAL: B cannot be restored; A's window stops there.
    cfg2, copy2 = copy_of(tmp_path, cluster, store, "missing")
    wal_object(copy2, b["start_wal"]).unlink()
    code, data = verify(wk, cfg2)
    assert code == 1
    missing = [p for p in data["problems"] if p["kind"] == "missing"]
    assert [p["object"] for p in missing] == [b["start_wal"]] and b["id"] in missing[0]["detail"]
    assert kinds(data) <= {"missing", "gap"}
    [w] = data["windows"]
    assert w["from_lsn"] == a["stop_lsn"]
    assert w["to_lsn"] == format_lsn(Segment.parse(b["start_wal"]).start_lsn(SEG))
    # --quick sees the same chain problems: they come from the listing.
    assert verify(wk, cfg2, "--quick")[0] == 1


def test_corruption_deep_but_not_quick(wk, tmp_path, two_backups):
    cluster, cfg, store, a, b, between, after = two_backups
    cfg1, copy1 = copy_of(tmp_path, cluster, store, "flipped")
    obj = wal_object(copy1, after[0])
    raw = bytearray(obj.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    obj.write_bytes(bytes(raw))
    code, data = verify(wk, cfg1)
    assert code == 1
    [p] = data["problems"]
    assert p["kind"] == "corrupt" and after[0] in p["object"] and p["store"] == "local"
    # The window ends before the corrupt segment: recovery would stop there.
    assert data["windows"][-1]["to_lsn"] == format_lsn(Segment.parse(after[0]).start_lsn(SEG))
    code, data = verify(wk, cfg1, "--quick")
    assert code == 0, data          # sizes and trailer intact: only a deep check sees it

    # A sound object under another segment's name: only the page header tells.
    cfg2, copy2 = copy_of(tmp_path, cluster, store, "renamed")
    shutil.copyfile(wal_object(copy2, after[0]), wal_object(copy2, after[1]))
    code, data = verify(wk, cfg2)
    [p] = data["problems"]
    assert code == 1 and p["kind"] == "corrupt" and after[1] in p["object"]
    assert "page address" in p["detail"]

    # A truncated backup file: caught by --quick too.
    cfg3, copy3 = copy_of(tmp_path, cluster, store, "truncated")
    [tar] = (copy3 / CLUSTER / "backups" / b["id"]).glob("base.tar.*")
    with open(tar, "r+b") as f:
        f.truncate(tar.stat().st_size - 10)
    for args in ((), ("--quick",)):
        code, data = verify(wk, cfg3, *args)
        assert code == 1 and "corrupt" in kinds(data), data
        assert any(b["id"] in p["object"] for p in data["problems"])


def test_incomplete_backups_and_leftovers(wk, tmp_path, two_backups):
    cluster, cfg, store, a, b, between, after = two_backups
    cfg1, copy1 = copy_of(tmp_path, cluster, store, "leftovers")
    backups = copy1 / CLUSTER / "backups"
    (backups / "20990101T000000Z").mkdir()
    (backups / "20990101T000000Z" / ".tmp-0123456789ab-base.tar.zst").write_bytes(b"x" * 100)
    (backups / "20990102T000000Z").mkdir()
    [tar] = (backups / a["id"]).glob("base.tar.*")
    shutil.copyfile(tar, backups / "20990102T000000Z" / tar.name)
    temp = copy1 / CLUSTER / "wal" / after[1][:16] / f".tmp-a1b2c3d4e5f6-{after[1]}.zst"
    temp.write_bytes(b"partial upload")
    code, data = verify(wk, cfg1)
    assert code == 1
    incomplete = sorted(p["object"] for p in data["problems"] if p["kind"] == "incomplete_backup")
    assert incomplete == [f"{CLUSTER}/backups/20990101T000000Z",
                          f"{CLUSTER}/backups/20990102T000000Z"]
    leftover = sorted(p["object"] for p in data["problems"] if p["kind"] == "leftover")
    assert leftover == sorted([f"{CLUSTER}/backups/20990101T000000Z/"
                               f".tmp-0123456789ab-base.tar.zst",
                               f"{CLUSTER}/wal/{after[1][:16]}/{temp.name}"])
    assert kinds(data) == {"incomplete_backup", "leftover"}
    assert len(data["windows"]) == 1         # nothing of that touches recoverability
    assert verify(wk, cfg1, "--quick")[0] == 1


def test_segment_missing_from_the_sftp_store_only(pg, wk, tmp_path, sshd):
    cluster = pg.new()
    store = tmp_path / "store"
    cfg = write_config(tmp_path, cluster, store,
                       sshd.store_config(name="offsite") + "timeout = 10\nretries = 1\n")
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    try:
        cluster.execute("CREATE TABLE t (n int)")
        backup(wk, cfg)
        names = switch(cluster, 3)
        code, data = verify(wk, cfg)
        assert code == 0, data
        wal_object(sshd.directory, names[1]).unlink()
        code, data = verify(wk, cfg)
        assert code == 1
        [p] = data["problems"]
        assert p["kind"] == "store_mismatch" and p["store"] == "offsite"
        assert names[1] in p["object"] and "local" in p["detail"]
        assert len(data["windows"]) == 1     # fetch still finds it in the local store
        assert verify(wk, cfg, "--quick")[1]["problems"] == [p]
        assert verify(wk, cfg, "--store", "local")[0] == 0
        code, data = verify(wk, cfg, "--store", "offsite")
        assert code == 1 and [p["kind"] for p in data["problems"]] == ["gap"]
    finally:
        cluster.stop()
