"""type = "s3" against a real Ceph RADOS Gateway (tests/rgwharness.py) and a real
PostgreSQL 15: multipart uploads and the no-clobber protocol, a cluster archiving to
local + S3 and recovered from S3 alone, concurrent pushes, radosgw killed in the middle
of a multipart upload, wrong secret / missing bucket / stopped server, encryption.
The API contract every store passes is tests/test_store_contract.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import WALKEEPER, clean_env
from pgharness import PG_BIN
from storecontract import payload, read_all
from walfiles import write_segment
from walkeeper.errors import ObjectExists, StoreError
from walkeeper.stores import open_store
from walkeeper.stores.registry import StoreConfig
from walkeeper.stores.s3_client import MiB, PART_SIZE, SINGLE_MAX, part_size
from storeroot import root as store_root

PASS_VAR = "WK_TEST_S3_PASSPHRASE"
PASSPHRASE = "s3 test passphrase, never printed"


def test_part_size_keeps_any_object_under_10000_parts():
    assert part_size(1) == PART_SIZE and part_size(1000) == PART_SIZE
    assert part_size(1001) == 2 * PART_SIZE
    total = sum(part_size(n) for n in range(1, 10_001))
    assert total >= 5 << 40                  # S3's largest object fits in 10,000 parts
    assert max(part_size(n) for n in range(1, 10_001)) <= 5 << 30
    assert SINGLE_MAX >= (16 << 20) + (1 << 20)   # a raw 16 MiB segment is one PUT


# ------------------------------------------------------------------ helpers

def s3_cfg(rgw, bucket: str, **kw) -> StoreConfig:
    base = dict(name="objects", type="s3", endpoint=rgw.endpoint, bucket=bucket, prefix="p",
                access_key_env="WALKEEPER_S3_ACCESS_KEY", secret_key_env="WALKEEPER_S3_SECRET_KEY",
                timeout=10, retries=3)
    base.update(kw)
    return StoreConfig(**base)


def run_wk(*args, env: dict | None = None, timeout: float = 120, secrets=()):
    """The console script; no secret in any output, never a traceback."""
    full = clean_env(env or {})
    r = subprocess.run([str(WALKEEPER), *(str(a) for a in args)], env=full, text=True,
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    for s in secrets:
        assert s not in r.stdout and s not in r.stderr, (args, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def config(tmp_path: Path, stores: str, *, cluster: str = "s3c", conninfo: str | None = None,
           extra: str = "", name: str = "walkeeper.toml") -> Path:
    text = f'cluster = "{cluster}"\nstate_dir = "{tmp_path / "state"}"\n{extra}\n'
    if conninfo:
        text += f'[postgres]\nconninfo = "{conninfo}"\nbindir = "{PG_BIN}"\n'
    path = tmp_path / name
    path.write_text(text + stores)
    return path


def recovered_rows(pg, cfg: Path, env: dict, dest: Path, target: str, query: str) -> list:
    """`recover` to TARGET with CFG's stores, start the copy (its restore_command reads
    the S3 keys from the server's environment), and QUERY's rows once it promoted."""
    from test_recover import wait_recovered

    r = run_wk("--config", cfg, "recover", "--pgdata", dest, "--target-time", target,
               "--target-action", "promote", env=env, secrets=env.values())
    assert r.returncode == 0, r.stderr
    os.environ.update(env)
    try:
        c = pg.from_pgdata(dest, archive_mode="off")
        c.start()
        wait_recovered(c)
        rows = c.sql(query)
        c.stop()
        return rows
    finally:
        for k in env:
            os.environ.pop(k, None)


def wal_key(cluster: str, name: str, suffix: str = ".zst") -> str:
    return f"{cluster}/wal/{name[:16]}/{name}{suffix}"


# ------------------------------------------------------- the store, directly

@pytest.mark.slow
def test_multipart_round_trip_no_clobber_and_no_leftovers(rgw, bucket):
    store = open_store(s3_cfg(rgw, bucket))
    key = "c/backups/20260101T000000Z/base.tar.zst"
    data = payload(2 * PART_SIZE + 5 * MiB + 3, seed=7)
    up = store.begin_put(key)
    for i in range(0, len(data), MiB):
        up.write(data[i:i + MiB])
    assert len(rgw.uploads(bucket)) == 1          # parts went out while writing
    assert not store.exists(key)
    up.commit()
    assert read_all(store.open(key)) == data
    c = rgw.client()
    head = c.head_object(Bucket=bucket, Key="p/" + key)
    assert head["ETag"].strip('"').endswith("-3")
    tags = c.get_object_tagging(Bucket=bucket, Key="p/" + key)["TagSet"]
    assert {"Key": "sha256", "Value": hashlib.sha256(data).hexdigest()} in tags
    assert rgw.uploads(bucket) == []
    assert not [k for k in rgw.keys(bucket) if ".tmp-" in k]      # no claim left

    # a second writer of a different large object under the same name: refused, kept
    other = open_store(s3_cfg(rgw, bucket)).begin_put(key)
    for i in range(0, len(data), MiB):
        other.write(b"x" * MiB)
    with pytest.raises(ObjectExists):
        other.commit()
    assert read_all(store.open(key)) == data
    assert rgw.uploads(bucket) == []
    # a small object's sha256 is in its metadata
    store.put_bytes("c/identity.json", b"{}")
    meta = c.head_object(Bucket=bucket, Key="p/c/identity.json")["Metadata"]
    assert meta["sha256"] == hashlib.sha256(b"{}").hexdigest()


@pytest.mark.slow
def test_concurrent_multipart_writers_one_wins(rgw, bucket):
    key = "c/wal/0000000100000000/000000010000000000000009.zst"
    datas = [payload(SINGLE_MAX + 3 * MiB, seed=s) for s in (1, 2, 3)]
    results = [None] * 3

    def write(i):
        store = open_store(s3_cfg(rgw, bucket))
        up = store.begin_put(key)
        try:
            for j in range(0, len(datas[i]), MiB):
                up.write(datas[i][j:j + MiB])
            up.commit()
            results[i] = "won"
        except ObjectExists:
            results[i] = "taken"
        except StoreError as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results.count("won") == 1, results
    # a loser finds the name taken, or another writer completing it (a retryable error)
    assert all(r in ("won", "taken") or isinstance(r, StoreError) for r in results), results
    stored = rgw.get(bucket, "p/" + key)
    assert stored == datas[results.index("won")]


@pytest.mark.slow
def test_a_versioned_bucket_ignores_the_condition_and_no_clobber_still_holds(rgw, bucket):
    rgw.client().put_bucket_versioning(Bucket=bucket,
                                       VersioningConfiguration={"Status": "Enabled"})
    store = open_store(s3_cfg(rgw, bucket))
    assert store.enforces_conditions() is False
    store.put_bytes("c/x.zst", b"first")
    with pytest.raises(ObjectExists):
        store.put_bytes("c/x.zst", b"second")
    big = payload(SINGLE_MAX + MiB, seed=3)
    up = store.begin_put("c/x.zst")
    up.write(big)
    with pytest.raises(ObjectExists):
        up.commit()
    assert read_all(store.open("c/x.zst")) == b"first"
    v = rgw.client()
    for ver in v.list_object_versions(Bucket=bucket).get("Versions", []):
        v.delete_object(Bucket=bucket, Key=ver["Key"], VersionId=ver["VersionId"])


@pytest.mark.slow
def test_stale_uploads_are_aborted_unless_their_key_holds_an_object(rgw, bucket):
    store = open_store(s3_cfg(rgw, bucket))
    c = rgw.client()
    free = "p/c/wal/0000000100000000/00000001000000000000000A.zst"
    held = "p/c/wal/0000000100000000/00000001000000000000000B.zst"
    c.create_multipart_upload(Bucket=bucket, Key=free)
    c.create_multipart_upload(Bucket=bucket, Key=held)
    store.put_bytes(held[2:], b"the object")
    assert store.abort_stale_uploads("c", time.time() - 3600) == []     # too young
    assert store.abort_stale_uploads("c", time.time() + 60, dry_run=True) == [free[2:]]
    assert len(rgw.uploads(bucket)) == 2
    assert store.abort_stale_uploads("c", time.time() + 60) == [free[2:]]
    assert [u["Key"] for u in rgw.uploads(bucket)] == [held]
    assert read_all(store.open(held[2:])) == b"the object"
    c.abort_multipart_upload(Bucket=bucket, Key=held,
                             UploadId=rgw.uploads(bucket)[0]["UploadId"])


@pytest.mark.slow
def test_expire_aborts_stale_uploads(rgw, bucket, tmp_path):
    from walkeeper.config import load
    from walkeeper.maintenance.expire import expire
    from datetime import datetime, timedelta, timezone

    cfg = config(tmp_path, rgw.store_toml(bucket, prefix="p"), cluster="c")
    rgw.client().create_multipart_upload(Bucket=bucket, Key="p/c/backups/X/base.tar.zst")
    result = expire(load(str(cfg)), now=datetime.now(timezone.utc) + timedelta(days=2))
    assert result["aborted_uploads"] == {"objects": ["c/backups/X/base.tar.zst"]}
    assert rgw.uploads(bucket) == []


# ------------------------------------------------------------- end to end

@pytest.mark.slow
def test_cluster_archives_to_local_and_s3_and_recovers_from_s3_alone(pg, rgw, bucket,
                                                                       tmp_path):
    from test_recover import mark

    env = rgw.credentials_env()
    local = tmp_path / "local-store"
    both = (f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(local)}"\n'
            + rgw.store_toml(bucket, prefix="archive/"))
    cluster = pg.new()
    cfg = config(tmp_path, both, conninfo=cluster.conninfo)
    # archive_command runs with the server's environment: the S3 keys are in it
    cluster.conf(archive_mode="on", archive_command=f"{WALKEEPER} --config {cfg} push %p %f")
    cluster.restart()
    r = run_wk("--config", cfg, "basebackup", "--no-progress", env=env, secrets=env.values())
    assert r.returncode == 0, r.stderr
    cluster.execute("CREATE TABLE t (n int)")
    cluster.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    target = mark(cluster)
    cluster.execute("INSERT INTO t SELECT generate_series(1001, 1500)")
    cluster.wait_archived(cluster.switch_wal())
    r = run_wk("--config", cfg, "dump", "--json", env=env, secrets=env.values())
    assert r.returncode == 0, r.stderr
    r = run_wk("--config", cfg, "check", env=env, secrets=env.values(), timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_wk("--config", cfg, "status", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [s["name"] for s in json.loads(r.stdout)["stores"]] == ["local", "objects"]
    cluster.stop()
    keys = rgw.keys(bucket)
    assert any(k.startswith("archive/s3c/backups/") and k.endswith("backup.json") for k in keys)
    assert any(k.startswith("archive/s3c/wal/") for k in keys)

    shutil.rmtree(local)
    only_s3 = config(tmp_path, rgw.store_toml(bucket, prefix="archive/"),
                     conninfo=cluster.conninfo, name="s3-only.toml")
    r = run_wk("--config", only_s3, "verify-chain", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"]
    listed = json.loads(run_wk("--config", only_s3, "list", "--json", env=env).stdout)
    assert len(listed["backups"]) == 1 and listed["backups"][0]["stored_bytes"]["objects"] > 0
    assert len(listed["dumps"]) == 1
    assert recovered_rows(pg, only_s3, env, tmp_path / "restored", target,
                          "SELECT count(*), min(n), max(n), sum(n) FROM t") == \
        [(1000, 1, 1000, 500500)]


@pytest.mark.slow
def test_sync_moves_a_local_archive_to_s3_and_recovery_from_s3_alone_works(pg, rgw, bucket,
                                                                            tmp_path):
    """The road past one machine: an archive built in a local store only (backup, WAL,
    a dump), copied to S3 by `sync`, then the local store gone: S3 alone verifies and
    recovers to a point in time."""
    from test_recover import archive_all, mark

    env = rgw.credentials_env()
    local = tmp_path / "local-store"
    local_toml = f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(local)}"\n'
    cluster = pg.new()
    one = config(tmp_path, local_toml, conninfo=cluster.conninfo, name="local.toml")
    cluster.conf(archive_mode="on", archive_command=f"{WALKEEPER} --config {one} push %p %f")
    cluster.restart()
    assert run_wk("--config", one, "basebackup", "--no-progress").returncode == 0
    cluster.execute("CREATE TABLE t (n int)")
    cluster.execute("INSERT INTO t SELECT generate_series(1, 700)")
    target = mark(cluster)
    cluster.execute("DROP TABLE t")
    archive_all(cluster)
    assert run_wk("--config", one, "dump").returncode == 0
    archive_all(cluster)
    cluster.stop()
    assert not rgw.keys(bucket)

    both = config(tmp_path, local_toml + rgw.store_toml(bucket, prefix="moved/"),
                  conninfo=cluster.conninfo, name="both.toml")
    r = run_wk("--config", both, "sync", "--to", "objects", "--json", env=env,
               secrets=env.values(), timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] and result["copied"] and {c["to"] for c in result["copied"]} == {"objects"}
    # every stored object (not the stores' own markers and probes) is in S3 now
    stored = {str(p.relative_to(local)) for p in local.rglob("*")
              if p.is_file() and not str(p.relative_to(local)).startswith(".walkeeper/")}
    copied = {k.removeprefix("moved/") for k in rgw.keys(bucket)
              if not k.startswith("moved/.walkeeper/")}
    assert copied == stored, "sync left objects behind"
    r = run_wk("--config", both, "verify-chain", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr

    shutil.rmtree(local)
    only_s3 = config(tmp_path, rgw.store_toml(bucket, prefix="moved/"),
                     conninfo=cluster.conninfo, name="s3-only.toml")
    r = run_wk("--config", only_s3, "verify-chain", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
    listed = json.loads(run_wk("--config", only_s3, "list", "--json", env=env).stdout)
    assert len(listed["backups"]) == 1 and len(listed["dumps"]) == 1
    assert recovered_rows(pg, only_s3, env, tmp_path / "restored", target,
                          "SELECT count(*), min(n), max(n) FROM t") == [(700, 1, 700)]


@pytest.mark.slow
def test_two_concurrent_pushes_of_different_content_one_wins(rgw, bucket, tmp_path):
    env = rgw.credentials_env()
    cfg = config(tmp_path, rgw.store_toml(bucket), extra="[fetch]\nprefetch = 0\n")
    name = "000000010000000000000020"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    segs = [write_segment(a, name), write_segment(b, name)]
    assert segs[0].read_bytes() != segs[1].read_bytes()
    for rnd in range(3):
        rgw.empty_bucket(bucket)
        rgw.client().create_bucket(Bucket=bucket)
        procs = [subprocess.Popen([str(WALKEEPER), "--config", str(cfg), "push", str(s), name],
                                  env=clean_env(env), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for s in segs]
        outs = [p.communicate(timeout=120) for p in procs]
        codes = [p.returncode for p in procs]
        assert sorted(codes) == [0, 1], (codes, outs)
        loser = codes.index(1)
        assert "different content" in outs[loser][1], outs[loser][1]
        winner = segs[codes.index(0)]
        dest = tmp_path / f"fetched{rnd}"
        r = run_wk("--config", cfg, "fetch", name, dest, env=env)
        assert r.returncode == 0, r.stderr
        assert dest.read_bytes() == winner.read_bytes()


@pytest.mark.slow
def test_radosgw_killed_mid_multipart_push(rgw, bucket, tmp_path):
    env = rgw.credentials_env()
    cfg = config(tmp_path, rgw.store_toml(bucket).replace("timeout = 10", "timeout = 5")
                 .replace("retries = 3", "retries = 2"),
                 extra='[fetch]\nprefetch = 0\n[compression]\nalgorithm = "none"\n')
    name = "000000010000000000000004"
    seg = write_segment(tmp_path, name, seg_size=64 << 20)
    final = wal_key("s3c", name, ".raw")
    p = subprocess.Popen([str(WALKEEPER), "--config", str(cfg), "push", str(seg), name],
                         env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    # Until the multipart upload shows: a push that ended first never made one.
    while not rgw.uploads(bucket):
        assert p.poll() is None, ("push ended before a multipart upload started",
                                  p.communicate())
        time.sleep(0.02)
    rgw.kill_radosgw()
    out, err = p.communicate(timeout=90)       # within the store's timeout and retries
    assert p.returncode == 1, err
    assert "not durable" in err and "objects" in err, err
    assert "Traceback" not in err
    rgw.restart()
    assert final not in rgw.keys(bucket)
    r = run_wk("--config", cfg, "push", seg, name, env=env)
    assert r.returncode == 0, r.stderr
    assert rgw.keys(bucket)[final] > 64 << 20
    r = run_wk("--config", cfg, "verify-chain", "--json", env=env)
    report = json.loads(r.stdout)
    assert [x for x in report["problems"] if x["kind"] != "gap"] == [], report
    dest = tmp_path / "back"
    assert run_wk("--config", cfg, "fetch", name, dest, env=env).returncode == 0
    assert dest.read_bytes() == seg.read_bytes()


def _ps_args() -> str:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(out)


@pytest.mark.slow
def test_wrong_secret_missing_bucket_and_stopped_server(rgw, bucket, tmp_path):
    env = rgw.credentials_env()
    secret = rgw.secret_key
    name = "000000010000000000000001"
    seg = write_segment(tmp_path, name)
    dest = tmp_path / "RECOVERYXLOG"
    good = config(tmp_path, rgw.store_toml(bucket), extra="[fetch]\nprefetch = 0\n")
    assert run_wk("--config", good, "push", seg, name, env=env).returncode == 0

    wrong = {**env, "WALKEEPER_S3_SECRET_KEY": "not-the-secret-" + "x" * 24}
    seg2 = write_segment(tmp_path, "000000010000000000000002")
    r = run_wk("--config", good, "push", seg2, "000000010000000000000002", env=wrong,
               secrets=[secret, wrong["WALKEEPER_S3_SECRET_KEY"]])
    assert r.returncode == 1 and "not durable" in r.stderr
    assert "objects" in r.stderr and bucket in r.stderr and "credentials" in r.stderr, r.stderr
    assert "WALKEEPER_S3_SECRET_KEY" in r.stderr           # the fix names the variable
    r = run_wk("--config", good, "fetch", name, dest, env=wrong,
               secrets=[secret, wrong["WALKEEPER_S3_SECRET_KEY"]])
    assert r.returncode == 255 and "credentials" in r.stderr, r.stderr
    assert not dest.exists()

    missing = config(tmp_path, rgw.store_toml("no-such-bucket-here"), name="missing.toml",
                     extra="[fetch]\nprefetch = 0\n")
    r = run_wk("--config", missing, "fetch", name, dest, env=env, secrets=[secret])
    assert r.returncode == 255, r.stderr
    assert "no-such-bucket-here" in r.stderr and "does not exist" in r.stderr, r.stderr
    r = run_wk("--config", missing, "push", seg2, seg2.name, env=env, secrets=[secret])
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr

    r = run_wk("--config", good, "push", seg2, seg2.name, env={}, secrets=[secret])
    assert r.returncode == 3 and "WALKEEPER_S3_ACCESS_KEY" in r.stderr, r.stderr

    rgw.kill_radosgw()
    try:
        seg3 = write_segment(tmp_path, "000000010000000000000003")
        p = subprocess.Popen([str(WALKEEPER), "--config", str(good), "push", str(seg3),
                              seg3.name], env=clean_env(env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = ""
        while p.poll() is None:
            seen += _ps_args()
            time.sleep(0.05)
        out, err = p.communicate()
        assert secret not in seen
        assert p.returncode == 1, err
        assert "objects" in err and "reachable" in err and secret not in err + out, err
        r = run_wk("--config", good, "fetch", name, dest, env=env, secrets=[secret])
        assert r.returncode == 255 and "objects" in r.stderr, r.stderr
        assert "not in the archive" not in r.stderr
        assert not dest.exists()
        r = run_wk("--config", good, "check", env=env, secrets=[secret])
        assert r.returncode != 0
    finally:
        rgw.restart()


@pytest.mark.slow
def test_encryption_on_s3(rgw, bucket, tmp_path):
    env = {**rgw.credentials_env(), PASS_VAR: PASSPHRASE}
    marker = b"S3-PLAINTEXT-MARKER-4f1c"
    cfg = config(tmp_path, rgw.store_toml(bucket),
                 extra=f'[fetch]\nprefetch = 0\n[encryption]\npassphrase_env = "{PASS_VAR}"\n')
    names = ["000000010000000000000001", "000000010000000000000002"]
    segs = []
    for n in names:
        seg = write_segment(tmp_path, n, random=False)
        raw = bytearray(seg.read_bytes())
        for off in range(8192, len(raw), 1 << 20):
            raw[off:off + len(marker)] = marker
        seg.write_bytes(bytes(raw))
        segs.append(seg)
        r = run_wk("--config", cfg, "push", seg, n, env=env, secrets=[PASSPHRASE])
        assert r.returncode == 0, r.stderr
    for key in rgw.keys(bucket):
        assert marker not in rgw.get(bucket, key), key
    dest = tmp_path / "RECOVERYXLOG"
    r = run_wk("--config", cfg, "fetch", names[0], dest, env=env, secrets=[PASSPHRASE])
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == segs[0].read_bytes()

    key = wal_key("s3c", names[1])
    data = bytearray(rgw.get(bucket, key))
    data[len(data) // 2] ^= 0x01
    rgw.client().delete_object(Bucket=bucket, Key=key)
    rgw.put(bucket, key, bytes(data))
    dest.unlink()
    r = run_wk("--config", cfg, "fetch", names[1], dest, env=env, secrets=[PASSPHRASE])
    assert r.returncode >= 126, r.stderr
    assert "corrupt" in r.stderr, r.stderr
    assert not dest.exists()


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_object_size(rgw, bucket, tmp_path):
    """A 320 MiB object streamed through the store: peak RSS of the process stays under
    150 MB (two 16 MiB parts at most in memory: one filling, one being sent)."""
    code = f"""
import os, sys
from walkeeper.stores import open_store
from walkeeper.stores.registry import StoreConfig
cfg = StoreConfig(name="objects", type="s3", endpoint={rgw.endpoint!r}, bucket={bucket!r},
                  access_key_env="WALKEEPER_S3_ACCESS_KEY",
                  secret_key_env="WALKEEPER_S3_SECRET_KEY", timeout=30, retries=3)
store = open_store(cfg)
up = store.begin_put("c/backups/X/base.tar.zst")
chunk = os.urandom(1 << 20)
for i in range(320):
    up.write(chunk[i % 7:] + chunk[:i % 7])
up.commit()
# VmHWM, not ru_maxrss: Linux carries the forking parent's (pytest's) peak across exec
# into ru_maxrss
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""
    r = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True,
                       env=clean_env(rgw.credentials_env()), timeout=600)
    assert r.returncode == 0, r.stderr
    peak_kib = int(r.stdout.split()[-1])
    assert rgw.keys(bucket)["c/backups/X/base.tar.zst"] == 320 << 20
    assert peak_kib < 150_000, f"peak RSS {peak_kib} KiB"
    rgw.client().delete_object(Bucket=bucket, Key="c/backups/X/base.tar.zst")


@pytest.mark.slow
def test_tls_with_the_ca_file_without_it_and_unverified(rgw, bucket):
    good = open_store(s3_cfg(rgw, bucket, endpoint=rgw.tls_endpoint, ca_file=rgw.ca_file,
                             storage_class="STANDARD"))
    good.put_bytes("c/identity.json", b"{}")
    assert read_all(good.open("c/identity.json")) == b"{}"
    with pytest.raises(StoreError) as info:
        open_store(s3_cfg(rgw, bucket, endpoint=rgw.tls_endpoint)).open("c/identity.json")
    assert "ca_file" in str(info.value) and "TLS" in str(info.value), info.value
    loose = open_store(s3_cfg(rgw, bucket, endpoint=rgw.tls_endpoint, verify_tls=False))
    assert read_all(loose.open("c/identity.json")) == b"{}"
