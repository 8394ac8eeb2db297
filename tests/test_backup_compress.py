"""Where a base backup is compressed (backup.compress): the choice, the decoding of a
server-compressed stream as it passes, and a real PostgreSQL 15 whose server-side zstd
stream is stored as it is, and what happens when that stream is damaged."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pgharness import PG_BIN
from walkeeper import config as config_mod
from walkeeper.backups import basebackup as backup
from walkeeper.errors import ConfigError, OperationFailed
from walkeeper.format import objects
from test_backup import archiving_cluster, backup_jsons, decoded, files, frame_checksummed


PRIMARY15 = {"server_version_num": 150010, "in_recovery": False}


# ------------------------------------------------------------------- the choice

@pytest.mark.parametrize("setting, codec, info, server", [
    ("auto", "zstd", PRIMARY15, True),
    ("server", "zstd", PRIMARY15, True),
    ("client", "zstd", PRIMARY15, False),
    ("auto", "none", PRIMARY15, False),
    ("auto", "zstd", {"server_version_num": 140009, "in_recovery": False}, False),
    ("auto", "zstd", {"server_version_num": 150010, "in_recovery": True}, False),
])
def test_where_the_backup_is_compressed(setting, codec, info, server):
    assert backup.compress_on_server(setting, codec, info) is server


@pytest.mark.parametrize("codec, info, words", [
    ("none", PRIMARY15, "compression.algorithm is not zstd"),
    ("zstd", {"server_version_num": 140009, "in_recovery": False}, "older than PostgreSQL 15"),
    ("zstd", {"server_version_num": 150010, "in_recovery": True}, "standby"),
])
def test_server_compression_where_it_cannot_be_is_a_config_error(codec, info, words):
    with pytest.raises(ConfigError) as exc:
        backup.compress_on_server("server", codec, info)
    assert words in exc.value.line() and 'backup.compress = "client"' in exc.value.line()


# ------------------------------------------------------------------- the decoder

def _decode_through(stream: bytes, piece: int = 1 << 16) -> tuple[int, list[int]]:
    seen: list[int] = []
    dec = backup._Decoder(lambda data: seen.append(len(data)))
    try:
        for i in range(0, len(stream), piece):
            dec.put(stream[i:i + piece])
        dec.finish()
        return dec.size, seen
    finally:
        dec.close()


def test_decoder_counts_what_the_stream_decodes_to():
    content = os.urandom(1 << 16) * 40 + b"tail"
    stream = zstandard.ZstdCompressor(level=3).compress(content)
    size, seen = _decode_through(stream, 1000)
    assert size == len(content) == sum(seen)


def test_decoder_memory_does_not_grow_with_the_compression_ratio():
    """256 MiB of zeros compress to a few KiB: decoded, they come out a chunk at a time."""
    comp = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    stream = b"".join(comp.compress(zeros) for _ in range(256)) + comp.flush()
    assert len(stream) < 64 << 10
    size, seen = _decode_through(stream)
    assert size == 256 << 20 and max(seen) <= objects.CHUNK


@pytest.mark.parametrize("damage", ["garbage", "trailing", "flipped"])
def test_decoder_refuses_a_damaged_stream(damage):
    content = os.urandom(1 << 20)
    stream = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(content)
    if damage == "garbage":
        stream = b"not a zstd stream at all" * 100
    elif damage == "trailing":
        stream += b"\x01\x02\x03 more bytes after the frame"
    else:
        stream = stream[:-3] + bytes([stream[-3] ^ 0x40]) + stream[-2:]
    with pytest.raises(OperationFailed) as exc:
        _decode_through(stream)
    assert "zstd stream" in exc.value.line()


# -------------------------------------------------- a real server's zstd stream

def _fake_bindir(tmp_path: Path, script: str) -> Path:
    """A bindir whose pg_basebackup is `script` (the real one for everything else)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    for prog in PG_BIN.iterdir():
        if prog.name != "pg_basebackup":
            (bindir / prog.name).symlink_to(prog)
    fake = bindir / "pg_basebackup"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    return bindir


def test_server_stream_damaged_on_the_way_stores_no_backup(pg, wk, tmp_path):
    """A pg_basebackup that exits 0 after passing on only part of a real server-side
    zstd stream (or one that is not zstd): no backup is completed, nothing is left
    under the final name."""
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path, extra='[backup]\ncompress = "server"')
    cluster.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
    real = tmp_path / "server.tar.zst"
    with open(real, "wb") as out:
        subprocess.run([str(PG_BIN / "pg_basebackup"), "-h", str(cluster.socket_dir),
                        "-p", str(cluster.port), "-U", cluster.user, "-D", "-", "-Ft",
                        "-X", "none", "-c", "fast", "--no-manifest",
                        "--compress=server-zstd:3"], stdout=out, check=True,
                       stderr=subprocess.DEVNULL)
    stream = real.read_bytes()
    half = tmp_path / "half.tar.zst"
    half.write_bytes(stream[:len(stream) // 2])
    # The frame's magic number changed: without a content checksum in the server's
    # frame (PostgreSQL writes none) it is the damage zstd itself can see.
    flipped = tmp_path / "flipped.tar.zst"
    flipped.write_bytes(bytes([stream[0] ^ 1]) + stream[1:])
    for bad, words in ((half, "end-of-archive"), (flipped, "zstd stream")):
        bindir = _fake_bindir(tmp_path / bad.stem, f'cat "{bad}"\n')
        cfg = config_mod.load(str(cfg_path))
        cfg.values["postgres.bindir"] = str(bindir)
        with pytest.raises(OperationFailed) as exc:
            backup.take_basebackup(cfg, None, False)
        assert words in exc.value.line(), exc.value.line()
        assert not backup_jsons(tmp_path / "local")
        assert not files(tmp_path / "local" / "test" / "backups", "base.tar.zst")


def test_server_compressed_backup_encrypted_restores(pg, wk, tmp_path, monkeypatch):
    """The server's stream sealed as it passes: no plaintext in the store, and the
    restored tar is byte for byte what the server sent."""
    monkeypatch.setenv("WK_TEST_PASSPHRASE", "correct horse battery staple")
    cluster, cfg_path = archiving_cluster(
        pg, wk, tmp_path, extra='[backup]\ncompress = "server"\n'
                                '[encryption]\npassphrase_env = "WK_TEST_PASSPHRASE"')
    cluster.execute("CREATE TABLE marker AS SELECT 'plaintext-marker-' || g AS v "
                    "FROM generate_series(1, 20000) g")
    cfg = config_mod.load(str(cfg_path))
    info = backup.take_basebackup(cfg, None, False)
    [tar_obj] = files(tmp_path / "local" / "test" / "backups", "base.tar.zst")
    stored = tar_obj.read_bytes()
    assert b"plaintext-marker" not in stored and b"backup_label" not in stored
    out = io.BytesIO()
    with open(tar_obj, "rb") as f:
        objects.decode(f.read, out.write, cfg.keyring, name=info.files[0].key)
    raw = out.getvalue()
    assert len(raw) == info.files[0].size
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
    assert "backup_label" in names and "backup_manifest" not in names
    assert info.to_json()["files"][0]["size"] == len(raw)


def test_server_compression_keeps_the_client_lean(pg, wk, tmp_path):
    """What makes the server mode pay: walkeeper stores the server's frame (which, unlike
    walkeeper's own, carries no content checksum: the body's SHA-256 covers it) and
    decodes it only to read backup_label and count the size."""
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
    info = backup.take_basebackup(config_mod.load(str(cfg_path)), None, False)
    [tar_obj] = files(tmp_path / "local" / "test" / "backups", "base.tar.zst")
    assert not frame_checksummed(tar_obj)
    assert len(decoded(tar_obj)) == info.files[0].size


def test_a_server_without_zstd_falls_back_to_the_client(pg, wk, tmp_path, capsys):
    """auto on a server built without zstd: its refusal comes before any backup starts;
    walkeeper says so and compresses the backup itself (backup_manifest included).
    backup.compress = "server" fails instead."""
    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    refuse = ('case "$*" in *server-zstd*)\n'
              '  echo "pg_basebackup: error: could not initiate base backup: ERROR:  zstd '
              'compression is not supported by this build" >&2; exit 1 ;;\nesac\n'
              f'exec "{PG_BIN / "pg_basebackup"}" "$@"\n')
    bindir = _fake_bindir(tmp_path / "nozstd", refuse)
    cfg = config_mod.load(str(cfg_path))
    cfg.values["postgres.bindir"] = str(bindir)
    info = backup.take_basebackup(cfg, None, False)
    assert "cannot compress with zstd" in capsys.readouterr().err
    [tar_obj] = files(tmp_path / "local" / "test" / "backups", "base.tar.zst")
    assert frame_checksummed(tar_obj)
    with tarfile.open(fileobj=io.BytesIO(decoded(tar_obj))) as tar:
        assert "backup_manifest" in tar.getnames()
    assert [p.parent.name for p in backup_jsons(tmp_path / "local")] == [info.id]

    cfg.values["backup.compress"] = "server"
    with pytest.raises(OperationFailed) as exc:
        backup.take_basebackup(cfg, None, False)
    assert "not supported by this build" in exc.value.line()
    assert len(backup_jsons(tmp_path / "local")) == 1
