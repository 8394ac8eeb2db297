"""The store interface every backend honours (local disk, SFTP).

Keys are relative POSIX paths checked by layout.check_key. A put is a streamed
Upload: write() chunks, then commit() makes it durable and places it under its
final name without ever replacing an existing object (ObjectExists instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Upload(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Durable, then placed under the final key; raises ObjectExists if taken."""

    def abort(self) -> None:
        """Remove the temporary object; never raises."""


class Reader(Protocol):
    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    is_dir: bool
    # When the object was last written (archive time); not part of equality.
    mtime: float = field(default=0.0, compare=False)


class Store(Protocol):
    name: str
    location: str     # for messages: a path, or user@host:port/dir

    def begin_put(self, key: str) -> Upload: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def open(self, key: str) -> Reader:
        """Raises ObjectNotFound when the store says the key is absent."""

    def read_tail(self, key: str, n: int) -> bytes:
        """The last n bytes; raises ObjectNotFound."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[Entry]:
        """Entries directly under the directory `prefix` ([] when it is absent)."""

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...
