"""The one rule for times without an offset.

A time the operator types (`recover --target-time`) without an
offset is this machine's local wall time: that is what a person at 3 a.m. reads off
a clock (catalog/planner.py parses it, refusing a wall time a DST change skipped).
Everything walkeeper writes carries an offset; a stored time without one (metadata
written by hand or by an old version) is UTC, so that every machine reads it alike.
"""

from __future__ import annotations

from datetime import datetime, timezone


def stored(dt: datetime) -> datetime:
    """A stored time as an aware datetime: naive means UTC."""
    return dt if dt.utcoffset() is not None else dt.replace(tzinfo=timezone.utc)


def parse_stored(text) -> datetime | None:
    """An ISO 8601 time from a record or a store, aware (naive: UTC); None if unreadable."""
    if not text:
        return None
    try:
        return stored(datetime.fromisoformat(str(text)))
    except ValueError:
        return None
