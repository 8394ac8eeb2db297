"""Stores: one small interface (base.Store), a module per type declaring itself to the
registry (registry.py), and the way to open one.

A type's client library (paramiko, an S3 client) is imported only when a store of that
type is opened: push runs once per WAL segment and its start-up time matters.
"""

from __future__ import annotations

from walkeeper.stores.registry import StoreConfig, store_type


def open_store(cfg: StoreConfig, keyring=None):
    """keyring: the archive's crypto.Keyring (config.keyring), which readers of the
    store's objects use; None for a plain archive."""
    store = store_type(cfg.type).factory(cfg)
    store.keyring = keyring
    return store


def open_stores(config, only: str | None = None) -> list:
    return [open_store(s, config.keyring) for s in config.stores
            if only is None or s.name == only]
