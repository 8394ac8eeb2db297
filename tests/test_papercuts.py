"""The small things a new user trips over in the first hour (issue 15, item 12)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from walkeeper.catalog.planner import Target
from walkeeper.log import plural

REPO = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")


# ------------------------------------------------ "... UTC" is a time zone

@pytest.mark.parametrize("text, setting", [
    ("2026-11-24 10:15:00 UTC", "2026-11-24 10:15:00+00:00"),
    ("2026-11-24 10:15:00.5 utc", "2026-11-24 10:15:00.500000+00:00"),
    ("2026-11-24T10:15:00 GMT", "2026-11-24 10:15:00+00:00"),
    ("2026-11-24 10:15:00 Europe/Berlin", "2026-11-24 10:15:00+01:00"),
    ("2026-07-01 10:15:00 Europe/Berlin", "2026-07-01 10:15:00+02:00"),
    ("2026-07-01 10:15:00 America/New_York", "2026-07-01 10:15:00-04:00"),
])
def test_a_time_zone_name_is_accepted(text, setting):
    t = Target.parse("time", text, local_tz=BERLIN)
    assert t.setting() == ("recovery_target_time", setting)


@pytest.mark.parametrize("text, says", [
    ("2026-11-24 10:15:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("2026-11-24 10:15:00+01 UTC", "not both"),
    ("2026-11-24 10:15:00 CEST-ish", "expected ISO 8601"),
])
def test_a_bad_time_zone_is_one_clear_error(text, says):
    with pytest.raises(ValueError) as info:
        Target.parse("time", text, local_tz=BERLIN)
    assert says in str(info.value)


# ------------------------------------------------ plurals

def test_plural():
    assert plural(1, "segment") == "1 segment"
    assert plural(0, "segment") == "0 segments"
    assert plural(2, "copy", "copies") == "2 copies"


def test_recover_plan_says_1_segment():
    from datetime import datetime, timezone

    from walkeeper.output import text as output_text

    plan = SimpleNamespace(
        backup=SimpleNamespace(id="b", stop_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
                               stop_lsn=0x1000000, timeline=1),
        timelines=[1], first_wal="000000010000000000000001", last_wal="000000010000000000000001",
        segments=["000000010000000000000001"], bytes=1 << 20,
        target=SimpleNamespace(kind="immediate", value=None))
    text = output_text.recover(plan, dry_run=True)
    assert "(1 segment)" in text and "segments" not in text


# ------------------------------------------------ the demo prints what can be pasted

def test_demo_prints_commands_that_paste_back_into_a_shell():
    """bin/demo's `run` prints each command; pasting it must give the same words (the
    --target-time value has a space)."""
    args = ["walkeeper", "--config", "/tmp/wk demo/c.toml", "recover", "--target-time",
            "2026-12-03 06:12:05.123456+00", "--target-name", "it's", "plain"]
    script = f'source {shlex.quote(str(REPO / "bin/setup.sh"))}; shell_words "$@"'
    out = subprocess.run(["bash", "-c", script, "bash", *args], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert "'2026-12-03 06:12:05.123456+00'" in out
    assert shlex.split(out) == args
    assert "shell_words" in (REPO / "bin/demo").read_text()


# ------------------------------------------------ expire: no empty directories, no orphan history

def test_expire_removes_emptied_directories_and_an_orphan_history(wk, tmp_path):
    from test_expire import CLUSTER, RETENTION, SEG, fake_archive
    from walkeeper.stores.local_client import LocalStore
    from walkeeper.wal import Segment

    root = tmp_path / "a"
    fake_archive(root, range(1, 20), {"z": 2, "m": 6, "b": 10, "a": 14})
    store = LocalStore("x", str(root))
    # A stray timeline 3 (a promoted test copy), branched at segment 4 and long expired
    # below the cut, and a timeline 2 whose history branched above it (kept).
    store.put_bytes(f"{CLUSTER}/wal/00000003.history.zst", b"1\t0/4000000\tstray\n")
    stray = Segment.from_number(3, 5, SEG).name
    store.put_bytes(f"{CLUSTER}/wal/{stray[:16]}/{stray}.zst", b"wal")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[[stores]]\nname = "a"\ntype = "local"\npath = "{root}"\n' + RETENTION)
    dry = wk("--config", cfg, "expire", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    import json

    assert json.loads(dry.stdout)["deleted_histories"] == ["00000003.history"]
    assert (root / CLUSTER / "wal" / "00000003.history.zst").exists()
    r = wk("--config", cfg, "expire", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted_histories"] == ["00000003.history"]
    wal = root / CLUSTER / "wal"
    assert not (wal / "00000003.history.zst").exists()
    # Timeline 2 branched at 0/FF000000, above the cut: its history stays.
    assert (wal / "00000002.history.zst").exists()
    assert not (wal / stray[:16]).exists()                    # emptied, removed
    assert sorted(p.name for p in (root / CLUSTER / "backups").iterdir()) == ["a", "b"]
    empty = [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == []
    # recover plans without a remark about a timeline that is gone.
    # (The planning remarks come before the dry run reads the objects back; this fake
    # archive's objects are not real, so the read-back then fails, as it must.)
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "r", "--latest", "--dry-run")
    assert "dry run:" in r.stderr and "no good copy" in r.stderr, r.stderr
    assert "timeline 3" not in r.stderr


def test_recover_remarks_carry_the_walkeeper_prefix(wk, tmp_path):
    from test_expire import CLUSTER, fake_archive

    root = tmp_path / "a"
    fake_archive(root, range(1, 20), {"b": 10})
    from walkeeper.stores.local_client import LocalStore

    LocalStore("x", str(root)).put_bytes(f"{CLUSTER}/wal/00000003.history.zst",
                                         b"1\t0/4000000\tstray\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[[stores]]\nname = "a"\ntype = "local"\npath = "{root}"\n')
    r = wk("--config", cfg, "recover", "--pgdata", tmp_path / "r", "--latest", "--dry-run")
    assert "dry run:" in r.stderr, r.stderr     # fake objects: the read-back fails, after
    assert "timeline 3" in r.stderr
    assert all(line.startswith("walkeeper") for line in r.stderr.splitlines()), r.stderr


# ------------------------------------------------ status and list agree on sizes

def test_status_and_list_print_a_backup_size_the_same_way(tmp_path):
    from walkeeper import config
    from walkeeper.output.writers import render
    from walkeeper.reports import status

    (tmp_path / "s").mkdir()
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'state_dir = "{tmp_path / "state"}"\n[postgres]\n'
                        f'conninfo = "host={tmp_path} port=1"\n[[stores]]\nname = "local"\n'
                        f'type = "local"\npath = "{tmp_path / "s"}"\n')
    data = status.collect(config.load(str(cfg_file), env={}))
    database, tar, stored = 22_544_384, 23_592_960, {"local": 3_250_000, "offsite": 3_250_000}
    data["last_backup"] = {"id": "20261203T000000Z", "time": "2026-12-03T00:00:00+00:00",
                           "stop_time": "2026-12-03T00:00:00+00:00", "timeline": 1,
                           "size": tar, "database_bytes": database, "stored_bytes": stored,
                           "stores": sorted(stored), "source": "archive"}
    status_text = render("status", data, "text")
    html = render("status", data, "html")
    list_text = render("list", {"backups": [{
        "id": "20261203T000000Z", "label": "", "start_time": None, "stop_time": None,
        "start_lsn": "0/1000028", "stop_lsn": "0/1000100", "timeline": 1,
        "database_bytes": database, "stored_bytes": stored}], "wal": [], "dumps": []}, "text")
    for text in (status_text, list_text, html):
        assert "21.5 MiB" in text and "22.5 MiB" not in text
        assert "local 3.1 MiB, offsite 3.1 MiB" in text


# ------------------------------------------------ drill with no backup

def test_drill_without_a_backup_points_at_no_server_log(wk, tmp_path):
    from pgharness import PG_BIN

    (tmp_path / "s").mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "last_drill_postgres.log").write_text("an older drill's log\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{state}"\n[postgres]\nbindir = "{PG_BIN}"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{tmp_path / "s"}"\n')
    r = wk("--config", cfg, "drill")
    assert r.returncode == 1
    assert "no complete backup" in r.stderr and "walkeeper basebackup" in r.stderr
    assert "server log" not in r.stderr, r.stderr
    assert not (state / "last_drill_postgres.log").exists()


@pytest.mark.slow
def test_expire_removes_emptied_directories_on_an_sftp_store(wk, tmp_path, sshd):
    import json

    from test_expire import CLUSTER, RETENTION, fake_archive

    fake_archive(sshd.directory, range(1, 20), {"z": 2, "m": 6, "b": 10, "a": 14})
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   + RETENTION + sshd.store_config())
    r = wk("--config", cfg, "expire", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted_backups"] == ["z", "m"]
    root = sshd.directory / CLUSTER
    assert sorted(p.name for p in (root / "backups").iterdir()) == ["a", "b"]
    assert [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())] == []


def test_no_count_is_printed_with_a_parenthesised_plural():
    """'(s)' after a count reads as a shrug; log.plural says '1 segment', '2 segments'."""
    import re

    offenders = []
    for path in sorted((REPO / "walkeeper").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\}\s*[a-z ]*\w\(s\)", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
