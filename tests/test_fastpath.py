"""walkeeper-fast: the push and fetch fast paths without a Python interpreter.

`walkeeper commands` prints archive_command and restore_command as
`walkeeper-fast ... || walkeeper ...`; recover and drill write them. The fast half
must do what walkeeper does on those paths, with the same checks, and exit 1
touching nothing in every other case. Its lines are run here as PostgreSQL runs them
(`sh -c` with %p and %f substituted), with the walkeeper half replaced by `exit 99`
where a test proves the fast half alone did the work."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from conftest import WALKEEPER, make_config
from walfiles import segment_bytes, write_segment
from walkeeper.archiving import claims
from walkeeper.archiving.prefetcher import Prefetcher, boot_tag
from walkeeper.wal import WAL_PAGE_MAGIC, Segment

FAST = WALKEEPER.parent / "walkeeper-fast"
NAME = "000000010000000000000020"


def names(first: str, count: int) -> list[str]:
    seg, out = Segment.parse(first), []
    for _ in range(count):
        out.append(seg.name)
        seg = seg.next(16 << 20)
    return out


def run_line(line: str, p: str, f: str, timeout: float = 60,
             path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    """What PostgreSQL does with archive_command / restore_command."""
    cmd = line.replace("%p", shlex.quote(str(p))).replace("%f", f)
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": path}, stdin=subprocess.DEVNULL)


def fast_only(line: str) -> str:
    """The line with its walkeeper half replaced: exit 99 if the fast half declined."""
    fast, _, plain = line.partition(" || ")
    assert plain, line
    return fast + " || exit 99"


def commands(wk, cfg) -> dict:
    r = wk("--config", cfg, "commands", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_script_is_installed_beside_walkeeper_and_knows_every_wal_magic():
    assert FAST.exists() and os.access(FAST, os.X_OK), FAST
    text = FAST.read_text()
    [line] = [ln for ln in text.splitlines() if "53520" in ln]
    listed = {int(m) for m in re.findall(r"\d{5}", line.split(")")[0])}
    assert listed == set(WAL_PAGE_MAGIC)


def test_commands_prints_both_lines_for_this_configuration(wk, tmp_path):
    cfg = make_config(tmp_path, cluster="fp", store=tmp_path / "store")
    out = commands(wk, cfg)
    spool = tmp_path / "state" / "spool" / "fp"
    records = tmp_path / "state" / "readahead" / "fp"
    assert out["archive_command"] == (f"{FAST} push {records} %p %f || "
                                      f"{WALKEEPER} --config {cfg} push %p %f")
    assert out["restore_command"] == (f"{FAST} fetch {spool} %f %p || "
                                      f"{WALKEEPER} --config {cfg} fetch %f %p")
    assert out["fast_push"] and out["fast_fetch"]
    text = wk("--config", cfg, "commands").stdout
    assert text.splitlines() == [f"archive_command = '{out['archive_command']}'",
                                 f"restore_command = '{out['restore_command']}'"]
    # Nothing to be fast about: the plain lines.
    off = make_config(tmp_path, cluster="fp", store=tmp_path / "store", name="off.toml",
                      extra="[push]\nparallel = 1\n[fetch]\nprefetch = 0\n")
    out = commands(wk, off)
    assert out["archive_command"] == f"{WALKEEPER} --config {off} push %p %f"
    assert out["restore_command"] == f"{WALKEEPER} --config {off} fetch %f %p"
    assert not out["fast_push"] and not out["fast_fetch"]


def test_a_link_of_another_name_still_gets_the_fast_lines(tmp_path):
    """walkeeper run through a link named otherwise (walkeeper-15 -> .../bin/walkeeper):
    the lines name the script the link points to, and walkeeper-fast beside it."""
    link = tmp_path / "walkeeper-15"
    link.symlink_to(WALKEEPER)
    cfg = make_config(tmp_path, cluster="fp", store=tmp_path / "store")
    r = subprocess.run([str(link), "--config", str(cfg), "commands", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["fast_push"] and out["fast_fetch"], out
    assert out["archive_command"].endswith(
        f"|| {os.path.realpath(WALKEEPER)} --config {cfg} push %p %f")


def test_bad_arguments(tmp_path):
    r = subprocess.run([FAST, "push", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([FAST, "frob", "a", "b", "c"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command" in r.stderr
    for bad in ("00000001000000000000002", "00000001000000000000002g", "0000000100000000000000201",
                "000000000000000000000020", "00000002.history", "../../../etc/passwd0000"):
        for argv in (["push", tmp_path, tmp_path / "x", bad], ["fetch", tmp_path, bad, tmp_path / "x"]):
            r = subprocess.run([FAST, *map(str, argv)], capture_output=True, text=True)
            assert r.returncode == 1 and r.stderr == "", (bad, r.stderr)


# ------------------------------------------------------------------ fetch

def entry(spool: Path, name: str, data: bytes, boot: str | None = None) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    p = spool / f"{name}.{hashlib.sha256(data).hexdigest()}.{boot or boot_tag()}"
    p.write_bytes(data)
    return p


def fetch_line(spool: Path) -> str:
    return f"{shlex.quote(str(FAST))} fetch {shlex.quote(str(spool))} %f %p || exit 99"


def test_a_spooled_segment_is_served_and_noted_for_the_prefetcher(tmp_path):
    spool = tmp_path / "state dir" / "spool" / "fp"      # a space in the path, too
    data = segment_bytes(NAME)
    e = entry(spool, NAME, data)
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    r = run_line(fetch_line(spool), dest, NAME)
    assert r.returncode == 0 and r.stdout == r.stderr == "", r
    assert dest.read_bytes() == data and not e.exists()
    assert (spool / ".wanted").read_text() == f"{NAME} {16 << 20}\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["RECOVERYXLOG"]


def _mutations():
    base = segment_bytes(NAME, random=False)

    def patch(offset, value: bytes):
        b = bytearray(base)
        b[offset:offset + len(value)] = value
        return bytes(b)

    return {
        "truncated": base[: 5 << 20],
        "one byte more": base + b"\0",
        "another segment": segment_bytes(names(NAME, 2)[1], random=False),
        "a later timeline's page": segment_bytes("00000002" + NAME[8:], random=False),
        "unknown magic": patch(0, (0xD111).to_bytes(2, "little")),
        "no long header flag": patch(2, b"\0\0"),
        "segment size 8 MiB in a 16 MiB file": patch(32, (8 << 20).to_bytes(4, "little")),
        "segment size not a power of two": patch(32, (3 << 20).to_bytes(4, "little")),
        "page address past 2^63": patch(8, (1 << 63 | 0x20 << 24).to_bytes(8, "little")),
        "zeroes": bytes(16 << 20),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_an_entry_that_is_not_this_segment_is_left_to_walkeeper(tmp_path, case):
    """The same checks as walkeeper fetch's serve: size, magic, long header, segment
    size, page address, timeline; walkeeper then warns, drops it and fetches."""
    spool = tmp_path / "spool"
    data = _mutations()[case]
    e = entry(spool, NAME, data)
    dest = tmp_path / "RECOVERYXLOG"
    r = run_line(fetch_line(spool), dest, NAME)
    assert r.returncode == 99, (case, r)
    assert e.read_bytes() == data and not dest.exists()
    assert not (spool / ".wanted").exists()


def test_only_this_boot_and_this_exact_name_are_served(tmp_path):
    spool = tmp_path / "spool"
    data = segment_bytes(NAME)
    other_boot = "%08x" % (int(boot_tag(), 16) ^ 0xFFFFFFFF)
    old = entry(spool, NAME, data, other_boot)
    dest = tmp_path / "RECOVERYXLOG"
    assert run_line(fetch_line(spool), dest, NAME).returncode == 99
    # a checksum of the wrong length, a name with a suffix: not entries
    (spool / f"{NAME}.{'ab' * 31}.{boot_tag()}").write_bytes(data)
    (spool / f"{NAME}0.{'ab' * 32}.{boot_tag()}").write_bytes(data)
    (spool / f"{NAME}.partial").write_bytes(data)
    assert run_line(fetch_line(spool), dest, NAME).returncode == 99
    assert not dest.exists() and old.exists()
    # no spool at all, no such directory for DEST
    assert run_line(fetch_line(tmp_path / "none"), dest, NAME).returncode == 99
    entry(spool, NAME, data)
    assert run_line(fetch_line(spool), tmp_path / "no" / "dir", NAME).returncode == 99


def test_it_only_renames(tmp_path):
    """A spool on another file system than DEST: walkeeper fetch copies (a temporary,
    then a rename); the fast half never leaves a partial DEST."""
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system")
    spool = tmp_path / "spool"
    e = entry(spool, NAME, segment_bytes(NAME))
    with tempfile.TemporaryDirectory(dir=shm) as d:
        dest = Path(d) / "RECOVERYXLOG"
        assert run_line(fetch_line(spool), dest, NAME).returncode == 99
        assert not dest.exists() and e.exists()


def test_it_waits_for_an_entry_the_prefetcher_is_writing(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    data = segment_bytes(NAME)
    tmp = spool / f".{NAME}.tmp-1234abcd"
    tmp.write_bytes(data[:1000])
    dest = tmp_path / "RECOVERYXLOG"
    # No prefetcher holds the spool: a leftover temporary is not waited for (a `sleep`
    # first on PATH notes every poll the script would make).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    polls = tmp_path / "polls"
    (bin_dir / "sleep").write_text(f"#!/bin/sh\necho \"$@\" >> {shlex.quote(str(polls))}\n"
                                   f"exec /bin/sleep \"$@\"\n")
    (bin_dir / "sleep").chmod(0o755)
    r = run_line(fetch_line(spool), dest, NAME, path=f"{bin_dir}:/usr/bin:/bin")
    assert r.returncode == 99 and not polls.exists(), r
    lock = os.open(spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        cmd = fetch_line(spool).replace("%p", shlex.quote(str(dest))).replace("%f", NAME)
        proc = subprocess.Popen(["sh", "-c", cmd])
        time.sleep(0.5)
        assert proc.poll() is None, "it did not wait"
        tmp.write_bytes(data)
        tmp.rename(spool / f"{NAME}.{'0' * 64}.{boot_tag()}")
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(lock)
    assert dest.read_bytes() == data


def test_a_half_written_wanted_line_keeps_the_last_request(tmp_path):
    """walkeeper-fast rewrites .wanted in place: the prefetcher may read it empty."""
    config = {"fetch.prefetch": 4, "fetch.spool_max_bytes": 1 << 30, "fetch.prefetch_idle": 5}
    p = Prefetcher(config, str(tmp_path))
    (tmp_path / ".wanted").write_text(f"{NAME} {16 << 20}\n")
    last = p._wanted()
    assert last[0].name == NAME and last[1] == 16 << 20
    (tmp_path / ".wanted").write_text("")
    assert p._wanted(last) is last
    (tmp_path / ".wanted").write_text(NAME[:10])
    assert p._wanted(last) is last
    (tmp_path / ".wanted").unlink()
    assert p._wanted(last) is None


def test_serving_through_the_line_keeps_the_prefetcher_reading_ahead(wk, tmp_path):
    """The line `walkeeper commands` prints, end to end without PostgreSQL: the first
    call starts Python (nothing spooled yet), the next ones are served by the fast
    half alone and its .wanted keeps the prefetcher going."""
    cfg = make_config(tmp_path, cluster="fp", store=tmp_path / "store",
                      extra="[fetch]\nprefetch = 2\n")
    src = tmp_path / "src"
    src.mkdir()
    segs = names(NAME, 8)
    content = {}
    for n in segs:
        content[n] = write_segment(src, n).read_bytes()
        assert wk("--config", cfg, "push", src / n, n).returncode == 0
    line = commands(wk, cfg)["restore_command"]
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    r = run_line(line, dest, segs[0])
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == content[segs[0]]
    spool = tmp_path / "state" / "spool" / "fp"
    for n in segs[1:]:
        deadline = time.monotonic() + 30
        while not list(spool.glob(f"{n}.*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        r = run_line(fast_only(line), dest, n)
        assert r.returncode == 0, (n, r)
        assert dest.read_bytes() == content[n]
    # past the archive's end: the fast half declines, walkeeper says missing
    after = names(segs[-1], 2)[1]
    assert run_line(line, dest, after).returncode == 1


# ------------------------------------------------------------------- push

def push_line(records: Path) -> str:
    return f"{shlex.quote(str(FAST))} push {shlex.quote(str(records))} %p %f || exit 99"


@pytest.fixture
def segment(tmp_path) -> Path:
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    return write_segment(pg_wal, NAME)


def test_a_recorded_push_is_done_and_its_record_consumed(tmp_path, segment):
    records = tmp_path / "state dir" / "readahead" / "fp"
    claims.write_record(str(records), NAME, os.stat(segment), "ab" * 32)
    r = run_line(push_line(records), segment, NAME)
    assert r.returncode == 0 and r.stdout == r.stderr == "", r
    assert not (records / f"{NAME}.json").exists()
    # consumed: the next call for it is walkeeper's
    assert run_line(push_line(records), segment, NAME).returncode == 99


@pytest.mark.parametrize("change", ["rewritten", "renamed over", "touched", "another file's record",
                                    "bad checksum", "half a record", "relative path"])
def test_a_record_of_another_file_is_left_to_walkeeper(tmp_path, segment, change):
    records = tmp_path / "readahead"
    st = os.stat(segment)
    claims.write_record(str(records), NAME, st, "ab" * 32)
    rec = records / f"{NAME}.json"
    path = segment
    if change == "rewritten":
        segment.write_bytes(segment.read_bytes())
    elif change == "renamed over":
        other = write_segment(tmp_path, NAME)
        os.replace(other, segment)
    elif change == "touched":
        os.utime(segment, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == "another file's record":
        rec.rename(records / f"{names(NAME, 2)[1]}.json")
        claims.write_record(str(records), NAME, os.stat(tmp_path), "ab" * 32)
    elif change == "bad checksum":
        rec.write_bytes(rec.read_bytes().replace(b"abab", b"ABAB", 1))
    elif change == "half a record":
        rec.write_bytes(rec.read_bytes()[:-10])
    elif change == "relative path":
        path = Path("does/not/exist") / NAME
    before = rec.read_bytes() if rec.exists() else None
    r = run_line(push_line(records), path, NAME)
    assert r.returncode == 99, (change, r)
    # untouched: walkeeper push reads (and drops) it
    assert (rec.read_bytes() if rec.exists() else None) == before


def test_it_waits_for_the_pushers_claim(tmp_path, segment):
    records = tmp_path / "readahead"
    records.mkdir()
    # No record and no claim: declined at once.
    assert run_line(push_line(records), segment, NAME).returncode == 99
    fd = claims.claim(str(records), NAME)
    assert fd is not None
    cmd = push_line(records).replace("%p", shlex.quote(str(segment))).replace("%f", NAME)
    proc = subprocess.Popen(["sh", "-c", cmd])
    time.sleep(0.5)
    assert proc.poll() is None, "it did not wait for the claim"
    claims.write_record(str(records), NAME, os.stat(segment), "cd" * 32)
    claims.release(str(records), NAME, fd)
    assert proc.wait(timeout=10) == 0
    assert not (records / f"{NAME}.json").exists()
    # the claim file is not created by waiting on it
    assert not (records / f"{NAME}.claim").exists()
    # a claim released without a record: walkeeper push does it
    fd = claims.claim(str(records), NAME)
    proc = subprocess.Popen(["sh", "-c", cmd])
    time.sleep(0.3)
    claims.release(str(records), NAME, fd)
    assert proc.wait(timeout=10) == 99


# ------------------------------------------------------- with PostgreSQL 15

def counted(line: str, calls: Path) -> str:
    """The line with its walkeeper half noting %f in `calls` first: what is not noted
    was done by walkeeper-fast alone."""
    fast, _, plain = line.partition(" || ")
    return f"{fast} || {{ echo %f >> {shlex.quote(str(calls))}; {plain}; }}"


@pytest.mark.slow
def test_a_cluster_archiving_and_recovering_through_the_fast_lines(pg, wk, tmp_path):
    """archive_command as `walkeeper commands` prints it: the segments the background
    pusher stored are acknowledged by walkeeper-fast; then `recover` writes the fast
    restore_command, and the segments the prefetcher spooled are served by it: rows
    exactly right, the archive verified."""
    from test_recover import batches, rows, wait_recovered

    cluster = pg.new()
    cfg = make_config(tmp_path, cluster="fast", conninfo=cluster.conninfo,
                      store=tmp_path / "store")
    lines = commands(wk, cfg)
    pushes = tmp_path / "push-calls"
    cluster.conf(archive_mode="on", archive_command=counted(lines["archive_command"], pushes))
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    # A burst: segments pile up as .ready, the pusher stores them ahead.
    expected = batches(cluster, 16)
    noted = set(pushes.read_text().split()) if pushes.exists() else set()
    stored = {p.name[:24] for p in (tmp_path / "store").rglob("*.zst")
              if re.fullmatch(r"[0-9A-F]{24}\.zst", p.name)}
    fast_pushes = stored - noted
    assert fast_pushes, (sorted(stored), sorted(noted))
    r = wk("--config", cfg, "verify-chain")
    assert r.returncode == 0, r.stdout + r.stderr

    dest = tmp_path / "restored"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--target-action", "promote")
    assert r.returncode == 0, r.stderr
    auto = (dest / "postgresql.auto.conf").read_text()
    [setting] = [ln for ln in auto.splitlines() if ln.startswith("restore_command = ")]
    assert setting.startswith(f"restore_command = '{FAST} fetch "), setting
    fetches = tmp_path / "fetch-calls"
    line = setting[len("restore_command = '"):-1].replace("''", "'")
    (dest / "postgresql.auto.conf").write_text(
        auto.replace(setting, f"restore_command = '{counted(line, fetches)}'".replace("\\", "\\\\")))
    c = pg.from_pgdata(dest, archive_mode="off")
    c.start()
    wait_recovered(c)
    assert rows(c) == expected
    restored = {ln.split('"')[1] for ln in c.log.read_text().splitlines()
                if "restored log file" in ln and len(ln.split('"')[1]) == 24}
    noted = set(fetches.read_text().split()) if fetches.exists() else set()
    assert restored - noted, (sorted(restored), sorted(noted))
    c.stop()
