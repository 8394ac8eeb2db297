"""The local store's driver: a directory on a local (or locally mounted) file system.
Its declaration is local.py; this module is imported when such a store is opened, not
when config loading reads the declaration (a fetch served from the prefetch spool
and a push the background pusher already did open no store).

Durability: write a temporary file (0600) beside the final name, fsync it, link()
it to the final name, which fails if the name exists (an atomic no-clobber that
rename() would not give), remove the temporary name, fsync the directory.
"""

from __future__ import annotations

import errno
import os

from walkeeper.errors import ObjectExists, ObjectNotFound, StoreError
from walkeeper.format.layout import check_key, temp_key
from walkeeper.stores.base import Entry, missing_root

_O_BINARY = getattr(os, "O_BINARY", 0)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalUpload:
    def __init__(self, store: LocalStore, key: str):
        self.store = store
        self.final = store._path(key)
        self.temp = store._path(temp_key(key))
        self.fd: int | None = None
        try:
            self.fd = self._open_temp()
        except FileNotFoundError:
            store._makedirs(os.path.dirname(self.final))
            self.fd = self._open_temp()

    def _open_temp(self) -> int:
        try:
            return os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.store._error("cannot create", self.temp, exc) from None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            self.abort()
            raise self.store._error("cannot write", self.temp, exc) from None

    def commit(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            os.link(self.temp, self.final)
        except FileExistsError:
            self.abort()
            raise ObjectExists(self.store.name, f"{self.final} already exists") from None
        except OSError as exc:
            self.abort()
            raise self.store._error("cannot store", self.final, exc) from None
        try:
            os.unlink(self.temp)
            _fsync_dir(os.path.dirname(self.final))
        except OSError as exc:
            raise self.store._error("cannot sync directory of", self.final, exc) from None

    def abort(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            os.unlink(self.temp)
        except OSError:
            pass


class LocalFileReader:
    def __init__(self, f):
        self.f = f

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def close(self) -> None:
        self.f.close()


def _entries(it) -> list[Entry]:
    out = []
    for e in it:
        try:
            st = e.stat()
        except FileNotFoundError:
            continue    # removed since the directory was read (expire running alongside)
        is_dir = e.is_dir()
        out.append(Entry(e.name, 0 if is_dir else st.st_size, is_dir, st.st_mtime))
    return out


class LocalStore:
    def __init__(self, name: str, path: str):
        self.name = name
        self.root = os.path.abspath(os.path.expanduser(path))
        self.location = self.root

    def _path(self, key: str) -> str:
        try:
            return os.path.join(self.root, check_key(key))
        except ValueError as exc:
            raise StoreError(self.name, str(exc)) from None

    def _error(self, what: str, path: str, exc: OSError) -> StoreError:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device"
        return StoreError(self.name, f"{what} {path}: {reason}")

    def _makedirs(self, directory: str, create_root: bool = False) -> None:
        """Create missing directories 0700 and make each new entry durable; the
        store's root itself only when create_root (first-time setup)."""
        missing = []
        d = directory
        while not os.path.isdir(d):
            if d == self.root and not create_root:
                raise missing_root(self.name, self.root)
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                continue
            except OSError as exc:
                raise self._error("cannot create directory", d, exc) from None
            try:
                _fsync_dir(os.path.dirname(d))
            except OSError as exc:
                raise self._error("cannot sync", os.path.dirname(d), exc) from None

    def root_exists(self) -> bool:
        return os.path.isdir(self.root)

    def create_root(self) -> bool:
        if os.path.isdir(self.root):
            return False
        self._makedirs(self.root, create_root=True)
        return True

    def begin_put(self, key: str) -> LocalUpload:
        return LocalUpload(self, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        up = self.begin_put(key)
        up.write(data)
        up.commit()

    def open(self, key: str) -> LocalFileReader:
        path = self._path(key)
        try:
            return LocalFileReader(open(path, "rb"))
        except FileNotFoundError:
            raise ObjectNotFound(self.name, f"{path} does not exist") from None
        except OSError as exc:
            raise self._error("cannot read", path, exc) from None

    def read_tail(self, key: str, n: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - n))
                return f.read(n)
        except FileNotFoundError:
            raise ObjectNotFound(self.name, f"{path} does not exist") from None
        except OSError as exc:
            raise self._error("cannot read", path, exc) from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.stat(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:      # unreadable: not an answer that the object is absent
            raise self._error("cannot look at", path, exc) from None

    def list(self, prefix: str) -> list[Entry]:
        path = self._path(prefix)
        try:
            with os.scandir(path) as it:
                return _entries(it)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error("cannot list", path, exc) from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error("cannot delete", path, exc) from None

    def remove_dir(self, prefix: str) -> None:
        """Remove the directory `prefix` if it is empty; nothing otherwise (absent, not
        empty, or not removable: an empty directory is harmless)."""
        try:
            os.rmdir(self._path(prefix))
        except OSError:
            pass

    def free_bytes(self) -> int | None:
        """Bytes available to this user on the store's file system; None if unknown."""
        d = self.root
        while True:
            try:
                st = os.statvfs(d)
                return st.f_bavail * st.f_frsize
            except FileNotFoundError:
                parent = os.path.dirname(d)
                if parent == d:
                    return None
                d = parent       # not created yet: the file system it will be on
            except OSError:
                return None

    def abort_stale_uploads(self, prefix: str, before: float, dry_run: bool = False) -> list[str]:
        return []       # leftovers are .tmp- files, which verify-chain reports

    def close(self) -> None:
        pass
