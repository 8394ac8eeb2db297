"""The stored-object format: one self-verifying stream per stored file.

    header   zstd skippable frame: magic 0x184D2A50, length 8, b"WKEO", version, codec, cipher, 0
    body     the codec's bytes (a zstd frame, or the original bytes for codec "none")
    trailer  zstd skippable frame: magic 0x184D2A50, length 56,
             b"WKET", version, 0, 0, 0, original size (u64), body size (u64), sha256 (32 bytes)

Header and trailer are zstd skippable frames so that `zstd -d NAME.zst` on a stored
object gives back the original file with nothing but the stock zstd tool. The
checksum covers the original bytes, so an object verifies on its own, whatever the
codec. The trailer comes last because size and checksum are only known once the
stream has been read; readers keep a sliding 64-byte tail instead of seeking.
See docs/format.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from collections import namedtuple

from walkeeper.errors import CorruptObject

FORMAT_VERSION = 1
SKIPPABLE_MAGIC = 0x184D2A50
CODECS = {"none": 0, "zstd": 1}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
SUFFIX = {"none": ".raw", "zstd": ".zst"}
CIPHER_NONE = 0

_HEADER = struct.Struct("<II4sBBBB")
_TRAILER = struct.Struct("<II4sB3sQQ32s")
HEADER_SIZE = _HEADER.size  # 16
TRAILER_SIZE = _TRAILER.size  # 64
CHUNK = 1 << 20


class Trailer(namedtuple("Trailer", "original_size body_size sha256")):
    __slots__ = ()

    @property
    def checksum(self) -> str:
        return self.sha256.hex()


def object_name(name: str, codec: str) -> str:
    return name + SUFFIX[codec]


def pack_header(codec: str) -> bytes:
    return _HEADER.pack(SKIPPABLE_MAGIC, 8, b"WKEO", FORMAT_VERSION, CODECS[codec], CIPHER_NONE, 0)


def unpack_header(buf: bytes) -> str:
    """Return the codec name, or raise CorruptObject."""
    if len(buf) < HEADER_SIZE:
        raise CorruptObject("object shorter than its header")
    magic, length, tag, version, codec, cipher, reserved = _HEADER.unpack_from(buf)
    if magic != SKIPPABLE_MAGIC or length != 8 or tag != b"WKEO" or reserved:
        raise CorruptObject("not a walkeeper object (bad header)")
    if version != FORMAT_VERSION:
        raise CorruptObject(f"unsupported object format version {version}")
    if cipher != CIPHER_NONE:
        raise CorruptObject("object is encrypted and this walkeeper has no key")
    if codec not in CODEC_NAMES:
        raise CorruptObject(f"unknown codec {codec}")
    return CODEC_NAMES[codec]


def pack_trailer(t: Trailer) -> bytes:
    return _TRAILER.pack(SKIPPABLE_MAGIC, TRAILER_SIZE - 8, b"WKET", FORMAT_VERSION, bytes(3),
                         t.original_size, t.body_size, t.sha256)


def unpack_trailer(buf: bytes) -> Trailer:
    if len(buf) != TRAILER_SIZE:
        raise CorruptObject("object shorter than its trailer")
    magic, length, tag, version, reserved, size, body, digest = _TRAILER.unpack(buf)
    if magic != SKIPPABLE_MAGIC or length != TRAILER_SIZE - 8 or tag != b"WKET" or any(reserved):
        raise CorruptObject("object is truncated or damaged (bad trailer)")
    if version != FORMAT_VERSION:
        raise CorruptObject(f"unsupported object format version {version}")
    return Trailer(size, body, digest)


def _compressor(codec: str, level: int, size_hint: int | None, threads: int = 2):
    if codec == "none":
        return None
    import zstandard

    # Two worker threads: push compresses one segment at a time, and on a
    # 2-core machine this nearly halves the wall time of a 16 MiB segment; a
    # stream of unknown size (a backup) is large by nature. Callers that already
    # encode several objects in parallel (read-ahead push) pass threads=0: each
    # zstd worker thread costs ~20 MiB.
    big = size_hint is None or size_hint > 4 * CHUNK
    cctx = zstandard.ZstdCompressor(level=level, threads=threads if big else 0)
    return cctx.compressobj(size=size_hint if size_hint is not None else -1)


class Encoder:
    def __init__(self, codec: str, level: int = 3, size_hint: int | None = None,
                 threads: int = 2):
        self.codec = codec
        self.level = level
        self.size_hint = size_hint
        self.threads = threads
        self.trailer: Trailer | None = None

    def run(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        digest = hashlib.sha256()
        size = body = 0
        comp = _compressor(self.codec, self.level, self.size_hint, self.threads)
        yield pack_header(self.codec)
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            out = comp.compress(chunk) if comp else chunk
            if out:
                body += len(out)
                yield out
        if comp:
            out = comp.flush()
            if out:
                body += len(out)
                yield out
        self.trailer = Trailer(size, body, digest.digest())
        yield pack_trailer(self.trailer)


def read_chunks(f, size: int = CHUNK) -> Iterator[bytes]:
    while True:
        b = f.read(size)
        if not b:
            return
        yield b


class _Body:
    """The body of a stored object as a file-like reader, holding back the last
    TRAILER_SIZE bytes (the trailer) since the object's length is not known."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
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
            return data


class ObjectReader:
    """A stored object read as its original bytes (a file-like `read`).

    Bytes are returned before the whole object is verified; the checks (codec
    stream, sizes, checksum) run when the end is reached, and a mismatch raises
    CorruptObject from that last read. So a caller must keep what it read
    somewhere temporary until read() has returned b"".
    """

    def __init__(self, read: Callable[[int], bytes]):
        codec = unpack_header(_read_exact(read, HEADER_SIZE))
        self._body = _Body(read)
        self._digest = hashlib.sha256()
        self._size = 0
        self.trailer: Trailer | None = None
        if codec == "zstd":
            import zstandard

            self._source = zstandard.ZstdDecompressor().stream_reader(
                self._body, read_size=CHUNK, read_across_frames=False)
        else:
            self._source = self._body

    def read(self, n: int = CHUNK) -> bytes:
        if self.trailer is not None:
            return b""
        n = CHUNK if n is None or n < 0 else min(n, CHUNK)
        try:
            data = self._source.read(n)
        except Exception as exc:  # zstandard.ZstdError
            raise CorruptObject(f"compressed stream is damaged: {exc}") from None
        if data:
            self._digest.update(data)
            self._size += len(data)
            return data
        self._finish()
        return b""

    def _finish(self) -> None:
        body = self._body
        while body.read(CHUNK):     # anything after the zstd frame is counted, then refused
            pass
        trailer = unpack_trailer(body.tail)
        if body.size != trailer.body_size:
            raise CorruptObject(f"body is {body.size} bytes, trailer says {trailer.body_size}")
        if self._size != trailer.original_size:
            raise CorruptObject(f"content is {self._size} bytes, trailer says "
                                f"{trailer.original_size}")
        if self._digest.digest() != trailer.sha256:
            raise CorruptObject(f"checksum mismatch: content {self._digest.hexdigest()}, "
                                f"recorded {trailer.checksum}")
        self.trailer = trailer


class ThreadedObjectReader(ObjectReader):
    """ObjectReader with the decompression and the checksum each in a thread of its
    own, ahead of the caller by at most AHEAD chunks: restore extracts a backup
    while the next megabytes are decoded and the previous ones hashed (zstd,
    hashlib and os.write release the GIL, so this runs on several cores).

    Same contract as ObjectReader: read() returns decoded bytes before they are
    verified, and the checks run, or CorruptObject is raised, when read() reaches
    the end. close() stops the threads if the caller gives up early.
    """

    AHEAD = 8

    def __init__(self, read: Callable[[int], bytes]):
        import queue
        import threading

        super().__init__(read)
        self._out: queue.Queue = queue.Queue(self.AHEAD)
        self._hash: queue.Queue = queue.Queue(self.AHEAD)
        self._stop = threading.Event()
        self._done = False
        self._pending = b""
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
                if not (self._put(self._hash, data) and self._put(self._out, data)):
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
            self._size += len(data)

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
        self._finish()              # the rest of the body, sizes, checksum
        return b""

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def decode(read: Callable[[int], bytes], write: Callable[[bytes], object] | None) -> Trailer:
    """Read a stored object through `read`, verify it, pass original bytes to `write`
    in pieces of at most CHUNK bytes (see ObjectReader about when to trust them)."""
    r = ObjectReader(read)
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
