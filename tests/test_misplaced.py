"""Issue 14: fetch, the prefetcher, recover, drill and verify-chain never take an object
stored under another file's name for that file.

An object of X copied over Y's (an rsync with the wrong arguments, a mixed-up restore of
a store) is self-consistent: its checksum and, encrypted, its tags hold. Objects of
format 3 record the key they were written under (sealed into every chunk when
encrypted); objects of earlier versions ("v2" below, made here as an older walkeeper
wrote them) are caught by their content: a segment's page header, a history file's
parents, a .backup file's WAL file name, a backup part's checksum in backup.json.
Real stores (local directories, a real OpenSSH server), real PostgreSQL 15.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from walfiles import segment_bytes
from walkeeper.format import crypto
from walkeeper.format.objects import Encoder, decode
from walkeeper.wal import parse_long_page_header
from storeroot import root as store_root

pytestmark = pytest.mark.slow

CLUSTER = "mp"
SEG = 16 << 20
X, Y = "000000010000000000000005", "000000010000000000000006"
H2 = ("00000002.history", b"1\t0/5000100\tno recovery target specified\n")
H3 = ("00000003.history", H2[1] + b"2\t0/7000100\tbefore 2026-12-03 06:00:00+00\n")
B1 = ("000000010000000000000005.00000028.backup",
      b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
      b"STOP WAL LOCATION: 0/5000100 (file 000000010000000000000005)\n")
B2 = ("000000010000000000000007.00000060.backup",
      b"START WAL LOCATION: 0/7000060 (file 000000010000000000000007)\n"
      b"STOP WAL LOCATION: 0/7000200 (file 000000010000000000000007)\n")


# ----------------------------------------------------------------------- helpers

class Archive:
    """Two stores (first, second) of one archive, plain or encrypted with a key file."""

    def __init__(self, tmp: Path, wk, kind: str, encrypted: bool, sshd=None):
        self.tmp, self.wk, self.kind, self.encrypted = tmp, wk, kind, encrypted
        self.key_file = None
        enc = ""
        if encrypted:
            self.key_file = tmp / "archive.key"
            self.key_file.write_bytes(b"0123456789abcdef" * 4)
            self.key_file.chmod(0o600)
            enc = f'[encryption]\nkey_file = "{self.key_file}"\n'
        second = f'[[stores]]\nname = "second"\ntype = "local"\npath = "{store_root(tmp / "second")}"\n'
        if kind == "sftp":
            self.roots = [sshd.directory, tmp / "second"]
            first = sshd.store_config(name="first") + "timeout = 10\nretries = 1\n"
        else:
            self.roots = [tmp / "first", tmp / "second"]
            first = f'[[stores]]\nname = "first"\ntype = "local"\npath = "{store_root(tmp / "first")}"\n'
        head = f'cluster = "{CLUSTER}"\nstate_dir = "{tmp / "state"}"\n'
        self.cfg = tmp / "walkeeper.toml"
        self.cfg.write_text(head + "[fetch]\nprefetch = 0\n" + enc + first + second)
        self.cfg_missing = tmp / "missing.toml"
        self.cfg_missing.write_text(head + '[fetch]\nprefetch = 0\non_error = "missing"\n'
                                    + enc + first + second)
        self.cfg_prefetch = tmp / "prefetch.toml"
        self.cfg_prefetch.write_text(head + "[fetch]\nprefetch = 4\n" + enc + first + second)

    def run(self, *args, cfg=None, **kw):
        return self.wk("--config", cfg or self.cfg, *args, **kw)

    def push(self, name: str, data: bytes) -> None:
        src = self.tmp / "src" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        r = self.run("push", src, name)
        assert r.returncode == 0, r.stderr

    def path(self, store: int, name: str) -> Path:
        top = Path(self.roots[store]) / CLUSTER / "wal"
        where = top if name.endswith(".history") else top / name[:16]
        [p] = where.glob(name + ".*")
        return p

    def v2_object(self, data: bytes) -> bytes:
        """The object an older walkeeper (format 2, no recorded name) wrote for data."""
        key = None
        if self.encrypted:
            doc = json.loads((Path(self.roots[1]) / CLUSTER / "encryption.json").read_bytes())
            params, check = crypto._doc_params(doc)
            ring = crypto.Keyring(key_file=str(self.key_file))
            key = crypto.ArchiveKey(params, ring.master(params, check))
        return b"".join(Encoder("zstd", 3, len(data), 0, key).run([data]))

    def fetch(self, name: str, cfg=None):
        dest = self.tmp / "pg_wal" / "RECOVERYXLOG"
        dest.parent.mkdir(exist_ok=True)
        if dest.exists():
            dest.unlink()
        return self.run("fetch", name, dest, cfg=cfg), dest


@pytest.fixture(params=[("local", False), ("local", True), ("sftp", False), ("sftp", True)],
                ids=["local", "local-encrypted", "sftp", "sftp-encrypted"])
def arch(request, tmp_path, wk):
    kind, encrypted = request.param
    sshd = request.getfixturevalue("sshd") if kind == "sftp" else None
    return Archive(tmp_path, wk, kind, encrypted, sshd)


def swap_and_check(arch: Archive, asked: str, asked_data: bytes, holds: str,
                   holds_data: bytes, old_format: bool = False, verify: bool = True,
                   says: str | None = None) -> None:
    """Put `holds`'s object under `asked`'s name, in the first store, then in both:
    fetch never writes holds_data as `asked`; one bad store falls back to the next.
    The messages name `asked` and what the object holds (`says`, default its name)."""
    says = says or holds[:24]
    originals = [arch.path(i, asked).read_bytes() for i in (0, 1)]
    bad = arch.v2_object(holds_data) if old_format else arch.path(0, holds).read_bytes()
    try:
        arch.path(0, asked).write_bytes(bad)
        r, dest = arch.fetch(asked)
        assert r.returncode == 0, r.stderr
        assert dest.read_bytes() == asked_data
        assert asked in r.stderr and says in r.stderr, r.stderr   # the warning
        arch.path(1, asked).write_bytes(bad)
        r, dest = arch.fetch(asked)
        assert r.returncode == 255, r.stderr
        assert not dest.exists()
        assert asked in r.stderr and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        r, dest = arch.fetch(asked, cfg=arch.cfg_missing)
        assert r.returncode == 1 and not dest.exists(), r.stderr
        if verify:
            r = arch.run("verify-chain", "--json", timeout=120)
            assert r.returncode == 1, r.stderr
            found = [p for p in json.loads(r.stdout)["problems"] if p["kind"] == "misplaced"]
            assert {p["store"] for p in found} == {"first", "second"}, found
            for p in found:
                assert asked in p["object"] and says in p["detail"], p
    finally:
        for i in (0, 1):
            arch.path(i, asked).write_bytes(originals[i])
    r, dest = arch.fetch(asked)
    assert r.returncode == 0 and dest.read_bytes() == asked_data, r.stderr


# ------------------------------------------------------------------- WAL files

def test_a_segment_copied_over_another(arch):
    x, y = segment_bytes(X), segment_bytes(Y)
    arch.push(X, x)
    arch.push(Y, y)
    swap_and_check(arch, Y, y, X, x)
    swap_and_check(arch, Y, y, X, x, old_format=True)
    # The other way round, and a .partial.
    swap_and_check(arch, X, x, Y, y, old_format=True, verify=False)
    arch.push(Y + ".partial", y)
    swap_and_check(arch, Y + ".partial", y, X, x, old_format=True, verify=False)


def test_history_and_backup_files_copied_over_others(arch):
    for name, data in (H2, H3, B1, B2):
        arch.push(name, data)
    swap_and_check(arch, H2[0], H2[1], H3[0], H3[1])
    swap_and_check(arch, H3[0], H3[1], H2[0], H2[1])
    swap_and_check(arch, B2[0], B2[1], B1[0], B1[1])
    # Written by an older walkeeper (no recorded name): the content tells. 3's history
    # lists timeline 2, so it cannot be 2's; B1's records another WAL file than B2's.
    swap_and_check(arch, H2[0], H2[1], H3[0], H3[1], old_format=True,
                   says="the history of a timeline above 2")
    swap_and_check(arch, B2[0], B2[1], B1[0], B1[1], old_format=True)
    swap_and_check(arch, B1[0], B1[1], B2[0], B2[1], old_format=True, verify=False)


def test_history_file_inconsistent_with_its_parent(arch):
    """An old-format 3.history whose parent 2 branched elsewhere than 2.history says."""
    arch.push(*H2)
    arch.push(*H3)
    other = b"1\t0/6000000\tno recovery target specified\n2\t0/7000100\tx\n"
    for i in (0, 1):
        arch.path(i, H3[0]).write_bytes(arch.v2_object(other))
    r, dest = arch.fetch(H3[0])
    assert r.returncode == 255 and not dest.exists(), r.stderr
    assert "00000002.history" in r.stderr and "00000003.history" in r.stderr


def spooled(arch: Archive) -> list[str]:
    d = arch.tmp / "state" / "spool" / CLUSTER
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_the_prefetcher_never_serves_a_misplaced_segment(arch):
    names = [f"0000000100000000000000{n:02X}" for n in range(5, 11)]
    data = {n: segment_bytes(n) for n in names}
    for n in names:
        arch.push(n, data[n])
    bad7 = arch.path(0, names[3]).read_bytes()              # segment 8's object
    arch.path(0, names[2]).write_bytes(bad7)                # over 7, first store only
    arch.path(1, names[4]).write_bytes(arch.v2_object(data[names[5]]))   # 10 over 9, second
    arch.path(0, names[4]).write_bytes(arch.path(0, names[5]).read_bytes())  # and first
    r, dest = arch.fetch(names[0], cfg=arch.cfg_prefetch)
    assert r.returncode == 0 and dest.read_bytes() == data[names[0]], r.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        have = spooled(arch)
        if any(n.startswith(names[3] + ".") for n in have):
            break
        time.sleep(0.1)
    have = spooled(arch)
    # 7 was spooled from the second store; 9 from no store.
    assert not any(n.startswith(names[4] + ".") for n in have), have
    for n in names[1:4]:
        r, dest = arch.fetch(n, cfg=arch.cfg_prefetch)
        assert r.returncode == 0, r.stderr
        assert dest.read_bytes() == data[n], n
    r, dest = arch.fetch(names[4], cfg=arch.cfg_prefetch)
    assert r.returncode == 255 and not dest.exists(), r.stderr
    assert names[4] in r.stderr and names[5] in r.stderr, r.stderr


# ------------------------------------------------------------- with PostgreSQL

def pg_config(tmp_path: Path, cluster, encrypted: bool = False, stores: int = 2) -> Path:
    from pgharness import PG_BIN

    text = (f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
            f'[postgres]\nconninfo = "{cluster.conninfo}"\nbindir = "{PG_BIN}"\n')
    if encrypted:
        kf = tmp_path / "archive.key"
        kf.write_bytes(b"fedcba9876543210" * 4)
        kf.chmod(0o600)
        text += f'[encryption]\nkey_file = "{kf}"\n'
    for i in range(stores):
        # The store roots exist, as `walkeeper check` makes them (push creates none).
        (tmp_path / f"s{i}").mkdir(mode=0o700, exist_ok=True)
        text += (f'[[stores]]\nname = "s{i}"\ntype = "local"\n'
                 f'path = "{store_root(tmp_path / f"s{i}")}"\n')
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(text)
    return cfg


def base_tar(root: Path, backup_id: str) -> Path:
    [p] = (root / CLUSTER / "backups" / backup_id).glob("base.tar.*")
    return p


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_base_backup_part_swapped_between_two_backups(pg, wk, tmp_path, encrypted):
    from test_recover import rows

    cluster = pg.new()
    cfg = pg_config(tmp_path, cluster, encrypted)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    ids = []
    for batch in ("A", "B"):
        cluster.execute(f"CREATE TABLE IF NOT EXISTS t (batch text, n int);"
                        f"INSERT INTO t SELECT '{batch}', g FROM generate_series(1, 50) g")
        r = wk("--config", cfg, "basebackup", "--no-progress", "--json", timeout=120)
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["id"])
    cluster.wait_archived(cluster.switch_wal())
    b1, b2 = ids
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    good = [base_tar(s, b2).read_bytes() for s in (s0, s1)]
    # b1's part over b2's in the first store: recover restores b2 from the second.
    shutil.copyfile(base_tar(s0, b1), base_tar(s0, b2))
    dest = tmp_path / "r1"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--backup", b2, "--latest",
           "--target-action", "promote", timeout=120)
    assert r.returncode == 0, r.stderr
    assert b1 in r.stderr and b2 in r.stderr, r.stderr
    c = pg.from_pgdata(dest, archive_mode="off")
    c.start()
    from test_recover import wait_recovered

    wait_recovered(c)
    assert rows(c) == ["A", "B"]
    c.stop()
    # In both stores: refused by recover, verify-chain and drill, naming both backups.
    shutil.copyfile(base_tar(s1, b1), base_tar(s1, b2))
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "r2", "--backup", b2,
           "--latest", timeout=120)
    assert r.returncode == 1, r.stderr
    assert b1 in r.stderr and b2 in r.stderr and "Traceback" not in r.stderr
    assert not any((tmp_path / "r2").iterdir()) if (tmp_path / "r2").exists() else True
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 1
    found = [p for p in json.loads(r.stdout)["problems"] if p["kind"] == "misplaced"]
    assert {p["store"] for p in found} == {"s0", "s1"}, r.stdout
    assert all(b2 in p["object"] and b1 in p["detail"] for p in found), found
    r = wk("--config", cfg, "drill", "--json", timeout=300)
    assert r.returncode != 0, r.stdout
    assert b1 in r.stdout + r.stderr and b2 in r.stdout + r.stderr
    if not encrypted:
        # An older walkeeper's objects (no recorded name): b1's part rewritten as format
        # 2 (and its backup.json to match), then copied over b2's: b2's backup.json
        # records another checksum, which is b1's.
        for s in (s0, s1):
            data = decoded(base_tar(s, b1))
            enc = Encoder("zstd", 3, len(data), 0)
            base_tar(s, b1).write_bytes(b"".join(enc.run([data])))
            meta = s / CLUSTER / "backups" / b1 / "backup.json"
            doc = json.loads(meta.read_text())
            doc["files"][0].update(sha256=enc.trailer.checksum,
                                   stored_size=16 + enc.trailer.body_size + 64)
            meta.write_text(json.dumps(doc, indent=2) + "\n")
            shutil.copyfile(base_tar(s, b1), base_tar(s, b2))
        r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "r3", "--backup", b2,
               "--latest", timeout=120)
        assert r.returncode == 1 and b2 in r.stderr and "checksum" in r.stderr, r.stderr
        r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
        found = [p for p in json.loads(r.stdout)["problems"] if p["kind"] == "misplaced"]
        assert found and all(b1 in p["detail"] for p in found), r.stdout
    for s, data in zip((s0, s1), good):
        base_tar(s, b2).write_bytes(data)
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 0, r.stdout
    # The manifest: b1's backup.json over b2's in the first store.
    meta = [s0 / CLUSTER / "backups" / b / "backup.json" for b in (b1, b2)]
    kept = meta[1].read_bytes()
    shutil.copyfile(meta[0], meta[1])
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 1, r.stdout
    [p] = [p for p in json.loads(r.stdout)["problems"] if p["kind"] == "misplaced"]
    assert p["store"] == "s0" and b2 in p["object"] and b1 in p["detail"], p
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "r4", "--backup", b2,
           "--latest", timeout=120)
    assert r.returncode == 0, r.stderr          # b2 as the second store holds it
    meta[1].write_bytes(kept)
    cluster.stop()


def decoded(path: Path, name: str | None = None) -> bytes:
    out = io.BytesIO()
    decode(io.BytesIO(path.read_bytes()).read, out.write)
    return out.getvalue()


def test_a_real_timeline_switch_passes_every_check(pg, wk, tmp_path):
    """Promote a recovered copy: timeline 2's first segment starts with timeline 1's
    pages. Every segment of timeline 2 fetches, verify-chain finds nothing, and a PITR
    across the switch works, with and without the prefetcher."""
    from test_recover import archive_all, mark, recover, rows

    cluster = pg.new()
    cfg = pg_config(tmp_path, cluster, stores=1)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    t1 = mark(cluster)
    cluster.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
    archive_all(cluster)
    cluster.stop()
    c2 = recover(pg, wk, cfg, tmp_path, "--target-time", t1, action="promote", archive=True)
    assert rows(c2) == ["A"]
    for _ in range(3):
        c2.execute("INSERT INTO t SELECT 'C', g FROM generate_series(1, 1000) g")
        archive_all(c2)
    c2.stop()

    wal = tmp_path / "s0" / CLUSTER / "wal"
    tl2 = sorted(p for p in wal.glob("00000002*/*") if not p.name.startswith("."))
    assert tl2, list(wal.rglob("*"))
    heads = {p.name.split(".")[0]: parse_long_page_header(decoded(p)[:40]).timeline
             for p in tl2}
    assert 1 in heads.values(), heads        # the first one carries its parent's timeline
    assert 2 in heads.values(), heads
    partials = sorted(wal.glob("*/*.partial.*"))      # if the promotion left one
    names = [p.name.rsplit(".", 1)[0] for p in tl2 + partials] + ["00000002.history"]
    for name in names:
        dest = tmp_path / "fetched"
        r = wk("--config", cfg, "fetch", name, dest)
        assert r.returncode == 0, (name, r.stderr)
        dest.unlink()
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["old_format_objects"] == 0
    # PITR across the switch (fetch prefetches by default here).
    assert rows(recover(pg, wk, cfg, tmp_path, "--latest")) == ["A", "C"]


def test_an_archive_written_before_this_change(pg, wk, tmp_path):
    """Every object rewritten as format 2 (what the previous walkeeper wrote): still
    fetched, verified (and counted as old) and recovered."""
    from test_recover import archive_all, recover, rows

    cluster = pg.new()
    cfg = pg_config(tmp_path, cluster, stores=1)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    archive_all(cluster)
    cluster.stop()
    root = tmp_path / "s0" / CLUSTER
    count = 0
    sums = {}
    for p in sorted(root.rglob("*.zst")):
        data = decoded(p)
        enc = Encoder("zstd", 3, len(data), 0)
        p.write_bytes(b"".join(enc.run([data])))
        sums[p.name] = enc.trailer
        count += 1
    for meta in root.glob("backups/*/backup.json"):
        doc = json.loads(meta.read_text())
        for f in doc["files"]:
            t = sums[f["key"].rsplit("/", 1)[-1]]
            f["sha256"] = t.checksum
            f["stored_size"] = 16 + t.body_size + 64
        meta.write_text(json.dumps(doc, indent=2) + "\n")
    r = wk("--config", cfg, "verify-chain", "--json", timeout=120)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["old_format_objects"] == count
    r = wk("--config", cfg, "verify-chain", timeout=120)
    assert f"{count} object{'' if count == 1 else 's'} of a format version before 3" in r.stdout
    for p in sorted(root.glob("wal/*/*.zst")):
        r = wk("--config", cfg, "fetch", p.name[:-4], tmp_path / "f")
        assert r.returncode == 0, r.stderr
    assert rows(recover(pg, wk, cfg, tmp_path, "--latest")) == ["A"]
