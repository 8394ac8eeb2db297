"""status end to end: a real cluster archiving through walkeeper into a local and an
SFTP store, a base backup, a failed push and a restore drill; then what status says
about them as text, JSON, Prometheus text (read back with the official parser) and
an HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections import namedtuple
from datetime import datetime, timedelta, timezone

import pytest

from conftest import WALKEEPER, clean_env, make_config, need
from sshharness import SSHD, SshServer
from walkeeper.reports import status as status_mod
from walkeeper.output import prometheus as status_prometheus
from walkeeper.output import text as status_text
from walkeeper.output.writers import render as render_output

World = namedtuple("World", "tmp wk sshd cluster cfg backup last_wal drill")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BAD_SEGMENT = "0000000100000000000000F0"


def write_config(tmp_path, cluster, sshd=None):
    return make_config(tmp_path, cluster="stat", conninfo=cluster.conninfo,
                       store=tmp_path / "store", sshd=sshd,
                       sshd_options="timeout = 5\nretries = 1\n")


def status_json(wk, cfg) -> dict:
    r = wk("--config", cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def metrics(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def runner(tmp):
    """The conftest `wk` runner, for a module-scoped fixture."""
    state = tmp / "xdg-state"

    def run(*args, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(WALKEEPER), *(str(a) for a in args)],
                              env=clean_env({"XDG_STATE_HOME": str(state)}), text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    run.path = WALKEEPER
    return run


@pytest.fixture(scope="module")
def world(pg, tmp_path_factory):
    """Pushes to a local and an SFTP store, a backup, a failed push and a drill."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is absent (bin/test installs openssh-server when run as root)")
    tmp = tmp_path_factory.mktemp("status")
    sshd = SshServer(tmp / "sshd").start()
    wk = runner(tmp)
    cluster = pg.new(keep=True)
    try:
        cfg = write_config(tmp, cluster, sshd)
        cluster.conf(archive_mode="on", archive_command=f"{wk.path} --config {cfg} push %p %f")
        cluster.restart()
        r = wk("--config", cfg, "basebackup", "--no-progress", "--json")
        assert r.returncode == 0, r.stderr
        backup = json.loads(r.stdout)
        cluster.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g")
        last = cluster.switch_wal()
        stats = cluster.wait_archived(last)
        # A malformed segment: zeros, no page header.
        bad = tmp / BAD_SEGMENT
        bad.write_bytes(bytes(16 << 20))
        r = wk("--config", cfg, "push", bad, BAD_SEGMENT)
        assert r.returncode == 1, r.stderr
        r = wk("--config", cfg, "drill", "--json", timeout=300)
        assert r.returncode == 0, r.stderr
        drill = json.loads(r.stdout)
        yield World(tmp, wk, sshd, cluster, cfg, backup, stats["last_archived_wal"], drill)
    finally:
        cluster.stop()
        sshd.stop()


def test_status_reports_pushes_backup_failure_drill_and_stores(world):
    tmp_path, wk, sshd, cluster, cfg, backup, last_wal, drill = world
    now = datetime.now(timezone.utc)
    data = status_json(wk, cfg)
    assert {"last_push", "last_backup", "last_drill", "failures", "stores",
            "archive_lag_bytes"} <= set(data)

    assert data["last_push"]["name"] == last_wal
    assert abs(datetime.fromisoformat(data["last_push"]["time"]) - now) < timedelta(minutes=2)
    assert data["archive_lag_bytes"] == 0

    b = data["last_backup"]
    assert b["id"] == backup["id"]
    assert b["size"] == backup["files"][0]["size"] > 0
    assert b["stores"] == ["local", "offsite"]
    assert datetime.fromisoformat(b["time"]) >= datetime.fromisoformat(backup["stop_time"])

    d = data["last_drill"]
    assert d["ok"] is True and d["backup"] == backup["id"]
    assert d["seconds"] == drill["seconds"] > 0

    [f] = data["failures"]
    assert f["command"] == "push" and f["target"] == BAD_SEGMENT and f["reason"]
    assert abs(datetime.fromisoformat(f["time"]) - now) < timedelta(minutes=5)
    assert data["failure_counts"]["push"] == 1

    listed = json.loads(wk("--config", cfg, "list", "--json").stdout)
    stores = {s["name"]: s for s in data["stores"]}
    assert list(stores) == ["local", "offsite"]
    for s in stores.values():
        assert s["reachable"] is True and s["error"] is None
        assert s["backups"] == 1
        assert s["bytes"] == s["backup_bytes"] + s["wal_bytes"] + s["dump_bytes"]
        assert s["backup_bytes"] == listed["backups"][0]["stored_bytes"][s["name"]]
        assert s["backup_bytes"] >= backup["stored_bytes"][s["name"]]
        assert s["newest_wal"] == last_wal
    assert stores["local"]["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "store" / "stat").rglob("*") if p.is_file()
        and not p.name.startswith(".tmp-") and p.name != "identity.json"
        and not p.name.endswith(".history.zst"))
    st = os.statvfs(tmp_path / "store")
    for name in ("local", "offsite"):          # sshd serves the same file system
        assert abs(stores[name]["free_bytes"] - st.f_bavail * st.f_frsize) < 1 << 30
    assert data["windows"] and data["windows"][0]["timeline"] == 1
    assert data["wal"][0]["gaps"] == []

    text = wk("--config", cfg, "status")
    assert text.returncode == 0, text.stderr
    for needle in (last_wal, backup["id"], "caught up", "passed", BAD_SEGMENT, "offsite"):
        assert needle in text.stdout, (needle, text.stdout)


def test_prometheus_text_parses_and_carries_the_values(world):
    tmp_path, wk, sshd, cluster, cfg, backup, last_wal, drill = world
    data = status_json(wk, cfg)
    r = wk("--config", cfg, "status", "--prometheus")
    assert r.returncode == 0, r.stderr
    m = metrics(r.stdout)
    push_time = datetime.fromisoformat(data["last_push"]["time"]).timestamp()
    assert m["walkeeper_last_push_timestamp_seconds"] == pytest.approx(push_time)
    assert m[f"walkeeper_last_push_info{{wal={last_wal}}}"] == 1
    assert m["walkeeper_archive_lag_bytes"] == 0
    assert m["walkeeper_postgres_up"] == 1
    assert m["walkeeper_last_backup_size_bytes"] == backup["files"][0]["size"]
    assert m["walkeeper_last_backup_timestamp_seconds"] == pytest.approx(
        datetime.fromisoformat(data["last_backup"]["time"]).timestamp())
    assert m["walkeeper_last_drill_success"] == 1
    assert m["walkeeper_last_drill_duration_seconds"] == pytest.approx(drill["seconds"])
    assert m["walkeeper_failures_total{command=push}"] == 1
    assert m["walkeeper_failures_total{command=basebackup}"] == 0
    for s in data["stores"]:
        assert m[f"walkeeper_store_up{{store={s['name']}}}"] == 1
        assert m[f"walkeeper_store_backups{{store={s['name']}}}"] == 1
        assert m[f"walkeeper_store_bytes{{store={s['name']}}}"] == s["bytes"]
        # Other work on the machine changes the free space between the two calls.
        free = m[f"walkeeper_store_free_bytes{{store={s['name']}}}"]
        assert free > 0 and abs(free - s["free_bytes"]) < 1 << 30
    # Every metric has its HELP and TYPE lines.
    names = {ln.split("{")[0].split(" ")[0] for ln in r.stdout.splitlines()
             if ln and not ln.startswith("#")}
    for name in names:
        assert f"# HELP {name} " in r.stdout and f"# TYPE {name} " in r.stdout


def _png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    return width, height, len(set(zlib.decompress(idat)))


def test_html_dashboard_renders_in_chromium(world, tmp_path):
    _, wk, sshd, cluster, cfg, backup, last_wal, drill = world
    page = tmp_path / "site" / "status.html"
    page.parent.mkdir()
    r = wk("--config", cfg, "status", "--html", page)
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    assert [p.name for p in page.parent.iterdir()] == ["status.html"]     # no temp left
    # Self-contained: nothing that could make a browser fetch anything.
    for needle in ("http://", "https://", "src=", "href=", "url(", "@import", "<script"):
        assert needle not in html, needle
    for needle in ('id="timelines"', 'id="backups"', 'id="windows"', 'id="failures"',
                   'id="stores"', 'id="sizes"', 'class="free-space"', backup["id"],
                   BAD_SEGMENT, last_wal):
        assert needle in html, needle

    need(CHROMIUM is not None, "chromium is not installed (bin/test installs it when run as root)")
    profile = tmp_path / "chromium-profile"
    shot = tmp_path / "status.png"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1600"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(flags + ["--dump-dom", f"file://{page}"], capture_output=True,
                         text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    out = dom.stdout
    for needle in ('id="summary"', 'id="timelines"', 'class="wal-run"', 'class="backup-mark"',
                   'class="window"', 'class="failure-mark"', 'id="windows"', 'id="backups"',
                   'class="size-bar"', 'id="failures"', 'id="stores"', 'class="free-space"',
                   backup["id"], BAD_SEGMENT, "offsite"):
        assert needle in out, needle
    r = subprocess.run(flags + [f"--screenshot={shot}", f"file://{page}"], capture_output=True,
                       text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    width, height, distinct = _png_facts(shot.read_bytes())
    assert (width, height) == (1280, 1600)
    assert shot.stat().st_size > 20_000 and distinct > 50


# ---------------------------------------------------------------- pure parts

def test_archived_end_and_failure_window(tmp_path):
    size = 16 << 20
    assert status_mod._archived_end("000000010000000000000003", size) == 4 * size
    assert status_mod._archived_end("000000020000000000000003.partial", size) == 4 * size
    assert status_mod._archived_end("000000010000000000000003.00000028.backup", size) == 4 * size
    assert status_mod._archived_end("00000002.history", size) is None
    assert status_mod._archived_end(None, size) is None

    state = tmp_path / "state"
    state.mkdir()
    now = datetime.now(timezone.utc)
    lines = [{"time": (now - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "push", "target": f"seg{h}", "reason": "r"} for h in (30, 2, 1)]
    (state / "failures.jsonl.1").write_text(json.dumps(lines[0]) + "\n")
    (state / "failures.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[1:])
                                          + '{"cut short')
    recent, counts, last = status_mod._failures(str(state), now)
    assert [f["target"] for f in recent] == ["seg1", "seg2"]      # newest first, 24 h
    assert counts["push"] == 3 and counts["drill"] == 0
    assert datetime.fromisoformat(last["push"]) > now - timedelta(hours=2)


def test_prometheus_escapes_labels():
    from prometheus_client.parser import text_string_to_metric_families

    data = {"generated": "2026-01-01T00:00:00+00:00", "last_push": None, "last_backup": None,
            "last_drill": None, "archive_lag_bytes": None, "postgres": {"reachable": False},
            "failure_counts": {'we"ird\\cmd\n': 2}, "last_failure_times": {},
            "stores": [{"name": "a", "reachable": False, "backups": None, "bytes": None,
                        "free_bytes": None, "wal_segments": None}],
            "wal": [], "windows": []}
    text = status_prometheus.render_prometheus(data)
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["walkeeper_failures_total"].labels == {"command": 'we"ird\\cmd\n'}
    assert "walkeeper_last_push_timestamp_seconds" not in text


def test_empty_archive_renders_in_every_format(tmp_path):
    from walkeeper import config

    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "empty"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[postgres]\nconninfo = "host={tmp_path} port=1 dbname=x"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\n'
                   f'path = "{tmp_path / "not-yet" / "store"}"\n')
    data = status_mod.collect(config.load(str(cfg), env={}))
    assert data["last_push"] is None and data["last_backup"] is None
    assert data["last_drill"] is None and data["failures"] == []
    assert data["archive_lag_bytes"] is None and data["postgres"]["reachable"] is False
    [store] = data["stores"]
    assert store["reachable"] and store["backups"] == 0 and store["bytes"] == 0
    assert store["free_bytes"] > 0           # of the file system the store will be on
    for fmt in ("text", "json", "prometheus", "html"):
        assert render_output("status", data, fmt), fmt
    assert "never" in status_text.status(data)


def test_dashboard_draws_gaps_timelines_and_unreachable_stores():
    from walkeeper.output.html import render

    def t(h):
        return (datetime(2026, 11, 24, 12, tzinfo=timezone.utc) - timedelta(hours=h)).isoformat()

    run = {"first": "a", "last": "b"}
    data = {
        "cluster": "x<y", "generated": t(0), "archive_lag_bytes": 1 << 24,
        "last_push": {"name": "000000020000000000000040", "time": t(1)},
        "postgres": {"reachable": True, "error": None},
        "last_backup": {"id": "B2", "time": t(2), "size": 1 << 20, "stores": ["local"]},
        "last_drill": {"ok": False, "time": t(3), "reason": "<corrupt>", "seconds": None},
        "failures": [{"time": t(1), "command": "push", "target": "S", "reason": "down"}],
        "stores": [{"name": "local", "type": "local", "location": "/b", "reachable": True,
                    "error": None, "backups": 2, "bytes": 5 << 20, "free_bytes": 1 << 30,
                    "newest_wal": "W"},
                   {"name": "offsite", "type": "sftp", "location": "u@h:22/b",
                    "reachable": False, "error": "cannot connect", "backups": None,
                    "bytes": None, "free_bytes": None, "newest_wal": None}],
        "backups": [{"id": f"B{i}", "label": "", "start_time": t(50 - 24 * i),
                     "stop_time": t(49 - 24 * i), "timeline": i + 1, "database_bytes": 1 << 24,
                     "stored_bytes": {"local": 1 << 22, "offsite": 0}} for i in range(2)],
        "incomplete_backups": [],
        "wal": [{"timeline": 1, "first": "1", "last": "2", "segments": 9, "gaps": [["3", "4"]],
                 "runs": [{**run, "from_time": t(50), "to_time": t(40)},
                          {**run, "from_time": t(35), "to_time": t(26)}]},
                {"timeline": 2, "first": "5", "last": "6", "segments": 3, "gaps": [],
                 "runs": [{**run, "from_time": t(25), "to_time": t(1)}]}],
        "windows": [{"timeline": 2, "from_time": t(25), "to_time": t(1), "from_lsn": "0/1",
                     "to_lsn": "0/2"}],
    }
    html = render(data)
    assert html.count('class="wal-gap"') == 1 and html.count('class="wal-run"') == 3
    assert 'data-timeline="1"' in html and 'data-timeline="2"' in html
    assert html.count('class="backup-mark"') == 2 and html.count('class="window"') == 1
    assert "unreachable: cannot connect" in html and "&lt;corrupt&gt;" in html
    assert "x&lt;y" in html and "<corrupt>" not in html


# ---------------------------------------------------------------- last: breaks `world`

def test_lag_unreachable_server_and_store(world):
    """Last in this file: it stops the server and the SFTP store of `world`."""
    tmp_path, wk, sshd, cluster, cfg, backup, last_wal, drill = world
    # Archiving stops: the next segment is written but not archived.
    cluster.conf(archive_command="/bin/false")
    cluster.reload()
    cluster.execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
    cluster.switch_wal()
    data = status_json(wk, cfg)
    assert data["archive_lag_bytes"] >= 16 << 20
    assert data["postgres"]["last_archived_wal"] == last_wal
    cluster.stop()
    sshd.stop()
    data = status_json(wk, cfg)
    assert data["archive_lag_bytes"] is None and data["postgres"]["reachable"] is False
    stores = {s["name"]: s for s in data["stores"]}
    assert stores["local"]["reachable"] and stores["local"]["backups"] == 1
    assert stores["offsite"]["reachable"] is False and "offsite" in stores["offsite"]["error"]
    assert data["last_backup"]["id"] == backup["id"]
    m = metrics(wk("--config", cfg, "status", "--prometheus").stdout)
    assert m["walkeeper_store_up{store=offsite}"] == 0
    assert m["walkeeper_postgres_up"] == 0
    assert "walkeeper_archive_lag_bytes" not in m
    assert "walkeeper_store_free_bytes{store=offsite}" not in m
