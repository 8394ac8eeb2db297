"""The local store type: its settings and how to open one. The driver (a directory
on a local or mounted file system) lives in local_client.py and is imported only
when a store is opened: config loading reads this declaration on every push and
fetch."""

from __future__ import annotations

import os

from walkeeper.errors import ConfigError
from walkeeper.settings import Setting
from walkeeper.stores.registry import StoreType


def _open(cfg):
    from walkeeper.stores.local_client import LocalStore

    return LocalStore(cfg.name, cfg.path)


def _validate(values: dict, where: str) -> None:
    if not os.path.isabs(os.path.expanduser(values["path"])):
        raise ConfigError(f"{where}.path: must be an absolute path")


STORE_TYPE = StoreType(
    name="local",
    factory=_open,
    settings=(Setting("store.path", str, None, "local: directory of the store (absolute)"),),
    required=("path",),
    location=lambda cfg: os.path.abspath(os.path.expanduser(cfg.path)),
    shared=True,
    fix=lambda cfg: f"check that {cfg.path} exists (`walkeeper check` creates it on first-time "
                    f"setup) and is writable by this user",
    validate=_validate,
)
