"""A store that is not there (issue 15, item 4): push never creates a missing store
root, `walkeeper check` creates it on first-time setup, and verify-chain calls an
empty, mistyped or unmounted store a problem (`no_archive`), never "no problem"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walfiles import write_segment

SEG = "000000010000000000000005"


def write_config(tmp_path: Path, root: Path, sshd=None) -> Path:
    parts = ['cluster = "test"', f'state_dir = "{tmp_path / "state"}"',
             # Nothing listens here: check's PostgreSQL part fails at once.
             '[postgres]\nconninfo = "host=127.0.0.1 port=1 connect_timeout=2"',
             f'[[stores]]\nname = "local"\ntype = "local"\npath = "{root}"']
    if sshd is not None:
        parts.append(sshd.store_config(name="offsite", directory=sshd.directory / "missing")
                     + "timeout = 5\nretries = 1\n")
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text("\n".join(parts) + "\n")
    return cfg


def test_push_refuses_a_missing_store_root_and_check_creates_it(wk, tmp_path):
    root = tmp_path / "mnt" / "backups"
    cfg = write_config(tmp_path, root)
    seg = write_segment(tmp_path, SEG)
    r = wk("--config", cfg, "push", seg, SEG)
    assert r.returncode == 1, r.stderr
    assert f"{root} does not exist" in r.stderr and "walkeeper check" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not root.exists() and not (tmp_path / "mnt").exists()

    r = wk("--config", cfg, "check", "--timeout", "1")
    assert "created the store's root" in r.stdout, r.stdout
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700
    r = wk("--config", cfg, "push", seg, SEG)
    assert r.returncode == 0, r.stderr
    r = wk("--config", cfg, "check", "--timeout", "1")
    assert "created the store's root" not in r.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "other_cluster"])
def test_verify_chain_on_a_store_with_no_archive_is_a_problem(wk, tmp_path, case):
    root = tmp_path / "store"
    if case != "missing":
        root.mkdir()
    if case == "other_cluster":
        other = write_config(tmp_path, root)
        other.write_text(other.read_text().replace('cluster = "test"', 'cluster = "other"'))
        seg = write_segment(tmp_path, SEG)
        assert wk("--config", other, "push", seg, SEG).returncode == 0
    cfg = write_config(tmp_path, root)
    r = wk("--config", cfg, "verify-chain", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    problems = json.loads(r.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["no_archive"]
    detail = problems[0]["detail"]
    assert ("does not exist" in detail) == (case == "missing"), detail
    r = wk("--config", cfg, "verify-chain")
    assert r.returncode == 1 and "no_archive" in r.stdout and "no problem" not in r.stdout


@pytest.mark.slow
def test_sftp_push_refuses_a_missing_directory_and_check_creates_it(wk, tmp_path, sshd):
    root = tmp_path / "local-root"
    root.mkdir()
    cfg = write_config(tmp_path, root, sshd=sshd)
    remote = sshd.directory / "missing"
    seg = write_segment(tmp_path, SEG)
    r = wk("--config", cfg, "push", seg, SEG)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    assert not remote.exists()
    r = wk("--config", cfg, "check", "--timeout", "1")
    assert "created the store's root" in r.stdout, r.stdout
    assert remote.is_dir()
    r = wk("--config", cfg, "push", seg, SEG)
    assert r.returncode == 0, r.stderr
