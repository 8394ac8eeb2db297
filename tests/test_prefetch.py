"""Prefetching fetch: the segments after N are spooled in state_dir by a detached
prefetcher, served verified and only for their exact name, and the spool is emptied
once recovery stops asking."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path

import pytest

from walfiles import segment_bytes, write_segment
from walkeeper.archiving.prefetcher import boot_tag
from walkeeper.wal import Segment
from conftest import make_config

FIRST = "000000010000000000000020"


def names(first: str, count: int) -> list[str]:
    seg = Segment.parse(first)
    out = []
    for _ in range(count):
        out.append(seg.name)
        seg = seg.next(16 << 20)
    return out


def write_config(tmp_path: Path, extra: str = "", name: str = "walkeeper.toml") -> Path:
    return make_config(tmp_path, cluster="pf", store=tmp_path / "store", extra=extra, name=name)


def entry_name(name: str, data: bytes, checksum: str | None = None,
               boot: str | None = None) -> str:
    """A spool entry: NAME.<the stored object's checksum>.<this boot's tag>."""
    return f"{name}.{checksum or hashlib.sha256(data).hexdigest()}.{boot or boot_tag()}"


def spool(tmp_path: Path, cluster: str = "pf") -> Path:
    return tmp_path / "state" / "spool" / cluster


def entries(tmp_path: Path, cluster: str = "pf") -> list[str]:
    d = spool(tmp_path, cluster)
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def prefetcher_running(tmp_path: Path, cluster: str = "pf") -> bool:
    lock = spool(tmp_path, cluster) / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_cleaned(tmp_path: Path, cluster: str = "pf") -> None:
    wait_for(lambda: not prefetcher_running(tmp_path, cluster)
             and not [p for p in (spool(tmp_path, cluster).iterdir()
                                  if spool(tmp_path, cluster).exists() else [])
                      if p.name != ".lock"],
             what="the prefetcher to end and empty the spool")


@pytest.fixture
def archive(wk, tmp_path):
    """Six synthetic segments pushed; returns (config, {name: content})."""
    cfg = write_config(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    content = {}
    for n in names(FIRST, 6):
        p = write_segment(src, n)
        content[n] = p.read_bytes()
        r = wk("--config", cfg, "push", p, n)
        assert r.returncode == 0, r.stderr
    yield cfg, content
    wait_cleaned(tmp_path)


def recovery_dir(tmp_path: Path) -> Path:
    d = tmp_path / "restored" / "pg_wal"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_next_segments_are_spooled_and_served(wk, tmp_path, archive):
    cfg, content = archive
    segs = sorted(content)
    pg_wal = recovery_dir(tmp_path)
    dest = pg_wal / "RECOVERYXLOG"
    r = wk("--config", cfg, "fetch", segs[0], dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == content[segs[0]]
    # the archive ends after segs[5]: the prefetcher spools the rest and stops there
    wait_for(lambda: [e[:24] for e in entries(tmp_path)] == segs[1:], what="the spool")
    for e in entries(tmp_path):
        data = (spool(tmp_path) / e).read_bytes()
        assert e == entry_name(e[:24], data, e.split(".")[1])
        assert len(e.split(".")[1]) == 64
        assert data == content[e[:24]]
    for n in segs[1:]:
        r = wk("-v", "--config", cfg, "fetch", n, dest)
        assert r.returncode == 0, r.stderr
        assert "prefetch spool" in r.stderr
        assert dest.read_bytes() == content[n]
        assert n not in [e[:24] for e in entries(tmp_path)]
    r = wk("--config", cfg, "fetch", names(segs[-1], 2)[1], dest)
    assert r.returncode == 1
    # nothing but DEST was ever written next to it
    assert sorted(p.name for p in pg_wal.iterdir()) == ["RECOVERYXLOG"]
    wait_cleaned(tmp_path)


def first_fetched(wk, tmp_path: Path, archive, idle: int):
    """With prefetch_idle = IDLE, the first segment fetched and the other five spooled:
    (config, content, names, DEST)."""
    _, content = archive
    cfg = write_config(tmp_path, f"[fetch]\nprefetch_idle = {idle}\n", "idle.toml")
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    assert wk("--config", cfg, "fetch", segs[0], dest).returncode == 0
    wait_for(lambda: [e[:24] for e in entries(tmp_path)] == segs[1:], what="the spool")
    return cfg, content, segs, dest


def test_a_pause_in_replay_keeps_the_spool(wk, tmp_path, archive):
    """A replay slower than a few seconds (a heavy segment, a delayed standby) must
    not lose what was spooled: the prefetcher waits fetch.prefetch_idle."""
    cfg, content, segs, dest = first_fetched(wk, tmp_path, archive, idle=12)
    time.sleep(7)          # longer than the prefetcher used to wait (5 s), well under 12
    assert [e[:24] for e in entries(tmp_path)] == segs[1:]
    r = wk("-v", "--config", cfg, "fetch", segs[1], dest)
    assert r.returncode == 0, r.stderr
    assert "prefetch spool" in r.stderr
    assert dest.read_bytes() == content[segs[1]]
    wait_cleaned(tmp_path)  # and it still ends once nothing more is asked


def test_the_end_of_the_archive_leaves_no_temporary_behind(wk, tmp_path, archive):
    """The prefetcher creates each segment's temporary when it queues it (so that a
    fetch asking for it waits rather than decodes it twice); a segment the archive
    lacks must take its temporary away at once, or the fetch asking for it at the end
    of recovery would wait for an entry nobody writes."""
    cfg, content, segs, dest = first_fetched(wk, tmp_path, archive, idle=10)
    # Depth 8 queued three segments past the end of the archive.
    wait_for(lambda: not [p for p in spool(tmp_path).iterdir() if ".tmp-" in p.name],
             timeout=10, what="the temporaries of the missing segments to go")
    assert prefetcher_running(tmp_path)
    missing = names(segs[-1], 2)[1]
    r = wk("-v", "--config", cfg, "fetch", missing, dest)
    assert r.returncode == 1, r.stderr
    assert "prefetch spool" not in r.stderr


def test_a_spooled_file_of_another_timeline_is_never_served(wk, tmp_path, archive):
    cfg, content = archive
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    d = spool(tmp_path)
    d.mkdir(parents=True)
    target = segs[2]
    tl2 = "00000002" + target[8:]
    # timeline 2's segment under its own name, and under timeline 1's name
    # (a header check catches that one: a TLI 2 page cannot be on timeline 1)
    other = segment_bytes(tl2)
    (d / entry_name(tl2, other)).write_bytes(other)
    (d / entry_name(target, other)).write_bytes(other)
    r = wk("--config", cfg, "fetch", target, dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == content[target]
    assert "does not hold" in r.stderr
    assert not (d / entry_name(target, other)).exists()
    assert (d / entry_name(tl2, other)).exists()
    # and a request for timeline 2 does not get timeline 1's prefetched segments
    wait_for(lambda: segs[3] in [e[:24] for e in entries(tmp_path)], what="the spool")
    r = wk("--config", cfg, "fetch", "00000002" + segs[3][8:], dest)
    assert r.returncode == 1


def test_a_truncated_or_foreign_spool_file_is_not_served(wk, tmp_path, archive):
    """A spool entry is trusted for its content (it was verified before it got its
    name) but not for being whole, nor for being the segment its name says."""
    cfg, content = archive
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    assert wk("--config", cfg, "fetch", segs[0], dest).returncode == 0
    wait_for(lambda: [e[:24] for e in entries(tmp_path)] == segs[1:], what="the spool")
    [entry] = [e for e in entries(tmp_path) if e.startswith(segs[2])]
    path = spool(tmp_path) / entry
    os.truncate(path, 5 << 20)
    r = wk("--config", cfg, "fetch", segs[2], dest)
    assert r.returncode == 0, r.stderr
    assert "does not hold" in r.stderr and "5242880 bytes" in r.stderr
    assert dest.read_bytes() == content[segs[2]]
    assert not path.exists()
    # another segment's content under this name: its page address gives it away
    [entry] = [e for e in entries(tmp_path) if e.startswith(segs[4])]
    (spool(tmp_path) / entry).write_bytes(content[segs[3]])
    r = wk("--config", cfg, "fetch", segs[4], dest)
    assert r.returncode == 0, r.stderr
    assert "does not hold" in r.stderr
    assert dest.read_bytes() == content[segs[4]]


def test_an_entry_from_before_a_reboot_is_never_served(wk, tmp_path, archive):
    """Spool files are not fsynced, so after a crash one may have lost pages; entries
    carry the boot they were written in and others are neither served nor kept."""
    cfg, content = archive
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    d = spool(tmp_path)
    d.mkdir(parents=True)
    other_boot = "%08x" % (int(boot_tag(), 16) ^ 0xFFFFFFFF)
    zeroed = bytearray(content[segs[1]])
    zeroed[1 << 20:] = bytes(len(zeroed) - (1 << 20))      # pages a crash never wrote
    stale = d / entry_name(segs[1], b"", "ab" * 32, other_boot)
    stale.write_bytes(zeroed)
    assert wk("--config", cfg, "fetch", segs[0], dest).returncode == 0
    r = wk("-v", "--config", cfg, "fetch", segs[1], dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == content[segs[1]]
    wait_for(lambda: not stale.exists(), what="the prefetcher to drop the old boot's entry")


def test_spool_size_is_bounded_and_prefetch_can_be_disabled(wk, tmp_path, archive):
    cfg, content = archive
    segs = sorted(content)
    dest = recovery_dir(tmp_path) / "RECOVERYXLOG"
    small = write_config(tmp_path, f"[fetch]\nspool_max_bytes = {2 * (16 << 20)}\n", "small.toml")
    assert wk("--config", small, "fetch", segs[0], dest).returncode == 0
    wait_for(lambda: len(entries(tmp_path)) == 2, what="two spooled segments")
    time.sleep(1.0)
    assert [e[:24] for e in entries(tmp_path)] == segs[1:3]
    wait_cleaned(tmp_path)
    off = write_config(tmp_path, "[fetch]\nprefetch = 0\n", "off.toml")
    assert wk("--config", off, "fetch", segs[0], dest).returncode == 0
    time.sleep(0.5)
    assert entries(tmp_path) == [] and not prefetcher_running(tmp_path)


def test_history_and_other_files_are_not_prefetched(wk, tmp_path, archive):
    cfg, content = archive
    hist = tmp_path / "00000002.history"
    hist.write_text("1\t0/20000000\tno recovery target specified\n")
    assert wk("--config", cfg, "push", hist, hist.name).returncode == 0
    dest = recovery_dir(tmp_path) / "RECOVERYHISTORY"
    assert wk("--config", cfg, "fetch", hist.name, dest).returncode == 0
    assert dest.read_text() == hist.read_text()
    time.sleep(0.3)
    assert entries(tmp_path) == [] and not prefetcher_running(tmp_path)


# --------------------------------------------------------------- real recovery

def test_recovery_through_the_spool(pg, wk, tmp_path):
    from test_recover import batches, recover, rows, write_config as recover_config

    cluster = pg.new()
    cfg = recover_config(tmp_path, cluster)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    expected = batches(cluster, 12)
    c = recover(pg, wk, cfg, tmp_path, "--latest")
    assert rows(c) == expected
    assert c.scalar("SELECT count(*) FROM t") == 12 * 2000
    # the spool was used and is emptied once recovery stopped asking
    assert (tmp_path / "state" / "spool" / "pitr").exists()
    wait_cleaned(tmp_path, "pitr")
    leftovers = [p.name for p in (c.pgdata / "pg_wal").iterdir() if ".wk-" in p.name]
    assert leftovers == []
    c.stop()
