"""expire end to end: a real cluster archiving through walkeeper, several base backups
and dumps with WAL between them, then the retention policy applied to the store."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from walkeeper.stores.local_client import LocalStore
from walkeeper.wal import Segment, format_lsn, parse_wal_name
from conftest import make_config
from storeroot import root as store_root

CLUSTER = "exp"
SEG = 16 << 20
RETENTION = "[retention]\nfull_count = 2\ndaily = 0\nweekly = 0\nmonthly = 0\nyearly = 0\n"


def write_config(tmp_path, cluster, store: Path) -> Path:
    return make_config(tmp_path, cluster=CLUSTER, conninfo=cluster.conninfo, store=store,
                       tail=RETENTION)


def ok(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.lstrip().startswith("{") else r.stdout


def work(cluster, n: int = 2) -> None:
    """n segments of work, switched out and archived."""
    for _ in range(n):
        cluster.execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        last = cluster.switch_wal()
    cluster.wait_archived(last)


def now_text(cluster) -> str:
    return cluster.scalar("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USOF')")


def files(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}


def wal_files(store: Path) -> dict[str, str]:
    """WAL file name (without codec suffix) -> path in the store."""
    out = {}
    for p in (store / CLUSTER / "wal").rglob("*"):
        if p.is_file() and not p.name.startswith(".tmp-"):
            out[p.name.rsplit(".", 1)[0] if p.name.endswith((".zst", ".raw")) else p.name] = \
                str(p.relative_to(store))
    return out


def position(wal_name: str) -> int:
    return Segment.parse(wal_name[:24]).number(SEG)


@pytest.fixture
def archive(pg, wk, tmp_path):
    """Four backups with WAL between them, three dumps, and WAL after the last backup."""
    cluster = pg.new()
    store = tmp_path / "store"
    cfg = write_config(tmp_path, cluster, store)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    cluster.execute("CREATE TABLE t (n int)")
    backups, between = [], []
    for i in range(4):
        work(cluster)
        if i == 3:
            time.sleep(1.1)
            between.append(now_text(cluster))       # after backup 3 stopped, before 4 starts
            time.sleep(1.1)
        backups.append(ok(wk("--config", cfg, "basebackup", "--no-progress", "--json",
                             timeout=120)))
    dumps = [ok(wk("--config", cfg, "dump", "--json")) for _ in range(3)]
    work(cluster)
    yield cluster, cfg, store, backups, dumps, between
    cluster.stop()


def test_expire_keeps_exactly_what_the_policy_says(wk, tmp_path, archive):
    cluster, cfg, store, backups, dumps, (after_third,) = archive
    ids = [b["id"] for b in backups]
    kept, gone = ids[2:], ids[:2]
    # Only the third and fourth backups survive: the target between them is reachable
    # now (from the third) ...
    plan = tmp_path / "plan"
    r = wk("--config", cfg, "recover", "--pgdata", plan, "--target-time", after_third,
           "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backup"] == ids[2], r.stderr
    # ... and a time before the third's stop is reachable from the second only.
    early = backups[1]["stop_time"]
    assert ok(wk("--config", cfg, "recover", "--pgdata", plan, "--target-time", early,
                 "--dry-run", "--json"))["backup"] == ids[1]

    before = files(store)
    dry = ok(wk("--config", cfg, "expire", "--dry-run", "--json"))
    assert files(store) == before, "a dry run deleted something"
    assert dry["dry_run"] is True
    assert dry["kept"] == [{"id": ids[3], "reasons": ["newest", "full_count"]},
                           {"id": ids[2], "reasons": ["full_count"]}]
    assert dry["deleted_backups"] == gone
    assert dry["deleted_dumps"] == [dumps[0]["id"]]
    cut = backups[2]["start_wal"]
    assert dry["wal_cut"] == {"1": cut}
    below = {n: p for n, p in wal_files(store).items()
             if not n.endswith(".history") and position(n) < position(cut)}
    assert below and dry["deleted_wal"] == len(below)
    text = ok(wk("--config", cfg, "expire", "--dry-run"))
    assert "would delete" in text and all(i in text for i in ids)
    assert files(store) == before

    done = ok(wk("--config", cfg, "expire", "--json"))
    assert {k: v for k, v in done.items() if k != "dry_run"} == \
        {k: v for k, v in dry.items() if k != "dry_run"} and done["dry_run"] is False

    listed = ok(wk("--config", cfg, "list", "--json"))
    assert [b["id"] for b in listed["backups"]] == kept
    assert listed["incomplete_backups"] == []
    assert sorted(d["id"] for d in listed["dumps"]) == sorted(d["id"] for d in dumps[1:])
    after = files(store)
    for i in gone:
        assert not any(f"/backups/{i}/" in f for f in after)
    assert not any(f"/dumps/{dumps[0]['id']}/" in f for f in after)
    # WAL below the oldest kept backup's start is gone; everything else is intact.
    remaining = wal_files(store)
    assert not set(below) & set(remaining)
    assert after == before - set(below.values()) - {
        f for f in before if any(f"/backups/{i}/" in f for i in gone)
        or f"/dumps/{dumps[0]['id']}/" in f}
    assert min(position(n) for n in remaining) == position(cut)
    assert any(parse_wal_name(n).kind.value == "backup" for n in remaining)

    # Recovery to before the oldest kept backup's stop is refused; the rest plans fine.
    r = wk("--config", cfg, "recover", "--pgdata", plan, "--target-time", early, "--dry-run")
    assert r.returncode == 1, r.stderr
    assert not plan.exists()
    assert ok(wk("--config", cfg, "recover", "--pgdata", plan, "--target-time", after_third,
                 "--dry-run", "--json"))["backup"] == ids[2]
    assert ok(wk("--config", cfg, "recover", "--pgdata", plan, "--latest", "--dry-run",
                 "--json"))["backup"] == ids[3]

    # Run again: nothing more to do.
    again = ok(wk("--config", cfg, "expire", "--json"))
    assert again["deleted_backups"] == [] and again["deleted_wal"] == 0
    assert again["deleted_dumps"] == [] and files(store) == after


def test_verify_chain_is_clean_after_expire(wk, archive):
    cluster, cfg, store, backups, dumps, _ = archive
    ok(wk("--config", cfg, "expire"))
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["windows"]


def test_interrupted_expire_is_never_listed_complete_and_is_finished_later(wk, tmp_path, archive):
    cluster, cfg, store, backups, dumps, _ = archive
    first = store / CLUSTER / "backups" / backups[0]["id"]
    # What an expire killed right after deleting the metadata leaves behind ...
    (first / "backup.json").unlink()
    listed = ok(wk("--config", cfg, "list", "--json"))
    assert backups[0]["id"] not in [b["id"] for b in listed["backups"]]
    assert listed["incomplete_backups"] == [backups[0]["id"]]
    # ... is left alone while it could be a basebackup at work (written recently) ...
    dry = ok(wk("--config", cfg, "expire", "--dry-run", "--json"))
    assert dry["deleted_incomplete"] == []
    # ... and removed once it is old, by the next expire.
    for p in first.iterdir():
        os.utime(p, (0, 0))
    done = ok(wk("--config", cfg, "expire", "--json"))
    assert done["deleted_incomplete"] == [backups[0]["id"]]
    assert not first.exists()            # its objects, and the emptied directory
    assert ok(wk("--config", cfg, "list", "--json"))["incomplete_backups"] == []


def test_expire_refuses_when_a_store_cannot_be_read(wk, tmp_path, archive):
    cluster, cfg, store, backups, dumps, _ = archive
    dead = tmp_path / "dead"
    dead.write_text("not a directory")
    cfg.write_text(cfg.read_text().replace(
        "[retention]", f'[[stores]]\nname = "dead"\ntype = "local"\npath = "{dead}"\n'
                       "[retention]"))
    before = files(store)
    r = wk("--config", cfg, "expire")
    assert r.returncode == 1 and "nothing was deleted" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and files(store) == before


# ---------------------------------------------------------------- several stores, no server

def fake_archive(root: Path, segnos, backups: dict[str, int], suffix: str = ".zst") -> None:
    """WAL objects (names only matter to the catalog) and backups {id: start segment}."""
    store = LocalStore("x", str(store_root(root)))
    for n in segnos:
        name = Segment.from_number(1, n, SEG).name
        store.put_bytes(f"{CLUSTER}/wal/{name[:16]}/{name}{suffix}", b"wal")
    store.put_bytes(f"{CLUSTER}/wal/00000002.history{suffix}", b"1\t0/FF000000\tx\n")
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for bid, n in backups.items():
        t = t0 + timedelta(hours=n)
        doc = dict(id=bid, label="", start_time=t.isoformat(), stop_time=t.isoformat(),
                   start_lsn=format_lsn(n * SEG + 40), stop_lsn=format_lsn(n * SEG + 400),
                   timeline=1, start_wal=Segment.from_number(1, n, SEG).name,
                   stop_wal=Segment.from_number(1, n, SEG).name, pg_version=150000,
                   system_identifier="1", wal_segment_size=SEG, database_bytes=1)
        store.put_bytes(f"{CLUSTER}/backups/{bid}/base.tar{suffix}", b"tar")
        store.put_bytes(f"{CLUSTER}/backups/{bid}/backup.json", json.dumps(doc).encode())


def test_every_store_deletes_what_it_holds(wk, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # Ids sort against the stop order on purpose: "z" is the oldest backup.
    fake_archive(a, range(1, 20), {"z": 2, "m": 6, "b": 10, "a": 14})
    fake_archive(b, range(4, 20), {"m": 6, "a": 14}, suffix=".raw")   # another codec
    cfg = tmp_path / "two.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[[stores]]\nname = "a"\ntype = "local"\npath = "{store_root(a)}"\n'
                   f'[[stores]]\nname = "b"\ntype = "local"\npath = "{store_root(b)}"\n'
                   + RETENTION)
    done = ok(wk("--config", cfg, "expire", "--json"))
    assert [k["id"] for k in done["kept"]] == ["a", "b"]
    assert done["deleted_backups"] == ["z", "m"]
    assert done["deleted_wal"] == 9 and done["wal_cut"] == {"1": Segment.from_number(1, 10, SEG).name}
    for root, first in ((a, 10), (b, 10)):
        names = wal_files(root)
        assert min(position(n) for n in names if not n.endswith(".history")) == first
        assert "00000002.history" in names
        assert not any(p.is_file() for p in (root / CLUSTER / "backups").glob("[zm]/*"))
    assert sorted(p.name for p in (b / CLUSTER / "backups").glob("*/*")) == ["backup.json",
                                                                             "base.tar.raw"]
    listed = ok(wk("--config", cfg, "list", "--json"))
    assert [x["id"] for x in listed["backups"]] == ["b", "a"]
    assert listed["incomplete_backups"] == []
