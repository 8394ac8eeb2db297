"""The store interface every backend honours (local disk, SFTP, S3).

Keys are relative POSIX paths checked by layout.check_key. A put is a streamed
Upload: write() chunks, then commit() makes it durable and places it under its
final name without ever replacing an existing object (ObjectExists instead).
"""

from __future__ import annotations

# Plain classes, not typing.Protocol or dataclasses: push imports this module once
# per WAL segment, and those two imports alone would cost it ~10 ms. The classes
# below document the interface; LocalStore and SftpStore implement it by shape.


class Upload:
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Durable, then placed under the final key; raises ObjectExists if taken."""

    def abort(self) -> None:
        """Remove the temporary object; never raises."""


class Reader:
    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class Entry:
    """One name in a store listing. mtime (when the object was written: its archive
    time) is not part of equality."""

    __slots__ = ("name", "size", "is_dir", "mtime")

    def __init__(self, name: str, size: int, is_dir: bool, mtime: float = 0.0):
        self.name, self.size, self.is_dir, self.mtime = name, size, is_dir, mtime

    def _key(self):
        return (self.name, self.size, self.is_dir)

    def __eq__(self, other):
        return isinstance(other, Entry) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Entry({self.name!r}, {self.size}, {self.is_dir}, mtime={self.mtime})"


class Store:
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

    def delete(self, key: str) -> None:
        """Remove the object; an absent one is no error."""

    def free_bytes(self) -> int | None:
        """Bytes the store can still take, None when it cannot tell (a bucket)."""

    def abort_stale_uploads(self, prefix: str, before: float, dry_run: bool = False) -> list[str]:
        """Remove (dry_run: only name) uploads under `prefix` that never completed and were started before
        `before` (a Unix time) where the store keeps them apart from its objects (S3
        multipart uploads); return their keys. A store whose leftovers are `.tmp-`
        objects in its listing (local, SFTP) returns []: verify-chain reports those."""

    def remove_dir(self, prefix: str) -> None:
        """Optional (stores with directories): remove `prefix` if it is empty."""

    def close(self) -> None: ...

    # Optional (callers use getattr): a store whose root is a directory that must
    # exist (a local path, an SFTP directory). Nothing that writes objects creates
    # that root: a mistyped or unmounted path must fail, not fill a new directory.
    def root_exists(self) -> bool:
        """Whether the store's root exists (raises StoreError when it cannot tell)."""

    def create_root(self) -> bool:
        """First-time setup (`walkeeper check`): create the root (0700) if it is
        missing; True when it was created."""


def missing_root(store: str, location: str):
    """The error of a write into a store whose root does not exist."""
    from walkeeper.errors import StoreError

    return StoreError(store, f"the store's root {location} does not exist (not mounted, or "
                             f"mistyped?); walkeeper does not create it while archiving: "
                             f"run `walkeeper check` once to create it (first-time setup)")
