"""Shared fixtures for the walkeeper tests.

pg        session   ClusterFactory: pg.new(wal_segsize_mb=16, start=True, **settings) -> Cluster,
                    pg.from_pgdata(path, start=False, **settings) -> Cluster
cluster   function  a fresh started Cluster (pg.new()), stopped after the test
sshd      function  a started SshServer (tests/sshharness.py), stopped after the test
wk        function  wk(*args, env=None, cwd=None, input=None, timeout=60) -> CompletedProcess
                    running the installed `walkeeper` console script
tmp_short function  a short directory under /tmp (for unix sockets), removed after
rgw       session   a started RgwServer (tests/rgwharness.py): Ceph RGW on loopback;
                    skipped where radosgw is missing, unless $CI is set (then it fails)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pgharness import PG_BIN, ClusterFactory
from rgwharness import RgwServer
from rgwharness import available as rgw_available
from sshharness import SSHD, SshServer
from storeroot import root as store_root

WALKEEPER = Path(sys.executable).parent / "walkeeper"

# Variables that would point the tool (or libpq) somewhere else than the test says.
_SCRUB_PREFIXES = ("BACKUP_", "PG")
_SCRUB_NAMES = {
    "WALKEEPER_CONFIG", "WALKEEPER_CLUSTER", "WALKEEPER_PGDATA",
    "WALKEEPER_PASSPHRASE", "WALKEEPER_SFTP_PASSWORD",
    "WALKEEPER_S3_ACCESS_KEY", "WALKEEPER_S3_SECRET_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
}


# A prefetcher waits fetch.prefetch_idle (60 s) for recovery's next request before it
# empties its spool and ends; tests that wait for that end set the suite's 5 s here
# (the processes PostgreSQL starts inherit it), tests of the setting override it.
os.environ.setdefault("WALKEEPER_PREFETCH_IDLE", "5")


def need(available: bool, missing: str) -> None:
    """A real part a test needs (a server, a browser, the sshd test password): in CI
    (CI set, where bin/test installed everything as root) its absence fails the test;
    on a developer's machine without it, the test is skipped."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must provide it")
    pytest.skip(missing)


# A test that uses one of these (directly or through another fixture) starts a real
# service: it is marked slow here, so that `-m "not slow"` is the fast suite and no
# test file has to remember the marker.
SERVICE_FIXTURES = {"pg", "cluster", "sshd", "rgw"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> ClusterFactory:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (set WALKEEPER_PG_BIN)")
    if os.geteuid() == 0:
        pytest.fail("PostgreSQL refuses to run as root: run the tests through bin/test")
    factory = ClusterFactory(tmp_path_factory.mktemp("pg", numbered=True))
    yield factory
    factory.close()


@pytest.fixture(autouse=True)
def _release_clusters(request):
    """A test's clusters are stopped and their data deleted when it ends: a full run
    would otherwise keep ~100 clusters and their WAL (several GB) until the session
    ends."""
    yield
    if "pg" in request.fixturenames:
        request.getfixturevalue("pg").release()


@pytest.fixture
def cluster(pg):
    c = pg.new()
    yield c
    c.stop()


@pytest.fixture
def sshd(tmp_path):
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is absent (bin/test installs openssh-server when run as root)")
    server = SshServer(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    need(rgw_available(), "radosgw, ceph-mon or ceph-osd is missing (bin/test installs them "
                          "as root)")
    # a short directory: Ceph's admin sockets need paths under ~100 bytes
    d = Path(tempfile.mkdtemp(prefix="wkrgw", dir="/tmp"))
    server = RgwServer(d / "rgw")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bucket(rgw, monkeypatch):
    """A new bucket on the session's RGW, its credentials in the environment; emptied
    after the test."""
    rgw.ensure_running()
    for k, v in rgw.credentials_env().items():
        monkeypatch.setenv(k, v)
    name = rgw.new_bucket()
    yield name
    if rgw.running():
        rgw.empty_bucket(name)


@pytest.fixture
def tmp_short():
    d = Path(tempfile.mkdtemp(prefix="wk", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def clean_env(extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUB_NAMES and not k.startswith(_SCRUB_PREFIXES)}
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def wk(tmp_path):
    """Run the installed walkeeper console script.

    The environment is a copy of os.environ without WALKEEPER_CONFIG & co.,
    BACKUP_* and PG* (libpq) variables, with XDG_STATE_HOME set to a per-test
    directory (so the default state_dir stays inside the test), then updated
    with env. Output is captured as text; no check on the exit status.
    """
    if not WALKEEPER.exists():
        pytest.fail(f"console script {WALKEEPER} missing: is walkeeper installed in this venv "
                    f"(pip install -e '.[test]')?")
    state = tmp_path / "xdg-state"

    def run(*args, env: dict | None = None, cwd=None, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        full_env = clean_env({"XDG_STATE_HOME": str(state)})
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        return subprocess.run(
            [str(WALKEEPER), *(str(a) for a in args)],
            env=full_env, cwd=cwd, input=input, text=True, capture_output=True,
            timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
        )

    run.path = WALKEEPER
    run.state_dir = state
    return run


def make_config(tmp_path: Path, *, cluster: str = "test", conninfo: str | None = None,
                store: Path | str | None = None, local: bool = True, sshd=None,
                sshd_options: str = "timeout = 5\nretries = 2\n", extra: str = "",
                sections: str = "", tail: str = "", state: Path | None = None,
                name: str = "walkeeper.toml") -> Path:
    """The one writer of test configurations: cluster NAME, state in tmp_path/state,
    [postgres] when conninfo is given, a local store at `store` (tmp_path/local by
    default) unless local=False, the sshd's SFTP store "offsite" when given; `extra`
    goes before the first table (top-level keys or whole sections), `sections` after
    [postgres], `tail` last."""
    state = tmp_path / "state" if state is None else state
    parts = [f'cluster = "{cluster}"', f'state_dir = "{state}"', extra]
    if conninfo is not None:
        parts.append(f'[postgres]\nconninfo = "{conninfo}"\nbindir = "{PG_BIN}"')
    parts.append(sections)
    if local:
        # Created as `walkeeper check` creates it on first-time setup: push never
        # creates a missing store root (tests/storeroot.py).
        where = store_root(tmp_path / "local" if store is None else store)
        parts.append(f'[[stores]]\nname = "local"\ntype = "local"\npath = "{where}"')
    if sshd is not None:
        parts.append(sshd.store_config(name="offsite") + sshd_options)
    parts.append(tail)
    path = tmp_path / name
    path.write_text("\n".join(p for p in parts if p) + "\n")
    return path


@pytest.fixture
def write_config(tmp_path):
    """make_config bound to this test's tmp_path."""
    return lambda **kw: make_config(tmp_path, **kw)
