"""The catalog (a store read into a model), its derived views, and `list`'s data.

Archives are built with the real CLI pushing synthetic segments, plus backup and
dump metadata written by hand the way backups/basebackup.py and backups/dump.py lay them out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import WALKEEPER, clean_env
from walfiles import SYSID, segment_bytes, write_segment
from walkeeper import config as config_mod
from walkeeper.catalog.reader import merge, read_archive, recoverable_windows, wal_ranges
from walkeeper.config import StoreConfig
from walkeeper.output.text import list_ as render_text
from walkeeper.reports.list import list_data
from walkeeper.catalog.model import ArchiveModel, BackupInfo, WalObject
from walkeeper.stores import archive_store
from walkeeper.stores.local_client import LocalStore
from walkeeper.stores.sftp_client import SftpStore
from walkeeper.wal import HistoryEntry, Segment, parse_lsn
from storeroot import root as store_root

MiB = 1 << 20
SEG16 = 16 * MiB
CLUSTER = "ecar"
HISTORY = b"1\t0/5000000\tno recovery target specified\n"
TL1 = ["01", "02", "04", "05", "06", "09"]          # gaps: 03, 07..08
TL2 = ["05", "06", "07", "08"]
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
END_TL1 = 1_800_000_000            # archive time given to 000000010000000000000006
END_TL2 = 1_800_000_600            # and to 000000020000000000000008


def seg(tli: int, n: str) -> str:
    return "%08X%08X%08X" % (tli, 0, int(n, 16))


def backup_info(bid: str, start: str, stop: str, *, tli: int = 1, minutes: int = 0,
                label: str = "nightly") -> BackupInfo:
    start_lsn, stop_lsn = parse_lsn(start), parse_lsn(stop)
    return BackupInfo(
        id=bid, label=label, start_time=T0 + timedelta(minutes=minutes),
        stop_time=T0 + timedelta(minutes=minutes + 1), start_lsn=start_lsn, stop_lsn=stop_lsn,
        timeline=tli, start_wal=Segment.containing(tli, start_lsn, SEG16).name,
        stop_wal=Segment.containing(tli, stop_lsn, SEG16).name, pg_version=150018,
        system_identifier=SYSID, wal_segment_size=SEG16, database_bytes=123 * MiB,
        stored_bytes={"local": 999_999_999})       # a lie: list measures instead


def put_backup(store, info: BackupInfo, payload: int = 1000) -> None:
    store.put_bytes(f"{CLUSTER}/backups/{info.id}/base.tar.zst", b"x" * payload)
    store.put_bytes(f"{CLUSTER}/backups/{info.id}/backup.json",
                    json.dumps(info.to_json()).encode())


def put_dump(store, did: str, payload: int = 500) -> None:
    store.put_bytes(f"{CLUSTER}/dumps/{did}/ecar_db.dump.zst", b"d" * payload)
    store.put_bytes(f"{CLUSTER}/dumps/{did}/dump.json", json.dumps({
        "id": did, "database": "ecar_db", "time": "2026-03-02T04:00:00+00:00",
        "stored_bytes": payload, "sha256": "0" * 64}).encode())


def push_all(wk, tmp_path: Path, args: list, env: dict) -> None:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    files = {seg(1, n): None for n in TL1} | {seg(2, n): None for n in TL2}
    files["00000002.history"] = HISTORY
    files[seg(1, "05") + ".partial"] = segment_bytes(seg(1, "05"), random=False)
    files[seg(1, "04") + ".00000028.backup"] = b"START WAL LOCATION: 0/4000028\n"
    for name, data in files.items():
        path = src / name
        if data is None:
            write_segment(src, name, random=False)
        else:
            path.write_bytes(data)
        r = wk(*args, "push", path, name, env=env)
        assert r.returncode == 0, r.stderr
        path.unlink()


def wal_object(root: Path, name: str) -> Path:
    [p] = [p for p in (root / CLUSTER / "wal").rglob(name + ".*") if not p.name.startswith(".")]
    return p


def finish_archive(root: Path) -> LocalStore:
    """Archive times, a leftover upload, backups (complete and not) and a dump."""
    os.utime(wal_object(root, seg(1, "06")), (END_TL1, END_TL1))
    os.utime(wal_object(root, seg(2, "08")), (END_TL2, END_TL2))
    (root / CLUSTER / "wal" / "0000000100000000" / f".tmp-abc123-{seg(1, '03')}.zst").write_bytes(b"half")
    store = archive_store(LocalStore("local", str(root)))
    put_backup(store, backup_info("b0", "0/1000028", "0/2000100"))
    put_backup(store, backup_info("b1", "0/4000028", "0/4000100", minutes=60))
    store.put_bytes(f"{CLUSTER}/backups/b2/base.tar.zst", b"partial")
    (root / CLUSTER / "backups" / "b3").mkdir()
    (root / CLUSTER / "backups" / "b3" / ".tmp-ffff-base.tar.zst").write_bytes(b"")
    put_dump(store, "d1")
    return store


def run_wk(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(WALKEEPER), *map(str, args)], env=clean_env(env),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="module")
def built_archive(tmp_path_factory) -> Path:
    """Pushed once per module (13 pushes of 16 MiB segments); tests get a copy."""
    work = tmp_path_factory.mktemp("archive")
    root = store_root(work / "store")
    env = {"BACKUP_DIR": root, "WALKEEPER_CLUSTER": CLUSTER, "XDG_STATE_HOME": work / "state"}
    push_all(run_wk, work, [], env)
    finish_archive(root)
    return root


@pytest.fixture
def archive(built_archive, tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(built_archive, root)        # copy2: archive times are kept
    return root


def local_config(root: Path):
    return config_mod.load(env={"BACKUP_DIR": str(root), "WALKEEPER_CLUSTER": CLUSTER})


# ---------------------------------------------------------------- one store, end to end

@pytest.mark.slow
def test_read_archive_builds_the_model(archive):
    model = read_archive(archive_store(LocalStore("local", str(archive))), CLUSTER)
    assert model.wal_segment_size == SEG16 and model.system_identifier == SYSID
    assert sorted(model.segments) == [1, 2]
    assert sorted(model.segments[1]) == [int(n, 16) for n in TL1]
    assert sorted(model.segments[2]) == [int(n, 16) for n in TL2]
    obj = model.segments[1][6]
    assert obj.name == seg(1, "06") and obj.key == f"{CLUSTER}/wal/0000000100000000/{seg(1, '06')}.zst"
    assert obj.stored_size == wal_object(archive, seg(1, "06")).stat().st_size
    assert obj.mtime == END_TL1
    assert model.histories == {2: [HistoryEntry(1, 0x5000000, "no recovery target specified")]}
    assert sorted(o.name for o in model.other) == [seg(1, "04") + ".00000028.backup",
                                                   seg(1, "05") + ".partial"]
    assert sorted(model.temporary) == [
        f"{CLUSTER}/backups/b3/.tmp-ffff-base.tar.zst",
        f"{CLUSTER}/wal/0000000100000000/.tmp-abc123-{seg(1, '03')}.zst"]
    assert [b.id for b in model.backups_by_stop()] == ["b0", "b1"]
    assert sorted(model.incomplete_backups) == ["b2", "b3"]
    b1 = next(b for b in model.backups if b.id == "b1")
    assert b1.to_json() | {"stored_bytes": None} == \
        backup_info("b1", "0/4000028", "0/4000100", minutes=60).to_json() | {"stored_bytes": None}
    assert b1.stored_bytes == {"local": sum(
        p.stat().st_size for p in (archive / CLUSTER / "backups" / "b1").iterdir())}
    assert model.unreadable == {}
    # without history, nothing else changes
    bare = read_archive(archive_store(LocalStore("local", str(archive))), CLUSTER,
                        with_history=False)
    assert bare.histories == {} and bare.segments == model.segments


@pytest.mark.slow
def test_wal_ranges_and_windows_of_the_archive(archive):
    model = read_archive(archive_store(LocalStore("local", str(archive))), CLUSTER)
    assert wal_ranges(model) == [
        {"timeline": 1, "first": seg(1, "01"), "last": seg(1, "09"), "segments": 6,
         "gaps": [[seg(1, "03"), seg(1, "03")], [seg(1, "07"), seg(1, "08")]]},
        {"timeline": 2, "first": seg(2, "05"), "last": seg(2, "08"), "segments": 4, "gaps": []},
    ]
    windows = recoverable_windows(model)
    b0_stop, b1_stop = T0 + timedelta(minutes=1), T0 + timedelta(minutes=61)
    b0_end = datetime.fromtimestamp(int(wal_object(archive, seg(1, "02")).stat().st_mtime),
                                    timezone.utc)
    assert [(w["timeline"], w["from_lsn"], w["to_lsn"]) for w in windows] == [
        (1, "0/02000100", "0/03000000"),       # b0: stops at the gap at 03
        (1, "0/04000100", "0/07000000"),       # b1: up to the gap at 07
        (2, "0/04000100", "0/09000000"),       # b1, through the switch at 0/5000000 onto TL 2
    ]
    parse = datetime.fromisoformat
    assert parse(windows[0]["from_time"]) == b0_stop and parse(windows[0]["to_time"]) == b0_end
    assert parse(windows[1]["from_time"]) == b1_stop
    assert parse(windows[1]["to_time"]) == datetime.fromtimestamp(END_TL1, timezone.utc)
    assert parse(windows[2]["to_time"]) == datetime.fromtimestamp(END_TL2, timezone.utc)
    assert all(parse(w["to_time"]).utcoffset() is not None for w in windows)


CONTRACT_BACKUP_KEYS = {"id", "label", "start_time", "stop_time", "start_lsn", "stop_lsn",
                        "timeline", "start_wal", "stop_wal", "pg_version", "system_identifier",
                        "database_bytes", "stored_bytes"}


@pytest.mark.slow
def test_list_data_has_the_contract_shape(archive):
    data = list_data(local_config(archive))
    json.dumps(data)
    assert {"backups", "wal", "dumps"} <= set(data)
    assert [b["id"] for b in data["backups"]] == ["b0", "b1"]
    for b in data["backups"]:
        assert set(b) == CONTRACT_BACKUP_KEYS
        on_disk = sum(p.stat().st_size for p in (archive / CLUSTER / "backups" / b["id"]).iterdir())
        assert b["stored_bytes"] == {"local": on_disk} and on_disk > 1000
        assert b["system_identifier"] == str(SYSID) and b["timeline"] == 1
        assert datetime.fromisoformat(b["stop_time"]).utcoffset() is not None
    assert data["backups"][1]["stop_lsn"] == "0/04000100"
    assert data["backups"][1]["stop_wal"] == seg(1, "04")
    for w in data["wal"]:
        assert {"timeline", "first", "last", "gaps"} <= set(w)
    assert data["wal"][0]["gaps"] == [[seg(1, "03"), seg(1, "03")], [seg(1, "07"), seg(1, "08")]]
    [dump] = data["dumps"]
    assert set(dump) == {"id", "database", "time", "stored_bytes"}
    assert dump["id"] == "d1" and dump["database"] == "ecar_db"
    assert dump["stored_bytes"]["local"] == 500 + len(
        (archive / CLUSTER / "dumps" / "d1" / "dump.json").read_bytes())
    assert data["incomplete_backups"] == ["b2", "b3"] and data["store_errors"] == {}


@pytest.mark.slow
def test_render_text_shows_the_key_facts(archive):
    text = render_text(list_data(local_config(archive)))
    for fact in ("b0", "b1", "nightly", "0/04000100", "123.0 MiB", "local",
                 f"{seg(1, '01')}", f"{seg(1, '09')}", f"{seg(1, '07')}..{seg(1, '08')}",
                 seg(1, "03"), "no gaps", "d1", "ecar_db", "b2", "b3"):
        assert fact in text, fact
    assert "2026-03-01 11:01:00+01:00" in text      # b1's start, as recorded


@pytest.mark.slow
def test_list_command(archive, wk):
    env = {"BACKUP_DIR": archive, "WALKEEPER_CLUSTER": CLUSTER}
    r = wk("list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(list_data(local_config(archive))))
    r = wk("list", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == render_text(list_data(local_config(archive)))


def test_list_of_an_empty_store(tmp_path):
    data = list_data(local_config(tmp_path / "nothing"))
    assert data["backups"] == [] and data["wal"] == [] and data["dumps"] == []
    assert "none" in render_text(data)


@pytest.mark.slow
def test_damaged_objects_are_named_not_fatal(archive):
    store = archive_store(LocalStore("local", str(archive)))
    (archive / CLUSTER / "backups" / "b1" / "backup.json").write_text("{not json")
    history = wal_object(archive, "00000002.history")
    data = bytearray(history.read_bytes())
    data[20] ^= 0xFF
    history.write_bytes(bytes(data))
    model = read_archive(store, CLUSTER)
    assert [b.id for b in model.backups] == ["b0"]
    assert set(model.unreadable) == {f"{CLUSTER}/backups/b1/backup.json",
                                     f"{CLUSTER}/wal/00000002.history.zst"}
    assert model.histories == {}
    # without the history, timeline 2 is not reachable from b1
    assert {w["timeline"] for w in recoverable_windows(model)} == {1}


# ---------------------------------------------------------------- SFTP and several stores

def sftp_store(sshd, directory: Path, name: str = "offsite") -> SftpStore:
    return archive_store(SftpStore(StoreConfig(name=name, type="sftp", host=sshd.host, port=sshd.port,
                                 user=sshd.user, key_file=str(sshd.key_file),
                                 directory=str(directory), known_hosts=str(sshd.known_hosts),
                                 timeout=10, retries=1)))


def normalized(model: ArchiveModel) -> dict:
    d = asdict(model)
    for segs in d["segments"].values():
        for obj in segs.values():
            obj["mtime"] = int(obj["mtime"])      # SFTP (v3) has whole seconds
    for obj in d["other"]:
        obj["mtime"] = int(obj["mtime"])
    for b in d["backups"]:
        b["stored_bytes"] = sorted(b["stored_bytes"].values())
    for k in ("other", "temporary", "incomplete_backups"):
        d[k] = sorted(d[k], key=str)
    return d


@pytest.mark.slow
def test_sftp_store_reads_into_an_equal_model(archive, sshd):
    local = read_archive(archive_store(LocalStore("local", str(archive))), CLUSTER)
    remote_store = sftp_store(sshd, archive)
    try:
        remote = read_archive(remote_store, CLUSTER)
    finally:
        remote_store.close()
    assert normalized(remote) == normalized(local)
    assert recoverable_windows(remote) == recoverable_windows(local)
    assert remote.backups[0].stored_bytes.keys() == {"offsite"}


@pytest.mark.slow
def test_two_stores_pushed_through_one_config(wk, tmp_path, sshd):
    root = tmp_path / "local"
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store_root(root)}"\n'
                   + sshd.store_config(name="offsite") + "timeout = 10\nretries = 1\n")
    push_all(wk, tmp_path, ["--config", cfg], {})
    local = finish_archive(root)
    remote = sftp_store(sshd, sshd.directory)
    try:
        put_backup(remote, backup_info("b1", "0/4000028", "0/4000100", minutes=60), payload=3000)
        put_dump(remote, "d1", payload=700)
        # each store lacks a different segment
        wal_object(root, seg(2, "06")).unlink()
        wal_object(sshd.directory, seg(2, "07")).unlink()
        models = [read_archive(local, CLUSTER), read_archive(remote, CLUSTER)]
    finally:
        remote.close()
    assert [r["gaps"] for r in wal_ranges(models[0]) if r["timeline"] == 2] == [[[seg(2, "06")] * 2]]
    assert [r["gaps"] for r in wal_ranges(models[1]) if r["timeline"] == 2] == [[[seg(2, "07")] * 2]]
    union = merge(models)
    assert [r["gaps"] for r in wal_ranges(union) if r["timeline"] == 2] == [[]]
    assert union.segments[2][6].key == models[1].segments[2][6].key
    assert sorted(union.incomplete_backups) == ["b2", "b3"]
    b1 = next(b for b in union.backups if b.id == "b1")
    assert set(b1.stored_bytes) == {"local", "offsite"}
    assert b1.stored_bytes["offsite"] - b1.stored_bytes["local"] == 2000

    data = list_data(config_mod.load(str(cfg), env={}))
    by_id = {b["id"]: b for b in data["backups"]}
    assert by_id["b0"]["stored_bytes"]["offsite"] == 0         # only in the primary
    assert by_id["b1"]["stored_bytes"]["offsite"] == b1.stored_bytes["offsite"]
    # WAL as the primary has it
    assert data["wal"][1]["gaps"] == [[seg(2, "06"), seg(2, "06")]]
    [dump] = data["dumps"]
    assert dump["stored_bytes"]["offsite"] - dump["stored_bytes"]["local"] == 200
    text = render_text(data)
    assert "offsite" in text and "local" in text


@pytest.mark.slow
def test_list_goes_on_when_a_store_is_down(wk, tmp_path, sshd, archive):
    cfg = tmp_path / "two.toml"
    cfg.write_text(f'cluster = "{CLUSTER}"\n[[stores]]\nname = "local"\ntype = "local"\n'
                   f'path = "{store_root(archive)}"\n' + sshd.store_config(name="offsite")
                   + "timeout = 2\nretries = 1\n")
    sshd.stop()
    data = list_data(config_mod.load(str(cfg), env={}))
    assert [b["id"] for b in data["backups"]] == ["b0", "b1"]
    assert set(data["store_errors"]) == {"offsite"}
    assert "offsite" in render_text(data).splitlines()[-1]


# ---------------------------------------------------------------- pure: hand-built models

ARCHIVED = int((T0 + timedelta(days=1)).timestamp())      # archive times of hand-built segments


def obj(tli: int, n: int, mtime: float = ARCHIVED) -> WalObject:
    name = Segment.from_number(tli, n, SEG16).name
    return WalObject(name, f"c/wal/{name[:16]}/{name}.zst", 100, mtime)


def model_with(segments: dict[int, list[int]], backups=(), histories=None) -> ArchiveModel:
    return ArchiveModel(
        wal_segment_size=SEG16, backups=list(backups), histories=histories or {},
        segments={t: {n: obj(t, n, ARCHIVED + n) for n in ns} for t, ns in segments.items()})


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 600), min_size=1), st.integers(1, 3))
def test_gaps_are_exactly_the_complement(present, tli):
    [r] = wal_ranges(model_with({tli: sorted(present)}))
    size = SEG16
    num = lambda name: Segment.parse(name).number(size)  # noqa: E731
    assert num(r["first"]) == min(present) and num(r["last"]) == max(present)
    missing = set()
    for a, b in r["gaps"]:
        assert num(a) <= num(b)
        missing |= set(range(num(a), num(b) + 1))
    assert missing == set(range(min(present), max(present) + 1)) - present
    starts = [num(a) for a, _ in r["gaps"]]
    assert starts == sorted(starts)
    # gaps are maximal: each is bounded by present segments
    for a, b in r["gaps"]:
        assert num(a) - 1 in present and num(b) + 1 in present
    assert r["segments"] == len(present)


def test_gaps_across_a_log_boundary_with_small_segments():
    m = ArchiveModel(wal_segment_size=MiB, segments={1: {
        n: WalObject("x", "k", 1, 1.0) for n in (4094, 4095, 4097)}})
    [r] = wal_ranges(m)
    assert r["first"] == "000000010000000000000FFE" and r["last"] == "000000010000000100000001"
    assert r["gaps"] == [["000000010000000100000000", "000000010000000100000000"]]


def b(bid, start, stop, tli=1, minutes=0):
    return backup_info(bid, start, stop, tli=tli, minutes=minutes)


def spans(windows):
    return [(w["timeline"], w["from_lsn"], w["to_lsn"]) for w in windows]


def test_no_window_without_the_backups_own_wal():
    # start segment 2 present, stop segment 4, 3 missing: not restorable at all
    m = model_with({1: [2, 4, 5, 6]}, [b("x", "0/2000028", "0/4000100")])
    assert recoverable_windows(m) == []
    assert recoverable_windows(model_with({1: [1, 2, 3]})) == []


def test_overlapping_windows_merge_and_disjoint_ones_do_not():
    m = model_with({1: [1, 2, 3, 4, 5, 7, 8]},
                   [b("a", "0/1000028", "0/1000100"), b("b", "0/3000028", "0/3000100", minutes=5),
                    b("c", "0/7000028", "0/7000100", minutes=9)])
    w = recoverable_windows(m)
    assert spans(w) == [(1, "0/01000100", "0/06000000"), (1, "0/07000100", "0/09000000")]
    assert datetime.fromisoformat(w[0]["from_time"]) == T0 + timedelta(minutes=1)
    assert datetime.fromisoformat(w[0]["to_time"]) == datetime.fromtimestamp(ARCHIVED + 5, timezone.utc)


def test_windows_follow_history_through_grandchildren():
    hist = {2: [HistoryEntry(1, 0x4000000, "")],
            3: [HistoryEntry(1, 0x4000000, ""), HistoryEntry(2, 0x6800000, "")],
            4: [HistoryEntry(1, 0x2000000, "")]}        # branched before the backup's stop
    m = model_with({1: [1, 2, 3, 4], 2: [4, 5, 6], 3: [6, 7], 4: [2, 3, 4]},
                   [b("a", "0/2000028", "0/2000100")], hist)
    assert spans(recoverable_windows(m)) == [
        (1, "0/02000100", "0/05000000"), (2, "0/02000100", "0/07000000"),
        (3, "0/02000100", "0/08000000")]
    # the parent's WAL must reach the switch segment: without segment 3 on TL 1, nothing
    # reaches the switch at 0/4000000
    m.segments[1].pop(3)
    assert spans(recoverable_windows(m)) == [(1, "0/02000100", "0/03000000")]


def test_switch_in_the_middle_of_a_segment_needs_the_childs_copy():
    hist = {2: [HistoryEntry(1, 0x5800000, "")]}
    m = model_with({1: [1, 2, 3, 4], 2: [6, 7]}, [b("a", "0/1000028", "0/1000100")], hist)
    assert spans(recoverable_windows(m)) == [(1, "0/01000100", "0/05000000")]
    m.segments[2][5] = obj(2, 5)
    assert spans(recoverable_windows(m))[1] == (2, "0/01000100", "0/08000000")


def test_to_time_never_precedes_from_time():
    m = model_with({1: [1, 2]}, [b("a", "0/1000028", "0/2000100")])
    m.segments[1][2] = obj(1, 2, mtime=(T0 - timedelta(days=1)).timestamp())
    [w] = recoverable_windows(m)
    assert w["to_time"] == w["from_time"]


def test_merge_prefers_the_primary_and_unions_backups():
    a = model_with({1: [1, 2, 4]}, [b("x", "0/1000028", "0/1000100")])
    a.backups[0].stored_bytes = {"local": 10}
    c = model_with({1: [2, 3], 2: [9]}, [b("x", "0/1000028", "0/1000100"),
                                         b("y", "0/3000028", "0/3000100")])
    c.backups[0].stored_bytes = {"offsite": 12}
    c.backups[1].stored_bytes = {"offsite": 7}
    c.segments[1][2] = obj(1, 2, mtime=5.0)
    a.incomplete_backups, c.incomplete_backups = ["y", "z"], ["z"]
    u = merge([a, c])
    assert sorted(u.segments[1]) == [1, 2, 3, 4] and sorted(u.segments[2]) == [9]
    assert u.segments[1][2].mtime != 5.0
    assert {x.id: x.stored_bytes for x in u.backups} == {"x": {"local": 10, "offsite": 12},
                                                         "y": {"offsite": 7}}
    assert a.backups[0].stored_bytes == {"local": 10}       # inputs untouched
    assert u.incomplete_backups == ["z"]
    assert wal_ranges(u)[0]["gaps"] == []
    with pytest.raises(Exception, match="segment size"):
        merge([a, ArchiveModel(wal_segment_size=MiB)])
