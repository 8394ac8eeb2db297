"""A store type that lives only in the test suite: objects in a dict in this process,
registered with stores.registry.register() (install()). It exists to prove that a new type needs
nothing outside walkeeper/stores and tests: it passes the whole API contract suite
(tests/test_store_contract.py) without any change to walkeeper.

Faults: ToyStore.down[name] = True makes every call of that store raise StoreError.
"""

from __future__ import annotations

import threading
import time

from walkeeper.errors import ObjectExists, ObjectNotFound, StoreError
from walkeeper.format.layout import check_key
from walkeeper.settings import Setting
from walkeeper.stores.base import Entry
from walkeeper.stores.registry import StoreType, register

_SPACES: dict[str, dict] = {}       # space name -> {key: (bytes, mtime)}
_LOCK = threading.Lock()


class ToyReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b

    def close(self) -> None:
        pass


class ToyUpload:
    def __init__(self, store: ToyStore, key: str):
        self.store, self.key, self.buf = store, key, bytearray()

    def write(self, data: bytes) -> None:
        self.store._up()
        self.buf += data

    def commit(self) -> None:
        self.store._up()
        with _LOCK:
            if self.key in self.store.objects:
                raise ObjectExists(self.store.name, f"{self.key} already exists")
            self.store.objects[self.key] = (bytes(self.buf), time.time())

    def abort(self) -> None:
        self.buf = bytearray()


class ToyStore:
    down: dict[str, bool] = {}

    def __init__(self, cfg):
        self.name = cfg.name
        self.location = f"toy:{cfg.space}"
        self.objects = _SPACES.setdefault(cfg.space, {})

    def _up(self) -> None:
        if ToyStore.down.get(self.name):
            raise StoreError(self.name, "the toy store is down")

    def _k(self, key: str) -> str:
        try:
            check_key(key)
        except ValueError as exc:
            raise StoreError(self.name, str(exc)) from None
        self._up()
        return key

    def begin_put(self, key: str) -> ToyUpload:
        return ToyUpload(self, self._k(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        up = self.begin_put(key)
        up.write(data)
        up.commit()

    def _data(self, key: str) -> bytes:
        key = self._k(key)
        try:
            return self.objects[key][0]
        except KeyError:
            raise ObjectNotFound(self.name, f"{key} does not exist") from None

    def open(self, key: str) -> ToyReader:
        return ToyReader(self._data(key))

    def read_tail(self, key: str, n: int) -> bytes:
        data = self._data(key)
        return data[-n:] if n else b""

    def exists(self, key: str) -> bool:
        return self._k(key) in self.objects

    def list(self, prefix: str) -> list[Entry]:
        base = self._k(prefix) + "/"
        out, dirs = [], set()
        for k, (data, mtime) in list(self.objects.items()):
            if not k.startswith(base):
                continue
            rest = k[len(base):]
            if "/" in rest:
                dirs.add(rest.split("/", 1)[0])
            else:
                out.append(Entry(rest, len(data), False, mtime))
        return out + [Entry(d, 0, True, 0.0) for d in sorted(dirs)]

    def delete(self, key: str) -> None:
        self.objects.pop(self._k(key), None)

    def free_bytes(self) -> int | None:
        return None

    def abort_stale_uploads(self, prefix: str, before: float, dry_run: bool = False) -> list[str]:
        self._k(prefix)
        return []

    def close(self) -> None:
        pass


STORE_TYPE = StoreType(
    name="toy",
    factory=ToyStore,
    settings=(Setting("store.space", str, "default", "toy: which in-memory space"),),
    location=lambda cfg: f"toy:{cfg.space}",
    shared=True,
)


def install():
    """Register the type; returns the function that removes it again (so that it does
    not leak into later tests, e.g. the generated configuration reference)."""
    from walkeeper.stores import registry

    register(STORE_TYPE)
    return lambda: registry._TYPES.pop(STORE_TYPE.name, None)
