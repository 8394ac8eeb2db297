"""Recovery on a bad day (issue 15, items 1-3), with a real PostgreSQL and a real sshd:
an offsite store down while recovering, a restored copy next to production (port,
archiving, a stray timeline), and a dry run that reads what the real run needs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pgharness import PG_BIN
from procs import free_port
from test_recover import archive_all, rows, wait_recovered

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, cluster, *, sshd=None, stores=("local",), extra="") -> Path:
    parts = [f'cluster = "pitr"\nstate_dir = "{tmp_path / "state"}"\n{extra}',
             f'[postgres]\nconninfo = "{cluster.conninfo}"\nbindir = "{PG_BIN}"']
    for name in stores:
        (tmp_path / name).mkdir(exist_ok=True)
        parts.append(f'[[stores]]\nname = "{name}"\ntype = "local"\npath = "{tmp_path / name}"')
    if sshd is not None:
        parts.append(sshd.store_config(name="offsite") + "timeout = 5\nretries = 1\n")
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text("\n".join(parts) + "\n")
    return cfg


def start_archiving(wk, cluster, cfg) -> None:
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    cluster.execute("CREATE TABLE t (batch text, n int)")
    cluster.execute("INSERT INTO t SELECT 'A', g FROM generate_series(1, 100) g")
    archive_all(cluster)


def effective(pgdata: Path, name: str) -> str:
    """What the data directory's configuration files set, as the server would read it."""
    r = subprocess.run([str(PG_BIN / "postgres"), "-D", str(pgdata), "-C", name],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


# ---------------------------------------------------------------- item 1

def test_recovery_planned_without_an_unreachable_store_finishes(pg, wk, tmp_path, sshd):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster, sshd=sshd)
    start_archiving(wk, cluster, cfg)
    assert list(sshd.directory.rglob("*.zst")), "nothing reached the SFTP store"
    sshd.stop()

    dest = tmp_path / "restored"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--target-action",
           "promote")
    assert r.returncode == 0, r.stderr
    assert "offsite" in r.stderr and "goes on without this store" in r.stderr
    # The recovery finishes (before: it replayed everything, then FATAL when fetch of
    # the next segment could not ask the unreachable store).
    copy = pg.from_pgdata(dest)
    copy.start()
    wait_recovered(copy)
    assert copy.scalar("SELECT pg_is_in_recovery()") is False
    assert rows(copy) == ["A"]
    assert "FATAL" not in copy.log.read_text()
    # And recover said so, with the command to widen it once the store is back.
    assert "only local" in r.stdout and "offsite could not be read" in r.stdout
    widen = [ln for ln in r.stdout.splitlines() if "restore_command = '" in ln]
    assert widen and "--store" not in widen[0], r.stdout
    auto = (dest / "postgresql.auto.conf").read_text()
    assert "fetch --store local %f %p" in auto

    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "dry", "--latest", "--dry-run",
           "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["stores"] == ["local"] and list(plan["skipped_stores"]) == ["offsite"]
    assert "--store" not in plan["widen_restore_command"]


def test_fetch_store_option_limits_the_stores(pg, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster, stores=("local", "second"))
    start_archiving(wk, cluster, cfg)
    done = [p.name for p in (cluster.pgdata / "pg_wal" / "archive_status").glob("*.done")]
    seg = sorted(d.removesuffix(".done") for d in done if len(d) == 29)[-1]
    for path in (tmp_path / "local").rglob(f"{seg}.*"):
        path.unlink()
    r = wk("--config", cfg, "fetch", "--store", "local", seg, tmp_path / "x")
    assert r.returncode == 1, r.stderr          # not in the one store asked
    r = wk("--config", cfg, "fetch", "--store", "second", seg, tmp_path / "x")
    assert r.returncode == 0, r.stderr
    r = wk("--config", cfg, "fetch", "--store=local", "--store=second", seg, tmp_path / "y")
    assert r.returncode == 0, r.stderr
    r = wk("--config", cfg, "fetch", "--store", "nope", seg, tmp_path / "z")
    assert r.returncode == 255 and "no such store" in r.stderr


# ---------------------------------------------------------------- item 2

def test_restored_copy_gets_its_own_port_and_does_not_archive(pg, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster)
    start_archiving(wk, cluster, cfg)
    port = free_port()
    dest = tmp_path / "copy"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--port", port,
           "--target-action", "promote")
    assert r.returncode == 0, r.stderr
    assert f"port        {port}" in r.stdout and "archiving   off" in r.stdout
    assert effective(dest, "port") == str(port)
    assert effective(dest, "archive_mode") == "off"
    assert effective(dest, "archive_command") == ""

    copy = pg.from_pgdata(dest)
    copy.start()
    wait_recovered(copy)
    assert copy.scalar("SHOW archive_mode") == "off"
    copy.switch_wal()
    assert not list((tmp_path / "local").rglob("00000002*")), "the copy archived"

    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "other", "--latest")
    assert r.returncode == 0, r.stderr
    assert "port        the source's" in r.stdout


def test_copy_replacing_the_configured_cluster_archives(pg, wk, tmp_path):
    cluster = pg.new()
    dest = tmp_path / "replacement"
    cfg = write_config(tmp_path, cluster, extra="")
    cfg.write_text(cfg.read_text().replace("[postgres]\n", f'[postgres]\npgdata = "{dest}"\n'))
    start_archiving(wk, cluster, cfg)
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest")
    assert r.returncode == 0, r.stderr
    assert "archiving   on" in r.stdout
    assert effective(dest, "archive_mode") == "on"
    assert f"--config {cfg} push %p %f" in effective(dest, "archive_command")
    # --archive off wins, and says so.
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "x", "--latest", "--archive", "on",
           "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["archive"] is True


def test_a_stray_timeline_is_warned_about_and_drill_follows_the_cluster(pg, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster)
    start_archiving(wk, cluster, cfg)
    # The operator's mistake: a restored copy, promoted with archiving on.
    dest = tmp_path / "stray"
    r = wk("--config", cfg, "recover", "--pgdata", dest, "--latest", "--archive", "on",
           "--port", free_port(), "--target-action", "promote")
    assert r.returncode == 0, r.stderr
    stray = pg.from_pgdata(dest)
    stray.start()
    wait_recovered(stray)
    stray.execute("INSERT INTO t SELECT 'stray', g FROM generate_series(1, 10) g")
    stray.wait_archived(stray.switch_wal())
    wait_for(lambda: list((tmp_path / "local").rglob("00000002.history*")), "history archived")
    stray.stop()
    cluster.execute("INSERT INTO t SELECT 'B', g FROM generate_series(1, 100) g")
    archive_all(cluster)

    r = wk("--config", cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert warnings and "timeline 2" in warnings[0] and "timeline 1" in warnings[0]
    r = wk("--config", cfg, "status")
    assert "WARNING" in r.stdout

    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "never", "--latest", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "newer than timeline 1" in r.stderr

    r = wk("--config", cfg, "drill", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["timeline"] == 1, result
    assert result["warnings"] and "timeline 2" in result["warnings"][0]


# ---------------------------------------------------------------- item 3

def _segment_files(store: Path, name: str) -> list[Path]:
    return list(store.rglob(f"{name}.zst"))


def test_dry_run_fails_when_a_needed_segment_is_corrupt_in_every_store(pg, wk, tmp_path):
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster, stores=("local", "second"))
    start_archiving(wk, cluster, cfg)
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "d", "--latest", "--dry-run",
           "--json")
    assert r.returncode == 0, r.stderr
    victim = json.loads(r.stdout)["last_wal"]

    def corrupt(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    first = _segment_files(tmp_path / "local", victim)
    assert first
    corrupt(first[0])
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "d", "--latest", "--dry-run")
    assert r.returncode == 0, r.stderr      # the second store has a good copy
    assert "every object above has a good copy" in r.stdout

    corrupt(_segment_files(tmp_path / "second", victim)[0])
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "d", "--latest", "--dry-run")
    assert r.returncode == 1, r.stdout
    assert victim in r.stderr and "corrupt in store 'local'" in r.stderr
    assert not (tmp_path / "d").exists()
