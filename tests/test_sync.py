"""walkeeper sync (issue 15, item 5): a store added later (the third copy of 3-2-1,
here a real OpenSSH server) receives the existing archive, verified; corrupt copies
are repaired from a good one; good objects are never overwritten; a rerun goes on
where an interrupted one stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgharness import PG_BIN
from storeroot import root as store_root
from test_recover import archive_all

pytestmark = pytest.mark.slow


def objects(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".tmp-")}


def config(tmp_path: Path, cluster, sshd=None) -> Path:
    parts = [f'cluster = "sync"\nstate_dir = "{tmp_path / "state"}"',
             f'[postgres]\nconninfo = "{cluster.conninfo}"\nbindir = "{PG_BIN}"',
             f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(tmp_path / "local")}"']
    if sshd is not None:
        parts.append(sshd.store_config(name="offsite") + "timeout = 5\nretries = 1\n")
    cfg = tmp_path / ("three.toml" if sshd else "one.toml")
    cfg.write_text("\n".join(parts) + "\n")
    return cfg


@pytest.fixture
def archive(pg, wk, tmp_path):
    """A cluster that archived into one store (with a base backup and a dump) before a
    second, empty store was configured."""
    cluster = pg.new()
    one = config(tmp_path, cluster)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {one} push %p %f")
    cluster.restart()
    assert wk("--config", one, "basebackup", "--no-progress").returncode == 0
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    assert wk("--config", one, "dump").returncode == 0
    archive_all(cluster)
    return cluster, one


def test_a_new_store_receives_the_archive(wk, tmp_path, sshd, archive):
    cluster, _ = archive
    cfg = config(tmp_path, cluster, sshd)
    local, offsite = tmp_path / "local", sshd.directory
    r = wk("--config", cfg, "verify-chain", "--json")
    assert r.returncode == 1
    assert {p["kind"] for p in json.loads(r.stdout)["problems"]} == {"no_archive"}

    r = wk("--config", cfg, "sync", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    planned = json.loads(r.stdout)
    assert planned["dry_run"] and planned["copied"] and not objects(offsite)

    r = wk("--config", cfg, "sync", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] and {c["to"] for c in result["copied"]} == {"offsite"}
    assert sorted(c["key"] for c in result["copied"]) == sorted(c["key"] for c in planned["copied"])
    assert "copied sync/" in r.stderr                  # progress, one line per object
    assert objects(offsite) == objects(local)          # byte for byte, as stored
    keys = [c["key"] for c in result["copied"]]
    for mark in ("backup.json", "dump.json"):          # completion marks placed last
        [i] = [n for n, k in enumerate(keys) if k.endswith(mark)]
        assert all(not k.startswith(keys[i].rsplit("/", 1)[0]) for k in keys[i + 1:])
    r = wk("--config", cfg, "verify-chain")
    assert r.returncode == 0, r.stdout + r.stderr

    # Nothing to do: nothing copied, nothing rewritten.
    before = {p: p.stat().st_ino for p in offsite.rglob("*") if p.is_file()}
    r = wk("--config", cfg, "sync")
    assert r.returncode == 0 and "copied 0 objects" in r.stdout, r.stdout
    assert {p: p.stat().st_ino for p in offsite.rglob("*") if p.is_file()} == before


def test_sync_resumes_and_repairs_a_corrupt_copy_from_a_good_one(
        wk, tmp_path, sshd, archive):
    cluster, _ = archive
    cfg = config(tmp_path, cluster, sshd)
    local, offsite = tmp_path / "local", sshd.directory
    segs = sorted(p for p in local.rglob("*.zst") if "/wal/" in str(p) and len(p.stem) == 24)
    # An interrupted first sync: part of the archive there, and a leftover upload.
    half = segs[: len(segs) // 2]
    for p in half:
        dest = offsite / p.relative_to(local)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
    leftover = offsite / segs[-1].relative_to(local)
    leftover = leftover.with_name(".tmp-0123456789ab-" + leftover.name)
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half an upload")
    r = wk("--config", cfg, "sync", "--to", "offsite", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    copied = {c["key"] for c in result["copied"]}
    assert not copied & {str(p.relative_to(local)) for p in half}
    assert result["good"] == len(half)
    assert objects(offsite) == objects(local)

    # A copy rotten in the primary is repaired from the good one offsite.
    victim = segs[-1]
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    victim.write_bytes(bytes(bad))
    kept = {p: p.stat().st_ino for p in offsite.rglob("*") if p.is_file()}
    r = wk("--config", cfg, "sync", "--from", "offsite", "--to", "local", "--json")
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)["copied"]
    assert row["key"] == str(victim.relative_to(local)) and row["replaced"] is True
    assert victim.read_bytes() == good
    r = wk("--config", cfg, "sync", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["copied"] == []
    assert {p: p.stat().st_ino for p in offsite.rglob("*") if p.is_file()} == kept

    # Corrupt everywhere: said, exit 1, and nothing is written over it.
    victim.write_bytes(bytes(bad))
    (offsite / victim.relative_to(local)).write_bytes(bytes(bad))
    r = wk("--config", cfg, "sync", "--json")
    assert r.returncode == 1
    result = json.loads(r.stdout)
    assert not result["ok"] and {u["key"] for u in result["unrecoverable"]} == \
        {str(victim.relative_to(local))}
    assert victim.read_bytes() == bytes(bad)


def test_sync_usage_errors(wk, tmp_path, sshd, archive):
    cluster, one = archive
    cfg = config(tmp_path, cluster, sshd)
    assert wk("--config", cfg, "sync", "--from", "nope").returncode == 2
    assert wk("--config", cfg, "sync", "--from", "local", "--to", "local").returncode == 2
    assert wk("--config", one, "sync").returncode == 2
    # A store that is not there is an error, never silently created.
    sshd.stop()
    r = wk("--config", cfg, "sync", "--json")
    assert r.returncode == 1 and "offsite" in json.loads(r.stdout)["store_errors"]
