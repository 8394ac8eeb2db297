"""Read-ahead push: a push for segment N inside pg_wal also stores the segments already
marked .ready, records each completion in state_dir, and the later push of such a
segment returns at once, but only for the very same file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from walfiles import segment_bytes, write_segment
from walkeeper.wal import Segment

FIRST = "000000010000000000000010"


def names(first: str, count: int) -> list[str]:
    seg = Segment.parse(first)
    out = []
    for _ in range(count):
        out.append(seg.name)
        seg = seg.next(16 << 20)
    return out


@pytest.fixture
def pg_wal(tmp_path) -> Path:
    d = tmp_path / "pg_wal"
    (d / "archive_status").mkdir(parents=True)
    return d


def make_ready(pg_wal: Path, segs: list[str]) -> None:
    for n in segs:
        write_segment(pg_wal, n)
        (pg_wal / "archive_status" / f"{n}.ready").touch()


def archived(pg_wal: Path, name: str) -> None:
    """What PostgreSQL does after archive_command succeeded."""
    os.rename(pg_wal / "archive_status" / f"{name}.ready",
              pg_wal / "archive_status" / f"{name}.done")


def objects(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.zst") if not p.name.startswith(".tmp-"))


def records(tmp_path: Path, cluster: str = "default") -> list[str]:
    d = tmp_path / "state" / "readahead" / cluster
    return sorted(p.name[:-5] for p in d.glob("*.json")) if d.exists() else []


@pytest.fixture
def env(tmp_path):
    return {"BACKUP_DIR": tmp_path / "store", "WALKEEPER_STATE_DIR": tmp_path / "state"}


def set_mode(root: Path, mode: int) -> None:
    for d, _, _ in os.walk(root):
        os.chmod(d, mode)


# ------------------------------------------------------------------ synthetic

def test_ready_segments_are_pushed_and_recorded(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 6)
    make_ready(pg_wal, segs)
    r = wk("push", pg_wal / segs[0], segs[0], env=env)
    assert r.returncode == 0, r.stderr
    assert objects(tmp_path / "store") == [f"{n}.zst" for n in segs]
    assert records(tmp_path) == segs[1:]
    rec = json.loads((tmp_path / "state/readahead/default" / f"{segs[1]}.json").read_text())
    st = (pg_wal / segs[1]).stat()
    assert rec["name"] == segs[1] and rec["file"]["ino"] == st.st_ino
    assert rec["file"]["size"] == st.st_size and rec["file"]["mtime_ns"] == st.st_mtime_ns
    assert len(rec["sha256"]) == 64
    mode = stat.S_IMODE((tmp_path / "state/readahead/default" / f"{segs[1]}.json").stat().st_mode)
    assert mode == 0o600
    archived(pg_wal, segs[0])

    # The store cannot be written any more: a recorded segment is still done at
    # once, without touching it; one that is not recorded fails.
    set_mode(tmp_path / "store", 0o500)
    try:
        r = wk("-v", "push", pg_wal / segs[1], segs[1], env=env)
        assert r.returncode == 0, r.stderr
        assert "read-ahead" in r.stderr
        assert segs[1] not in records(tmp_path)          # consumed
        archived(pg_wal, segs[1])
        late = names(segs[-1], 2)[1]
        write_segment(pg_wal, late)                        # not ready: never read ahead
        r = wk("push", pg_wal / late, late, env=env)
        assert r.returncode == 1
        assert "not durable" in r.stderr
        # the same recorded segment asked again (PostgreSQL crashed before .done):
        # the record is gone, the full push finds the same content stored
        r = wk("push", pg_wal / segs[1], segs[1], env=env)
        assert r.returncode == 0, r.stderr
    finally:
        set_mode(tmp_path / "store", 0o700)
    # PostgreSQL never sees a .done it did not write
    assert sorted(p.name for p in (pg_wal / "archive_status").iterdir()) == sorted(
        [f"{n}.done" for n in segs[:2]] + [f"{n}.ready" for n in segs[2:]])


def test_a_record_is_only_trusted_for_the_same_file(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 4)
    make_ready(pg_wal, segs)
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    archived(pg_wal, segs[0])
    assert records(tmp_path) == segs[1:]
    stored = sorted((tmp_path / "store").rglob(f"{segs[1]}.zst"))[0]
    before = stored.stat().st_mtime_ns

    # Different content under the recorded name: not trusted, the full push
    # compares with the stored copy and refuses.
    (pg_wal / segs[1]).write_bytes(segment_bytes(segs[1]))
    r = wk("push", pg_wal / segs[1], segs[1], env=env)
    assert r.returncode == 1
    assert "different content" in r.stderr
    assert stored.stat().st_mtime_ns == before
    assert segs[1] not in records(tmp_path)

    # The same content in a new file (another inode): not trusted either, and the
    # full push finds the identical stored copy.
    copy = pg_wal / f"{segs[2]}.copy"
    copy.write_bytes((pg_wal / segs[2]).read_bytes())
    os.replace(copy, pg_wal / segs[2])
    r = wk("-v", "push", pg_wal / segs[2], segs[2], env=env)
    assert r.returncode == 0, r.stderr
    assert "stored by read-ahead" not in r.stderr
    assert "same content" in r.stderr

    # A record naming another segment is not trusted.
    rec_dir = tmp_path / "state/readahead/default"
    rec = json.loads((rec_dir / f"{segs[3]}.json").read_text())
    rec["name"] = segs[2]
    (rec_dir / f"{segs[3]}.json").write_text(json.dumps(rec))
    r = wk("-v", "push", pg_wal / segs[3], segs[3], env=env)
    assert r.returncode == 0, r.stderr
    assert "stored by read-ahead" not in r.stderr


def test_read_ahead_failures_do_not_fail_the_push(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 4)
    make_ready(pg_wal, segs)
    # segs[1] is misnamed WAL (another segment's header); segs[2] conflicts with the store
    (pg_wal / segs[1]).write_bytes(segment_bytes(segs[3]))
    other = tmp_path / "other"
    other.write_bytes(segment_bytes(segs[2]))
    assert wk("push", other, segs[2], env=env).returncode == 0
    r = wk("push", pg_wal / segs[0], segs[0], env=env)
    assert r.returncode == 0, r.stderr
    assert records(tmp_path) == [segs[3]]
    assert f"read-ahead of {segs[1]} failed" in r.stderr
    r = wk("push", pg_wal / segs[1], segs[1], env=env)
    assert r.returncode == 1 and "does not match its name" in r.stderr
    r = wk("push", pg_wal / segs[2], segs[2], env=env)
    assert r.returncode == 1 and "different content" in r.stderr
    assert wk("push", pg_wal / segs[3], segs[3], env=env).returncode == 0


def test_no_read_ahead_outside_pg_wal_or_with_one_worker(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 3)
    make_ready(pg_wal, segs)
    cfg = tmp_path / "one.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[push]\nparallel = 1\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{tmp_path / "store"}"\n')
    assert wk("--config", cfg, "push", pg_wal / segs[0], segs[0]).returncode == 0
    assert objects(tmp_path / "store") == [f"{segs[0]}.zst"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_segment(elsewhere, segs[1])
    assert wk("push", elsewhere / segs[1], segs[1], env=env).returncode == 0
    assert objects(tmp_path / "store") == [f"{n}.zst" for n in segs[:2]]
    assert records(tmp_path) == []


def test_records_of_segments_no_longer_ready_are_pruned(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 6)
    make_ready(pg_wal, segs[:3])
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    assert records(tmp_path) == segs[1:3]
    # PostgreSQL archived segs[1] without asking us (say, after a crash and restart)
    archived(pg_wal, segs[0])
    archived(pg_wal, segs[1])
    assert wk("push", pg_wal / segs[2], segs[2], env=env).returncode == 0
    assert records(tmp_path) == [segs[1]]    # segs[2] consumed; the fast path scans nothing
    archived(pg_wal, segs[2])
    make_ready(pg_wal, segs[3:])
    assert wk("push", pg_wal / segs[3], segs[3], env=env).returncode == 0
    assert records(tmp_path) == segs[4:]     # segs[1] pruned: no longer ready


# --------------------------------------------------------------- real cluster

def test_cluster_archives_a_backlog_through_read_ahead(pg, wk, tmp_path):
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "ra"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{tmp_path / "store"}"\n')
    # Archiving configured but no command yet: segments pile up as .ready.
    cluster = pg.new(archive_mode="on", archive_command="")
    cluster.execute("CREATE TABLE t (id int, pad text)")
    made = []
    for i in range(10):
        cluster.execute(f"INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, {200 * i}) g")
        made.append(cluster.switch_wal())
    status = cluster.pgdata / "pg_wal" / "archive_status"
    ready = sorted(p.name for p in status.glob("*.ready"))
    assert len(ready) >= 10
    cluster.conf(archive_command=f"{wk.path} -v --config {cfg} push %p %f")
    cluster.reload()
    stats = cluster.wait_archived(made[-1], timeout=60)
    assert stats["failed_count"] == 0, stats
    stored = objects(tmp_path / "store")
    for n in made:
        assert f"{n}.zst" in stored
    log = cluster.log.read_text()
    assert log.count("was stored by read-ahead") >= 5, log[-3000:]
    # every record was used by PostgreSQL's own call, and none is left behind
    assert records(tmp_path, "ra") == []
    assert not list(status.glob("*.ready"))
    # the content is right: fetch them back and compare with pg_wal
    for n in made:
        src = cluster.pgdata / "pg_wal" / n
        if not src.exists():
            continue
        dest = tmp_path / "back" / n
        dest.parent.mkdir(exist_ok=True)
        r = wk("--config", cfg, "fetch", n, dest)
        assert r.returncode == 0, r.stderr
        assert dest.read_bytes() == src.read_bytes()
    cluster.stop()
