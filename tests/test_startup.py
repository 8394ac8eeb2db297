"""PostgreSQL starts walkeeper once per WAL segment, so the fast paths of push (a
segment the read-ahead pusher already stored) and fetch (a segment served from the
prefetch spool) must import nothing they do not use. Each is run once more with
`python -S -X importtime` (no site: the test venv's editable install would import
pathlib, re and collections itself) and its imports are checked by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env, make_config
from test_prefetch import archive, entries, recovery_dir, wait_cleaned, wait_for  # noqa: F401
from test_readahead import make_ready, names, pg_wal, pusher_gone, records  # noqa: F401
from storeroot import root as store_root

REPO = Path(__file__).resolve().parents[1]

# Each costs a fast path 0.3-25 ms of start-up, for nothing it needs.
HEAVY = {"collections", "re", "tomllib", "enum", "json", "typing", "dataclasses", "inspect",
         "threading", "concurrent", "pathlib", "datetime", "hashlib", "zstandard",
         "cryptography", "paramiko", "psycopg", "click", "botocore", "boto3", "urllib3"}


# walkeeper's own modules a served call does not need: the store drivers, the object
# format, storing and finding objects (about 3 M instructions of a ~70 M call).
STORE_PATH = ("walkeeper.format", "walkeeper.stores.base", "walkeeper.stores.local_client",
              "walkeeper.stores.sftp_client", "walkeeper.stores.s3_client",
              "walkeeper.archiving.wal_store", "walkeeper.archiving.transfer")


def store_path_modules(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.startswith(STORE_PATH))


def imports_of(*args: str, env: dict) -> set[str]:
    """Names of the modules `bin/walkeeper ARGS` imports: top-level names, and
    walkeeper's own modules in full."""
    r = subprocess.run([sys.executable, "-S", "-X", "importtime", str(REPO / "bin" / "walkeeper"),
                        *args], env=clean_env({k: str(v) for k, v in env.items()}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("import time:")]
    assert lines, r.stderr
    full = {x.rsplit("|", 1)[1].strip() for x in lines[1:]}
    return {m.split(".")[0] for m in full} | {m for m in full if m.startswith("walkeeper.")}


def test_a_fetch_served_from_the_spool_imports_only_what_it_uses(wk, tmp_path, archive):
    cfg, content = archive
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    assert wk("--config", cfg, "fetch", segs[0], dest).returncode == 0
    wait_for(lambda: segs[1] in [e[:24] for e in entries(tmp_path)], what="the spool")
    mods = imports_of("-v", "--config", str(cfg), "fetch", segs[1], str(dest),
                      env={"XDG_STATE_HOME": tmp_path / "xdg"})
    assert dest.read_bytes() == content[segs[1]]
    assert "walkeeper" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)
    assert store_path_modules(mods) == []
    wait_cleaned(tmp_path)


@pytest.mark.parametrize("configured", ["environment", "file"])
def test_a_push_read_ahead_already_did_imports_only_what_it_uses(wk, tmp_path, pg_wal, configured):
    if configured == "file":         # [[stores]] tables: the store types' declarations load
        args = ("--config", str(make_config(tmp_path, cluster="default",
                                            store=tmp_path / "store")))
        env = {}
    else:
        args = ()
        env = {"BACKUP_DIR": store_root(tmp_path / "store"),
               "WALKEEPER_STATE_DIR": tmp_path / "state"}
    segs = names("000000010000000000000010", 3)
    make_ready(pg_wal, segs)
    assert wk(*args, "push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    pusher_gone(tmp_path)
    assert segs[1] in records(tmp_path)
    mods = imports_of(*args, "push", str(pg_wal / segs[1]), segs[1], env=env)
    assert segs[1] not in records(tmp_path)      # the record was used
    assert not mods & HEAVY, sorted(mods & HEAVY)
    assert store_path_modules(mods) == []


@pytest.mark.slow
def test_s3_fast_paths_never_import_the_s3_client(wk, tmp_path, pg_wal, rgw):
    """With an S3 store (botocore costs a process 0.2-0.35 s), the background pusher
    and the prefetcher hold the client for a burst; the served calls never load it."""
    bucket = rgw.new_bucket()
    creds = rgw.credentials_env()
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "pf"\nstate_dir = "{tmp_path / "state"}"\n'
                   + rgw.store_toml(bucket))
    segs = names("000000010000000000000010", 4)
    make_ready(pg_wal, segs)
    r = wk("--config", cfg, "push", pg_wal / segs[0], segs[0], env=creds)
    assert r.returncode == 0, r.stderr
    pusher_gone(tmp_path, "pf")
    assert segs[1] in records(tmp_path, "pf")
    mods = imports_of("--config", str(cfg), "push", str(pg_wal / segs[1]), segs[1], env=creds)
    assert segs[1] not in records(tmp_path, "pf")
    assert not mods & HEAVY, sorted(mods & HEAVY)
    for n in segs[2:]:
        assert wk("--config", cfg, "push", pg_wal / n, n, env=creds).returncode == 0
    pusher_gone(tmp_path, "pf")

    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    r = wk("--config", cfg, "fetch", segs[0], dest, env=creds)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: segs[1] in [e[:24] for e in entries(tmp_path)], what="the spool")
    mods = imports_of("-v", "--config", str(cfg), "fetch", segs[1], str(dest),
                      env={**creds, "XDG_STATE_HOME": tmp_path / "xdg"})
    assert dest.read_bytes() == (pg_wal / segs[1]).read_bytes()
    assert not mods & HEAVY, sorted(mods & HEAVY)
    wait_cleaned(tmp_path)
    rgw.empty_bucket(bucket)
