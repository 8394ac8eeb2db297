import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from walkeeper.errors import OperationFailed, UnknownName
from walkeeper.catalog.model import ArchiveModel, BackupFile, BackupInfo, WalObject
from walkeeper.catalog.planner import PlanRefused, RecoveryPlan, Target, plan, recoverable_windows
from walkeeper.wal import HistoryEntry, Segment, format_lsn

MiB = 1 << 20
SEG = 16 * MiB
T0 = 1_790_000_000.0          # 2026-09-21, epoch seconds
SYSID = 7_300_000_000_000_000_001
WAL_BYTES = 100               # stored size of every segment object
BACKUP_BYTES = 5000


# --- building catalogs by hand ----------------------------------------------------

def lsn(segno: int, offset: int = 0) -> int:
    return segno * SEG + offset


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, timezone.utc)


def seg_mtime(segno: int) -> float:
    """Segment n is archived when full, one minute after it began."""
    return T0 + 60 * (segno + 1)


def name(tli: int, segno: int) -> str:
    return Segment.from_number(tli, segno, SEG).name


def wal(tli: int, segnos, mtime=seg_mtime) -> dict[int, WalObject]:
    return {n: WalObject(name(tli, n), f"wal/{name(tli, n)}.zst", WAL_BYTES, mtime(n))
            for n in segnos}


def backup(id: str, tli: int, start: int, stop: int, *, stop_time: datetime | None = None,
           files=True) -> BackupInfo:
    """A backup from LSN start to LSN stop; it stops halfway through its stop segment."""
    stop_time = stop_time or at(60 * (stop // SEG) + 30)
    half = BACKUP_BYTES // 2
    return BackupInfo(
        id=id, label=id, start_time=stop_time - timedelta(seconds=20), stop_time=stop_time,
        start_lsn=start, stop_lsn=stop, timeline=tli,
        start_wal=Segment.containing(tli, start, SEG).name,
        stop_wal=Segment.containing(tli, stop, SEG).name,
        pg_version=150018, system_identifier=SYSID, wal_segment_size=SEG,
        database_bytes=10 * BACKUP_BYTES,
        stored_bytes={} if files else {"local": BACKUP_BYTES},
        files=[BackupFile("base.tar", f"b/{id}/base.tar.zst", 9 * half, half, "0" * 64),
               BackupFile("pg_wal.tar", f"b/{id}/pg_wal.tar.zst", 10, BACKUP_BYTES - half, "1" * 64)]
        if files else [])


def catalog(segments: dict[int, dict[int, WalObject]], backups=(), histories=None) -> ArchiveModel:
    return ArchiveModel(wal_segment_size=SEG, system_identifier=SYSID, backups=list(backups),
                        segments=segments, histories=histories or {})


def numbers(p: RecoveryPlan) -> list[tuple[int, int]]:
    out = []
    for n in p.segments:
        s = Segment.parse(n)
        out.append((s.timeline, s.number(SEG)))
    return out


def linear(*, missing=(), last=10, backups=None) -> ArchiveModel:
    """Timeline 1, segments 1..last; backup A over segments 2-3, B over 5-6."""
    if backups is None:
        backups = [backup("A", 1, lsn(2, 0x28), lsn(3, 0x138)),
                   backup("B", 1, lsn(5, 0x28), lsn(6, 0x138))]
    return catalog({1: wal(1, [n for n in range(1, last + 1) if n not in missing])}, backups)


# --- each target kind -------------------------------------------------------------

def test_latest_replays_to_the_end_of_the_archive_from_the_newest_backup():
    p = plan(linear(), Target("latest"))
    assert p.backup.id == "B" and p.timelines == [1] and p.target_timeline == 1
    assert numbers(p) == [(1, n) for n in range(5, 11)]
    assert p.first_wal == name(1, 5) and p.last_wal == name(1, 10)
    assert p.bytes == BACKUP_BYTES + 6 * WAL_BYTES
    assert p.notes == []


def test_time_target_takes_the_newest_backup_stopped_before_it():
    a = linear()
    p = plan(a, Target("time", at(60 * 6 + 31)))             # just after B stopped
    assert p.backup.id == "B" and numbers(p)[0] == (1, 5) and p.last_wal == name(1, 10)
    p = plan(a, Target("time", at(60 * 6 + 29)))             # just before B stopped
    assert p.backup.id == "A" and numbers(p) == [(1, n) for n in range(2, 11)]
    assert plan(a, Target("time", at(60 * 6 + 30))).backup.id == "B"   # stop == target


def test_lsn_target_fetches_through_the_segment_holding_it():
    a = linear()
    p = plan(a, Target("lsn", lsn(8, 0x100)))
    assert p.backup.id == "B" and numbers(p) == [(1, n) for n in range(5, 9)]
    p = plan(a, Target("lsn", lsn(6, 0x137)))                # before B's stop: A
    assert p.backup.id == "A" and p.last_wal == name(1, 6)
    assert plan(a, Target("lsn", lsn(6, 0x138))).backup.id == "B"


@pytest.mark.parametrize("target", [Target("xid", 1234), Target("name", "before_migration")])
def test_xid_and_name_targets_take_the_newest_backup_and_say_so(target):
    p = plan(linear(), target)
    assert p.backup.id == "B" and p.last_wal == name(1, 10)
    assert any("--backup" in n for n in p.notes)


def test_immediate_stops_at_the_backup_stop_segment():
    p = plan(linear(), Target("immediate"))
    assert p.backup.id == "B" and numbers(p) == [(1, 5), (1, 6)]


def test_backup_bytes_fall_back_to_the_stored_size():
    a = linear(backups=[backup("A", 1, lsn(2), lsn(3, 8), files=False)])
    assert plan(a, Target("immediate")).bytes == BACKUP_BYTES + 2 * WAL_BYTES


def test_backup_id_restricts_the_choice():
    a = linear()
    assert plan(a, Target("latest"), backup_id="A").backup.id == "A"
    with pytest.raises(UnknownName, match="no complete backup with id 'C'"):
        plan(a, Target("latest"), backup_id="C")


def test_to_json():
    plus_one = timezone(timedelta(hours=1))
    p = plan(linear(), Target("time", datetime(2026, 9, 21, 15, 21, tzinfo=plus_one)))
    d = p.to_json()
    assert {k: d[k] for k in ("backup", "timelines", "first_wal", "last_wal", "segments", "bytes")} == {
        "backup": "B", "timelines": [1], "first_wal": name(1, 5), "last_wal": name(1, 10),
        "segments": 6, "bytes": BACKUP_BYTES + 6 * WAL_BYTES}
    assert d["target"] == {"type": "time", "value": "2026-09-21T15:21:00+01:00"}
    lsn_json = plan(linear(), Target("lsn", lsn(9, 0x28))).to_json()["target"]
    assert lsn_json == {"type": "lsn", "value": "0/09000028"}
    assert plan(linear(), Target("latest")).to_json()["target"] == {"type": "latest", "value": None}


# --- falling back, refusing -------------------------------------------------------

@pytest.mark.parametrize("target", [Target("latest"), Target("xid", 900), Target("name", "x")])
def test_gap_inside_the_newest_backup_falls_back_to_an_older_one(target):
    a = linear(missing={6})                                     # B stops in segment 6
    p = plan(a, target)
    assert p.backup.id == "A" and numbers(p) == [(1, n) for n in range(2, 6)]
    assert any("backup B" in n and name(1, 6) in n and "using older backup A" in n for n in p.notes)
    if target.kind != "xid":
        assert any(f"holds WAL up to {name(1, 10)}" in n for n in p.notes)


def test_time_target_falls_back_when_the_older_backup_still_reaches_it():
    # The archiver lagged: segment 5 was archived long after B stopped, then 6 was lost.
    lagging = lambda n: seg_mtime(n) + (3600 if n == 5 else 0)
    a = catalog({1: wal(1, [n for n in range(1, 11) if n != 6], lagging)},
                [backup("A", 1, lsn(2), lsn(3, 8)), backup("B", 1, lsn(5), lsn(6, 8))])
    p = plan(a, Target("time", at(60 * 6 + 40)))
    assert p.backup.id == "A" and p.last_wal == name(1, 5)
    assert "using older backup A" in p.notes[0]


def test_gap_before_an_lsn_target_is_refused_with_windows():
    a = linear(missing={8})
    with pytest.raises(PlanRefused) as info:
        plan(a, Target("lsn", lsn(9)))
    e = info.value
    assert isinstance(e, OperationFailed) and e.exit_code == 1
    assert e.windows == [{"timeline": 1, "from_time": at(60 * 3 + 30).isoformat(),
                          "to_time": datetime.fromtimestamp(seg_mtime(7), timezone.utc).isoformat(),
                          "from_lsn": format_lsn(lsn(3, 0x138)), "to_lsn": format_lsn(lsn(8))}]
    msg = str(e)
    assert "\n" not in msg and name(1, 8) in msg and "recoverable windows: timeline 1 from" in msg
    assert len(e.reasons) == 2                                  # both backups tried


def test_windows_are_split_by_a_gap_between_backups():
    a = linear(missing={4})
    w = recoverable_windows(a)
    assert [(x["from_lsn"], x["to_lsn"]) for x in w] == [
        (format_lsn(lsn(3, 0x138)), format_lsn(lsn(4))), (format_lsn(lsn(6, 0x138)), format_lsn(lsn(11)))]


def test_time_after_the_end_of_the_archive_is_refused_suggesting_latest():
    with pytest.raises(PlanRefused, match="after the end of the archive.*--latest") as info:
        plan(linear(), Target("time", at(60 * 11 + 1)))
    assert info.value.windows and "recoverable windows: timeline 1" in str(info.value)
    plan(linear(), Target("time", at(60 * 11)))                 # exactly the last mtime


def test_lsn_after_the_end_of_the_archive_is_refused_suggesting_latest():
    with pytest.raises(PlanRefused, match="after the end of the archive.*--latest"):
        plan(linear(), Target("lsn", lsn(11)))


def test_time_past_a_gap_names_the_gap():
    with pytest.raises(PlanRefused, match=f"{name(1, 8)} is missing") as info:
        plan(linear(missing={8}), Target("time", at(60 * 10)))
    assert "--latest" not in str(info.value).split(";")[0]


def test_time_before_every_backup_stop_is_refused():
    with pytest.raises(PlanRefused, match="before the end of every backup.*backup A") as info:
        plan(linear(), Target("time", at(60 * 3 + 29)))
    assert info.value.windows[0]["from_lsn"] == format_lsn(lsn(3, 0x138))
    with pytest.raises(PlanRefused, match="before the end of every backup"):
        plan(linear(), Target("lsn", lsn(3)))


def test_no_backup_at_all_is_refused():
    with pytest.raises(PlanRefused, match="no complete backup") as info:
        plan(linear(backups=[]), Target("latest"))
    assert info.value.windows == [] and "recoverable windows: none" in str(info.value)


def test_backup_of_another_cluster_is_never_used():
    other = backup("X", 1, lsn(7), lsn(8))
    other.system_identifier = 42
    p = plan(linear(backups=[backup("A", 1, lsn(2), lsn(3)), other]), Target("latest"))
    assert p.backup.id == "A" and "another cluster" in p.notes[0]


# --- timelines --------------------------------------------------------------------

def switched(offset: int = 0x318, *, tl2_missing=(), extra=()) -> ArchiveModel:
    """Timeline 2 forks from 1 inside segment 5; timeline 1 went on to segment 8."""
    return catalog(
        {1: wal(1, range(1, 9)), 2: wal(2, [n for n in range(5, 11) if n not in tl2_missing])},
        [backup("A", 1, lsn(2), lsn(3, 0x100)), *extra],
        {2: [HistoryEntry(1, lsn(5, offset), "no recovery target specified")]})


@pytest.mark.parametrize("offset", [0, 0x318, SEG - 8])
def test_latest_follows_the_switch_and_reads_its_segment_from_the_new_timeline(offset):
    p = plan(switched(offset), Target("latest"))
    assert p.timelines == [1, 2] and p.target_timeline == 2
    assert numbers(p) == [(1, 2), (1, 3), (1, 4)] + [(2, n) for n in range(5, 11)]
    assert not any(s.startswith("00000001") and Segment.parse(s).seg >= 5 for s in p.segments)


def test_missing_switch_segment_on_the_new_timeline_is_not_taken_from_the_old():
    p = plan(switched(tl2_missing={5}), Target("latest"))
    assert numbers(p)[-1] == (1, 4)
    assert any(f"{name(2, 5)} is missing" in n for n in p.notes)


def test_target_timeline_1_and_current_stay_on_the_old_timeline():
    for spec in (1, "1", "current"):
        p = plan(switched(), Target("latest"), spec)
        assert p.timelines == [1] and numbers(p) == [(1, n) for n in range(2, 9)], spec


def test_lsn_target_before_the_switch_on_timeline_2():
    p = plan(switched(), Target("lsn", lsn(4, 8)), 2)
    assert p.timelines == [1, 2] and numbers(p) == [(1, 2), (1, 3), (1, 4)]
    p = plan(switched(), Target("lsn", lsn(5, 8)), 2)          # before the switch point,
    assert numbers(p)[-1] == (2, 5)                             # in the switch segment


def test_backup_on_the_abandoned_branch_is_skipped_for_latest():
    late = backup("C", 1, lsn(6), lsn(7))                       # tl 1 after tl 2 forked
    p = plan(switched(extra=[late]), Target("latest"))
    assert p.backup.id == "A" and p.target_timeline == 2
    assert any("backup C" in n and "not on the history of timeline 2" in n for n in p.notes)
    assert plan(switched(extra=[late]), Target("latest"), "current").backup.id == "C"
    with pytest.raises(PlanRefused, match="not on the history of timeline 2"):
        plan(switched(extra=[late]), Target("latest"), 2, backup_id="C")


def test_backup_crossing_the_switch_point_is_not_on_the_new_timeline():
    crossing = backup("X", 1, lsn(4), lsn(5, 0x400))            # tl 1 went past 0/5000318
    p = plan(switched(extra=[crossing]), Target("latest"))
    assert p.backup.id == "A"


def test_latest_skips_a_newer_timeline_no_backup_reaches():
    a = switched()
    a.histories[3] = [HistoryEntry(1, lsn(1), "")]              # forked before every backup
    a.segments[3] = wal(3, range(1, 4))
    p = plan(a, Target("latest"))
    assert p.target_timeline == 2 and any("timeline 3 is newer" in n for n in p.notes)


def test_timeline_without_history_assumes_no_parents():
    a = catalog({2: wal(2, range(5, 9))}, [backup("B", 2, lsn(5), lsn(6))])
    p = plan(a, Target("latest"))
    assert p.timelines == [2] and numbers(p) == [(2, n) for n in range(5, 9)]
    with pytest.raises(PlanRefused, match="not on the history of timeline 3"):
        plan(a, Target("latest"), 3)


def test_invalid_target_timeline():
    for bad in ("newest", "-1", 0, "2x"):
        with pytest.raises(ValueError):
            plan(linear(), Target("latest"), bad)


def test_backups_are_ordered_by_stop_lsn_then_time_never_by_id_or_timeline():
    # Names that sort backwards and a higher TLI on the older backup.
    old_tl2 = backup("zzz-newest-name", 2, lsn(6), lsn(6, 0x200))
    new_tl1 = backup("aaa", 1, lsn(7), lsn(7, 0x100))
    p = plan(switched(extra=[old_tl2, new_tl1]), Target("latest"), "current")
    assert p.backup.id == "aaa"
    a = linear(backups=[backup("2026-12-31", 1, lsn(5), lsn(6), stop_time=at(400)),
                        backup("2026-01-01", 1, lsn(5), lsn(6), stop_time=at(401)),
                        backup("2027-01-01", 1, lsn(2), lsn(3))])
    assert plan(a, Target("latest")).backup.id == "2026-01-01"


# --- Target.parse -----------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("text,setting", [
    ("2026-11-24 10:15:00+01", "2026-11-24 10:15:00+01:00"),
    ("2026-11-24T10:15:00Z", "2026-11-24 10:15:00+00:00"),
    ("2026-11-24T10:15:00.250-05:30", "2026-11-24 10:15:00.250000-05:30"),
    (" 2026-11-24 10:15:00 +01 ", "2026-11-24 10:15:00+01:00"),
    ("2026-11-24T10:15:00", "2026-11-24 10:15:00+01:00"),       # naive: local (Berlin, CET)
    ("2026-07-01 10:15", "2026-07-01 10:15:00+02:00"),          # naive: local, summer time
])
def test_parse_time(text, setting):
    t = Target.parse("time", text, local_tz=BERLIN)
    assert t.kind == "time" and t.value.utcoffset() is not None
    assert t.setting() == ("recovery_target_time", setting)


@pytest.fixture
def berlin_tz(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_parse_naive_time_uses_the_system_local_zone(berlin_tz):
    assert Target.parse("time", "2026-11-24 10:15:00").setting()[1] == "2026-11-24 10:15:00+01:00"
    assert Target.parse("time", "2026-07-01 10:15:00").setting()[1] == "2026-07-01 10:15:00+02:00"
    with pytest.raises(ValueError, match="does not exist"):
        Target.parse("time", "2026-03-29 02:30:00")


def test_parse_other_kinds():
    assert Target.parse("lsn", "16/b374d848") == Target("lsn", 0x16B374D848)
    assert Target.parse("lsn", "0/5000028").setting() == ("recovery_target_lsn", "0/05000028")
    assert Target.parse("xid", "1234").setting() == ("recovery_target_xid", "1234")
    assert Target.parse("name", "before migration").setting() == ("recovery_target_name", "before migration")
    assert Target.parse("immediate").setting() == ("recovery_target", "immediate")
    assert Target.parse("latest").setting() is None and Target.parse("latest", "").value is None


@pytest.mark.parametrize("kind,text,msg", [
    ("time", "yesterday", "invalid target time"),
    ("time", "2026-11-24 25:00", "invalid target time"),
    ("time", "", "empty"),
    ("time", "2026-03-29 02:30:00", "does not exist"),           # Berlin DST gap
    ("lsn", "5000028", "invalid target LSN"),
    ("lsn", "0/123456789", "invalid target LSN"),
    ("xid", "12a", "invalid target xid"),
    ("xid", "-5", "invalid target xid"),
    ("xid", "2", "normal transaction ID"),
    ("xid", "\u0661\u0662", "invalid target xid"),
    ("name", "x" * 64, "too long"),
    ("name", "a\nb", "control characters"),
    ("name", None, "empty"),
    ("immediate", "now", "takes no value"),
    ("tomorrow", "x", "unknown recovery target kind"),
])
def test_parse_rejects(kind, text, msg):
    with pytest.raises(ValueError, match=msg):
        Target.parse(kind, text, local_tz=BERLIN)


def test_target_rejects_a_naive_time():
    with pytest.raises(ValueError):
        Target("time", datetime(2026, 11, 24, 10, 15))


# --- properties over generated catalogs ---------------------------------------------

@st.composite
def catalogs(draw):
    """A timeline tree with histories, WAL with random gaps, and random backups.

    Returns the catalog and the tree ({tli: (parent, switch_lsn)}) the oracle uses
    instead of the history files the planner reads.
    """
    ntl = draw(st.integers(1, 4))
    tree = {1: (None, 0)}
    histories = {}
    for t in range(2, ntl + 1):
        parent = draw(st.integers(1, t - 1))
        begin = tree[parent][1]
        switch = max(begin, lsn(draw(st.integers(begin // SEG, begin // SEG + 6)),
                                draw(st.sampled_from([0, 0x28, SEG // 2, SEG - 8]))))
        tree[t] = (parent, switch)
        histories[t] = histories.get(parent, []) + [HistoryEntry(parent, switch, "")]
    segments, extent = {}, {}
    for t in range(1, ntl + 1):
        first = tree[t][1] // SEG + (1 if t == 1 else 0)
        last = first + draw(st.integers(-1, 14))
        extent[t] = (first, max(first, last))
        gone = draw(st.sets(st.integers(*extent[t]), max_size=2)) if draw(st.booleans()) else set()
        lag = draw(st.dictionaries(st.integers(*extent[t]), st.integers(0, 600), max_size=2))
        present = [n for n in range(first, last + 1) if n not in gone]
        if present:
            segments[t] = wal(t, present, lambda n, t=t, lag=lag: seg_mtime(n) + t + lag.get(n, 0))
    backups = []
    for i in range(draw(st.integers(1, 5))):
        t = draw(st.integers(1, ntl))
        first, last = extent[t]
        start = max(tree[t][1], lsn(draw(st.integers(first, min(last, first + 5))), 0x28))
        stop = start + draw(st.integers(1, 2 * SEG))
        stop_time = at(60 * (stop // SEG) + draw(st.integers(0, 59)))
        backups.append(backup(draw(st.text("abz019", min_size=1, max_size=4)) + f"#{i}", t,
                              start, stop, stop_time=stop_time))
    return catalog(segments, backups, histories), tree


def targets(top: int):
    """Targets around an archive whose segments end before segment top."""
    return st.one_of(
        st.builds(lambda n, s: Target("time", at(60 * n + s)), st.integers(0, top), st.integers(0, 59)),
        st.builds(lambda n, o: Target("lsn", lsn(n, o)), st.integers(0, top),
                  st.sampled_from([0, 0x28, SEG - 1])),
        st.just(Target("xid", 1234)), st.just(Target("name", "x")),
        st.just(Target("immediate")), st.just(Target("latest")))


def top_of(a: ArchiveModel) -> int:
    return max((n for segs in a.segments.values() for n in segs), default=0) + 2


timeline_specs = st.one_of(st.just("latest"), st.just("current"), st.integers(1, 5))


def lineage(tree, t):
    """[(tli, begin_lsn)] from timeline 1 (or the first known ancestor) to t."""
    out = []
    while t is not None:
        parent, begin = tree.get(t, (None, 0))
        out.append((t, begin))
        t = parent
    return out[::-1]


def fetch_tli(line, segno):
    return [t for t, begin in line if begin // SEG <= segno][-1]


def on_line(line, b):
    tlis = [t for t, _ in line]
    if b.timeline not in tlis:
        return False
    i = tlis.index(b.timeline)
    leaves = line[i + 1][1] if i + 1 < len(line) else None
    return leaves is None or max(b.start_lsn, b.stop_lsn - 1) < leaves


def oracle_reaches(a, line, b, target):
    """Whether b reaches target along line, worked out segment by segment."""
    segno, run = b.start_lsn // SEG, []
    while segno <= 40:
        t = fetch_tli(line, segno)
        if segno not in a.segments.get(t, {}):
            break
        run.append((t, segno))
        segno += 1
    if not run or run[-1][1] < b.stop_lsn // SEG:
        return False
    if target.kind == "lsn":
        return run[-1][1] >= target.value // SEG
    if target.kind == "time":
        return target.value <= datetime.fromtimestamp(a.segments[run[-1][0]][run[-1][1]].mtime, timezone.utc)
    return True


def oracle(a, tree, target, spec):
    """The backup the planner must choose, or None."""
    order = sorted(a.backups, key=lambda b: (b.stop_lsn, b.stop_time), reverse=True)
    if spec == "latest":
        known = sorted(set(tree) & (set(a.segments) | set(a.histories) | {b.timeline for b in a.backups}))
        reachable = [t for t in known if any(on_line(lineage(tree, t), b) for b in order)]
        if not reachable:
            return None
        lines = {b.id: lineage(tree, reachable[-1]) for b in order}
    elif spec == "current":
        lines = {b.id: lineage(tree, b.timeline) for b in order}
    else:
        line = lineage(tree, spec) if spec in tree else [(spec, 0)]
        lines = {b.id: line for b in order}
    for b in order:
        qualifies = (target.kind != "time" or b.stop_time <= target.value) and \
                    (target.kind != "lsn" or b.stop_lsn <= target.value)
        if qualifies and on_line(lines[b.id], b) and oracle_reaches(a, lines[b.id], b, target):
            return b, lines[b.id]
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), timeline_specs, st.data())
def test_plans_follow_the_rules(generated, spec, data):
    a, tree = generated
    target = data.draw(targets(top_of(a)))
    expected = oracle(a, tree, target, spec)
    try:
        p = plan(a, target, spec)
    except PlanRefused as e:
        assert expected is None, f"refused ({e}) but {expected[0].id} reaches the target"
        assert str(e) and "\n" not in str(e)
        for w in e.windows:
            assert w["from_lsn"] <= w["to_lsn"] or len(w["from_lsn"]) != len(w["to_lsn"])
        return
    assert expected is not None, f"planned {p.backup.id} but no backup reaches the target"
    b, line = expected
    assert p.backup.id == b.id
    got = numbers(p)
    assert all(n in a.segments[t] for t, n in got)
    assert got[0][1] == b.start_lsn // SEG
    assert [n for _, n in got] == list(range(got[0][1], got[0][1] + len(got)))
    assert all(t == fetch_tli(line, n) for t, n in got)     # timeline changes only at a switch
    assert got[-1][1] >= b.stop_lsn // SEG
    if target.kind == "lsn":
        assert got[-1][1] == target.value // SEG
    if target.kind == "immediate":
        assert got[-1][1] == b.stop_lsn // SEG
    assert p.target_timeline == line[-1][0] and p.timelines[0] == b.timeline
    assert p.timelines[-1] == p.target_timeline
    assert p.bytes == BACKUP_BYTES + WAL_BYTES * len(got)
    assert p.first_wal == p.segments[0] and p.last_wal == p.segments[-1]


@settings(max_examples=200, deadline=None)
@given(catalogs(), st.one_of(st.none(), st.sampled_from([5, 2**64 - 1, -1])), st.data())
def test_plan_raises_only_plan_refused_even_on_odd_catalogs(generated, odd_lsn, data):
    a, _ = generated
    target = data.draw(targets(top_of(a)))
    if odd_lsn is not None and a.backups:
        a.backups[0].stop_lsn = odd_lsn                          # metadata out of order
        a.histories[9] = [HistoryEntry(3, lsn(4), ""), HistoryEntry(2, lsn(5), "")]
    for spec in ("latest", "current", 1, 9):
        try:
            plan(a, target, spec)
        except PlanRefused:
            pass
    recoverable_windows(a)
