"""The one rule for times without an offset (walkeeper/times.py), and where it is used:
a stored time without one is UTC for status, the planner and retention alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from walkeeper.catalog import retention
from walkeeper.reports.status import parse_time
from walkeeper.times import parse_stored, stored


def test_a_naive_stored_time_is_utc_everywhere():
    naive = datetime(2026, 12, 3, 8, 0)
    assert stored(naive) == naive.replace(tzinfo=timezone.utc)
    assert parse_stored("2026-12-03T08:00:00") == naive.replace(tzinfo=timezone.utc)
    assert parse_time("2026-12-03T08:00:00") == naive.replace(tzinfo=timezone.utc)
    assert retention.utc(naive) == naive.replace(tzinfo=timezone.utc)


def test_an_aware_stored_time_keeps_its_offset():
    plus_one = timezone(timedelta(hours=1))
    t = datetime(2026, 12, 3, 9, 0, tzinfo=plus_one)
    assert stored(t) is t
    assert parse_stored(t.isoformat()) == t
    assert retention.utc(t) == datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)


def test_unreadable_stored_times_are_none():
    assert parse_stored(None) is None and parse_stored("") is None
    assert parse_stored("yesterday") is None
