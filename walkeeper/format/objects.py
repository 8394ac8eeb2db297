"""The stored-object format: one self-verifying stream per stored file.

    header   zstd skippable frame: magic 0x184D2A50, length 8, b"WKEO", version, codec, cipher, 0
    body     the codec's bytes (a zstd frame carrying its own content checksum, or the
             original bytes for codec "none"); encrypted (cipher 1): a preamble, then
             those bytes sealed in authenticated chunks (crypto.py)
    trailer  zstd skippable frame: magic 0x184D2A50, length 56,
             b"WKET", version, 0, 0, 0, original size (u64), body size (u64), sha256 (32 bytes)

Version 3 (written today, whenever the writer knows the object's store key, which every
store path does): the body starts with a name frame, a zstd skippable frame (magic
0x184D2A51, length, b"WKEN", the store key in UTF-8), so an object copied under
another name says so before a byte of it is used; encrypted, the name frame is part
of every chunk's associated data, so it cannot be edited to match either.

Version 2 (written today): the trailer's SHA-256 covers the body, the bytes stored, so
an object is checked by hashing what is stored (a quarter of the original bytes for
WAL, a fifth or less for a database) while zstd's own frame checksum (XXH64) checks
the decompressed content. Version 1 (read, never written): the SHA-256 covers the
original bytes. Header and trailer are zstd skippable frames, so `zstd -d NAME.zst` on
an unencrypted object gives back the original file with nothing but the stock zstd
tool. The trailer comes last because sizes and checksum are only known once the
stream has been written; readers keep a sliding 64-byte tail instead of seeking.
See docs/format.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator

from walkeeper.errors import ConfigError, CorruptObject
from walkeeper.record import record

FORMAT_VERSION = 3          # what is written (2 by an Encoder given no name)
READABLE_VERSIONS = (1, 2, 3)
SKIPPABLE_MAGIC = 0x184D2A50
NAME_MAGIC = 0x184D2A51     # the name frame of version 3 (another zstd skippable magic)
NAME_MAX = 1024
CODECS = {"none": 0, "zstd": 1}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
CIPHER_NONE = 0
CIPHER_AES256GCM = 1

_HEADER = struct.Struct("<II4sBBBB")
_TRAILER = struct.Struct("<II4sB3sQQ32s")
_NAME_HEAD = struct.Struct("<II4s")
HEADER_SIZE = _HEADER.size  # 16
TRAILER_SIZE = _TRAILER.size  # 64
CHUNK = 1 << 20


class Trailer(record("Trailer", "original_size body_size sha256 version",
                         defaults=(FORMAT_VERSION,))):
    """sha256: of the body (version 2) or of the original bytes (version 1)."""

    __slots__ = ()

    @property
    def checksum(self) -> str:
        return self.sha256.hex()


Header = record("Header", "version codec cipher")


def pack_header(codec: str, cipher: int = CIPHER_NONE, version: int = FORMAT_VERSION) -> bytes:
    return _HEADER.pack(SKIPPABLE_MAGIC, 8, b"WKEO", version, CODECS[codec], cipher, 0)


def unpack_header(buf: bytes) -> Header:
    """Raise CorruptObject unless `buf` starts with a header this walkeeper reads."""
    if len(buf) < HEADER_SIZE:
        raise CorruptObject("object shorter than its header")
    magic, length, tag, version, codec, cipher, reserved = _HEADER.unpack_from(buf)
    if magic != SKIPPABLE_MAGIC or length != 8 or tag != b"WKEO" or reserved:
        raise CorruptObject("not a walkeeper object (bad header)")
    if version not in READABLE_VERSIONS:
        raise CorruptObject(f"unsupported object format version {version}")
    if cipher not in (CIPHER_NONE, CIPHER_AES256GCM) or cipher and version < 2:
        raise CorruptObject(f"object is encrypted with cipher {cipher}, which this walkeeper "
                            f"does not know")
    if codec not in CODEC_NAMES:
        raise CorruptObject(f"unknown codec {codec}")
    return Header(version, CODEC_NAMES[codec], cipher)


def pack_name(name: str) -> bytes:
    """Version 3's name frame: the store key the object was written under."""
    raw = name.encode("utf-8")
    if not raw or len(raw) > NAME_MAX:
        raise ValueError(f"object name of {len(raw)} bytes (1..{NAME_MAX})")
    return _NAME_HEAD.pack(NAME_MAGIC, 4 + len(raw), b"WKEN") + raw


def _read_name(read: Callable[[int], bytes]) -> tuple[str, bytes]:
    """(name, the frame's bytes) from the start of a version 3 body."""
    head = _read_exact(read, _NAME_HEAD.size)
    if len(head) < _NAME_HEAD.size:
        raise CorruptObject("object shorter than its name frame")
    magic, length, tag = _NAME_HEAD.unpack(head)
    if magic != NAME_MAGIC or tag != b"WKEN" or not 4 < length <= 4 + NAME_MAX:
        raise CorruptObject("object with a damaged name frame")
    raw = _read_exact(read, length - 4)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptObject("object with a damaged name frame") from None
    if len(raw) != length - 4:
        raise CorruptObject("object shorter than its name frame")
    return name, head + raw


def pack_trailer(t: Trailer) -> bytes:
    return _TRAILER.pack(SKIPPABLE_MAGIC, TRAILER_SIZE - 8, b"WKET", t.version, bytes(3),
                         t.original_size, t.body_size, t.sha256)


def unpack_trailer(buf: bytes) -> Trailer:
    if len(buf) != TRAILER_SIZE:
        raise CorruptObject("object shorter than its trailer")
    magic, length, tag, version, reserved, size, body, digest = _TRAILER.unpack(buf)
    if magic != SKIPPABLE_MAGIC or length != TRAILER_SIZE - 8 or tag != b"WKET" or any(reserved):
        raise CorruptObject("object is truncated or damaged (bad trailer)")
    if version not in READABLE_VERSIONS:
        raise CorruptObject(f"unsupported object format version {version}")
    return Trailer(size, body, digest, version)


def _compressor(codec: str, level: int, size_hint: int | None, threads: int = 2):
    if codec == "none":
        return None
    import zstandard

    # Two worker threads: push compresses one segment at a time, and on a
    # 2-core machine this nearly halves the wall time of a 16 MiB segment; a
    # stream of unknown size (a backup) is large by nature. Callers that already
    # encode several objects in parallel (read-ahead push) pass threads=0: each
    # zstd worker thread costs ~20 MiB. write_checksum: the frame carries XXH64 of
    # the content, which every zstd decoder (and `zstd -t`) checks.
    big = size_hint is None or size_hint > 4 * CHUNK
    cctx = zstandard.ZstdCompressor(level=level, threads=threads if big else 0,
                                    write_checksum=True)
    return cctx.compressobj(size=size_hint if size_hint is not None else -1)


class Encoder:
    """Encode a stream of original bytes into one stored object.

    key: an ArchiveKey (crypto.py) to encrypt with, or None for a plain object.
    name: the store key the object is written under (format version 3, which binds it);
    None writes version 2 (no name), which only tests and tools outside a store want.
    original_size: the chunks are already in the codec (a base backup PostgreSQL
    compressed with zstd itself): they become the body as they are, and this callable,
    asked once they are exhausted, gives the size of what they decode to (whoever
    decoded them on the way says so; the trailer records it and every reader checks it).
    """

    def __init__(self, codec: str, level: int = 3, size_hint: int | None = None,
                 threads: int = 2, key=None, name: str | None = None,
                 original_size: Callable[[], int] | None = None):
        if original_size is not None and codec == "none":
            raise ValueError("an already compressed stream needs its codec")
        self.original_size = original_size
        self.codec = codec
        self.level = level
        self.size_hint = size_hint
        self.threads = threads
        self.key = key
        self.name = name
        self.version = FORMAT_VERSION if name is not None else 2
        self.trailer: Trailer | None = None

    def run(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        digest = hashlib.sha256()
        size = body = 0
        comp = (None if self.original_size is not None
                else _compressor(self.codec, self.level, self.size_hint, self.threads))
        header = pack_header(self.codec, CIPHER_AES256GCM if self.key else CIPHER_NONE,
                             self.version)
        yield header
        if self.name is not None:
            frame = pack_name(self.name)
            digest.update(frame)
            body += len(frame)
            yield frame
            header += frame         # the name is sealed into every chunk
        sealer = self.key.sealer(header) if self.key else None
        if sealer:
            out = sealer.preamble
            digest.update(out)
            body += len(out)
            yield out
        for chunk in chunks:
            size += len(chunk)
            out = comp.compress(chunk) if comp else chunk
            for piece in (sealer.update(out) if sealer and out else (out,)):
                if piece:
                    digest.update(piece)
                    body += len(piece)
                    yield piece
        tail = [comp.flush()] if comp else []
        if sealer:
            tail = (sealer.update(tail[0]) if tail else []) + [sealer.finish()]
        for out in tail:
            if out:
                digest.update(out)
                body += len(out)
                yield out
        if self.original_size is not None:
            size = self.original_size()
        self.trailer = Trailer(size, body, digest.digest(), self.version)
        yield pack_trailer(self.trailer)


def encode_bytes(data: bytes, codec: str = "zstd", key=None, name: str | None = None) -> bytes:
    """A small object (metadata) in one piece."""
    return b"".join(Encoder(codec, 3, len(data), 0, key, name).run([data] if data else []))


def read_chunks(f, size: int = CHUNK) -> Iterator[bytes]:
    while True:
        b = f.read(size)
        if not b:
            return
        yield b


class _Body:
    """The body of a stored object as a file-like reader, holding back the last
    TRAILER_SIZE bytes (the trailer) since the object's length is not known.
    `sink` sees every body byte once, in order (the body checksum)."""

    def __init__(self, read: Callable[[int], bytes], sink: Callable[[bytes], object] | None):
        self._read = read
        self.sink = sink
        self.tail = b""
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        while True:
            chunk = self._read(n)
            if not chunk:
                return b""
            buf = self.tail + chunk if self.tail else chunk
            if len(buf) <= TRAILER_SIZE:
                self.tail = buf
                continue
            data, self.tail = buf[:-TRAILER_SIZE], buf[-TRAILER_SIZE:]
            self.size += len(data)
            if self.sink is not None:
                self.sink(data)
            return data


class _FrameStart:
    """A zstd stream's source that keeps its first bytes, the frame header, so that
    check() can insist the frame carries a content checksum."""

    HEADER_MAX = 18

    def __init__(self, source):
        self._read = source.read
        self.head = b""

    def read(self, n: int = -1) -> bytes:
        data = self._read(n)
        if len(self.head) < self.HEADER_MAX and data:
            self.head += bytes(data[:self.HEADER_MAX - len(self.head)])
        return data

    def check(self) -> None:
        import zstandard

        try:
            checked = zstandard.get_frame_parameters(self.head).has_checksum
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"zstd frame header is damaged: {exc}") from None
        if not checked:
            raise CorruptObject("zstd frame carries no content checksum (damaged frame "
                                "header?): refusing to trust its content unchecked")


class ObjectReader:
    """A stored object read as its original bytes (a file-like `read`).

    Bytes are returned before the whole object is verified; the checks (codec
    stream, sizes, checksum, and for an encrypted object every chunk's
    authentication tag and the stream's end) run as the end is reached, and a
    mismatch raises CorruptObject from that last read. So a caller must keep what it
    read somewhere temporary until read() has returned b"".

    keyring: the archive's crypto.Keyring, or None. An encrypted object without a
    keyring, or with a key it was not encrypted with, raises ConfigError (exit 3);
    with a keyring, a plain object is refused as CorruptObject (an encrypted archive
    holds nothing unencrypted, so a plain object there was not written by us).

    body_checksum=False: for a version 2 zstd object, skip the SHA-256 of the body and
    rely on zstd's XXH64 of the content, which the frame must then carry (a frame
    without it is refused): every byte returned is still checked, as are the sizes,
    and an encrypted body's tags (whose body is hashed all the same). The prefetcher
    reads this way (~3.5 ms less CPU per
    16 MiB segment); the body checksum stays what verify-chain and push check.

    name: the store key the object was read from. A version 3 object records the key
    it was written under; another one raises MisplacedObject before any byte is
    returned (None: the caller does not know, nothing is compared). `.name` is the
    recorded key (None before version 3).
    """

    def __init__(self, read: Callable[[int], bytes], keyring=None, body_checksum: bool = True,
                 name: str | None = None):
        head = unpack_header(_read_exact(read, HEADER_SIZE))
        self.version = head.version
        self.name: str | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self.trailer: Trailer | None = None
        self._frame: _FrameStart | None = None
        # Encrypted bodies are always hashed: the checksum is what tells a damaged
        # preamble from a wrong key.
        hash_body = head.version >= 2 and (body_checksum or head.codec != "zstd"
                                           or bool(head.cipher))
        self._body = _Body(read, self._digest.update if hash_body else None)
        source = self._body
        sealed = pack_header(head.codec, head.cipher, head.version)
        if head.version >= 3:
            self.name, frame = _read_name(self._body.read)
            sealed += frame
            if name is not None and self.name != name:
                from walkeeper.errors import MisplacedObject

                raise MisplacedObject(name, self.name, "the name recorded in the object")
        if head.cipher:
            if keyring is None:
                if not self._body.read(4).startswith(b"WKEC"):
                    raise CorruptObject("header says encrypted but the body is not: damaged "
                                        "header")
                raise ConfigError("this object is encrypted and no [encryption] key is "
                                  "configured; add the archive's passphrase_env or key_file")
            from walkeeper.format.crypto import KeyMismatch

            try:
                source = keyring.opener(source, sealed)
            except KeyMismatch:
                self._check_body()  # a damaged preamble is corruption, not a wrong key
                raise
        elif keyring is not None:
            raise CorruptObject("object is not encrypted, but this archive is: refusing it "
                                "(walkeeper never mixes plain and encrypted objects)")
        if head.codec == "zstd":
            import zstandard

            if not hash_body and head.version >= 2:
                source = self._frame = _FrameStart(source)
            self._source = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=CHUNK, read_across_frames=False)
        else:
            self._source = source

    def _take(self, data: bytes) -> None:
        """Account for decoded bytes (the version 1 checksum covers them)."""
        self._size += len(data)
        if self.version == 1:
            self._digest.update(data)

    def read(self, n: int = CHUNK) -> bytes:
        if self.trailer is not None:
            return b""
        n = CHUNK if n is None or n < 0 else min(n, CHUNK)
        try:
            data = self._source.read(n)
        except CorruptObject:
            raise
        except Exception as exc:  # zstandard.ZstdError
            raise CorruptObject(f"compressed stream is damaged: {exc}") from None
        if data:
            self._take(data)
            return data
        self._finish()
        return b""

    def readinto(self, buffer) -> int:
        """read() into a caller's buffer, which a zstd object is decompressed into
        directly: no new object per chunk (for 16 MiB, ~4 ms of page faults less)."""
        if self.trailer is not None:
            return 0
        into = getattr(self._source, "readinto", None)
        if into is None:
            data = self.read(len(buffer))
            buffer[:len(data)] = data
            return len(data)
        try:
            n = into(buffer)
        except CorruptObject:
            raise
        except Exception as exc:  # zstandard.ZstdError
            raise CorruptObject(f"compressed stream is damaged: {exc}") from None
        if n:
            self._take(memoryview(buffer)[:n])
            return n
        self._finish()
        return 0

    def _check_body(self) -> Trailer:
        """Read the rest of the body; check the trailer, the body size and (version 2)
        the body checksum."""
        body = self._body
        while body.read(CHUNK):     # anything after the codec's stream is counted, then refused
            pass
        trailer = unpack_trailer(body.tail)
        if trailer.version != self.version:
            raise CorruptObject(f"header says format version {self.version}, trailer "
                                f"{trailer.version}")
        if body.size != trailer.body_size:
            raise CorruptObject(f"body is {body.size} bytes, trailer says {trailer.body_size}")
        if self._frame is not None:
            self._frame.check()
        elif self.version >= 2 and self._digest.digest() != trailer.sha256:
            raise CorruptObject(f"checksum mismatch: body {self._digest.hexdigest()}, "
                                f"recorded {trailer.checksum}")
        return trailer

    def _finish(self) -> None:
        trailer = self._check_body()
        if self.version == 1 and self._digest.digest() != trailer.sha256:
            raise CorruptObject(f"checksum mismatch: content {self._digest.hexdigest()}, "
                                f"recorded {trailer.checksum}")
        if self._size != trailer.original_size:
            raise CorruptObject(f"content is {self._size} bytes, trailer says "
                                f"{trailer.original_size}")
        self.trailer = trailer

    def close(self) -> None:
        pass


class ThreadedObjectReader(ObjectReader):
    """ObjectReader with the decoding and the checksum each in a thread of its own,
    ahead of the caller by at most AHEAD chunks: restore extracts a backup while the
    next megabytes are decoded and the previous ones hashed (zstd, hashlib, the
    cipher and os.write release the GIL, so this runs on several cores).

    Same contract as ObjectReader: read() returns decoded bytes before they are
    verified, and the checks run, or CorruptObject is raised, when read() reaches
    the end. close() stops the threads if the caller gives up early.
    """

    AHEAD = 8

    def __init__(self, read: Callable[[int], bytes], keyring=None, name: str | None = None):
        import queue
        import threading

        self._hash: queue.Queue = queue.Queue(self.AHEAD)
        self._stop = threading.Event()
        super().__init__(read, keyring, name=name)
        self._out: queue.Queue = queue.Queue(self.AHEAD)
        self._done = False
        self._pending = b""
        # From here on the body checksum runs in its own thread.
        if self.version >= 2:
            self._body.sink = lambda data: self._put(self._hash, data)
        self._threads = [threading.Thread(target=self._decode, daemon=True),
                         threading.Thread(target=self._digest_all, daemon=True)]
        for t in self._threads:
            t.start()

    def _put(self, q, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        try:
            while True:
                try:
                    data = self._source.read(CHUNK)
                except CorruptObject:
                    raise
                except Exception as exc:  # zstandard.ZstdError
                    raise CorruptObject(f"compressed stream is damaged: {exc}") from None
                if not data:
                    break
                self._size += len(data)
                if self.version == 1 and not self._put(self._hash, data):
                    return
                if not self._put(self._out, data):
                    return
            self._put(self._hash, None)
            self._put(self._out, None)
        except BaseException as exc:
            self._put(self._hash, None)
            self._put(self._out, exc)

    def _digest_all(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                data = self._hash.get(timeout=0.1)
            except queue.Empty:
                continue
            if data is None:
                return
            self._digest.update(data)

    def read(self, n: int = CHUNK) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        if self._done:
            return b""
        item = self._out.get()
        if isinstance(item, bytes):
            if len(item) > n:
                item, self._pending = item[:n], item[n:]
            return item
        self._done = True
        if item is not None:
            self.close()
            raise item
        self._threads[1].join()     # every chunk hashed
        self._body.sink = self._digest.update if self.version >= 2 else None
        self._finish()              # the rest of the body, sizes, checksum
        return b""

    def close(self) -> None:
        self._stop.set()
        for t in getattr(self, "_threads", ()):
            t.join()


def decode(read: Callable[[int], bytes], write: Callable[[bytes], object] | None,
           keyring=None, body_checksum: bool = True, name: str | None = None) -> Trailer:
    """Read a stored object through `read`, verify it, pass original bytes to `write`
    in pieces of at most CHUNK bytes (see ObjectReader about when to trust them and
    about `name`)."""
    r = ObjectReader(read, keyring, body_checksum, name)
    while True:
        data = r.read(CHUNK)
        if not data:
            return r.trailer
        if write is not None:
            write(data)


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        b = read(n - len(out))
        if not b:
            break
        out += b
    return out


def sha256_file(f) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    for chunk in read_chunks(f):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.digest()
