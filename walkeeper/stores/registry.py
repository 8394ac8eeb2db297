"""Store types: what each kind of store declares, and where config and the rest of
walkeeper find it.

A store type lives in its own module, walkeeper/stores/<type>.py, which declares
`STORE_TYPE = StoreType(...)` at import time without importing its client library
(config loading reads the declaration on every push and fetch):

    name      the `type = "..."` of a [[stores]] table
    factory   StoreConfig -> an object implementing stores.base.Store (the client
              library is imported there, at connection time)
    settings  the type's [[stores]] keys: config.Setting rows ("store.<key>")
    required  keys that must be given
    env       StoreConfig -> names of the environment variables the store reads
              (secrets come from there): `check` reports unset ones, and a
              restore_command must see them
    location  StoreConfig -> where the store is, for messages ("/var/backups", ...)
    shared    True when one connection serves several threads at once (a local
              directory); False when each thread needs its own (an SFTP session)
    fix       StoreConfig -> what an operator should check when the store fails
    validate  (StoreConfig-like dict, where) -> None, raising ConfigError: checks that
              go beyond one setting (a local path must be absolute)

The built-in types are found by module name; tests and extensions add theirs with
register().
"""

from __future__ import annotations

from walkeeper.errors import ConfigError
from walkeeper.record import record

StoreType = record("StoreType", "name factory settings required env location shared fix validate",
                   defaults=((), (), None, None, True, None, None))

_TYPES: dict = {}
BUILTIN = ("local", "sftp", "s3")    # each a module walkeeper/stores/<name>.py


def register(store_type) -> None:
    _TYPES[store_type.name] = store_type


def store_type(name: str):
    """The StoreType called `name`; ConfigError (exit 3) for an unknown one."""
    t = _TYPES.get(name)
    if t is not None:
        return t
    if name in BUILTIN:
        import importlib

        try:
            module = importlib.import_module(f"walkeeper.stores.{name}")
        except ImportError as exc:
            raise ConfigError(f"store type {name!r} is not available: {exc}") from None
        t = _TYPES[name] = module.STORE_TYPE
        return t
    raise ConfigError(f"unknown store type {name!r}; known: {', '.join(known())}")


def known() -> list[str]:
    """Every type that can be configured (for messages and the docs)."""
    names = list(BUILTIN)
    names += [n for n in _TYPES if n not in names]
    return names


class StoreConfig:
    """One validated [[stores]] table: its name, its type, and the type's settings as
    attributes (cfg.path, cfg.host...). A setting left out reads as its declared default."""

    __slots__ = ("name", "type", "values")

    def __init__(self, name: str, type: str, **values):
        self.name, self.type, self.values = name, type, values

    def __getattr__(self, key: str):
        values = object.__getattribute__(self, "values")
        if key in values:
            return values[key]
        for s in store_type(object.__getattribute__(self, "type")).settings:
            if s.key == "store." + key:
                return s.default
        raise AttributeError(f"a {self.type} store has no setting {key!r}")

    def _asdict(self) -> dict:
        return {"name": self.name, "type": self.type, **self.values}

    def get(self, key: str, default=None):
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def _replace(self, **changes) -> StoreConfig:
        values = dict(self.values)
        name, type_ = changes.pop("name", self.name), changes.pop("type", self.type)
        values.update(changes)
        return StoreConfig(name, type_, **values)

    def __eq__(self, other) -> bool:
        return isinstance(other, StoreConfig) and (self.name, self.type, self.values) == \
            (other.name, other.type, other.values)

    def __repr__(self) -> str:
        return f"StoreConfig({self.name!r}, {self.type!r}, {self.values!r})"


def location(cfg: StoreConfig) -> str:
    return store_type(cfg.type).location(cfg)


def fix(cfg: StoreConfig) -> str:
    t = store_type(cfg.type)
    return t.fix(cfg) if t.fix else f"check store {cfg.name!r} ({t.location(cfg)})"


def env_variables(cfg: StoreConfig) -> tuple:
    t = store_type(cfg.type)
    return tuple(v for v in (t.env(cfg) if t.env else ()) if v)


def retries(cfg: StoreConfig) -> int:
    """Attempts on a transient error: the type's `retries` setting, 1 where it has none."""
    return cfg.get("retries", 1)
