"""drill end to end: a real cluster archiving through walkeeper, its newest backup
restored into a scratch copy, started, checked, stopped and removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pgharness import PG_BIN
from storeroot import root as store_root


def write_config(tmp_path, cluster, sql: str | None = None):
    cfg = tmp_path / "walkeeper.toml"
    text = (f'cluster = "drill"\nstate_dir = "{tmp_path / "state"}"\n'
            f'[postgres]\nconninfo = "{cluster.conninfo}"\nbindir = "{PG_BIN}"\n'
            f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(tmp_path / "store")}"\n')
    if sql is not None:
        text += f"[drill]\nsql = {json.dumps(sql)}\n"
    cfg.write_text(text)
    return cfg


@pytest.fixture
def archived(pg, wk, tmp_path):
    """A cluster archiving with walkeeper, a backup, then work archived after it."""
    cluster = pg.new()
    cfg = write_config(tmp_path, cluster)
    cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
    cluster.restart()
    cluster.execute("CREATE DATABASE app")
    cluster.execute("CREATE TABLE t (n int)")
    r = wk("--config", cfg, "basebackup", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    after = []
    for _ in range(2):
        cluster.execute("INSERT INTO t SELECT g FROM generate_series(1, 5000) g")
        after.append(cluster.switch_wal())
    cluster.wait_archived(after[-1])
    yield cluster, cfg, json.loads(r.stdout), after
    cluster.stop()


def left_behind(state: Path) -> list[str]:
    """Scratch directories in the state directory, and postgres processes using them."""
    found = [p.name for p in state.glob("drill-*")] if state.exists() else []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state) in cmd and "postgres" in cmd:
            found.append(f"process {pid}: {cmd}")
    return found


def test_drill_passes_and_leaves_nothing(wk, tmp_path, archived):
    cluster, _, info, after = archived
    # Same file as the cluster's archive_command reads: only [drill] sql is added.
    cfg = write_config(tmp_path, cluster, sql="SELECT 1 / (count(*) = 10000)::int FROM t")
    store = tmp_path / "store"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    r = wk("--config", cfg, "drill", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "drill passed" in r.stdout and info["id"] in r.stdout
    assert " s " in r.stdout                     # the measured recovery time
    state = tmp_path / "state"
    assert left_behind(state) == []
    record = json.loads((state / "last_drill.json").read_text())
    assert record["ok"] is True and record["backup"] == info["id"]
    assert record["seconds"] > 0 and record["time"]
    assert {"app", "postgres", "template1"} <= set(record["databases"])
    assert record["last_wal"] == after[-1]
    # The drill promoted its copy to timeline 2 but never wrote to the archive.
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before

    r = wk("--config", cfg, "drill", "--keep", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] is True and result["kept"]
    kept = Path(result["kept"])
    assert (kept / "PG_VERSION").exists() and not (kept / "postmaster.pid").exists()
    assert [p.name for p in state.glob("drill-*")] == [kept.parent.name]


def test_drill_fails_on_a_corrupt_segment_and_names_it(wk, tmp_path, archived):
    cluster, cfg, info, after = archived
    [obj] = (tmp_path / "store").rglob(after[0] + ".zst")
    raw = bytearray(obj.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    obj.write_bytes(bytes(raw))
    r = wk("--config", cfg, "drill", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("walkeeper drill:")]
    assert len(lines) == 1, r.stderr
    assert after[0] in lines[0] and "corrupt" in lines[0], lines[0]
    state = tmp_path / "state"
    assert left_behind(state) == []
    assert json.loads((state / "last_drill.json").read_text())["ok"] is False
    failures = (state / "failures.jsonl").read_text().splitlines()
    assert json.loads(failures[-1])["command"] == "drill"


def test_drill_fails_when_its_sql_fails(wk, tmp_path, archived):
    cluster, _, info, after = archived
    cfg = write_config(tmp_path, cluster, sql="SELECT count(*) FROM no_such_table")
    r = wk("--config", cfg, "drill", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[drill] sql" in r.stderr and "no_such_table" in r.stderr
    assert left_behind(tmp_path / "state") == []
