"""System checks (`manage.py check`): what would make the next backup fail or go to the
wrong place, found before it runs. No network is touched.

    walkeeper.E001  BACKUP_SFTP_ENABLED with no BACKUP_SFTP_HOST
    walkeeper.E002  BACKUP_DIR (or a local store's path) is not an absolute, writable
                    directory
    walkeeper.E003  the SFTP host has no entry in its known_hosts file (the connection
                    would be refused: an unknown host key is never learnt)
    walkeeper.E004  an unknown BACKUP_* / WALKEEPER* setting, or an unknown key in WALKEEPER
    walkeeper.E005  any other configuration error (the line `walkeeper` would print)
    walkeeper.W001  DATABASES["default"] is not PostgreSQL
"""

from __future__ import annotations

import difflib
import os

from django.core import checks

from walkeeper.contrib.django import conf
from walkeeper.errors import ConfigError


def _writable_dir(path: str) -> str | None:
    """Why `path` cannot hold a store (None: it can, or can be created)."""
    if not os.path.isabs(path):
        return "is not an absolute path"
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return (f"is not writable by this user (uid {os.getuid()})" if probe == path
                else f"does not exist and {probe} is not writable by this user")
    return None


def _known_host(path: str, host: str, port: int) -> str | None:
    """Why `host` cannot be verified with known_hosts `path` (None: it can)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        return f"known_hosts file {path} does not exist"
    import paramiko

    try:
        keys = paramiko.HostKeys(path)
    except (OSError, paramiko.SSHException) as exc:
        return f"known_hosts file {path} cannot be read: {exc}"
    name = host if port == 22 else f"[{host}]:{port}"
    if keys.lookup(name) is None:
        return f"{path} has no entry for {name}"
    return None


@checks.register("walkeeper")
def check_settings(app_configs=None, **kwargs) -> list:
    out: list = []
    for name in conf.unknown_names():
        close = difflib.get_close_matches(name, conf.KNOWN, n=1)
        out.append(checks.Error(
            f"unknown setting {name}",
            hint=f"did you mean {close[0]}?" if close else "see docs/django.md for the settings",
            id="walkeeper.E004"))
    sftp_on = conf.enabled(conf.environment().get("BACKUP_SFTP_ENABLED", ""))
    if sftp_on and not conf.environment().get("BACKUP_SFTP_HOST"):
        out.append(checks.Error("BACKUP_SFTP_ENABLED is on but BACKUP_SFTP_HOST is not set",
                                hint="set BACKUP_SFTP_HOST (and BACKUP_SFTP_USER), or turn "
                                     "BACKUP_SFTP_ENABLED off", id="walkeeper.E001"))
        return out
    backup_dir = conf.environment().get("BACKUP_DIR")
    if backup_dir:
        why = _writable_dir(backup_dir)
        if why:
            out.append(checks.Error(f"BACKUP_DIR {backup_dir} {why}",
                                    hint="create it, owned by the user running the backups "
                                         "(mode 0700)", id="walkeeper.E002"))
            return out
    try:
        cfg = conf.load(alias=None)
    except ConfigError as exc:
        unknown = "unknown setting" in exc.message
        out.append(checks.Error(exc.line(), id="walkeeper.E004" if unknown else "walkeeper.E005"))
        return out
    for store in cfg.stores:
        if store.type == "local" and store.path != backup_dir:
            why = _writable_dir(store.path)
            if why:
                out.append(checks.Error(f"store {store.name!r}: {store.path} {why}",
                                        id="walkeeper.E002"))
        elif store.type == "sftp":
            why = _known_host(store.known_hosts, store.host, store.port)
            if why:
                out.append(checks.Error(
                    f"store {store.name!r}: {why}",
                    hint=f"add the server's host key: ssh-keyscan -p {store.port} {store.host} "
                         f">> {store.known_hosts} (then check its fingerprint)",
                    id="walkeeper.E003"))
    try:
        conf.database()
    except ConfigError as exc:
        out.append(checks.Warning(exc.line(), id="walkeeper.W001"))
    return out
