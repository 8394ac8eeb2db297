"""walkeeper.record builds the named tuples of the push/fetch path without importing
collections; it must behave as collections.namedtuple does wherever walkeeper uses it."""

from __future__ import annotations

import pickle
from collections import namedtuple

import pytest
from hypothesis import given, strategies as st

from walkeeper.record import record
from walkeeper.wal import Segment

Rec = record("Rec", "a b c", defaults=(3,))
Ref = namedtuple("Ref", "a b c", defaults=(3,))


@pytest.mark.parametrize("args,kwargs", [((1, 2, 3), {}), ((1, 2), {}), ((1,), {"b": 2}),
                                         ((), {"c": 9, "a": 1, "b": 2}), ((1, 2), {"c": 0})])
def test_construction_matches_namedtuple(args, kwargs):
    r, ref = Rec(*args, **kwargs), Ref(*args, **kwargs)
    assert tuple(r) == tuple(ref) and (r.a, r.b, r.c) == (ref.a, ref.b, ref.c)
    assert repr(r) == repr(ref).replace("Ref", "Rec")
    assert r._asdict() == ref._asdict()
    assert r._replace(b=7) == ref._replace(b=7) and type(r._replace(b=7)) is Rec
    assert Rec._fields == Ref._fields and Rec._field_defaults == Ref._field_defaults
    assert pickle.loads(pickle.dumps(r)) == r


@pytest.mark.parametrize("args,kwargs", [((), {}), ((1,), {}), ((1, 2, 3, 4), {}),
                                         ((1, 2), {"a": 1}), ((1, 2), {"d": 1}),
                                         ((), {"b": 2, "c": 1}), ((1,), {"c": 1})])
def test_bad_construction_is_a_type_error_as_with_namedtuple(args, kwargs):
    with pytest.raises(TypeError):
        Ref(*args, **kwargs)
    with pytest.raises(TypeError):
        Rec(*args, **kwargs)


def test_bad_definitions_and_replacements_are_refused():
    with pytest.raises(ValueError):
        record("X", "a a")
    with pytest.raises(ValueError):
        record("X", "a _b")
    with pytest.raises(TypeError):
        record("X", "a", defaults=(1, 2))
    with pytest.raises(ValueError):
        Rec(1, 2)._replace(d=1)


@given(st.lists(st.tuples(st.integers(), st.integers(), st.integers()), max_size=20))
def test_equality_order_and_hash_are_the_tuples(rows):
    recs = [Rec(*t) for t in rows]
    assert sorted(recs) == sorted(rows)
    assert {hash(r) for r in recs} == {hash(t) for t in rows}
    assert all(r == t for r, t in zip(recs, rows))


def test_subclass_with_its_own_new_and_methods():
    s = Segment(1, 0, 0x20)
    assert s.name == "000000010000000000000020"
    assert s == (1, 0, 0x20) and s < Segment(1, 0, 0x21) and s.timeline == 1
    assert pickle.loads(pickle.dumps(s)) == s and type(pickle.loads(pickle.dumps(s))) is Segment
    assert type(s).__module__ == "walkeeper.wal"
    with pytest.raises(ValueError):
        Segment(0, 0, 1)
