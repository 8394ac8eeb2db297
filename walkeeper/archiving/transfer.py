"""Moving one object between the local machine and the stores, as streams.

put_stream: read once, encode once, write to every store (the fan-out that push,
basebackup and dump share). fetch_to_file: bring one object back verified, and
publish it atomically only once its checksum matched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from walkeeper.errors import ObjectExists, StoreError
from walkeeper.format.objects import Encoder, Trailer, decode


class FanOut:
    def __init__(self):
        self.trailer: Trailer | None = None
        self.stored: list = []            # stores now holding the object
        self.taken: list = []             # stores where the name already existed
        self.errors: dict[str, StoreError] = {}


def put_stream(stores: list, key: str, chunks: Iterable[bytes], codec: str, level: int,
               size_hint: int | None = None, threads: int = 2, seal=None,
               original_size: Callable[[], int] | None = None) -> FanOut:
    """Encode `chunks` once into every store under `key`, never replacing an object.

    seal: the archive's crypto.ArchiveKey (crypto.writer_key) to encrypt with, or None.
    original_size: `chunks` are already compressed with `codec` (see Encoder).
    A store that fails is dropped from the fan-out and reported in .errors; the
    others carry on. An exception from `chunks` aborts every upload and propagates.
    """
    out = FanOut()
    uploads = {}
    for s in stores:
        try:
            uploads[s] = s.begin_put(key)
        except StoreError as exc:
            out.errors[s.name] = exc
    if not uploads:
        return out
    enc = Encoder(codec, level, size_hint, threads, seal, name=key,
                  original_size=original_size)
    try:
        for chunk in enc.run(chunks):
            for s, up in list(uploads.items()):
                try:
                    up.write(chunk)
                except StoreError as exc:
                    out.errors[s.name] = exc
                    del uploads[s]
            if not uploads:
                return out
    except BaseException:
        for up in uploads.values():
            up.abort()
        raise
    out.trailer = enc.trailer
    for s, up in uploads.items():
        try:
            up.commit()
            out.stored.append(s)
        except ObjectExists:
            out.taken.append(s)
        except StoreError as exc:
            out.errors[s.name] = exc
    return out


class _Head:
    """A write() that passes everything on and keeps the first `keep` bytes."""

    def __init__(self, write, keep: int):
        self._write = write
        self.keep = keep
        self.head = b""
        self.size = 0

    def write(self, data) -> None:
        if len(self.head) < self.keep:
            self.head += bytes(data[:self.keep - len(self.head)])
        self.size += len(data)
        self._write(data)


def fetch_to_file(store, key: str, dest: str, check=None, keep: int = 0) -> Trailer:
    """Write the verified content of `key` to `dest` atomically.

    check(head, size): called once the object verified and before `dest` is touched,
    with its first `keep` bytes and its size; it raises (CorruptObject,
    MisplacedObject) when the content is not what was asked for.
    Raises ObjectNotFound, CorruptObject or StoreError; `dest` is untouched then.
    """
    reader = store.open(key)
    directory, base = os.path.split(os.path.abspath(dest))
    tmp = os.path.join(directory, f".{base}.wk-{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            sink = _Head(f.write, keep) if check is not None else None
            trailer = decode(reader.read, sink.write if sink else f.write, store.keyring,
                             name=key)
        if check is not None:
            check(sink.head, sink.size)
        os.replace(tmp, dest)
        return trailer
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        reader.close()
