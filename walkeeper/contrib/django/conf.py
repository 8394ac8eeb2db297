"""walkeeper's configuration from django.conf.settings.

The runbook's BACKUP_* settings are read exactly as the environment variables of the
same names are (a setting wins over the variable); WALKEEPER (a dict shaped like the
TOML file) or WALKEEPER_CONFIG (a path) gives everything else; the database connection
always comes from DATABASES[alias]. The passwords stay out of every command line:
PostgreSQL's goes to pg_dump/psql as PGPASSWORD, the SFTP one through the process
environment (BACKUP_SFTP_PASSWORD), never argv.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from walkeeper import config as config_mod
from walkeeper import pg
from walkeeper.errors import ConfigError

# name -> default (None: unset). Only these BACKUP_* / WALKEEPER* names are known.
BACKUP_SETTINGS = {
    "BACKUP_DIR": None,
    "BACKUP_RETENTION_COUNT": 10,
    "BACKUP_SFTP_ENABLED": False,
    "BACKUP_SFTP_HOST": None,
    "BACKUP_SFTP_PORT": 22,
    "BACKUP_SFTP_USER": None,
    "BACKUP_SFTP_PASSWORD": None,
    "BACKUP_SFTP_DIRECTORY": "/backups",
    "BACKUP_SFTP_KEY_FILE": None,
    "BACKUP_SFTP_KNOWN_HOSTS": "~/.ssh/known_hosts",
}
WALKEEPER_SETTINGS = {
    "WALKEEPER": None,                         # dict shaped like walkeeper.toml
    "WALKEEPER_CONFIG": None,                  # path of a walkeeper.toml
    "WALKEEPER_DASHBOARD_PERMISSION": None,    # "app_label.codename" granting the dashboard
}
KNOWN = {**BACKUP_SETTINGS, **WALKEEPER_SETTINGS}
PREFIXES = ("BACKUP_", "WALKEEPER")

# Keys of DATABASES[...]["OPTIONS"] that are Django's or psycopg's, not libpq's.
_NOT_LIBPQ = {"isolation_level", "pool", "server_side_binding", "assume_role",
              "cursor_factory", "prepare_threshold", "context"}


def get(name: str):
    """A known setting's value, its default when unset."""
    return getattr(settings, name, KNOWN[name])


def unknown_names() -> list[str]:
    """BACKUP_* and WALKEEPER* settings walkeeper does not know (typos, mostly)."""
    return sorted(n for n in dir(settings) if n.startswith(PREFIXES) and n.isupper()
                  and n not in KNOWN)


def enabled(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _as_env(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def environment(sftp: bool = False) -> dict[str, str]:
    """os.environ overlaid with the BACKUP_* settings given in settings.py."""
    env = dict(os.environ)
    for name in BACKUP_SETTINGS:
        if hasattr(settings, name) and getattr(settings, name) is not None:
            env[name] = _as_env(getattr(settings, name))
    if sftp:
        env["BACKUP_SFTP_ENABLED"] = "true"
    return env


def database(alias: str = DEFAULT_DB_ALIAS) -> dict:
    """DATABASES[alias], checked to be PostgreSQL; ConfigError (exit 3) otherwise."""
    dbs = getattr(settings, "DATABASES", {}) or {}
    if alias not in dbs:
        raise ConfigError(f"--database {alias}: no such alias in DATABASES; known: "
                          + (", ".join(sorted(dbs)) or "none"))
    db = dbs[alias]
    engine = db.get("ENGINE", "")
    if "postgresql" not in engine and "postgis" not in engine:
        raise ConfigError(f"DATABASES[{alias!r}] uses {engine or 'no ENGINE'}; walkeeper backs "
                          f"up PostgreSQL only (django.db.backends.postgresql)")
    return db


def database_name(alias: str = DEFAULT_DB_ALIAS) -> str:
    db = database(alias)
    if db.get("NAME"):
        return str(db["NAME"])
    return pg.default_dbname(conninfo(alias))


def conninfo(alias: str = DEFAULT_DB_ALIAS) -> str:
    """The libpq connection string of DATABASES[alias] (HOST, PORT, NAME, USER, PASSWORD,
    and OPTIONS' libpq keys such as sslmode or service)."""
    db = database(alias)
    params: dict[str, str] = {}
    for key, name in (("HOST", "host"), ("PORT", "port"), ("NAME", "dbname"), ("USER", "user"),
                      ("PASSWORD", "password")):
        value = db.get(key)
        if value not in (None, ""):
            params[name] = str(value)
    for key, value in (db.get("OPTIONS") or {}).items():
        if key in _NOT_LIBPQ or isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        params[key] = str(value)
    return pg.make_conninfo(params)


def _plain(value):
    """WALKEEPER with pathlib paths (BASE_DIR / "state") turned into strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def load(alias: str | None = DEFAULT_DB_ALIAS, sftp: bool = False):
    """The walkeeper Config for this project: the BACKUP_* settings, WALKEEPER or
    WALKEEPER_CONFIG, and DATABASES[alias] as postgres.conninfo (alias None: leave the
    connection as configured). sftp: the SFTP store even if BACKUP_SFTP_ENABLED is off
    (create_backup --upload-to-sftp)."""
    env = environment(sftp)
    if sftp and not enabled(environment().get("BACKUP_SFTP_ENABLED", "")):
        missing = [v for v in ("BACKUP_SFTP_HOST", "BACKUP_SFTP_USER") if not env.get(v)]
        if missing:
            raise ConfigError(f"--upload-to-sftp: no SFTP store is configured; set "
                              f"{' and '.join(missing)}")
    data = get("WALKEEPER")
    path = get("WALKEEPER_CONFIG")
    if data is not None and path:
        raise ConfigError("set one of WALKEEPER (a dict) and WALKEEPER_CONFIG (a path), not both")
    if data is not None and not isinstance(data, dict):
        raise ConfigError("WALKEEPER must be a dict shaped like walkeeper.toml")
    password = get("BACKUP_SFTP_PASSWORD")
    if password:
        # The SFTP client reads the password from the process environment when it
        # connects: it never appears on a command line or in the config.
        os.environ["BACKUP_SFTP_PASSWORD"] = str(password)
    try:
        cfg = config_mod.load(os.fspath(path) if path else None, env,
                              _plain(data) if data is not None else None)
    except ConfigError as exc:
        raise ConfigError(exc.message.replace("configuration: ", "WALKEEPER: ", 1),
                          hint=exc.hint) from None
    if alias is not None:
        cfg.values["postgres.conninfo"] = conninfo(alias)
    if sftp and not any(s.type == "sftp" for s in cfg.stores):
        raise ConfigError("--upload-to-sftp: no SFTP store is configured; set BACKUP_SFTP_HOST "
                          "and BACKUP_SFTP_USER (or add an sftp store to WALKEEPER)")
    return cfg
