"""Encrypted archives end to end: a real PostgreSQL 15 archiving through walkeeper with
`[encryption]` into a local store and a real OpenSSH server, then every command on
that archive, the stored bytes searched for the plaintext, and the stored objects
tampered with by hand. The cipher itself, in memory: tests/test_crypto.py.

One archiving cluster per module (the tests that only read share it); the tests that
damage objects build small archives of their own from synthetic segments.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import make_config, WALKEEPER, clean_env, need
from sshharness import SSHD, SshServer
from test_recover import mark, rows, wait_recovered
from walfiles import write_segment
from walkeeper.format import objects
from walkeeper.format.crypto import PREAMBLE_SIZE, SEAL_CHUNK, TAG_SIZE
from walkeeper.format.objects import HEADER_SIZE, TRAILER_SIZE
from storeroot import root as store_root

PASS_VAR = "WK_TEST_PASSPHRASE"
PASSPHRASE = "wk-test-passphrase-" + os.urandom(8).hex()
WRONG = PASSPHRASE[:-4] + "XXXX"
MARKER = b"WKMARKER-5eb1c2d7-plaintext"
MARKER_ROWS = 20000
CLEAR = ("identity.json", "encryption.json")      # the only files stored in clear


# ----------------------------------------------------------------------- helpers

def runner(tmp: Path):
    """Run the walkeeper console script with the passphrase in $WK_TEST_PASSPHRASE
    (env={PASS_VAR: None} removes it); every output is checked for secrets."""
    state = tmp / "xdg-state"

    def run(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        full = clean_env({"XDG_STATE_HOME": state, PASS_VAR: PASSPHRASE})
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = str(v)
        r = subprocess.run([str(WALKEEPER), *(str(a) for a in args)], env=full, text=True,
                           capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        for secret in (PASSPHRASE, WRONG):
            assert secret not in r.stdout and secret not in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    run.path = WALKEEPER
    return run


def local_store(path: Path, name: str = "local") -> str:
    return f'[[stores]]\nname = "{name}"\ntype = "local"\npath = "{store_root(path)}"\n'


def sftp_store(sshd) -> str:
    return sshd.store_config(name="offsite") + "timeout = 10\nretries = 1\n"


def write_config(path: Path, *, state: Path, stores: list[str], cluster: str = "enc",
                 conninfo: str | None = None, extra: str = "",
                 encryption: str | None = f'passphrase_env = "{PASS_VAR}"') -> Path:
    return make_config(path.parent, name=path.name, state=state, cluster=cluster,
                       conninfo=conninfo, extra=extra, local=False, tail="".join(stores),
                       sections=f"[encryption]\n{encryption}" if encryption is not None else "")


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def holds_marker(root: Path) -> list[Path]:
    return [p for p in stored_files(root) if MARKER in p.read_bytes()]


def body_start(data: bytes) -> int:
    """Where an encrypted object's sealed chunks begin: after the header, the name
    frame (format 3) and the preamble."""
    off = HEADER_SIZE
    if objects.unpack_header(data[:HEADER_SIZE]).version >= 3:
        off += 8 + int.from_bytes(data[off + 4:off + 8], "little")
    return off + PREAMBLE_SIZE


def wal_object(root: Path, cluster: str, name: str) -> Path:
    [obj] = (root / cluster / "wal" / name[:16]).glob(name + ".*")
    return obj


# --------------------------------------------------------- the shared archive

@pytest.fixture(scope="module")
def enc(pg, tmp_path_factory):
    """A cluster archiving with an encrypted config into a local and an SFTP store:
    backup b1; batch A; a time mark; batch B and the marker table; backup b2; a dump;
    more WAL. Every archived segment is also copied in clear to `copies`."""
    need(SSHD.exists(), f"{SSHD} is absent (bin/test installs openssh-server when run as root)")
    tmp = tmp_path_factory.mktemp("enc")
    sshd = SshServer(tmp / "sshd").start()
    wk = runner(tmp)
    cluster = pg.new(keep=True)
    try:
        store = tmp / "store"
        state = tmp / "state"
        both = [local_store(store), sftp_store(sshd)]
        cfg = write_config(tmp / "walkeeper.toml", state=state, stores=both,
                           conninfo=cluster.conninfo)
        nopre = "[fetch]\nprefetch = 0\n"
        cfg_local = write_config(tmp / "local.toml", state=state, stores=both[:1],
                                 conninfo=cluster.conninfo, extra=nopre)
        cfg_sftp = write_config(tmp / "sftp.toml", state=tmp / "state-sftp", stores=both[1:],
                                conninfo=cluster.conninfo, extra=nopre)
        cfg_both = write_config(tmp / "both.toml", state=state, stores=both,
                                conninfo=cluster.conninfo, extra=nopre)
        copies = tmp / "copies"
        copies.mkdir()
        cluster.conf(archive_mode="on",
                     archive_command=f"{wk.path} --config {cfg} push %p %f && cp %p {copies}/%f")
        # The passphrase in the server's environment, as a service manager would set it.
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(PASS_VAR, PASSPHRASE)
            cluster.restart()

        def backup() -> dict:
            r = wk("--config", cfg, "basebackup", "--no-progress", "--json")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        b1 = backup()
        cluster.execute("CREATE TABLE t (batch text, n int)")
        cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
        t1 = mark(cluster)
        cluster.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
        cluster.execute(f"CREATE TABLE secret AS SELECT '{MARKER.decode()}-' || g AS s "
                        f"FROM generate_series(1, {MARKER_ROWS}) g")
        cluster.wait_archived(cluster.switch_wal())
        b2 = backup()
        r = wk("--config", cfg, "dump", "--json")
        assert r.returncode == 0, r.stderr
        dump = json.loads(r.stdout)
        cluster.execute("INSERT INTO t SELECT 'C', g FROM generate_series(1, 100) g")
        stats = cluster.wait_archived(cluster.switch_wal())
        assert stats["failed_count"] == 0, stats
        yield SimpleNamespace(tmp=tmp, sshd=sshd, wk=wk, cluster=cluster, store=store,
                              state=state, cfg=cfg, cfg_local=cfg_local, cfg_sftp=cfg_sftp,
                              cfg_both=cfg_both, copies=copies, b1=b1, b2=b2, dump=dump, t1=t1)
    finally:
        cluster.stop()
        sshd.stop()


def start_copy(pg, monkeypatch, dest: Path):
    """Start a recovered data directory with the passphrase in its environment (its
    restore_command is walkeeper fetch with the encrypted config)."""
    c = pg.from_pgdata(dest, archive_mode="off")
    monkeypatch.setenv(PASS_VAR, PASSPHRASE)
    c.start()
    monkeypatch.delenv(PASS_VAR)
    wait_recovered(c)
    return c


# ------------------------------------------------------------------ round trips

def test_wal_backup_and_dump_round_trip_through_both_stores(enc, tmp_path):
    wk = enc.wk
    listed = json.loads(wk("--config", enc.cfg, "list", "--json").stdout)
    assert [b["id"] for b in listed["backups"]] == [enc.b1["id"], enc.b2["id"]]
    assert set(listed["backups"][1]["stored_bytes"]) == {"local", "offsite"}
    assert [d["id"] for d in listed["dumps"]] == [enc.dump["id"]]
    assert {"local", "offsite"} == set(listed["dumps"][0]["stored_bytes"])

    # Every archived WAL file back from each store alone, byte for byte.
    names = sorted(p.name for p in enc.copies.iterdir())
    assert len(names) >= 4
    for cfg in (enc.cfg_local, enc.cfg_sftp):
        for name in names:
            dest = tmp_path / name
            r = wk("--config", cfg, "fetch", name, dest)
            assert r.returncode == 0, r.stderr
            assert dest.read_bytes() == (enc.copies / name).read_bytes(), (cfg, name)
            dest.unlink()

    # A damaged local copy: fetch says so and takes the offsite one.
    name = next(n for n in names if len(n) == 24)
    obj = wal_object(enc.store, "enc", name)
    good = obj.read_bytes()
    try:
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x01
        obj.write_bytes(bytes(bad))
        r = wk("--config", enc.cfg_both, "fetch", name, tmp_path / "RECOVERYXLOG")
        assert r.returncode == 0, r.stderr
        assert "corrupt" in r.stderr and "authentication" in r.stderr and "local" in r.stderr
        assert (tmp_path / "RECOVERYXLOG").read_bytes() == (enc.copies / name).read_bytes()
    finally:
        obj.write_bytes(good)

    # The dump back from each store alone.
    for db, cfg in (("from_local", enc.cfg_local), ("from_sftp", enc.cfg_sftp)):
        r = wk("--config", cfg, "restore-dump", enc.dump["id"], "--database", db)
        assert r.returncode == 0, r.stderr
        assert enc.cluster.scalar("SELECT count(*) FROM secret WHERE s LIKE %s",
                                  (MARKER.decode() + "%",), dbname=db) == MARKER_ROWS


def test_pitr_from_the_encrypted_archive(enc, pg, tmp_path, monkeypatch):
    dest = tmp_path / "restored"
    r = enc.wk("--config", enc.cfg, "recover", "--pgdata", dest, "--target-time", enc.t1,
               "--target-action", "promote")
    assert r.returncode == 0, r.stderr
    assert enc.b1["id"] in r.stdout + r.stderr
    c = start_copy(pg, monkeypatch, dest)
    assert rows(c) == ["A"]
    c.stop()


def test_verify_chain_and_drill(enc):
    r = enc.wk("--config", enc.cfg, "verify-chain", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] and data["problems"] == [] and len(data["windows"]) == 1
    # The drill from the SFTP store alone: backup b2 and every segment after it
    # decrypted on the way, and the marker rows back.
    sql = f"SELECT 1 / (count(*) = {MARKER_ROWS})::int FROM secret"
    cfg = write_config(enc.tmp / "drill.toml", state=enc.tmp / "state-drill",
                       stores=[sftp_store(enc.sshd)], conninfo=enc.cluster.conninfo,
                       extra=f"[drill]\nsql = {json.dumps(sql)}\n")
    r = enc.wk("--config", cfg, "drill", "--json", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] is True and result["backup"] == enc.b2["id"]


def test_stores_hold_no_plaintext(enc):
    # The control: the marker is in the WAL in clear (and the scan finds it there).
    assert holds_marker(enc.copies)
    for root in (enc.store, enc.sshd.directory):
        files = stored_files(root)
        for part in ("/enc/wal/", "/enc/backups/", "/enc/dumps/"):
            assert any(part in str(p) for p in files), (root, part)
        assert holds_marker(root) == [], root
        for p in files:
            data = p.read_bytes()
            if p.name in CLEAR:
                json.loads(data)
                continue
            assert objects.unpack_header(data[:HEADER_SIZE]).cipher == objects.CIPHER_AES256GCM, p
            assert data[HEADER_SIZE + 8:HEADER_SIZE + 12] == b"WKEN", p    # format 3's name
            assert data[body_start(data) - PREAMBLE_SIZE:][:4] == b"WKEC", p
        # Metadata is sealed too: no LSN, label or database name to read.
        for meta in [*root.rglob("backup.json"), *root.rglob("dump.json")]:
            raw = meta.read_bytes()
            assert b"start_lsn" not in raw and b"postgres" not in raw and b"walkeeper" not in raw
        for doc in root.rglob("encryption.json"):
            assert PASSPHRASE.encode() not in doc.read_bytes()
    # Nor is the passphrase anywhere walkeeper writes state (failure log, key cache).
    # (A detached prefetcher or pusher may still be removing its files meanwhile.)
    for p in stored_files(enc.tmp):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        assert PASSPHRASE.encode() not in data, p


# ---------------------------------------------------------------- key refusals

def test_wrong_missing_or_absent_key_is_exit_3(enc, tmp_path):
    """Every command refuses a wrong passphrase, a missing passphrase variable and a
    config without [encryption], with exit 3, before it writes anything."""
    bad_state = tmp_path / "state"        # a wrong key never touches the real key cache
    stores = [local_store(enc.store), sftp_store(enc.sshd)]
    cfg = write_config(tmp_path / "bad.toml", state=bad_state, stores=stores,
                       conninfo=enc.cluster.conninfo, extra="[fetch]\nprefetch = 0\n")
    plain = write_config(tmp_path / "plain.toml", state=bad_state, stores=stores,
                         conninfo=enc.cluster.conninfo, encryption=None)
    present = next(p for p in sorted(enc.copies.iterdir()) if len(p.name) == 24)
    # A valid segment under a name the archive does not hold yet.
    sysid = int(enc.cluster.scalar("SELECT system_identifier FROM pg_control_system()"))
    new = write_segment(tmp_path, "0000000100000000000000F0", sysid=sysid)
    before = stored_files(enc.store)

    def commands(c):
        return {
            "push present": ("--config", c, "push", present, present.name),
            "push new": ("--config", c, "push", new, new.name),
            "fetch": ("--config", c, "fetch", present.name, tmp_path / "RECOVERYXLOG"),
            "list": ("--config", c, "list"),
            "verify-chain": ("--config", c, "verify-chain"),
            "recover": ("--config", c, "recover", "--pgdata", tmp_path / "never", "--latest"),
            "basebackup": ("--config", c, "basebackup", "--no-progress"),
            "dump": ("--config", c, "dump"),
            "restore-dump": ("--config", c, "restore-dump", enc.dump["id"], "--database", "x"),
            "drill": ("--config", c, "drill"),
        }

    cases = [("wrong passphrase", cfg, {PASS_VAR: WRONG}, "wrong encryption key"),
             ("missing variable", cfg, {PASS_VAR: None}, f"${PASS_VAR} is not set"),
             ("no [encryption]", plain, {}, "encrypted")]
    failures = []
    for case, c, env, message in cases:
        for what, args in commands(c).items():
            if case == "no [encryption]" and what in ("basebackup", "dump", "drill"):
                continue            # covered by push: every writer asks the same question
            r = enc.wk(*args, env=env)
            line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            if r.returncode != 3 or message not in r.stderr:
                failures.append(f"{case} / {what}: exit {r.returncode}: {r.stderr.strip()}")
            elif len(r.stderr.strip().splitlines()) != 1:
                failures.append(f"{case} / {what}: more than one line: {r.stderr!r}")
            assert line.startswith("walkeeper ")
    assert not failures, "\n".join(failures)
    assert stored_files(enc.store) == before
    assert not (tmp_path / "RECOVERYXLOG").exists() and not (tmp_path / "never").exists()
    assert "x" not in {r[0] for r in enc.cluster.sql("SELECT datname FROM pg_database")}
    # The right key still works after all that.
    r = enc.wk("--config", cfg, "fetch", present.name, tmp_path / "RECOVERYXLOG")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------- small archives of synthetic segments

SEG_SIZE = 4 << 20          # four 1 MiB cipher chunks per object with codec "none"
SEGS = [f"0000000100000000000000{n:02X}" for n in range(1, 7)]


def key_file(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(os.urandom(48).hex().encode() + b"\n")
    path.chmod(mode)
    return path


@pytest.fixture
def tampered(tmp_path):
    """Six segments pushed with a key file and no compression; then 01 gets a flipped
    bit, 02 is cut at a chunk boundary, 03 lost its tail, 04 carries 05's second chunk
    (02 and 04 with a trailer recomputed to match, so that only the cipher sees it);
    06 is intact."""
    wk = runner(tmp_path)
    store = tmp_path / "store"
    key = key_file(tmp_path / "archive.key")
    cfg = write_config(tmp_path / "walkeeper.toml", state=tmp_path / "state",
                       stores=[local_store(store)], cluster="tamper",
                       encryption=f'key_file = "{key}"',
                       extra='[compression]\nalgorithm = "none"\n[fetch]\nprefetch = 0\n')
    originals = {}
    for name in SEGS:
        seg = write_segment(tmp_path, name, seg_size=SEG_SIZE)
        originals[name] = seg.read_bytes()
        r = wk("--config", cfg, "push", seg, name)
        assert r.returncode == 0, r.stderr
    full = SEAL_CHUNK + TAG_SIZE
    start = body_start(wal_object(store, "tamper", SEGS[0]).read_bytes())

    def parts(name):
        data = wal_object(store, "tamper", name).read_bytes()
        start = body_start(data)
        body = data[start:-TRAILER_SIZE]
        return data[:start], [body[i:i + full] for i in range(0, len(body), full)], \
            data[-TRAILER_SIZE:]

    def rewrite(name, head, chunks, trailer):
        body = head[HEADER_SIZE:] + b"".join(chunks)
        old = objects.unpack_trailer(trailer)
        trailer = objects.pack_trailer(objects.Trailer(old.original_size, len(body),
                                                       hashlib.sha256(body).digest()))
        wal_object(store, "tamper", name).write_bytes(head[:HEADER_SIZE] + body + trailer)

    head, chunks, trailer = parts(SEGS[0])
    assert len(chunks) == 4 and all(len(c) == full for c in chunks)
    obj = wal_object(store, "tamper", SEGS[0])
    raw = bytearray(obj.read_bytes())
    raw[start + full + 1000] ^= 0x01
    obj.write_bytes(bytes(raw))
    head, chunks, trailer = parts(SEGS[1])
    rewrite(SEGS[1], head, chunks[:2], trailer)
    obj = wal_object(store, "tamper", SEGS[2])
    with open(obj, "r+b") as f:
        f.truncate(obj.stat().st_size - 1000)
    head, chunks, trailer = parts(SEGS[3])
    _, other, _ = parts(SEGS[4])
    rewrite(SEGS[3], head, [chunks[0], other[1], *chunks[2:]], trailer)
    return SimpleNamespace(wk=wk, cfg=cfg, store=store, key=key, originals=originals,
                           tmp=tmp_path)


def test_tampered_objects_are_refused(tampered):
    wk, cfg, tmp = tampered.wk, tampered.cfg, tampered.tmp
    dest = tmp / "pg_wal"
    dest.mkdir()
    for name in SEGS[:4]:
        r = wk("--config", cfg, "fetch", name, dest / "RECOVERYXLOG")
        assert r.returncode == 255, (name, r.stderr)
        assert "corrupt" in r.stderr and "failed authentication" in r.stderr, (name, r.stderr)
        assert list(dest.iterdir()) == [], name          # nothing reached DEST_PATH
    for name in SEGS[4:]:
        r = wk("--config", cfg, "fetch", name, dest / "RECOVERYXLOG")
        assert r.returncode == 0, r.stderr
        assert (dest / "RECOVERYXLOG").read_bytes() == tampered.originals[name]
    # PostgreSQL re-archiving a damaged name: compared, never overwritten.
    seg = tmp / SEGS[0]
    r = wk("--config", cfg, "push", seg, SEGS[0])
    assert r.returncode == 1 and "damaged" in r.stderr, r.stderr

    r = wk("--config", cfg, "verify-chain", "--json")
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    corrupt = {p["object"].rsplit("/", 1)[-1].split(".")[0]: p["detail"]
               for p in data["problems"] if p["kind"] == "corrupt"}
    assert sorted(corrupt) == SEGS[:4], data["problems"]
    for name in SEGS[:4]:
        assert "failed authentication" in corrupt[name], corrupt[name]


def test_key_file_refusals(tampered, tmp_path):
    wk, cfg, store = tampered.wk, tampered.cfg, tampered.store
    name = SEGS[-1]
    seg = tmp_path / name
    # Another key file: a wrong key, told apart from damage.
    other = key_file(tmp_path / "other.key")
    wrong = write_config(tmp_path / "wrong.toml", state=tmp_path / "state",
                         stores=[local_store(store)], cluster="tamper",
                         encryption=f'key_file = "{other}"',
                         extra='[compression]\nalgorithm = "none"\n[fetch]\nprefetch = 0\n')
    for args in (("fetch", name, tmp_path / "out"), ("push", seg, name), ("verify-chain",)):
        r = wk("--config", wrong, *args)
        assert r.returncode == 3 and "wrong encryption key" in r.stderr, (args, r.stderr)
    # A passphrase config on a key-file archive.
    phrase = write_config(tmp_path / "phrase.toml", state=tmp_path / "state",
                          stores=[local_store(store)], cluster="tamper")
    r = wk("--config", phrase, "fetch", name, tmp_path / "out")
    assert r.returncode == 3 and "wrong encryption key" in r.stderr, r.stderr
    # The archive's own key file readable by others: refused until chmod 600.
    tampered.key.chmod(0o644)
    for args in (("fetch", name, tmp_path / "out"), ("push", seg, name)):
        r = wk("--config", cfg, *args)
        assert r.returncode == 3 and "chmod 600" in r.stderr, (args, r.stderr)
    tampered.key.chmod(0o600)
    tampered.key.rename(tmp_path / "moved.key")
    r = wk("--config", cfg, "fetch", name, tmp_path / "out")
    assert r.returncode == 3 and "cannot read" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_encryption_does_not_mix_with_a_plain_archive(tmp_path):
    wk = runner(tmp_path)
    store = tmp_path / "store"
    plain = write_config(tmp_path / "plain.toml", state=tmp_path / "state",
                         stores=[local_store(store)], encryption=None)
    secret = write_config(tmp_path / "secret.toml", state=tmp_path / "state",
                          stores=[local_store(store)])
    first, second = (write_segment(tmp_path, n) for n in SEGS[:2])
    r = wk("--config", plain, "push", first, first.name)
    assert r.returncode == 0, r.stderr
    r = wk("--config", secret, "push", second, second.name)
    assert r.returncode == 3 and "does not mix" in r.stderr, r.stderr
    assert not (store / "enc" / "encryption.json").exists()
    # A plain object read with [encryption] configured is not taken as good.
    r = wk("--config", secret, "fetch", first.name, tmp_path / "out")
    assert r.returncode == 255 and "not encrypted" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
