"""check end to end: a healthy setup passes (the switched segment reaches a local and
an SFTP store); each broken part fails, naming the cause and the fix."""

from __future__ import annotations

import json
import re

import pytest

from procs import free_port
from conftest import make_config


def write_config(tmp_path, conninfo, sshd=None, store="store", name="walkeeper.toml"):
    return make_config(tmp_path, cluster="chk", conninfo=conninfo, store=tmp_path / store,
                       sshd=sshd, sshd_options="timeout = 5\nretries = 1\n", name=name)


def lines(out: str) -> dict[str, str]:
    """{check name: its line} from check's output."""
    found = {}
    for ln in out.splitlines():
        mark, _, rest = ln.partition(" ")
        assert mark in ("ok", "FAIL", "skip"), ln
        found[rest.strip().split(":", 1)[0]] = ln
    return found


@pytest.fixture
def archiving(pg, sshd, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster.conninfo, sshd)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    yield cluster, cfg
    cluster.stop()


def test_check_passes_on_a_healthy_setup(wk, tmp_path, archiving):
    cluster, cfg = archiving
    r = wk("--config", cfg, "check", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    found = lines(r.stdout)
    assert set(found) >= {"config", "state_dir", "store local", "store offsite", "postgres",
                          "wal_level", "archive_mode", "archive_command", "wal switch"}
    assert all(ln.startswith("ok   ") for ln in found.values()), r.stdout
    assert "write, read back, delete" in found["store local"]
    assert str(tmp_path / "store") in found["store local"]
    assert "write, read back, delete" in found["store offsite"]
    assert "compressed by the server with zstd (2 workers)" in found["basebackup"]
    assert "no backup_manifest" in found["basebackup"]
    segment = found["wal switch"].split()[3]
    assert (tmp_path / "store" / "chk" / "wal" / segment[:16] / f"{segment}.zst").exists()
    # The probes are gone from both stores.
    assert not [p for p in (tmp_path / "store" / "chk" / "probe").iterdir()]
    assert r.stderr == ""
    r = wk("--config", cfg, "check", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True and all(c["ok"] for c in report["checks"])


def test_archive_mode_off_fails_naming_it(pg, wk, tmp_path):
    cluster = pg.new()      # archive_mode off
    cfg = write_config(tmp_path, cluster.conninfo)
    cluster.conf(archive_command="cp %p /nowhere/%f")
    cluster.reload()
    try:
        r = wk("--config", cfg, "check")
    finally:
        cluster.stop()
    assert r.returncode == 1, r.stdout + r.stderr
    found = lines(r.stdout)
    assert found["archive_mode"].startswith(
        "FAIL archive_mode: off; set archive_mode = on in postgresql.conf and restart")
    assert found["archive_command"].startswith("FAIL archive_command: 'cp %p /nowhere/%f' "
                                               "does not contain walkeeper, push")
    assert found["store local"].startswith("ok   ")
    assert found["wal_level"] == "ok   wal_level: replica"
    assert found["wal switch"].startswith("skip ")
    [err] = r.stderr.splitlines()
    assert re.fullmatch(r"walkeeper check: 2 of \d+ checks failed: archive_mode, "
                        r"archive_command", err), err


def test_unreachable_sftp_store_fails_naming_the_store(wk, sshd, tmp_path, archiving):
    cluster, cfg = archiving
    sshd.stop()
    r = wk("--config", cfg, "check", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    found = lines(r.stdout)
    assert found["store offsite"].startswith("FAIL store offsite: open failed") or \
        found["store offsite"].startswith("FAIL store offsite: write failed")
    assert f"cannot connect to {sshd.host}:{sshd.port}" in found["store offsite"]
    assert "check that the SFTP server" in found["store offsite"]
    assert found["store local"].startswith("ok   ")
    assert found["archive_mode"] == "ok   archive_mode: on"
    assert found["wal switch"].startswith("skip ")
    assert "store offsite" in r.stderr and r.stderr.count("\n") == 1


def test_segment_that_never_arrives_times_out(pg, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster.conninfo)
    # The archiver writes into another archive than the one checked.
    other = write_config(tmp_path, cluster.conninfo, store="elsewhere", name="other.toml")
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {other} push %p %f")
    cluster.restart()
    try:
        r = wk("--config", cfg, "check", "--timeout", "3")
    finally:
        cluster.stop()
    assert r.returncode == 1, r.stdout + r.stderr
    found = lines(r.stdout)
    assert found["wal switch"].startswith("FAIL wal switch: ")
    assert "not in store local after 3 s" in found["wal switch"]
    assert "archive_command uses this config file" in found["wal switch"]


def test_unreachable_server_and_bad_config(wk, tmp_path):
    cfg = write_config(tmp_path, f"host=127.0.0.1 port={free_port()} dbname=postgres "
                                 f"connect_timeout=3")
    r = wk("--config", cfg, "check")
    assert r.returncode == 1
    found = lines(r.stdout)
    assert found["postgres"].startswith("FAIL postgres: cannot connect to PostgreSQL")
    assert "postgres.conninfo" in found["postgres"]
    assert all(found[n].startswith("skip ") for n in ("wal_level", "archive_mode",
                                                      "archive_command", "wal switch"))
    bad = tmp_path / "bad.toml"
    bad.write_text('cluster = "chk"\n[[stores]]\nname = "x"\ntype = "nfs"\n')
    r = wk("--config", bad, "check")
    assert r.returncode == 3 and "stores[0].type" in r.stderr


@pytest.mark.parametrize("compress, codec, version, standby, ok, words", [
    ("auto", "zstd", 150010, False, True, "compressed by the server"),
    ("client", "zstd", 150010, False, True, "compressed by walkeeper (backup.compress = client)"),
    ("auto", "zstd", 150010, True, True, "compressed by walkeeper (a standby)"),
    ("auto", "zstd", 140009, False, True, "compressed by walkeeper (PostgreSQL before 15)"),
    ("auto", "none", 150010, False, True, "stored uncompressed"),
    ("server", "zstd", 150010, True, False, "the server is a standby"),
])
def test_check_says_where_backups_are_compressed(tmp_path, compress, codec, version, standby,
                                                 ok, words):
    from walkeeper import config as config_mod
    from walkeeper.maintenance.check import _basebackup

    path = tmp_path / "c.toml"
    path.write_text(f'cluster = "c"\nstate_dir = "{tmp_path}"\n[backup]\ncompress = '
                    f'"{compress}"\n[compression]\nalgorithm = "{codec}"\n[[stores]]\n'
                    f'name = "l"\ntype = "local"\npath = "{tmp_path / "s"}"\n')
    c = _basebackup(config_mod.load(str(path)), {"version_num": version,
                                                 "in_recovery": standby})
    assert c.name == "basebackup" and c.ok is ok and words in c.detail, c
    if not ok:
        assert 'backup.compress = "client"' in c.fix
