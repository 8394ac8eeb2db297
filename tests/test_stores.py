"""Filesystem extras of the store contract, for the stores that keep files on a disk
(local, and SFTP to a real OpenSSH sshd on loopback, tests/sshharness.py): what is on
the disk (modes 0600/0700, `.tmp-` names of uploads in progress, no leftovers). The API
contract every store type passes is tests/test_store_contract.py. The SFTP-only tests
at the end cover host keys, key files, passwords and dropped or frozen connections.

Run as a non-root user (bin/test): root ignores file modes.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from walkeeper.config import StoreConfig
from walkeeper.errors import ConfigError, ObjectExists, ObjectNotFound, StoreError
from walkeeper.stores import open_store

from conftest import need
from storecontract import (CLUSTER, DIR, HISTORY_KEY, KEY, KEY2, MiB, UNSAFE_KEYS,  # noqa: F401
                           assert_unsafe_key_refused,
                           payload, read_all, run_bounded)

pytestmark = pytest.mark.slow


def disk_tree(root: Path) -> list[str]:
    """Every path under root, relative, sorted (the store as `find` shows it)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def temp_leftovers(root: Path) -> list[str]:
    return [p for p in disk_tree(root) if Path(p).name.startswith(".tmp-")]


@pytest.fixture
def not_root():
    if os.geteuid() == 0:
        pytest.skip("root ignores file modes: run through bin/test")


# ------------------------------------------------------------------ backends
@dataclass
class Backend:
    kind: str
    store: object
    root: Path          # where the store's objects are on this machine
    make: object        # make() -> a fresh store object with the same config
    sshd: object = None


def sftp_config(sshd, **kw) -> StoreConfig:
    base = dict(name="offsite", type="sftp", host=sshd.host, port=sshd.port, user=sshd.user,
                key_file=str(sshd.key_file), known_hosts=str(sshd.known_hosts),
                directory=str(sshd.directory), timeout=5, retries=1)
    base.update(kw)
    return StoreConfig(**base)


@pytest.fixture(params=["local", "sftp"])
def backend(request, tmp_path):
    if request.param == "local":
        root = tmp_path / "local-store"          # as `walkeeper check` leaves it
        root.mkdir(mode=0o700)
        cfg = StoreConfig(name="local", type="local", path=str(root))
        sshd = None
    else:
        sshd = request.getfixturevalue("sshd")
        root = sshd.directory
        cfg = sftp_config(sshd)
    made = []

    def make():
        s = open_store(cfg)
        made.append(s)
        return s

    b = Backend(request.param, make(), root, make, sshd)
    yield b
    for s in made:
        s.close()


# ------------------------------------------------------------ contract suite
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
    assert (backend.root / KEY).read_bytes() == data
    assert temp_leftovers(backend.root) == []


def test_list_shows_upload_in_progress_as_temporary(backend):
    store = backend.store
    up = store.begin_put(KEY)
    up.write(b"partial")
    names = [e.name for e in store.list(DIR)]
    assert len(names) == 1
    assert names[0].startswith(".tmp-") and names[0].endswith("000000010000000000000001.zst")
    assert not store.exists(KEY)
    up.commit()
    assert [e.name for e in store.list(DIR)] == ["000000010000000000000001.zst"]


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
    assert read_all(store.open(KEY)) == first
    assert (backend.root / KEY).read_bytes() == first
    assert temp_leftovers(backend.root) == []


def test_no_clobber_between_concurrent_uploads(backend):
    store = backend.store
    a = store.begin_put(KEY)
    b = backend.make().begin_put(KEY)
    a.write(b"A" * 1000)
    b.write(b"B" * 2000)
    a.commit()
    with pytest.raises(ObjectExists):
        b.commit()
    assert (backend.root / KEY).read_bytes() == b"A" * 1000
    assert temp_leftovers(backend.root) == []


def test_abort_leaves_no_temporary_file(backend):
    store = backend.store
    up = store.begin_put(KEY)
    up.write(payload(300_000))
    assert len(temp_leftovers(backend.root)) == 1
    up.abort()
    assert [e.name for e in store.list(DIR) if e.name.startswith(".tmp-")] == []
    assert temp_leftovers(backend.root) == []
    assert not store.exists(KEY)
    up.abort()  # twice: never raises
    # abort before any write
    up = store.begin_put(KEY2)
    up.abort()
    assert temp_leftovers(backend.root) == []
    assert store.list(DIR) == []


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused_before_touching_anything(backend, key):
    stores = [backend.make()]         # fresh: no connection yet
    listener = None
    if backend.sshd is not None:
        # A second store aimed at a socket nobody accepts on: a refused key must
        # not even connect. The kernel queues any connect, so a non-blocking
        # accept afterwards sees it exactly (the sshd's log is written
        # asynchronously by its children and lags, so counting there is racy).
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        cfg = sftp_config(backend.sshd, port=listener.getsockname()[1], timeout=1)
        stores.append(open_store(cfg))
    before = disk_tree(backend.root)
    try:
        for store in stores:
            assert_unsafe_key_refused(store, key)
        assert disk_tree(backend.root) == before
        assert not (backend.root.parent / "x").exists()
        if listener is not None:
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()
                pytest.fail("an unsafe key made an SFTP connection")
    finally:
        for store in stores[1:]:
            store.close()
        if listener is not None:
            listener.close()


def test_modes_on_disk(backend, not_root):
    store = backend.store
    store.put_bytes(KEY, b"secret wal")
    store.put_bytes(HISTORY_KEY, b"history")
    up = store.begin_put(KEY2)
    up.write(b"in progress")
    created = [backend.root / CLUSTER, backend.root / CLUSTER / "wal", backend.root / DIR]
    if backend.kind == "local":
        created.insert(0, backend.root)  # as `walkeeper check` creates it
    for d in created:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, f"{d}: {stat.S_IMODE(d.stat().st_mode):o}"
    files = [backend.root / KEY, backend.root / HISTORY_KEY] + \
        [backend.root / p for p in temp_leftovers(backend.root)]
    assert len(files) == 3
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f"{f}: {stat.S_IMODE(f.stat().st_mode):o}"
    up.commit()
    assert stat.S_IMODE((backend.root / KEY2).stat().st_mode) == 0o600


def test_unwritable_store_is_a_store_error(backend, not_root):
    store = backend.store
    store.put_bytes(KEY, b"first")
    backend.root.chmod(0o500)
    try:
        with pytest.raises(StoreError) as info:
            store.put_bytes("other/dir/object.zst", b"x")
        assert not isinstance(info.value, (ObjectExists, ObjectNotFound))
    finally:
        backend.root.chmod(0o700)
    assert not (backend.root / "other").exists()


# ------------------------------------------------------------- SFTP only
def test_sftp_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    store = open_store(sftp_config(sshd, known_hosts=str(empty)))
    try:
        with pytest.raises(StoreError) as info:
            store.put_bytes(KEY, b"x")
        assert "known_hosts" in str(info.value)
        assert str(empty) in str(info.value)
        assert not isinstance(info.value, (ObjectNotFound, ObjectExists))
        with pytest.raises(StoreError):
            store.open(KEY)
    finally:
        store.close()
    assert disk_tree(sshd.directory) == []
    # never learnt: the known_hosts file is left as it was
    assert empty.read_text() == ""


def test_sftp_wrong_host_key_is_refused(sshd, tmp_path):
    wrong = sshd.wrong_known_hosts(tmp_path / "wrong_known_hosts")
    content = wrong.read_text()
    store = open_store(sftp_config(sshd, known_hosts=str(wrong)))
    try:
        with pytest.raises(StoreError) as info:
            store.put_bytes(KEY, b"x")
        assert "known_hosts" in str(info.value)
        assert not isinstance(info.value, (ObjectNotFound, ObjectExists))
        with pytest.raises(StoreError) as info:
            store.exists(KEY)
        assert not isinstance(info.value, ObjectNotFound)
    finally:
        store.close()
    assert disk_tree(sshd.directory) == []
    assert wrong.read_text() == content


def test_sftp_missing_known_hosts_file_is_a_config_error(sshd, tmp_path):
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, known_hosts=str(tmp_path / "absent")))
    assert "known_hosts" in str(info.value)


def test_sftp_key_file_readable_by_others_is_a_config_error(sshd, tmp_path, not_root):
    key = tmp_path / "id_loose"
    key.write_bytes(sshd.key_file.read_bytes())
    key.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, key_file=str(key)))
    assert str(key) in str(info.value)
    assert info.value.exit_code == 3


def test_sftp_missing_key_file_is_a_config_error(sshd, tmp_path):
    with pytest.raises(ConfigError):
        open_store(sftp_config(sshd, key_file=str(tmp_path / "absent_key")))


def test_sftp_no_credentials_is_a_config_error(sshd):
    with pytest.raises(ConfigError):
        open_store(sftp_config(sshd, key_file="", password_env=""))


def _encrypted_key(sshd, tmp_path, passphrase: str, kind: str) -> Path:
    path = tmp_path / f"id_encrypted_{kind}"
    args = ["ssh-keygen", "-q", "-N", passphrase, "-C", "wk-encrypted", "-f", str(path)]
    args += ["-t", "ed25519"] if kind == "ed25519" else ["-t", "rsa", "-b", "2048", "-m", "PEM"]
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    path.chmod(0o600)
    with open(sshd.authorized_keys, "a") as f:
        f.write(Path(f"{path}.pub").read_text())
    return path


@pytest.mark.parametrize("kind", ["ed25519", "rsa-pem"])
def test_sftp_encrypted_key(sshd, tmp_path, monkeypatch, kind):
    passphrase = "pass-phrase-XYZZY-42"
    key = _encrypted_key(sshd, tmp_path, passphrase, kind)
    monkeypatch.delenv("WK_TEST_KEY_PASSPHRASE", raising=False)

    # no key_passphrase_env: a clear configuration error
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, key_file=str(key)))
    assert "passphrase" in str(info.value) or "encrypted" in str(info.value)

    # key_passphrase_env names an unset variable
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, key_file=str(key), key_passphrase_env="WK_TEST_KEY_PASSPHRASE"))
    assert "WK_TEST_KEY_PASSPHRASE" in str(info.value)

    # the wrong passphrase: configuration error, passphrase not shown
    monkeypatch.setenv("WK_TEST_KEY_PASSPHRASE", "wrong-guess-QWERTY")
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, key_file=str(key), key_passphrase_env="WK_TEST_KEY_PASSPHRASE"))
    assert "wrong-guess-QWERTY" not in str(info.value)
    assert "wrong-guess-QWERTY" not in info.value.line()
    assert passphrase not in str(info.value)

    # the right one works end to end
    monkeypatch.setenv("WK_TEST_KEY_PASSPHRASE", passphrase)
    store = open_store(sftp_config(sshd, key_file=str(key), key_passphrase_env="WK_TEST_KEY_PASSPHRASE"))
    try:
        store.put_bytes(KEY, b"via encrypted key")
        assert read_all(store.open(KEY)) == b"via encrypted key"
        assert passphrase not in repr(store.cfg)
    finally:
        store.close()


def test_sftp_password_auth(sshd, monkeypatch):
    need(sshd.password is not None,
         "no test password for sshd (bin/test sets one for wktest when run as root)")
    monkeypatch.setenv("WK_TEST_SFTP_PASSWORD", sshd.password)
    store = open_store(sftp_config(sshd, key_file="", password_env="WK_TEST_SFTP_PASSWORD"))
    try:
        store.put_bytes(KEY, b"via password")
        assert read_all(store.open(KEY)) == b"via password"
        assert sshd.password not in repr(store.cfg)
        assert sshd.password not in store.location
    finally:
        store.close()

    wrong = "Wr0ng-Pa55word-" + sshd.password[:4][::-1]
    monkeypatch.setenv("WK_TEST_SFTP_PASSWORD", wrong)
    store = open_store(sftp_config(sshd, key_file="", password_env="WK_TEST_SFTP_PASSWORD"))
    try:
        with pytest.raises(StoreError) as info:
            store.put_bytes(KEY2, b"x")
        text = str(info.value)
        assert wrong not in text and sshd.password not in text
        assert not isinstance(info.value, (ObjectNotFound, ObjectExists))
    finally:
        store.close()
    assert not (sshd.directory / KEY2).exists()


def test_sftp_password_env_unset_is_a_config_error(sshd, monkeypatch):
    monkeypatch.delenv("WK_TEST_UNSET_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as info:
        open_store(sftp_config(sshd, key_file="", password_env="WK_TEST_UNSET_PASSWORD"))
    assert "WK_TEST_UNSET_PASSWORD" in str(info.value)


def test_sftp_connection_killed_during_upload(sshd):
    cfg = sftp_config(sshd)
    store = open_store(cfg)
    try:
        up = store.begin_put(KEY)
        up.write(payload(200_000))
        assert sshd.wait_connections(1)
        assert sshd.kill_connections()

        def finish():
            for _ in range(32):
                up.write(payload(64 * 1024, seed=2))
            up.commit()
            return "committed"

        result = run_bounded(finish, 60)
        assert result != "HUNG", "write/commit hung after the connection was killed"
        assert isinstance(result, StoreError), f"expected StoreError, got {result!r}"
        assert not isinstance(result, (ObjectExists, ObjectNotFound))
    finally:
        store.close()
    # no object under the final name: only (maybe) a recognisable temporary
    assert not (sshd.directory / KEY).exists()
    for p in disk_tree(sshd.directory / DIR):
        assert p.startswith(".tmp-")

    fresh = open_store(cfg)
    try:
        data = payload(300_000, seed=3)
        fresh.put_bytes(KEY, data)
        assert read_all(fresh.open(KEY)) == data
    finally:
        fresh.close()


def test_sftp_connection_killed_then_same_store_reports_errors_not_hangs(sshd):
    store = open_store(sftp_config(sshd))
    try:
        store.put_bytes(KEY, b"x")
        assert sshd.kill_connections()
        result = run_bounded(lambda: store.put_bytes(KEY2, b"y"), 60)
        assert result != "HUNG"
        # Either it reconnected and stored it, or it said why not.
        assert result is None or isinstance(result, StoreError), repr(result)
    finally:
        store.close()


def test_sftp_reconnects_after_dropped_idle_connection(sshd):
    """`store.retries` is documented as "attempts on transient errors, with
    backoff": a connection dropped between two operations (server restart,
    NAT or firewall idle timeout during a long basebackup) is such an error,
    so the same store object must reconnect for the next operation."""
    store = open_store(sftp_config(sshd, retries=3))
    try:
        store.put_bytes(KEY, b"before")
        assert sshd.kill_connections()
        result = run_bounded(lambda: store.put_bytes(KEY2, b"after"), 60)
        assert result is None, f"put after a dropped idle connection: {result!r}"
        assert read_all(store.open(KEY2)) == b"after"
        assert store.exists(KEY)
    finally:
        store.close()


def test_sftp_frozen_server_during_read_times_out(sshd):
    cfg = sftp_config(sshd, timeout=2)
    store = open_store(cfg)
    data = payload(32 * MiB, seed=4)
    try:
        store.put_bytes(KEY, data)
        reader = store.open(KEY)
        first = reader.read(MiB)
        assert first == data[:MiB]
        assert sshd.freeze_connections()

        def drain():
            got = len(first)
            while True:
                b = reader.read(MiB)
                if not b:
                    return ("eof", got)
                got += len(b)

        try:
            result = run_bounded(drain, 90)
        finally:
            sshd.thaw_connections()
        assert result != "HUNG", "read hung on a frozen server despite timeout=2"
        assert isinstance(result, StoreError), f"expected StoreError, got {result!r}"
        assert "timed out" in str(result) or "closed" in str(result)
        reader.close()
    finally:
        sshd.thaw_connections()
        store.close()


def test_a_missing_root_is_never_created_by_a_put(backend, tmp_path):
    """A mistyped or unmounted store path must fail, not fill a new directory; only
    create_root (first-time setup, `walkeeper check`) makes it."""
    import shutil

    from walkeeper.errors import StoreError

    store = backend.store
    assert store.root_exists() is True
    shutil.rmtree(backend.root)
    assert store.root_exists() is False
    with pytest.raises(StoreError, match="does not exist"):
        store.put_bytes(KEY, b"wal")
    assert not backend.root.exists()
    assert store.create_root() is True and backend.root.is_dir()
    assert store.create_root() is False
    store.put_bytes(KEY, b"wal")
    assert read_all(store.open(KEY)) == b"wal"
