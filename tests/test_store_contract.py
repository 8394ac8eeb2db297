"""The store API contract (walkeeper/stores/base.py): one suite that every store type
passes through its interface alone: local disk, SFTP (a real sshd), S3 (a real Ceph
RGW, tests/rgwharness.py) and the test-only in-memory type of tests/toystore.py, which
proves that a new type needs nothing outside walkeeper/stores and tests.

What a store keeps on a disk (modes, temporary files) is in tests/test_stores.py.
"""

from __future__ import annotations

import pytest

from storecontract import (CLUSTER, DIR, HISTORY_KEY, KEY, KEY2, MiB, UNSAFE_KEYS,
                           assert_unsafe_key_refused, new_backend, payload, read_all,
                           run_bounded)
from walkeeper.errors import ObjectExists, ObjectNotFound, StoreError
from walkeeper.stores.base import Entry

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", "sftp", "s3", "toy"])
def backend(request, tmp_path):
    return new_backend(request.param, request, tmp_path)


@pytest.mark.parametrize("size", [0, 1, 100_000, 3 * MiB + 7])
def test_put_and_read_back(backend, size):
    store = backend.store
    data = payload(size)
    up = store.begin_put(KEY)
    for i in range(0, size, 256 * 1024):
        up.write(data[i:i + 256 * 1024])
    up.commit()
    assert store.exists(KEY)
    assert read_all(store.open(KEY)) == data
    assert read_all(backend.make().open(KEY)) == data
    assert [e.name for e in store.list(DIR)] == ["000000010000000000000001.zst"]


def test_read_tail(backend):
    store = backend.store
    data = payload(200_000, seed=1)
    store.put_bytes(KEY, data)
    assert store.read_tail(KEY, 64) == data[-64:]
    assert store.read_tail(KEY, 1) == data[-1:]
    assert store.read_tail(KEY, len(data)) == data
    assert store.read_tail(KEY, len(data) + 1000) == data
    store.put_bytes(KEY2, b"short")
    assert store.read_tail(KEY2, 64) == b"short"


def test_exists(backend):
    store = backend.store
    assert not store.exists(KEY)
    assert not store.exists("never/there/at/all.zst")
    store.put_bytes(KEY, b"x")
    assert store.exists(KEY)
    assert not store.exists(KEY2)


def test_list(backend):
    store = backend.store
    assert store.list(CLUSTER) == []
    assert store.list(f"{CLUSTER}/wal/missing") == []
    store.put_bytes(KEY, b"a" * 10)
    store.put_bytes(KEY2, b"b" * 2000)
    store.put_bytes(HISTORY_KEY, b"h" * 33)
    entries = {e.name: e for e in store.list(DIR)}
    assert set(entries) == {"000000010000000000000001.zst", "000000010000000000000002.zst"}
    assert entries["000000010000000000000001.zst"] == Entry("000000010000000000000001.zst", 10, False)
    assert entries["000000010000000000000002.zst"] == Entry("000000010000000000000002.zst", 2000, False)
    assert all(e.mtime > 0 for e in entries.values())
    top = {e.name: e for e in store.list(f"{CLUSTER}/wal")}
    assert set(top) == {"0000000100000000", "00000002.history.zst"}
    assert top["0000000100000000"].is_dir
    assert not top["00000002.history.zst"].is_dir
    assert top["00000002.history.zst"].size == 33
    assert [e.name for e in store.list(CLUSTER)] == ["wal"]
    assert all(isinstance(e, Entry) for e in store.list(DIR))


def test_an_upload_in_progress_is_not_under_its_final_name(backend):
    store = backend.store
    up = store.begin_put(KEY)
    up.write(b"partial")
    assert not store.exists(KEY)
    assert "000000010000000000000001.zst" not in [e.name for e in store.list(DIR)]
    with pytest.raises(ObjectNotFound):
        store.open(KEY)
    up.commit()
    assert [e.name for e in store.list(DIR)] == ["000000010000000000000001.zst"]


def test_delete_is_idempotent(backend):
    store = backend.store
    store.put_bytes(KEY, b"x")
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)                       # again: no error
    store.delete("no/such/dir/object.zst")  # never existed: no error
    with pytest.raises(ObjectNotFound):
        store.open(KEY)
    store.put_bytes(KEY, b"again")          # the name is free again
    assert read_all(store.open(KEY)) == b"again"


def test_put_bytes(backend):
    store = backend.store
    store.put_bytes(HISTORY_KEY, b"1\t0/3000000\tno recovery target specified\n")
    assert read_all(store.open(HISTORY_KEY)) == b"1\t0/3000000\tno recovery target specified\n"
    store.put_bytes(f"{CLUSTER}/identity.json", b"{}")
    assert read_all(store.open(f"{CLUSTER}/identity.json")) == b"{}"


def test_no_clobber(backend):
    store = backend.store
    first = payload(5000, seed=1)
    store.put_bytes(KEY, first)
    up = store.begin_put(KEY)
    up.write(b"second version")
    with pytest.raises(ObjectExists):
        up.commit()
    with pytest.raises(ObjectExists):
        store.put_bytes(KEY, b"third version")
    with pytest.raises(ObjectExists):
        backend.make().put_bytes(KEY, first)    # even the same bytes: the caller compares
    assert read_all(store.open(KEY)) == first
    assert [e.name for e in store.list(DIR)] == ["000000010000000000000001.zst"]


def test_no_clobber_between_concurrent_uploads(backend):
    store = backend.store
    a = store.begin_put(KEY)
    b = backend.make().begin_put(KEY)
    a.write(b"A" * 1000)
    b.write(b"B" * 2000)
    a.commit()
    with pytest.raises(ObjectExists):
        b.commit()
    assert read_all(store.open(KEY)) == b"A" * 1000


def test_abort(backend):
    store = backend.store
    up = store.begin_put(KEY)
    up.write(payload(300_000))
    up.abort()
    assert not store.exists(KEY)
    assert [e.name for e in store.list(DIR) if e.name.startswith(".tmp-")] == []
    up.abort()  # twice: never raises
    up = store.begin_put(KEY2)
    up.abort()  # before any write
    assert store.list(DIR) == []
    assert store.abort_stale_uploads(CLUSTER, 0.0) == []


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(backend, key):
    assert_unsafe_key_refused(backend.make(), key)     # fresh: no connection yet


def test_missing_objects(backend):
    store = backend.store
    for key in (KEY, "nothing/here.zst"):
        with pytest.raises(ObjectNotFound):
            store.open(key)
        with pytest.raises(ObjectNotFound):
            store.read_tail(key, 64)
    store.put_bytes(KEY2, b"x")
    with pytest.raises(ObjectNotFound):
        store.open(KEY)


def test_free_bytes_is_a_number_or_none(backend):
    free = backend.store.free_bytes()
    assert free is None or isinstance(free, int) and free >= 0


def test_an_unreachable_store_is_a_store_error_never_absent_or_taken(backend):
    """What fetch relies on to answer >= 126 rather than "not in the archive"."""
    backend.store.put_bytes(KEY, b"stored")
    with backend.outage():
        store = backend.make()
        operations = {
            "open": lambda: store.open(KEY),
            "open-missing": lambda: store.open(KEY2),
            "read_tail": lambda: store.read_tail(KEY2, 10),
            "exists": lambda: store.exists(KEY2),
            "list": lambda: store.list(DIR),
            "put": lambda: store.put_bytes(KEY2, b"x"),
        }
        for what, op in operations.items():
            result = run_bounded(op, 60)
            assert result != "HUNG", what
            assert type(result) is StoreError, f"{what}: {result!r}"
    assert read_all(backend.make().open(KEY)) == b"stored"


def test_drivers_carry_no_keyring(backend):
    """The archive's keyring travels with the handle open_store returns, not in the
    store driver (which only moves bytes)."""
    from walkeeper.stores import ArchiveStore

    store = backend.store
    driver = store.store if isinstance(store, ArchiveStore) else store
    assert not hasattr(driver, "keyring"), type(driver)
