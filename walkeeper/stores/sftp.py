"""The SFTP store type: its settings and how to open one. The client (paramiko) lives
in sftp_client.py and is imported only when a connection is opened: config loading
reads this declaration on every push and fetch."""

from __future__ import annotations

from walkeeper.settings import Setting
from walkeeper.stores.registry import StoreType


def _open(cfg):
    from walkeeper.stores.sftp_client import SftpStore

    return SftpStore(cfg)


def _location(cfg) -> str:
    return f"{cfg.user}@{cfg.host}:{cfg.port}{cfg.directory.rstrip('/') or '/'}"


STORE_TYPE = StoreType(
    name="sftp",
    factory=_open,
    settings=(
        Setting("store.host", str, None, "sftp: server host name"),
        Setting("store.port", int, 22, "sftp: server port", minimum=1, maximum=65535),
        Setting("store.user", str, None, "sftp: user name"),
        Setting("store.key_file", str, "", "sftp: private key file (0600)"),
        Setting("store.key_passphrase_env", str, "", "sftp: variable holding the key's passphrase"),
        Setting("store.password_env", str, "", "sftp: variable holding the password"),
        Setting("store.directory", str, "/backups", "sftp: remote directory of the store"),
        Setting("store.known_hosts", str, "~/.ssh/known_hosts", "sftp: known_hosts file; "
                "an unknown host key is refused"),
        Setting("store.timeout", int, 30, "sftp: seconds for connect and for each I/O", minimum=1),
        Setting("store.retries", int, 3, "sftp: attempts on transient errors, with backoff",
                minimum=1, maximum=10),
    ),
    required=("host", "user"),
    env=lambda cfg: (cfg.password_env, cfg.key_passphrase_env),
    location=_location,
    shared=False,
    fix=lambda cfg: (f"check that the SFTP server {cfg.host}:{cfg.port} is up and reachable, "
                     f"that {cfg.user} can log in, and that {cfg.directory} is writable"),
)
