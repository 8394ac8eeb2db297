"""Read-ahead push: a push for segment N inside pg_wal makes sure a detached background
pusher stores the other segments marked .ready and records each completion in
state_dir; the later push of such a segment returns at once, but only for the very
same file. Each segment is claimed (an flock) by whoever stores it: a foreground push
of a segment the pusher is storing waits for it and takes its record.

The background pusher is observed from outside, as an operator would: its lock file
and pid, the kernel's table of file locks (/proc/locks), SIGSTOP and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import clean_env
from walfiles import segment_bytes, write_segment
from walkeeper.wal import Segment
from storeroot import root as store_root

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


def temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".tmp-*"))


def rec_dir(tmp_path: Path, cluster: str = "default") -> Path:
    return tmp_path / "state" / "readahead" / cluster


def records(tmp_path: Path, cluster: str = "default") -> list[str]:
    d = rec_dir(tmp_path, cluster)
    return sorted(p.name[:-5] for p in d.glob("*.json")) if d.exists() else []


def failures(tmp_path: Path) -> list[dict]:
    path = tmp_path / "state" / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def env(tmp_path):
    return {"BACKUP_DIR": store_root(tmp_path / "store"), "WALKEEPER_STATE_DIR": tmp_path / "state"}


def set_mode(root: Path, mode: int) -> None:
    for d, _, _ in os.walk(root):
        os.chmod(d, mode)


# ------------------------------------------------- watching the background pusher

def wait_for(cond, timeout: float = 60.0, what: str = "condition", every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _lock_id(path: Path) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def flocks(path: Path) -> tuple[list[int], list[int]]:
    """(pids holding, pids waiting for) an flock on `path`, from the kernel's
    /proc/locks. A lock taken before a fork shows the pid that took it."""
    ident = _lock_id(path)
    held, waiting = [], []
    if ident is None:
        return held, waiting
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            blocked = fields[1] == "->"
            if blocked:
                fields = fields[1:]
            if fields[1] == "FLOCK" and fields[5] == ident:
                (waiting if blocked else held).append(int(fields[4]))
    return held, waiting


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return False
    return data[data.rfind(")") + 2:].split()[0] != "Z"


def pusher_pid(tmp_path: Path, cluster: str = "default") -> int:
    lock = rec_dir(tmp_path, cluster) / ".pusher"
    return wait_for(lambda: lock.exists() and lock.read_text().strip().isdigit()
                    and int(lock.read_text()), what="the pusher's pid in its lock file")


def pusher_gone(tmp_path: Path, cluster: str = "default", timeout: float = 60.0) -> None:
    """Wait until no background pusher runs: its lock is free and its pid is gone."""
    lock = rec_dir(tmp_path, cluster) / ".pusher"
    if not lock.exists():
        return
    wait_for(lambda: not flocks(lock)[0], timeout, "the background pusher to exit")
    text = lock.read_text().strip()
    if text.isdigit():
        wait_for(lambda: not alive(int(text)), 10, f"pusher pid {text} to end")


def claimed_by(tmp_path: Path, pid: int, cluster: str = "default") -> list[str]:
    """Segments whose claim `pid` holds right now."""
    d = rec_dir(tmp_path, cluster)
    return sorted(p.name[:-6] for p in d.glob("*.claim") if pid in flocks(p)[0])


@pytest.fixture(autouse=True)
def no_pusher_left(tmp_path):
    """Every test ends with its pushers gone: none is left behind, and none writes
    into a directory pytest deletes."""
    yield
    base = tmp_path / "state" / "readahead"
    for d in (base.iterdir() if base.exists() else []):
        pusher_gone(tmp_path, d.name)
    for d in (base.iterdir() if base.exists() else []):
        assert not list(d.glob("*.claim")) or not any(flocks(p)[0] for p in d.glob("*.claim"))


def catch_pusher_mid_push(tmp_path: Path, store: Path, segs: list[str]) -> tuple[int, str]:
    """SIGSTOP the background pusher while it holds the claim of a segment whose
    upload is under way (a temporary object, no final one, no record): (pid, name)."""
    pid = pusher_pid(tmp_path)

    def caught():
        for name in claimed_by(tmp_path, pid):
            if not any(t.endswith(f"-{name}.zst") for t in temporaries(store)):
                continue
            os.kill(pid, signal.SIGSTOP)
            # frozen now: check again, it may have moved on in between
            if (name in claimed_by(tmp_path, pid) and name not in records(tmp_path)
                    and f"{name}.zst" not in objects(store)
                    and any(t.endswith(f"-{name}.zst") for t in temporaries(store))):
                return name
            os.kill(pid, signal.SIGCONT)
        return None

    name = wait_for(caught, 60, "the pusher in the middle of an upload", every=0.001)
    return pid, name


# ------------------------------------------------------------------ synthetic

def test_the_background_pusher_stores_ready_segments_and_records_them(wk, tmp_path, env,
                                                                      pg_wal):
    segs = names(FIRST, 6)
    make_ready(pg_wal, segs)
    r = wk("push", pg_wal / segs[0], segs[0], env=env)
    assert r.returncode == 0, r.stderr
    assert f"{segs[0]}.zst" in objects(tmp_path / "store")
    pid = pusher_pid(tmp_path)
    pusher_gone(tmp_path)
    assert not alive(pid)
    assert objects(tmp_path / "store") == [f"{n}.zst" for n in segs]
    assert temporaries(tmp_path / "store") == []
    # segs[0] too: the foreground records what it stored itself while a pusher ran,
    # so that the pusher never stores it again before PostgreSQL marks it .done
    assert records(tmp_path) == segs
    d = rec_dir(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == [".pusher"] + [f"{n}.json" for n in segs]
    rec = json.loads((d / f"{segs[1]}.json").read_text())
    st = (pg_wal / segs[1]).stat()
    assert rec["name"] == segs[1] and rec["file"]["ino"] == st.st_ino
    assert rec["file"]["size"] == st.st_size and rec["file"]["mtime_ns"] == st.st_mtime_ns
    assert len(rec["sha256"]) == 64
    assert stat.S_IMODE((d / f"{segs[1]}.json").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "state" / "last_push.json").read_text())["wal"] in segs
    archived(pg_wal, segs[0])

    # The store cannot be written any more: a recorded segment is still done at
    # once, without touching it; one that is not recorded fails.
    set_mode(tmp_path / "store", 0o500)
    try:
        r = wk("-v", "push", pg_wal / segs[1], segs[1], env=env)
        assert r.returncode == 0, r.stderr
        assert "stored by read-ahead" in r.stderr
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
        pusher_gone(tmp_path)
    finally:
        set_mode(tmp_path / "store", 0o700)
    # PostgreSQL never sees a .done it did not write, nor anything else in pg_wal
    assert sorted(p.name for p in (pg_wal / "archive_status").iterdir()) == sorted(
        [f"{n}.done" for n in segs[:2]] + [f"{n}.ready" for n in segs[2:]])
    assert sorted(p.name for p in pg_wal.iterdir()) == sorted(["archive_status", late] + segs)


def test_the_foreground_waits_for_the_claim_the_pusher_holds(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 12)
    make_ready(pg_wal, segs)
    r = wk("push", pg_wal / segs[0], segs[0], env=env)
    assert r.returncode == 0, r.stderr
    pid, name = catch_pusher_mid_push(tmp_path, tmp_path / "store", segs)
    try:
        # PostgreSQL asks for that very segment while the pusher is frozen with it.
        proc = subprocess.Popen(
            [str(wk.path), "-v", "push", str(pg_wal / name), name],
            env=clean_env({"XDG_STATE_HOME": tmp_path / "xdg", **env}),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()
        assert f"the background pusher is storing {name}; waiting for it" in line, line
        claim = rec_dir(tmp_path) / f"{name}.claim"
        wait_for(lambda: proc.pid in flocks(claim)[1], 30, "the push to wait on the claim")
        assert proc.poll() is None
    finally:
        os.kill(pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, line + err
    assert f"{name} was stored by read-ahead" in err, line + err
    assert "stored " + name + " in" not in err          # not stored a second time
    assert name not in records(tmp_path)                 # consumed
    pusher_gone(tmp_path)
    assert objects(tmp_path / "store") == [f"{n}.zst" for n in segs]


def test_a_record_is_only_trusted_for_the_same_file(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 4)
    make_ready(pg_wal, segs)
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    pusher_gone(tmp_path)
    archived(pg_wal, segs[0])
    assert records(tmp_path) == segs
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
    # That push may have started a pusher for the ready segments: let it finish, or it
    # could record the replaced file below before the push this test watches.
    pusher_gone(tmp_path)

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
    d = rec_dir(tmp_path)
    rec = json.loads((d / f"{segs[3]}.json").read_text())
    rec["name"] = segs[2]
    (d / f"{segs[3]}.json").write_text(json.dumps(rec))
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
    assert r.stderr == ""                  # the pusher never writes to PostgreSQL's log
    pusher_gone(tmp_path)
    assert records(tmp_path) == [segs[0], segs[3]]
    # what the pusher could not store is in the failure log, for `status`
    failed = {f["target"]: f for f in failures(tmp_path)}
    assert set(failed) == {segs[1], segs[2]}
    assert all(f["command"] == "push-readahead" for f in failed.values())
    assert "does not match its name" in failed[segs[1]]["reason"]
    assert "different content" in failed[segs[2]]["reason"]
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
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(tmp_path / "store")}"\n')
    assert wk("--config", cfg, "push", pg_wal / segs[0], segs[0]).returncode == 0
    assert objects(tmp_path / "store") == [f"{segs[0]}.zst"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_segment(elsewhere, segs[1])
    assert wk("push", elsewhere / segs[1], segs[1], env=env).returncode == 0
    assert objects(tmp_path / "store") == [f"{n}.zst" for n in segs[:2]]
    assert records(tmp_path) == []
    assert not (rec_dir(tmp_path) / ".pusher").exists()     # no pusher was ever started


def test_stale_records_and_claims_are_pruned(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 6)
    make_ready(pg_wal, segs[:3])
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    pusher_gone(tmp_path)
    assert records(tmp_path) == segs[:3]
    # PostgreSQL archived segs[1] without asking us (say, after a crash and restart)
    archived(pg_wal, segs[0])
    archived(pg_wal, segs[1])
    assert wk("push", pg_wal / segs[2], segs[2], env=env).returncode == 0
    # segs[2] consumed; the fast path scans nothing
    assert records(tmp_path) == [segs[0], segs[1]]
    archived(pg_wal, segs[2])
    # a claim left by a pusher killed long ago
    (rec_dir(tmp_path) / f"{segs[1]}.claim").touch()
    make_ready(pg_wal, segs[3:])
    assert wk("push", pg_wal / segs[3], segs[3], env=env).returncode == 0
    pusher_gone(tmp_path)
    assert records(tmp_path) == segs[3:]     # segs[0] and segs[1] pruned: no longer ready
    assert not list(rec_dir(tmp_path).glob("*.claim"))


def test_a_pusher_killed_mid_push_leaves_nothing_taken_as_stored(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 12)
    make_ready(pg_wal, segs)
    store = tmp_path / "store"
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    pid, name = catch_pusher_mid_push(tmp_path, store, segs)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 30, "the killed pusher to end")
    # its threads end a moment after its main thread: then the kernel drops its locks
    wait_for(lambda: not flocks(rec_dir(tmp_path) / ".pusher")[0], 30, "the lock to be free")
    assert claimed_by(tmp_path, pid) == []
    # no record, no object by its name: only a temporary upload, named as such
    assert name not in records(tmp_path)
    assert len(temporaries(store)) <= 2                   # one per worker at most
    assert f"{name}.zst" not in objects(store)
    assert any(t.endswith(f"-{name}.zst") for t in temporaries(store))
    # every record stands for a complete object
    assert set(records(tmp_path)) <= {o[:-4] for o in objects(store)}

    # PostgreSQL goes on, oldest first; the segment the pusher died on is stored
    # by its own call (or by a new pusher), all of them come back intact.
    archived(pg_wal, segs[0])
    for n in segs[1:]:
        r = wk("push", pg_wal / n, n, env=env)
        assert r.returncode == 0, r.stderr
        archived(pg_wal, n)
    pusher_gone(tmp_path)
    assert objects(store) == [f"{n}.zst" for n in segs]
    for n in segs:
        out = tmp_path / "back" / n
        out.parent.mkdir(exist_ok=True)
        r = wk("fetch", n, out, env=env)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == (pg_wal / n).read_bytes()
    # verify-chain names the dead uploads (one per worker) as leftovers, nothing else
    r = wk("verify-chain", "--json", env=env, timeout=120)
    report = json.loads(r.stdout)
    assert {p["kind"] for p in report["problems"]} == {"leftover"}, report
    assert {Path(p["object"]).name for p in report["problems"]} == set(temporaries(store))
    assert any(Path(p["object"]).name.endswith(f"-{name}.zst") for p in report["problems"])


def test_sigterm_lets_the_pusher_finish_what_it_stores_and_stop(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 12)
    make_ready(pg_wal, segs)
    store = tmp_path / "store"
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    pid, name = catch_pusher_mid_push(tmp_path, store, segs)
    before = objects(store)
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)
    pusher_gone(tmp_path)
    after = objects(store)
    # the uploads under way were finished and recorded, no new one was started
    assert temporaries(store) == []
    assert f"{name}.zst" in after and name in records(tmp_path)
    assert len(after) <= len(before) + 2                  # push.parallel = 2 workers
    assert set(records(tmp_path)) <= {o[:-4] for o in after}


def test_the_pusher_exits_when_idle_and_starts_again_when_needed(wk, tmp_path, env, pg_wal):
    segs = names(FIRST, 6)
    make_ready(pg_wal, segs[:3])
    assert wk("push", pg_wal / segs[0], segs[0], env=env).returncode == 0
    first = pusher_pid(tmp_path)
    pusher_gone(tmp_path)                    # nothing left to do: it ended on its own
    assert not alive(first)
    assert records(tmp_path) == segs[:3]
    assert not list(rec_dir(tmp_path).glob("*.claim"))
    assert not [p for p in rec_dir(tmp_path).iterdir() if ".json." in p.name]
    archived(pg_wal, segs[0])
    # more WAL later: the next push that finds no record starts a new pusher
    make_ready(pg_wal, segs[3:])
    for n in segs[1:3]:
        assert wk("push", pg_wal / n, n, env=env).returncode == 0
        archived(pg_wal, n)
    assert wk("push", pg_wal / segs[3], segs[3], env=env).returncode == 0
    second = pusher_pid(tmp_path)
    assert second != first
    pusher_gone(tmp_path)
    assert records(tmp_path) == segs[3:]


def test_encrypted_archive_through_the_pusher(wk, tmp_path, pg_wal):
    cfg = tmp_path / "enc.toml"
    cfg.write_text(f'cluster = "enc"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[encryption]\npassphrase_env = "WK_RA_PASSPHRASE"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(tmp_path / "store")}"\n')
    env = {"WK_RA_PASSPHRASE": "read-ahead-" + os.urandom(8).hex()}
    segs = names(FIRST, 4)
    make_ready(pg_wal, segs)
    r = wk("--config", cfg, "push", pg_wal / segs[0], segs[0], env=env)
    assert r.returncode == 0, r.stderr
    pusher_gone(tmp_path, "enc")
    assert records(tmp_path, "enc") == segs
    for n in segs:
        content = (pg_wal / n).read_bytes()
        [obj] = (tmp_path / "store").rglob(f"{n}.*")
        # random WAL does not compress: in a plain object it would show verbatim
        assert content[4096:4160] not in obj.read_bytes()
        out = tmp_path / "back" / n
        out.parent.mkdir(exist_ok=True)
        r = wk("--config", cfg, "fetch", n, out, env=env)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == content
    # a wrong passphrase: the pusher stores nothing and stops, the push says why
    more = names(segs[-1], 4)[1:]
    make_ready(pg_wal, more)
    for n in segs:
        archived(pg_wal, n)
    r = wk("--config", cfg, "push", pg_wal / more[0], more[0],
           env={"WK_RA_PASSPHRASE": "wrong-" + os.urandom(8).hex()})
    assert r.returncode == 3, r.stderr
    pusher_gone(tmp_path, "enc")
    assert records(tmp_path, "enc") == []
    assert not any(f"{n}.zst" in objects(tmp_path / "store") for n in more)
    assert [f["command"] for f in failures(tmp_path)].count("push-readahead") == 1


# --------------------------------------------------------------- real cluster

def config_for(tmp_path: Path, cluster: str) -> Path:
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "{cluster}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[push]\nparallel = 2\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(tmp_path / "store")}"\n')
    return cfg


def test_cluster_archives_a_backlog_through_read_ahead(pg, wk, tmp_path):
    cfg = config_for(tmp_path, "ra")
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
    pusher_gone(tmp_path, "ra")
    stored = objects(tmp_path / "store")
    for n in made:
        assert f"{n}.zst" in stored
    log = cluster.log.read_text()
    assert log.count("was stored by read-ahead") >= 5, log[-3000:]
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


def test_cluster_archives_a_burst_through_the_pusher(pg, wk, tmp_path):
    cfg = config_for(tmp_path, "burst")
    cluster = pg.new(archive_mode="on",
                     archive_command=f"{wk.path} -v --config {cfg} push %p %f")
    cluster.execute("CREATE TABLE t (id int, pad text)")
    made = []
    for i in range(30):
        cluster.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 3000) g")
        made.append(cluster.switch_wal())
    stats = cluster.wait_archived(made[-1], timeout=120)
    assert stats["failed_count"] == 0, stats
    pusher_gone(tmp_path, "burst")
    stored = objects(tmp_path / "store")
    # every segment from the first switched out to the last, none missing
    size = 16 << 20
    count = Segment.parse(made[-1]).number(size) - Segment.parse(made[0]).number(size) + 1
    assert [n for n in names(made[0], count) if f"{n}.zst" not in stored] == []
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["problems"] == [], report
    log = cluster.log.read_text()
    assert "walkeeper push:" not in log, log[-3000:]         # no failure, no warning
    cluster.stop()
