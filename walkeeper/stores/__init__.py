"""Stores: one small interface (base.Store), a module per type declaring itself to the
registry (registry.py), and the way to open one.

A type's client library (paramiko, an S3 client) is imported only when a store of that
type is opened: push runs once per WAL segment and its start-up time matters.
"""

from __future__ import annotations

from walkeeper.stores.registry import StoreConfig, store_type


class ArchiveStore:
    """One store as an archive uses it: the store (a driver that only moves bytes) and
    the archive's keyring (config.keyring; None for a plain archive), which whoever
    decodes the store's objects needs. Every store method is the driver's."""

    __slots__ = ("store", "keyring")

    def __init__(self, store, keyring=None):
        self.store = store
        self.keyring = keyring

    def __getattr__(self, name):
        return getattr(self.store, name)

    def __repr__(self):
        return f"ArchiveStore({self.store!r})"


def archive_store(store, keyring=None) -> ArchiveStore:
    """A store opened by hand (tests, tools) as an archive handle."""
    return store if isinstance(store, ArchiveStore) else ArchiveStore(store, keyring)


def open_store(cfg: StoreConfig, keyring=None) -> ArchiveStore:
    """keyring: the archive's crypto.Keyring (config.keyring), which readers of the
    store's objects use; None for a plain archive."""
    return ArchiveStore(store_type(cfg.type).factory(cfg), keyring)


def open_stores(config, only: str | None = None) -> list:
    return [open_store(s, config.keyring) for s in config.stores
            if only is None or s.name == only]
