"""Stores: one small interface (base.Store), a backend per module, a factory.

paramiko is imported only when an SFTP store is configured: push runs once per
WAL segment and its start-up time matters.
"""

from __future__ import annotations

from walkeeper.config import Config, StoreConfig


def open_store(cfg: StoreConfig):
    if cfg.type == "local":
        from walkeeper.stores.local import LocalStore

        return LocalStore(cfg.name, cfg.path)
    from walkeeper.stores.sftp import SftpStore

    return SftpStore(cfg)


def open_stores(config: Config, only: str | None = None) -> list:
    return [open_store(s) for s in config.stores if only is None or s.name == only]
