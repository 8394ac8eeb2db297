"""Stores: one small interface (base.Store), a backend per module, a factory.

paramiko is imported only when an SFTP store is configured: push runs once per
WAL segment and its start-up time matters.
"""

from __future__ import annotations

from walkeeper.config import Config, StoreConfig


def open_store(cfg: StoreConfig, keyring=None):
    """keyring: the archive's crypto.Keyring (config.keyring), which readers of the
    store's objects use; None for a plain archive."""
    if cfg.type == "local":
        from walkeeper.stores.local import LocalStore

        store = LocalStore(cfg.name, cfg.path)
    else:
        from walkeeper.stores.sftp import SftpStore

        store = SftpStore(cfg)
    store.keyring = keyring
    return store


def open_stores(config: Config, only: str | None = None) -> list:
    return [open_store(s, config.keyring) for s in config.stores
            if only is None or s.name == only]
