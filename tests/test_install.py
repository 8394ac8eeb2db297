"""The supported install route (bin/install: a venv under /opt, linked on PATH), as
bin/test's own set-up path made it on this machine, run as the unprivileged user the
tests run as (issue 15, item 13). The docs, conf/ and bin/demo must use that route."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from storeroot import root as store_root
from walfiles import write_segment
import walkeeper

REPO = Path(__file__).resolve().parent.parent
INSTALLED = os.environ.get("WALKEEPER_INSTALLED", "")
SEG = "000000010000000000000007"

needs_install = pytest.mark.skipif(
    not INSTALLED, reason="bin/test runs bin/install (and sets WALKEEPER_INSTALLED) only "
                          "when run as root; run `sudo bin/test` to try the install route")


def run(*argv, env=None):
    full = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            **(env or {})}
    return subprocess.run([str(a) for a in argv], env=full, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd="/")


@needs_install
def test_the_link_points_into_a_venv_under_opt():
    link = Path(INSTALLED)
    assert link.is_symlink(), f"{link} should be a link into the venv"
    target = Path(os.path.realpath(link))
    prefix = target.parent.parent
    assert str(prefix).startswith("/opt/walkeeper") and target == prefix / "bin" / "walkeeper"
    assert (prefix / "pyvenv.cfg").exists()
    shebang = target.read_text().splitlines()[0]
    assert shebang == f"#!{prefix}/bin/python", shebang      # the venv's, not the system's
    # The package comes from the venv, not from this checkout.
    r = run(prefix / "bin" / "python", "-c", "import walkeeper; print(walkeeper.__file__)")
    assert r.returncode == 0 and r.stdout.startswith(f"{prefix}/"), r.stdout + r.stderr


@needs_install
def test_an_unprivileged_user_runs_the_installed_walkeeper(tmp_path):
    """Like the postgres user does from archive_command: by name on PATH, nothing else."""
    assert os.getuid() != 0
    name = os.path.basename(INSTALLED)
    r = run(name, "--version")
    assert r.returncode == 0, r.stderr
    assert walkeeper.__version__ in r.stdout
    env = {"BACKUP_DIR": str(store_root(tmp_path / "store")),
           "WALKEEPER_STATE_DIR": str(tmp_path / "st")}
    r = run(name, "push", write_segment(tmp_path, SEG), SEG, env=env)
    assert r.returncode == 0, r.stderr
    r = run(name, "fetch", SEG, tmp_path / "back", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == (tmp_path / SEG).read_bytes()


def test_bin_install_refuses_bad_options():
    r = run("bash", REPO / "bin" / "install", "--prefix", "relative/dir")
    assert r.returncode != 0 and "absolute" in r.stderr
    r = run("bash", REPO / "bin" / "install", "--frobnicate")
    assert r.returncode != 0 and "unknown option" in r.stderr


def test_docs_conf_and_demo_use_the_install_route():
    runbook = (REPO / "docs" / "runbook.md").read_text()
    readme = (REPO / "README.md").read_text()
    for text in (runbook, readme):
        assert "bin/install" in text
        # No bare `pip install .` as root: Debian 12 refuses it (externally managed).
        assert not re.search(r"^\s*(sudo )?pip3? install \.", text, re.M)
    for path in [REPO / "conf" / "postgresql.conf.snippet", REPO / "conf" / "walkeeper.cron",
                 *sorted((REPO / "conf" / "systemd").glob("*.service"))]:
        text = path.read_text()
        if "walkeeper --config" in text:
            assert "/usr/local/bin" in text, path
    assert '"$REPO/bin/install"' in (REPO / "bin" / "demo").read_text()
    assert '"$REPO/bin/install"' in (REPO / "bin" / "test").read_text()
