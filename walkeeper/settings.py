"""One setting, declared once: the row type of walkeeper's settings tables (config.py for
the file's sections, each store type's module for its [[stores]] keys), and the check of
one value against its row. Ground: no walkeeper imports but errors and record.
"""

from __future__ import annotations

from walkeeper.errors import ConfigError
from walkeeper.record import record

# Named tuples, not dataclasses: push reads the configuration once per WAL segment
# and importing dataclasses costs it ~8 ms of start-up.
#   key: dotted section.name (store.name for [[stores]] keys); kind: str, int or bool
Setting = record("Setting", "key kind default doc env choices minimum maximum",
                 defaults=((), (), None, None))

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def _range(s: Setting) -> str:
    if s.maximum is None:
        return f"must be >= {s.minimum}"
    if s.minimum is None:
        return f"must be <= {s.maximum}"
    return f"must be between {s.minimum} and {s.maximum}"


def coerce(s: Setting, value: object, where: str) -> object:
    """value checked against s (strings from the environment are converted); one clear
    ConfigError naming `where` otherwise."""
    if s.kind is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            value = value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif s.kind is int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if s.minimum is not None and value < s.minimum or s.maximum is not None and value > s.maximum:
            raise ConfigError(f"{where}: {value} is out of range ({_range(s)})")
    elif s.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    if s.choices and value not in s.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, s.choices))}")
    return value
