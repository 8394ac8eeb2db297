"""Named tuples for the modules on push's and fetch's path, without `collections`.

PostgreSQL starts walkeeper once per WAL segment, and `import collections` costs each
start ~1.5 ms (about a tenth of a fetch served from the prefetch spool), plus ~60 us
per collections.namedtuple class. record() builds the same kind of class: a tuple
subclass with named fields (C accessors from the built-in _collections module),
positional or keyword construction, defaults for the last fields, _fields,
_replace() and _asdict(). Tuple equality, ordering, hashing, unpacking and pickling
are the tuple's own, as with namedtuple.
"""

from __future__ import annotations

import sys

try:
    from _collections import _tuplegetter as _getter     # what namedtuple uses
except ImportError:  # another interpreter
    def _getter(index: int, doc: str):
        return property(lambda self: self[index], doc=doc)

_MISSING = object()


def record(typename: str, field_names: str, *, defaults: tuple = ()) -> type:
    fields = tuple(field_names.split())
    if len(set(fields)) != len(fields) or not all(f.isidentifier() and not f.startswith("_")
                                                    for f in fields):
        raise ValueError(f"bad field names for {typename}: {field_names!r}")
    n = len(fields)
    defaults = tuple(defaults)
    if len(defaults) > n:
        raise TypeError(f"{typename}: more defaults than fields")
    first_default = n - len(defaults)
    position = {f: i for i, f in enumerate(fields)}
    fill = (_MISSING,) * first_default + defaults    # what a field not given holds

    # Positional construction (WalName, Segment, PageHeader on every call) returns
    # at once; keywords (settings tables, built at import on every push and fetch)
    # take one pass over the keywords.
    def __new__(cls, *args, **kwargs):
        k = len(args)
        if k > n:
            raise TypeError(f"{typename}() takes {n} arguments, {k} given")
        if not kwargs:
            if k == n:
                return tuple.__new__(cls, args)
            if k >= first_default:
                return tuple.__new__(cls, args + fill[k:])
            raise TypeError(f"{typename}() missing required argument {fields[k]!r}")
        values = list(args)
        values += fill[k:]
        for key, value in kwargs.items():
            i = position.get(key)
            if i is None:
                raise TypeError(f"{typename}() got an unexpected keyword argument {key!r}")
            if i < k:
                raise TypeError(f"{typename}() got multiple values for argument {key!r}")
            values[i] = value
        for i in range(k, first_default):
            if values[i] is _MISSING:
                raise TypeError(f"{typename}() missing required argument {fields[i]!r}")
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={v!r}" for f, v in zip(fields, self))
        return f"{type(self).__name__}({inner})"

    def _replace(self, **changes):
        unknown = set(changes) - set(fields)
        if unknown:
            raise ValueError(f"got unexpected field names: {sorted(unknown)!r}")
        return tuple.__new__(type(self), [changes.get(f, v) for f, v in zip(fields, self)])

    def _asdict(self) -> dict:
        return dict(zip(fields, self))

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    namespace = {
        "__slots__": (),
        "__doc__": f"{typename}({', '.join(fields)})",
        "__module__": sys._getframe(1).f_globals.get("__name__", "__main__"),
        "_fields": fields,
        "_field_defaults": dict(zip(fields[first_default:], defaults)),
        "__match_args__": fields,
        "__new__": __new__,
        "__repr__": __repr__,
        "__getnewargs__": __getnewargs__,
        "_replace": _replace,
        "_asdict": _asdict,
    }
    for i, f in enumerate(fields):
        namespace[f] = _getter(i, f"Alias for field number {i}")
    return type(typename, (tuple,), namespace)
