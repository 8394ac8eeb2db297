"""Encryption at rest: the archive's key, and the chunked AEAD of stored objects.

The key. `[encryption] passphrase_env` names a variable holding a passphrase, which is
stretched with scrypt (memory-hard; hashlib's, from OpenSSL); `key_file` names a file
of at least 32 bytes of random key material (mode 0600), which is used through
HMAC-SHA-256 without stretching. Either gives the archive's master key; the scrypt
salt and parameters live in every object's preamble and in `<cluster>/encryption.json`
of each store, with a 16-byte key check, so that a wrong passphrase is told apart from
a damaged object and a writer never starts a second key inside one archive. push runs
once per WAL segment, so a passphrase's master key is cached in state_dir/keys (0600,
beside everything else the database server already holds in clear); a key file needs
no cache.

An object. Each object gets its own random 32-byte salt and its own AES-256-GCM key,
HMAC-SHA-256(master, "walkeeper object key" || salt). The codec's stream is cut into
chunks of 1 MiB; chunk i is sealed with the nonce i (11 bytes, big-endian) || final
flag (1 byte) and the object's header and preamble as associated data. So a flipped
bit fails that chunk's tag, a chunk moved within the object fails its position, a
chunk from another object fails under that object's key, a header or preamble edit
fails every chunk, and a stream cut at a chunk boundary lacks its final flag. The
AEAD comes from `cryptography` (OpenSSL); nothing here is a hand-made primitive.
See docs/format.md and docs/encryption.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from walkeeper.errors import ConfigError, CorruptObject, ObjectExists, ObjectNotFound, \
    OperationFailed, StoreError
from walkeeper.record import record

KDF_SCRYPT = 1
KDF_KEY_FILE = 2
KDF_NAMES = {KDF_SCRYPT: "scrypt", KDF_KEY_FILE: "key-file"}
# scrypt N = 2**15, r = 8, p = 3: 32 MiB of memory (push stays under its 80 MB bar)
# and ~0.3 s of CPU per derivation, once per archive thanks to the cache.
SCRYPT_PARAMS = (15, 8, 3)
SEAL_CHUNK = 1 << 20
TAG_SIZE = 16
MIN_KEY_FILE_BYTES = 32

_PREAMBLE = struct.Struct("<4sBBBB16s16s32sI")
PREAMBLE_SIZE = _PREAMBLE.size  # 76

KdfParams = record("KdfParams", "kdf log_n r p salt")


class KeyMismatch(ConfigError):
    """The configured key is not the key the archive was encrypted with (exit 3)."""


def _aesgcm():
    # The class the public module re-exports (cryptography.hazmat.primitives.ciphers.aead
    # is `AESGCM = rust_openssl.aead.AESGCM`), taken from the bindings directly because
    # the public module imports ~14 ms of helpers that push, run once per segment, does
    # not need. tests/test_crypto.py checks that both are the same class.
    try:
        from cryptography.hazmat.bindings._rust import openssl

        return openssl.aead.AESGCM
    except (ImportError, AttributeError):  # a cryptography that moved it
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM


def _object_key(master: bytes, salt: bytes) -> bytes:
    return hmac.digest(master, b"walkeeper object key\0" + salt, "sha256")


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\1" if final else b"\0")


class ArchiveKey:
    """The master key of one archive, with the KDF parameters it came from."""

    def __init__(self, params: KdfParams, master: bytes):
        self.params = params
        self.master = master
        self.check = key_check(master)

    def sealer(self, header: bytes) -> "Sealer":
        return Sealer(self, header)

    def document(self) -> dict:
        p = self.params
        return {"format": 1, "cipher": "aes-256-gcm", "kdf": KDF_NAMES[p.kdf],
                "log_n": p.log_n, "r": p.r, "p": p.p, "salt": p.salt.hex(),
                "key_check": self.check.hex()}


def key_check(master: bytes) -> bytes:
    return hmac.digest(master, b"walkeeper key check", "sha256")[:16]


class Sealer:
    """Seals one object's codec stream: preamble first, then update()/finish()."""

    def __init__(self, key: ArchiveKey, header: bytes):
        salt = os.urandom(32)
        p = key.params
        self.preamble = _PREAMBLE.pack(b"WKEC", p.kdf, p.log_n, p.r, p.p, p.salt, key.check,
                                       salt, SEAL_CHUNK)
        self._aead = _aesgcm()(_object_key(key.master, salt))
        self._aad = header + self.preamble
        self._buf = bytearray()
        self._index = 0

    def _seal(self, chunk, final: bool) -> bytes:
        out = self._aead.encrypt(_nonce(self._index, final), chunk, self._aad)
        self._index += 1
        return out

    def update(self, data: bytes) -> list[bytes]:
        """Sealed chunks for the data so far; the last (partial or full) chunk waits
        for more data or finish(). Slices are views: push seals a ~5 MB zstd flush
        per segment, and copying it chunk by chunk cost more than the cipher."""
        out: list[bytes] = []
        if self._buf or len(data) <= SEAL_CHUNK:
            self._buf += data               # small pieces accumulate in place
            if len(self._buf) <= SEAL_CHUNK:
                return out
            data, self._buf = bytes(self._buf), bytearray()
        view = memoryview(data)
        pos = 0
        while len(data) - pos > SEAL_CHUNK:
            out.append(self._seal(view[pos:pos + SEAL_CHUNK], False))
            pos += SEAL_CHUNK
        self._buf = bytearray(view[pos:])
        return out

    def finish(self) -> bytes:
        out = self._seal(bytes(self._buf), True)
        self._buf = bytearray()
        return out


class Opener:
    """The codec stream of an encrypted object, as a file-like read(), each chunk
    authenticated before any of its bytes is returned."""

    def __init__(self, keyring: "Keyring", body, header: bytes):
        pre = b""
        while len(pre) < PREAMBLE_SIZE:
            b = body.read(PREAMBLE_SIZE - len(pre))
            if not b:
                raise CorruptObject("encrypted object shorter than its preamble")
            pre += b
        tag, kdf, log_n, r, p, kdf_salt, check, salt, chunk = _PREAMBLE.unpack(pre)
        if tag != b"WKEC" or kdf not in KDF_NAMES or chunk != SEAL_CHUNK:
            raise CorruptObject("encrypted object with a damaged or unknown preamble")
        params = KdfParams(kdf, log_n, r, p, kdf_salt)
        master = keyring.master(params, check)
        if not hmac.compare_digest(key_check(master), check):
            raise KeyMismatch(keyring.wrong_key_message())
        self._aead = _aesgcm()(_object_key(master, salt))
        self._aad = header + pre
        self._body = body
        self._raw = bytearray()
        self._plain = b""
        self._index = 0
        self._eof = False
        self._done = False

    def _next(self) -> None:
        full = SEAL_CHUNK + TAG_SIZE
        while len(self._raw) <= full and not self._eof:
            data = self._body.read(full)
            if data:
                self._raw += data
            else:
                self._eof = True
        final = len(self._raw) <= full
        piece = bytes(self._raw[:full])
        del self._raw[:full]
        if len(piece) < TAG_SIZE:
            raise CorruptObject(f"encrypted stream is truncated (chunk {self._index})")
        try:
            self._plain = self._aead.decrypt(_nonce(self._index, final), piece, self._aad)
        except Exception as exc:
            if type(exc).__name__ != "InvalidTag":
                raise
            raise CorruptObject(
                f"encrypted chunk {self._index} failed authentication: the object is "
                f"damaged, truncated, or holds a chunk from elsewhere") from None
        self._index += 1
        self._done = final

    def read(self, n: int = -1) -> bytes:
        while not self._plain and not self._done:
            self._next()
        if n is None or n < 0 or n >= len(self._plain):
            out, self._plain = self._plain, b""
        else:
            out, self._plain = self._plain[:n], self._plain[n:]
        return out


class Keyring:
    """The configured secret, read on first use only (push's fast path needs none)."""

    def __init__(self, passphrase_env: str = "", key_file: str = "", env=None,
                 cache_dir: str | None = None):
        self.passphrase_env = passphrase_env
        self.key_file = os.path.expanduser(key_file) if key_file else ""
        self._env = os.environ if env is None else env
        self._cache_dir = cache_dir
        self._secret: bytes | None = None
        self._masters: dict = {}

    @property
    def kdf(self) -> int:
        return KDF_KEY_FILE if self.key_file else KDF_SCRYPT

    def source(self) -> str:
        return (f"key file {self.key_file}" if self.key_file
                else f"the passphrase in ${self.passphrase_env}")

    def wrong_key_message(self) -> str:
        return (f"wrong encryption key: this archive was not encrypted with {self.source()} "
                f"([encryption] in the config)")

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._read_key_file() if self.key_file else self._read_passphrase()
        return self._secret

    def _read_passphrase(self) -> bytes:
        value = self._env.get(self.passphrase_env, "")
        if not value:
            raise ConfigError(f"[encryption] passphrase_env: ${self.passphrase_env} is not set "
                              f"or empty; export the archive's passphrase in it")
        return value.encode("utf-8")

    def _read_key_file(self) -> bytes:
        path = self.key_file
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ConfigError(f"[encryption] key_file {path}: cannot read it "
                              f"({exc.strerror})") from None
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000:       # not S_ISREG: a directory, say
            os.close(fd)
            raise ConfigError(f"[encryption] key_file {path} is not a file; give the path "
                              f"of the key file itself")
        with os.fdopen(fd, "rb") as f:
            if st.st_mode & 0o077:
                raise ConfigError(f"[encryption] key_file {path} is readable by others "
                                  f"(mode {st.st_mode & 0o777:04o}); run: chmod 600 {path}")
            data = f.read(1 << 16).strip()
        if len(data) < MIN_KEY_FILE_BYTES:
            raise ConfigError(f"[encryption] key_file {path} holds {len(data)} bytes, fewer "
                              f"than {MIN_KEY_FILE_BYTES}: make one with `openssl rand -base64 "
                              f"48 > {path}` (use passphrase_env for a passphrase)")
        return data

    def new_params(self) -> KdfParams:
        salt = os.urandom(16)
        if self.kdf == KDF_SCRYPT:
            return KdfParams(KDF_SCRYPT, *SCRYPT_PARAMS, salt)
        return KdfParams(KDF_KEY_FILE, 0, 0, 0, salt)

    def master(self, params: KdfParams, check: bytes | None = None) -> bytes:
        """The master key for these KDF parameters; KeyMismatch if the archive uses the
        other kind of secret. check: the archive's key check, when known; a derived key
        that does not match it is not cached (a caller with a wrong passphrase must not
        evict the right key from the cache)."""
        got = self._masters.get(params)
        if got is not None:
            return got
        if params.kdf != self.kdf:
            want = "a key file" if params.kdf == KDF_KEY_FILE else "a passphrase"
            raise KeyMismatch(f"wrong encryption key: this archive is encrypted with {want}, "
                              f"but [encryption] gives {self.source()}")
        secret = self.secret()
        if params.kdf == KDF_KEY_FILE:
            got = hmac.digest(params.salt, b"walkeeper key file\0" + secret, "sha256")
        else:
            got = self._cached_scrypt(params, secret, check)
        self._masters[params] = got
        return got

    def _cached_scrypt(self, params: KdfParams, secret: bytes, check: bytes | None) -> bytes:
        if not (10 <= params.log_n <= 20 and 1 <= params.r <= 32 and 1 <= params.p <= 16):
            raise CorruptObject(f"scrypt parameters out of range: {params}")
        ident = hashlib.sha256(b"%d/%d/%d/" % params[1:4] + params.salt).hexdigest()[:32]
        probe = hashlib.sha256(b"walkeeper kdf cache\0" + params.salt + secret).digest()[:16]
        path = os.path.join(self._cache_dir, ident) if self._cache_dir else None
        if path:
            try:
                with open(path, "rb") as f:
                    data = f.read(64)
                if len(data) == 48 and hmac.compare_digest(data[:16], probe):
                    return data[16:]
            except OSError:
                pass
        n = 1 << params.log_n
        master = hashlib.scrypt(secret, salt=params.salt, n=n, r=params.r, p=params.p,
                                maxmem=130 * n * params.r + (1 << 20), dklen=32)
        if path and (check is None or hmac.compare_digest(key_check(master), check)):
            try:
                os.makedirs(self._cache_dir, mode=0o700, exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(probe + master)
                os.replace(tmp, path)
            except OSError:
                pass        # no cache: the next process derives it again
        return master

    def opener(self, body, header: bytes) -> Opener:
        return Opener(self, body, header)


# The archive-level record: <cluster>/encryption.json in every store.

def _doc_params(doc: dict) -> tuple[KdfParams, bytes]:
    kinds = {v: k for k, v in KDF_NAMES.items()}
    return (KdfParams(kinds[doc["kdf"]], int(doc["log_n"]), int(doc["r"]), int(doc["p"]),
                      bytes.fromhex(doc["salt"])), bytes.fromhex(doc["key_check"]))


def _read_doc(store, key: str) -> dict | None:
    import json

    try:
        reader = store.open(key)
    except ObjectNotFound:
        return None
    try:
        data = reader.read(1 << 16)
    finally:
        reader.close()
    try:
        doc = json.loads(data)
        _doc_params(doc)
        return doc
    except (ValueError, KeyError, TypeError):
        raise OperationFailed(f"store {store.name!r}: {key} is damaged; it records how the "
                              f"archive is encrypted, restore it from another store") from None


def verify_passphrase(keyring: Keyring | None, stores: list, cluster: str) -> None:
    """Read-only: KeyMismatch when the configured key is not the archive's (as
    recorded in the encryption.json of any reachable store); for commands that may
    otherwise decrypt nothing (list on an archive of WAL only)."""
    if keyring is None:
        return
    from walkeeper.format.layout import encryption_key

    for s in stores:
        try:
            doc = _read_doc(s, encryption_key(cluster))
        except (StoreError, OperationFailed):
            continue
        if doc:
            params, check = _doc_params(doc)
            if not hmac.compare_digest(key_check(keyring.master(params, check)), check):
                raise KeyMismatch(keyring.wrong_key_message())
            return


def writer_key(keyring: Keyring | None, stores: list, cluster: str) -> ArchiveKey | None:
    """The key new objects of this archive are sealed with, or None for a plain archive.

    Refuses (exit 3) a wrong key, a plain configuration for an encrypted archive and an
    encrypted configuration for an archive that already holds plain objects; records
    the archive's parameters in stores that lack them. Stores that cannot be read are
    skipped here: writing to them fails on its own.
    """
    import json

    from walkeeper.format.layout import encryption_key

    key = encryption_key(cluster)
    for _ in range(3):
        docs = {}
        for s in stores:
            try:
                docs[s] = _read_doc(s, key)
            except StoreError:
                continue
        found = [d for d in docs.values() if d]
        if keyring is None:
            if found:
                where = next(s.name for s, d in docs.items() if d)
                raise ConfigError(f"the archive of cluster {cluster!r} is encrypted ({key} in "
                                  f"store {where!r}) and no [encryption] is configured; add "
                                  f"its key to the config")
            return None
        if any(d != found[0] for d in found):
            raise OperationFailed(f"stores disagree about the encryption of cluster "
                                  f"{cluster!r} ({key} differs); each store must hold the "
                                  f"same archive")
        if found:
            params, check = _doc_params(found[0])
            out = ArchiveKey(params, keyring.master(params, check))
            if not hmac.compare_digest(out.check, check):
                raise KeyMismatch(keyring.wrong_key_message())
        else:
            for s in docs:
                if any(e.name not in ("probe", "encryption.json") for e in s.list(cluster)):
                    raise ConfigError(f"store {s.name!r} already holds unencrypted objects of "
                                      f"cluster {cluster!r}; walkeeper does not mix plain and "
                                      f"encrypted objects: give the encrypted archive a new "
                                      f"`cluster` name or store path")
            params = keyring.new_params()
            out = ArchiveKey(params, keyring.master(params))
        data = (json.dumps(out.document(), indent=2) + "\n").encode()
        try:
            for s, d in docs.items():
                if d is None:
                    try:
                        s.put_bytes(key, data)
                    except StoreError as exc:
                        if isinstance(exc, ObjectExists):
                            raise
        except ObjectExists:        # another writer recorded it first: read theirs
            continue
        return out
    raise OperationFailed(f"cannot agree on the encryption of cluster {cluster!r} with "
                          f"concurrent writers; retry")
