"""What the store test suites share: keys, payloads, and one way to make a store of
each type (backends()) for tests/test_store_contract.py (the API suite every type
passes) and tests/test_stores.py (filesystem extras for local and SFTP)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from storeroot import root as store_root

MiB = 1 << 20
CLUSTER = "ecar"
DIR = f"{CLUSTER}/wal/0000000100000000"
KEY = f"{DIR}/000000010000000000000001.zst"
KEY2 = f"{DIR}/000000010000000000000002.zst"
HISTORY_KEY = f"{CLUSTER}/wal/00000002.history.zst"
UNSAFE_KEYS = ["../x", "a/../../x", "/abs", "a//b", "", "..", ".", "a/./b", "a/", "a/..",
               "../../../../etc/passwd", "a\\..\\b", "a\nb"]


def assert_unsafe_key_refused(store, key: str) -> None:
    """Every store operation on KEY raises a plain StoreError: refused, not "absent" or
    "taken" (fetch must not read a refusal as the end of the archive)."""
    import pytest

    from walkeeper.errors import StoreError

    operations = [
        lambda: store.begin_put(key),
        lambda: store.put_bytes(key, b"x"),
        lambda: store.open(key),
        lambda: store.read_tail(key, 10),
        lambda: store.exists(key),
        lambda: store.list(key),
        lambda: store.delete(key),
    ]
    for op in operations:
        with pytest.raises(StoreError) as info:
            op()
        assert type(info.value) is StoreError, repr(info.value)


def payload(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def read_all(reader, n: int = 65536) -> bytes:
    out = bytearray()
    try:
        while True:
            b = reader.read(n)
            assert len(b) <= n
            if not b:
                return bytes(out)
            out += b
    finally:
        reader.close()


def run_bounded(fn, seconds: float):
    """Run fn in a thread; return its result or the exception it raised.
    Returns the string "HUNG" if it has not finished after `seconds`."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["result"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        return "HUNG"
    return box["result"]


@dataclass
class Backend:
    kind: str
    make: object                 # make() -> a fresh store object with the same config
    outage: object               # outage() -> context manager: the store cannot be reached
    root: Path | None = None     # where the objects are on this machine (local, SFTP)
    sshd: object = None
    made: list = field(default_factory=list)
    store: object = None

    def __post_init__(self):
        self.store = self.make()


def new_backend(kind: str, request, tmp_path) -> Backend:
    from walkeeper.stores import open_store
    from walkeeper.stores.registry import StoreConfig

    made: list = []
    root = sshd = None
    if kind == "local":
        root = tmp_path / "local-store"          # does not exist yet: the store creates it
        cfg = StoreConfig(name="local", type="local", path=str(store_root(root)))

        @contextmanager
        def outage():
            import os
            if os.geteuid() == 0:
                import pytest
                pytest.skip("root ignores file modes: run through bin/test")
            root.mkdir(exist_ok=True)
            root.chmod(0)
            try:
                yield
            finally:
                root.chmod(0o700)
    elif kind == "sftp":
        sshd = request.getfixturevalue("sshd")
        root = sshd.directory
        cfg = StoreConfig(name="offsite", type="sftp", host=sshd.host, port=sshd.port,
                          user=sshd.user, key_file=str(sshd.key_file),
                          known_hosts=str(sshd.known_hosts), directory=str(sshd.directory),
                          timeout=5, retries=1)

        @contextmanager
        def outage():
            sshd.stop()
            try:
                yield
            finally:
                sshd.start()
    elif kind == "s3":
        rgw = request.getfixturevalue("rgw")
        bucket = rgw.new_bucket()
        request.addfinalizer(lambda: rgw.running() and rgw.empty_bucket(bucket))
        mp = request.getfixturevalue("monkeypatch")
        for k, v in rgw.credentials_env().items():
            mp.setenv(k, v)
        cfg = StoreConfig(name="objects", type="s3", endpoint=rgw.endpoint, bucket=bucket,
                          prefix="pfx/", access_key_env="WALKEEPER_S3_ACCESS_KEY",
                          secret_key_env="WALKEEPER_S3_SECRET_KEY", timeout=5, retries=3)

        @contextmanager
        def outage():
            rgw.kill_radosgw()
            try:
                yield
            finally:
                rgw.restart()
    elif kind == "toy":
        import toystore
        request.addfinalizer(toystore.install())
        cfg = StoreConfig(name="toy", type="toy", space=uuid.uuid4().hex)

        @contextmanager
        def outage():
            toystore.ToyStore.down["toy"] = True
            try:
                yield
            finally:
                toystore.ToyStore.down.pop("toy", None)
    else:
        raise ValueError(kind)

    def make():
        s = open_store(cfg)
        made.append(s)
        return s

    b = Backend(kind, make, outage, root, sshd, made)
    request.addfinalizer(lambda: [s.close() for s in made])
    return b
