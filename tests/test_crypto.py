"""Encryption at rest (walkeeper/format/crypto.py, the cipher of docs/format.md).

Pure round trips and every kind of tampering on objects in memory, the key's
sources and their refusals, and the archive-level record (encryption.json) on a
real local store. Commands on encrypted archives: tests/test_encryption.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from walkeeper.format import crypto
from walkeeper.format import objects
from walkeeper.format.crypto import PREAMBLE_SIZE, SEAL_CHUNK, TAG_SIZE, KeyMismatch, Keyring
from walkeeper.errors import ConfigError, CorruptObject
from walkeeper.format.objects import CHUNK, HEADER_SIZE, TRAILER_SIZE, Encoder, decode
from walkeeper.stores import archive_store
from walkeeper.stores.local_client import LocalStore
from storeroot import root as store_root

MiB = 1 << 20


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    # The real parameters cost ~0.3 s per derivation; these tests derive many keys.
    monkeypatch.setattr(crypto, "SCRYPT_PARAMS", (10, 8, 1))


def keyring(passphrase: str = "correct horse battery staple", cache=None) -> Keyring:
    return Keyring("WK_PASS", "", {"WK_PASS": passphrase}, cache)


def archive_key(ring: Keyring) -> crypto.ArchiveKey:
    params = ring.new_params()
    return crypto.ArchiveKey(params, ring.master(params))


def seal(data: bytes, key, codec: str = "zstd", pieces: int = CHUNK) -> bytes:
    enc = Encoder(codec, 3, len(data), 0, key)
    return b"".join(enc.run(data[i:i + pieces] for i in range(0, len(data), pieces)))


def open_(obj: bytes, ring) -> bytes:
    out = bytearray()
    decode(io.BytesIO(obj).read, out.extend, ring)
    return bytes(out)


def data_of(size: int, seed: int = 0) -> bytes:
    # Half compressible text, half random: WAL-like.
    half = size // 2
    return (b"INSERT INTO garage VALUES (42, 'brake pads'); " * (half // 45 + 1))[:half] + \
        os.urandom(size - half)


RING = keyring()
KEY = archive_key(RING)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("codec", ["zstd", "none"])
@pytest.mark.parametrize("size", [0, 1, 1000, SEAL_CHUNK - 1, SEAL_CHUNK, SEAL_CHUNK + 1,
                                  2 * SEAL_CHUNK, 3 * SEAL_CHUNK + 5])
def test_round_trip(codec, size):
    data = data_of(size) if codec == "zstd" else os.urandom(size)
    obj = seal(data, KEY, codec)
    assert objects.unpack_header(obj[:HEADER_SIZE]) == (2, codec, objects.CIPHER_AES256GCM)
    assert open_(obj, RING) == data
    r = objects.ThreadedObjectReader(io.BytesIO(obj).read, RING)
    try:
        got = b"".join(iter(lambda: r.read(CHUNK), b""))
    finally:
        r.close()
    assert got == data
    t = objects.unpack_trailer(obj[-TRAILER_SIZE:])
    assert t.original_size == size
    assert t.sha256 == hashlib.sha256(obj[HEADER_SIZE:-TRAILER_SIZE]).digest()


def test_no_plaintext_in_the_stored_bytes():
    marker = b"walkeeper-secret-marker-8c1f"
    data = b"".join(marker + os.urandom(100) for _ in range(2000))
    for codec in ("zstd", "none"):
        obj = seal(data, KEY, codec)
        assert marker not in obj
        assert open_(obj, RING) == data


def test_each_object_has_its_own_key():
    data = b"same content" * 1000
    a, b = seal(data, KEY), seal(data, KEY)
    assert a[HEADER_SIZE + PREAMBLE_SIZE:] != b[HEADER_SIZE + PREAMBLE_SIZE:]


def test_the_public_aead_class_is_the_one_used():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert crypto._aesgcm() is AESGCM


# ------------------------------------------------------------------- tampering
BIG = data_of(3 * SEAL_CHUNK + 1234)


def chunks_of(obj: bytes, codec: str = "none") -> tuple[bytes, list[bytes], bytes]:
    """(header + preamble, sealed chunks, trailer) of an object."""
    head = obj[:HEADER_SIZE + PREAMBLE_SIZE]
    body = obj[HEADER_SIZE + PREAMBLE_SIZE:-TRAILER_SIZE]
    full = SEAL_CHUNK + TAG_SIZE
    return head, [body[i:i + full] for i in range(0, len(body), full)], obj[-TRAILER_SIZE:]


def reassemble(head: bytes, chunks: list[bytes], fix_trailer: bool = True,
               trailer: bytes = b"") -> bytes:
    """An object from parts, with a trailer recomputed to match (so that only the
    AEAD stands between the tampering and the reader)."""
    body = head[HEADER_SIZE:] + b"".join(chunks)
    if fix_trailer:
        old = objects.unpack_trailer(trailer)
        trailer = objects.pack_trailer(objects.Trailer(old.original_size, len(body),
                                                       hashlib.sha256(body).digest()))
    return head[:HEADER_SIZE] + body + trailer


def test_flipped_bit_anywhere_is_refused():
    obj = seal(BIG, KEY, "none")
    for where in [HEADER_SIZE + PREAMBLE_SIZE, HEADER_SIZE + PREAMBLE_SIZE + 5000,
                  len(obj) // 2, len(obj) - TRAILER_SIZE - 1, len(obj) - TRAILER_SIZE - 20]:
        bad = bytearray(obj)
        bad[where] ^= 0x01
        with pytest.raises(CorruptObject):
            open_(bytes(bad), RING)
        # even with a trailer forged to match the damaged body: the chunk's tag fails
        head, chunks, trailer = chunks_of(bytes(bad))
        with pytest.raises(CorruptObject, match="authentication"):
            open_(reassemble(head, chunks, trailer=trailer), RING)


@pytest.mark.parametrize("offset", range(0, PREAMBLE_SIZE, 3))
def test_damaged_preamble_is_corruption_not_a_wrong_key(offset):
    obj = seal(data_of(5000), KEY)
    bad = bytearray(obj)
    bad[HEADER_SIZE + offset] ^= 0x04
    with pytest.raises(CorruptObject):
        open_(bytes(bad), RING)


def test_truncated_at_every_chunk_boundary_is_refused():
    obj = seal(BIG, KEY, "none")
    head, chunks, trailer = chunks_of(obj)
    assert len(chunks) == 4
    for n in range(len(chunks)):
        with pytest.raises(CorruptObject):
            open_(reassemble(head, chunks[:n], trailer=trailer), RING)
    for cut in (1, TRAILER_SIZE, TRAILER_SIZE + 1, TRAILER_SIZE + TAG_SIZE, len(obj) // 2):
        with pytest.raises(CorruptObject):
            open_(obj[:-cut], RING)


def test_reordered_chunks_are_refused():
    head, chunks, trailer = chunks_of(seal(BIG, KEY, "none"))
    swapped = [chunks[1], chunks[0]] + chunks[2:]
    with pytest.raises(CorruptObject, match="authentication"):
        open_(reassemble(head, swapped, trailer=trailer), RING)


def test_chunk_from_another_object_is_refused():
    head_a, chunks_a, trailer_a = chunks_of(seal(BIG, KEY, "none"))
    _, chunks_b, _ = chunks_of(seal(BIG, KEY, "none"))      # same key, same content
    spliced = [chunks_a[0], chunks_b[1]] + chunks_a[2:]
    with pytest.raises(CorruptObject, match="authentication"):
        open_(reassemble(head_a, spliced, trailer=trailer_a), RING)
    # nor a whole body under another object's header and preamble
    with pytest.raises(CorruptObject):
        open_(reassemble(head_a, chunks_b, trailer=trailer_a), RING)


def test_header_edit_is_refused():
    obj = seal(data_of(5000), KEY, "none")
    bad = objects.pack_header("zstd", objects.CIPHER_AES256GCM) + obj[HEADER_SIZE:]
    with pytest.raises(CorruptObject):
        open_(bad, RING)


# ----------------------------------------------------------------------- keys
def test_wrong_passphrase_is_a_key_error_not_corruption():
    obj = seal(data_of(5000), KEY)
    with pytest.raises(KeyMismatch, match="wrong encryption key") as exc:
        open_(obj, keyring("Correct horse battery staple"))
    assert exc.value.exit_code == 3
    assert "horse" not in exc.value.line()


def test_key_file_for_a_passphrase_archive_is_a_key_error(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(os.urandom(48))
    path.chmod(0o600)
    with pytest.raises(KeyMismatch, match="passphrase"):
        open_(seal(b"x" * 100, KEY), Keyring("", str(path)))


def test_encrypted_object_without_a_key_is_a_config_error():
    with pytest.raises(ConfigError, match="encrypted"):
        open_(seal(b"x" * 100, KEY), None)


def test_plain_object_in_an_encrypted_archive_is_refused():
    plain = b"".join(Encoder("zstd").run([b"x" * 100]))
    with pytest.raises(CorruptObject, match="not encrypted"):
        open_(plain, RING)


def test_missing_passphrase_variable():
    with pytest.raises(ConfigError, match=r"\$WK_PASS is not set"):
        Keyring("WK_PASS", "", {}).secret()


def test_key_file_round_trip_and_refusals(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    path.chmod(0o600)
    ring = Keyring("", str(path))
    obj = seal(BIG, archive_key(ring))
    assert open_(obj, Keyring("", str(path))) == BIG
    other = tmp_path / "other"
    other.write_bytes(os.urandom(48))
    other.chmod(0o600)
    with pytest.raises(KeyMismatch):
        open_(obj, Keyring("", str(other)))
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others.*chmod 600"):
        Keyring("", str(path)).secret()
    short = tmp_path / "short"
    short.write_bytes(b"hunter2\n")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="fewer than 32"):
        Keyring("", str(short)).secret()
    with pytest.raises(ConfigError, match="cannot read"):
        Keyring("", str(tmp_path / "absent")).secret()


def test_master_key_cache(tmp_path, monkeypatch):
    cache = tmp_path / "keys"
    ring = keyring(cache=str(cache))
    params = ring.new_params()
    master = ring.master(params)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700

    def no_scrypt(*a, **kw):
        raise AssertionError("scrypt ran although the cache holds the key")

    monkeypatch.setattr(crypto.hashlib, "scrypt", no_scrypt)
    assert keyring(cache=str(cache)).master(params) == master
    # a different passphrase never gets the cached key
    monkeypatch.undo()
    monkeypatch.setattr(crypto, "SCRYPT_PARAMS", (10, 8, 1))
    assert keyring("another", cache=str(cache)).master(params) != master


# ------------------------------------------------- the archive's encryption.json
def store(tmp_path, name="local") -> LocalStore:
    return archive_store(LocalStore(name, str(store_root(tmp_path / name))))


def test_writer_key_records_and_checks_the_archive_key(tmp_path):
    a, b = store(tmp_path, "a"), store(tmp_path, "b")
    key = crypto.writer_key(RING, [a], "main")
    doc = json.loads((tmp_path / "a" / "main" / "encryption.json").read_bytes())
    assert doc["kdf"] == "scrypt" and doc["key_check"] == key.check.hex()
    assert "passphrase" not in json.dumps(doc)
    # the same key again, and a store added later gets the same record
    again = crypto.writer_key(keyring(), [a, b], "main")
    assert again.master == key.master
    assert json.loads((tmp_path / "b" / "main" / "encryption.json").read_bytes()) == doc
    with pytest.raises(KeyMismatch):
        crypto.writer_key(keyring("typo"), [a, b], "main")
    with pytest.raises(ConfigError, match=r"is encrypted .* no \[encryption\]"):
        crypto.writer_key(None, [a], "main")


def test_writer_key_refuses_to_encrypt_into_a_plain_archive(tmp_path):
    a = store(tmp_path)
    a.put_bytes("main/identity.json", b"{}\n")
    assert crypto.writer_key(None, [a], "main") is None
    with pytest.raises(ConfigError, match="does not mix"):
        crypto.writer_key(RING, [a], "main")
    # another cluster name in the same store is a new archive
    assert crypto.writer_key(RING, [a], "main-encrypted") is not None


def test_a_wrong_passphrase_does_not_evict_the_cached_key(tmp_path):
    cache = tmp_path / "keys"
    ring = keyring(cache=str(cache))
    params = ring.new_params()
    right = crypto.ArchiveKey(params, ring.master(params))
    (cached,) = cache.iterdir()
    before = cached.read_bytes()
    with pytest.raises(KeyMismatch):
        open_(seal(b"x" * 100, right), keyring("wrong", cache=str(cache)))
    assert cached.read_bytes() == before


def test_verify_passphrase_is_read_only(tmp_path):
    a = store(tmp_path)
    crypto.verify_passphrase(RING, [a], "main")           # nothing recorded yet: nothing to say
    assert not (tmp_path / "local" / "main").exists()
    crypto.writer_key(RING, [a], "main")
    crypto.verify_passphrase(keyring(), [a], "main")
    with pytest.raises(KeyMismatch):
        crypto.verify_passphrase(keyring("wrong"), [a], "main")
