"""Retention selection (walkeeper/catalog/retention.py): pure, so examples and properties."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from walkeeper.catalog.model import ArchiveModel, BackupInfo, WalObject
from walkeeper.catalog.retention import (
    COUNTS, cut_segments, period_label, select, select_dumps, wal_cut, wal_to_delete,
)
from walkeeper.wal import Segment

SEG = 16 << 20
NOW = datetime(2027, 6, 1, tzinfo=timezone.utc)
NONE = {k: 0 for k in COUNTS}


def policy(**kw) -> dict:
    return {**NONE, **kw}


def backup(id: str, stop_lsn: int, stop_time: datetime, *, tli: int = 1,
           start_lsn: int | None = None) -> BackupInfo:
    start = stop_lsn - SEG // 2 if start_lsn is None else start_lsn
    return BackupInfo(
        id=id, label="", start_time=stop_time - timedelta(minutes=5), stop_time=stop_time,
        start_lsn=start, stop_lsn=stop_lsn, timeline=tli,
        start_wal=Segment.containing(tli, start, SEG).name,
        stop_wal=Segment.containing(tli, stop_lsn, SEG).name, pg_version=150000,
        system_identifier=1, wal_segment_size=SEG, database_bytes=0)


def day(d: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(d).replace(hour=hour, tzinfo=timezone.utc)


def series(*days: str) -> list[BackupInfo]:
    """One backup per given day, in that order, LSNs rising; id = day."""
    return [backup(d + f"#{i}", (i + 2) * SEG, day(d)) for i, d in enumerate(days)]


# ---------------------------------------------------------------- examples

def test_full_count_keeps_the_newest_and_deletes_the_rest_oldest_first():
    bs = series("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")
    sel = select(bs, policy(full_count=2), NOW)
    assert sel.keep == {"2026-11-23#3": ["newest", "full_count"],
                        "2026-11-22#2": ["full_count"]}
    assert sel.delete == ["2026-11-20#0", "2026-11-21#1"]


def test_the_newest_is_kept_whatever_the_policy():
    bs = series("2026-11-20", "2026-11-21")
    sel = select(bs, policy(full_count=0), NOW)
    assert sel.keep == {"2026-11-21#1": ["newest"]} and sel.delete == ["2026-11-20#0"]
    assert select([], policy(full_count=0), NOW).keep == {}


def test_reason_labels():
    [b] = series("2026-11-24")
    sel = select([b], policy(daily=1, weekly=1, monthly=1, yearly=1), NOW)
    assert sel.keep[b.id] == ["newest", "daily 2026-11-24", "weekly 2026-W48",
                              "monthly 2026-11", "yearly 2026"]
    assert period_label("weekly", day("2026-11-22")) == "2026-W47"


def test_order_is_by_stop_lsn_never_by_id_or_timeline():
    # After a pg_upgrade-style reset the ids and timelines say nothing (wal-g#636).
    old = backup("zzz-newest-by-name", 2 * SEG, day("2026-11-20"), tli=9)
    new = backup("aaa", 9 * SEG, day("2026-11-21"), tli=1)
    sel = select([old, new], policy(full_count=1), NOW)
    assert list(sel.keep) == ["aaa"] and sel.delete == ["zzz-newest-by-name"]
    # Equal stop LSNs: the later stop time is the newer.
    a = backup("a", 5 * SEG, day("2026-11-21"))
    b = backup("b", 5 * SEG, day("2026-11-20"))
    assert list(select([b, a], policy(full_count=1), NOW).keep) == ["a"]


def test_daily_keeps_the_newest_of_each_recent_day_with_a_backup():
    bs = [backup("d1-early", 1 * SEG, day("2026-11-20", 1)),
          backup("d1-late", 2 * SEG, day("2026-11-20", 23)),
          backup("d2", 3 * SEG, day("2026-11-22")),        # 21st: no backup, no slot used
          backup("d3-early", 4 * SEG, day("2026-11-23", 1)),
          backup("d3-late", 5 * SEG, day("2026-11-23", 2))]
    sel = select(bs, policy(daily=3), NOW)
    assert sel.keep == {"d3-late": ["newest", "daily 2026-11-23"], "d2": ["daily 2026-11-22"],
                        "d1-late": ["daily 2026-11-20"]}
    assert sel.delete == ["d1-early", "d3-early"]
    assert set(select(bs, policy(daily=-1), NOW).keep) == {"d3-late", "d2", "d1-late"}


def test_periods_are_utc_calendar_periods():
    # 23:30 at -02:00 is already the next day in UTC.
    b = backup("x", 2 * SEG, datetime.fromisoformat("2026-11-24T23:30:00-02:00"))
    assert select([b], policy(daily=1), NOW).keep["x"] == ["newest", "daily 2026-11-25"]
    # ISO weeks: 2026-12-31 and 2027-01-01 are both in 2026-W53.
    assert period_label("weekly", day("2027-01-01")) == "2026-W53"
    bs = [backup("dec31", 2 * SEG, day("2026-12-31")), backup("jan1", 3 * SEG, day("2027-01-01"))]
    sel = select(bs, policy(weekly=2), NOW)
    assert sel.keep == {"jan1": ["newest", "weekly 2026-W53"]} and sel.delete == ["dec31"]
    sel = select(bs, policy(yearly=2), NOW)
    assert sel.keep == {"jan1": ["newest", "yearly 2027"], "dec31": ["yearly 2026"]}


def test_weekly_monthly_yearly_together():
    bs = series("2024-03-01", "2025-06-01", "2025-06-15", "2026-10-30", "2026-11-02",
                "2026-11-20", "2026-11-21")
    sel = select(bs, policy(full_count=1, weekly=2, monthly=2, yearly=-1), NOW)
    assert sel.keep == {
        "2026-11-21#6": ["newest", "full_count", "weekly 2026-W47", "monthly 2026-11",
                         "yearly 2026"],
        "2026-11-02#4": ["weekly 2026-W45"],
        "2026-10-30#3": ["monthly 2026-10"],
        "2025-06-15#2": ["yearly 2025"],
        "2024-03-01#0": ["yearly 2024"],
    }
    assert sel.delete == ["2025-06-01#1", "2026-11-20#5"]


def test_bad_policy_values_are_refused():
    with pytest.raises(ValueError):
        select(series("2026-11-20"), policy(daily=-2), NOW)


# ---------------------------------------------------------------- WAL

def seg_obj(tli: int, segno: int, suffix: str = "") -> WalObject:
    name = Segment.from_number(tli, segno, SEG).name + suffix
    return WalObject(name, f"c/wal/{name[:16]}/{name}.zst", 100, 0.0)


def archive_with(segments: dict[int, range], other=()) -> ArchiveModel:
    return ArchiveModel(wal_segment_size=SEG,
                        segments={t: {n: seg_obj(t, n) for n in r} for t, r in segments.items()},
                        other=list(other))


def test_wal_below_the_oldest_kept_start_goes_on_every_timeline():
    # Timeline 2 branched at segment 6; the oldest kept backup starts inside segment 5
    # (ids and timelines in the other order on purpose).
    archive = archive_with({1: range(1, 9), 2: range(6, 12), 3: range(3, 4)},
                           other=[seg_obj(1, 4, ".00000028.backup"), seg_obj(1, 5, ".00000028.backup"),
                                  seg_obj(1, 2, ".partial"), seg_obj(1, 7, ".partial")])
    kept = [backup("b", 9 * SEG, day("2026-11-21"), tli=2, start_lsn=8 * SEG + 40),
            backup("a", 6 * SEG, day("2026-11-20"), tli=1, start_lsn=5 * SEG + 40)]
    assert wal_cut(archive, kept) == 5 * SEG
    gone = [o.name for o in wal_to_delete(archive, kept)]
    assert gone == [seg_obj(1, 1).name, seg_obj(1, 2).name, seg_obj(1, 2, ".partial").name,
                    seg_obj(1, 3).name, seg_obj(3, 3).name, seg_obj(1, 4).name,
                    seg_obj(1, 4, ".00000028.backup").name]
    assert cut_segments(archive, kept) == {t: Segment.from_number(t, 5, SEG).name
                                           for t in (1, 2, 3)}
    assert wal_to_delete(archive, []) == [] and cut_segments(archive, []) == {}


# ---------------------------------------------------------------- dumps

def test_dumps_by_the_same_counts_per_database():
    def dump(i, db, when):
        return {"id": i, "database": db, "time": when, "stored_bytes": {}}
    dumps = [dump("a1", "app", "2026-11-20T10:00:00+00:00"),
             dump("a2", "app", "2026-11-21T10:00:00+00:00"),
             dump("a3", "app", "2026-11-22T10:00:00+00:00"),
             dump("o1", "other", "2026-11-01T10:00:00+00:00"),
             dump("x", "app", None)]
    sel = select_dumps(dumps, policy(full_count=2), NOW)
    assert sel.keep == {"x": ["time unreadable"], "a3": ["newest", "full_count"],
                        "a2": ["full_count"], "o1": ["newest", "full_count"]}
    assert sel.delete == ["a1"]


# ---------------------------------------------------------------- properties

EPOCH = datetime(2023, 1, 1, tzinfo=timezone.utc)


@st.composite
def backup_sets(draw):
    n = draw(st.integers(1, 14))
    stops = draw(st.lists(st.integers(4, 400), min_size=n, max_size=n, unique=True))
    out = []
    for i, s in enumerate(stops):
        # Times roughly follow LSNs but not always (clock steps, restored clusters).
        minutes = s * draw(st.sampled_from([60, 600, 2000])) + draw(st.integers(-3000, 3000))
        when = EPOCH + timedelta(minutes=minutes)
        length = draw(st.integers(0, 3 * SEG))
        out.append(backup(f"id{draw(st.integers(0, 10**6)):07d}-{i}", s * SEG + 100, when,
                          tli=draw(st.integers(1, 4)), start_lsn=s * SEG + 100 - length))
    return out


policies = st.fixed_dictionaries({k: st.integers(-1, 4) for k in COUNTS})


def newest_first(bs):
    return sorted(bs, key=lambda b: (b.stop_lsn, b.stop_time), reverse=True)


def expected_keep(bs, pol) -> set[str]:
    """The picks, computed the plain way."""
    ordered = newest_first(bs)
    keep = {ordered[0].id}
    full = pol["full_count"]
    keep |= {b.id for b in (ordered if full == -1 else ordered[:full])}
    for kind in ("daily", "weekly", "monthly", "yearly"):
        labels = sorted({period_label(kind, b.stop_time) for b in bs}, reverse=True)
        chosen = labels if pol[kind] == -1 else labels[:pol[kind]]
        for label in chosen:
            keep.add(next(b.id for b in ordered if period_label(kind, b.stop_time) == label))
    return keep


@settings(max_examples=300, deadline=None)
@given(backup_sets(), policies)
def test_property_selection(bs, pol):
    sel = select(bs, pol, NOW)
    ids = {b.id for b in bs}
    ordered = newest_first(bs)
    assert set(sel.keep) | set(sel.delete) == ids and not set(sel.keep) & set(sel.delete)
    assert len(sel.delete) == len(set(sel.delete))
    assert ordered[0].id in sel.keep and "newest" in sel.keep[ordered[0].id]
    full = len(bs) if pol["full_count"] == -1 else pol["full_count"]
    assert {b.id for b in ordered[:full]} <= set(sel.keep)
    assert set(sel.keep) == expected_keep(bs, pol)
    assert all(sel.keep.values())
    # Deleted oldest first, by stop LSN.
    lsns = {b.id: b.stop_lsn for b in bs}
    assert [lsns[i] for i in sel.delete] == sorted(lsns[i] for i in sel.delete)


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies)
def test_property_ids_do_not_order(bs, pol):
    """Renaming the backups so that ids sort the other way changes nothing."""
    renamed = [BackupInfo(**{**b.__dict__, "id": f"r{999 - i:03d}"})
               for i, b in enumerate(newest_first(bs)[::-1])]
    back = {r.id: b.id for r, b in zip(renamed, newest_first(bs)[::-1])}
    a, b = select(bs, pol, NOW), select(renamed, pol, NOW)
    assert {back[i]: r for i, r in b.keep.items()} == a.keep
    assert [back[i] for i in b.delete] == a.delete


@settings(max_examples=200, deadline=None)
@given(backup_sets())
def test_property_yearly_forever_keeps_one_per_year(bs):
    sel = select(bs, policy(yearly=-1), NOW)
    years = {b.stop_time.year for b in bs}
    assert len(sel.keep) == len(years)
    for y in years:
        newest = newest_first([b for b in bs if b.stop_time.year == y])[0]
        assert f"yearly {y}" in sel.keep[newest.id]


@settings(max_examples=300, deadline=None)
@given(backup_sets(), policies, st.data())
def test_property_wal_deletion_stays_below_every_kept_start(bs, pol, data):
    segs = {t: set(data.draw(st.lists(st.integers(0, 420), max_size=60))) for t in (1, 2, 3, 4)}
    others = [seg_obj(t, n, data.draw(st.sampled_from([".partial", ".00000028.backup"])))
              for t, n in data.draw(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 420)),
                                             max_size=8, unique=True))]
    archive = ArchiveModel(wal_segment_size=SEG,
                           segments={t: {n: seg_obj(t, n) for n in s} for t, s in segs.items()},
                           other=others, histories={2: [], 3: []})
    sel = select(bs, pol, NOW)
    kept = [b for b in bs if b.id in sel.keep]
    gone = wal_to_delete(archive, kept)
    floor = min(b.start_lsn // SEG for b in kept)
    names = set()
    for obj in gone:
        s = Segment.parse(obj.name[:24])
        assert s.number(SEG) < floor
        for b in kept:
            assert s.number(SEG) * SEG < b.start_lsn // SEG * SEG
        assert not obj.name.endswith(".history")
        names.add(obj.name)
    # ... and everything below the cut goes.
    below = {o.name for t, s in segs.items() for n in s for o in [seg_obj(t, n)] if n < floor}
    below |= {o.name for o in others if Segment.parse(o.name[:24]).number(SEG) < floor}
    assert names == below and len(gone) == len(names)
