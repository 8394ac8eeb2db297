"""Configuration: one table of settings drives the TOML file, the environment,
validation and the reference in docs/configuration.md (`python -m walkeeper.config`).

Order of precedence for each key: the config file, then the environment, then the
default. With no config file at all walkeeper runs from the environment alone, so
the Django-era `BACKUP_DIR=/backups walkeeper push %p %f` works.
"""

from __future__ import annotations

import os

from walkeeper.errors import ConfigError
from walkeeper.settings import Setting, coerce as _coerce
from walkeeper.stores.registry import StoreConfig, known, store_type

DEFAULT_PATH = "/etc/walkeeper/walkeeper.toml"


SETTINGS: tuple[Setting, ...] = (
    Setting("cluster", str, "default", "namespace of this cluster inside each store",
            env=("WALKEEPER_CLUSTER",)),
    Setting("state_dir", str, "", "failure log, completion records, spool; "
            "default $XDG_STATE_HOME/walkeeper (~/.local/state/walkeeper)",
            env=("WALKEEPER_STATE_DIR",)),
    Setting("postgres.pgdata", str, "", "the cluster's data directory",
            env=("WALKEEPER_PGDATA", "PGDATA")),
    Setting("postgres.conninfo", str, "", "libpq connection string; empty: libpq's PG* variables"),
    Setting("postgres.bindir", str, "", "where pg_basebackup and friends live; empty: PATH"),
    Setting("compression.algorithm", str, "zstd", "codec of stored objects",
            choices=("zstd", "none")),
    Setting("compression.level", int, 3, "zstd level", minimum=1, maximum=22),
    Setting("retention.full_count", int, 10, "newest backups always kept",
            env=("BACKUP_RETENTION_COUNT",), minimum=1),
    Setting("retention.daily", int, 7, "daily backups kept (-1: all)", minimum=-1),
    Setting("retention.weekly", int, 4, "weekly backups kept (-1: all)", minimum=-1),
    Setting("retention.monthly", int, 12, "monthly backups kept (-1: all)", minimum=-1),
    Setting("retention.yearly", int, -1, "yearly backups kept (-1: all)", minimum=-1),
    Setting("fetch.on_error", str, "abort", "a corrupt or unreadable archive: abort recovery "
            "(exit 255) or report the file missing (exit 1)", choices=("abort", "missing")),
    Setting("push.parallel", int, 2, "workers pushing in parallel: the segment asked for plus "
            "the next ones already ready in pg_wal/archive_status (read-ahead); 1 disables "
            "read-ahead", minimum=1, maximum=64),
    Setting("fetch.prefetch", int, 8, "segments of the same timeline fetched ahead into the "
            "spool in state_dir while recovery replays; 0 disables prefetch", minimum=0,
            maximum=256),
    Setting("fetch.prefetch_idle", int, 60, "seconds the prefetcher waits for recovery's next "
            "request before it empties the spool and ends; a replay pause longer than this "
            "(a slow segment, a delayed standby) fetches the spooled segments again",
            env=("WALKEEPER_PREFETCH_IDLE",), minimum=1, maximum=86400),
    Setting("fetch.spool_max_bytes", int, 1 << 30, "upper bound of the prefetch spool, in "
            "bytes", minimum=0),
    Setting("backup.compress", str, "auto", "where a base backup is compressed: server "
            "(PostgreSQL 15+ compresses with zstd as it reads, pg_basebackup "
            "--compress=server-zstd; pg_basebackup then writes no backup_manifest), client "
            "(walkeeper compresses pg_basebackup's tar, backup_manifest included), auto "
            "(server on a PostgreSQL 15+ primary when compression.algorithm is zstd, client "
            "otherwise)", choices=("auto", "client", "server")),
    Setting("backup.workers", int, 2, "zstd threads compressing a base backup (on the "
            "server: pg_basebackup's workers=N); 0: compression in one thread",
            minimum=0, maximum=64),
    Setting("drill.sql", str, "", "extra SQL the restore drill runs on the restored copy"),
    Setting("encryption.passphrase_env", str, "", "variable holding the passphrase every "
            "object is encrypted with (stretched with scrypt); see docs/encryption.md"),
    Setting("encryption.key_file", str, "", "file of at least 32 random bytes (mode 0600) to "
            "encrypt with instead of a passphrase"),
)

# Keys every [[stores]] table has; each store type declares the rest (stores/<type>.py).
STORE_SETTINGS: tuple[Setting, ...] = (
    Setting("store.name", str, None, "unique name of the store"),
    Setting("store.type", str, None, "kind of store: local, sftp, s3 (one section each below)"),
)

# The variables that configure walkeeper without a file (besides SETTINGS' own env):
# recover hands the non-secret ones to the restore_command it writes.
ENV_STORE_VARIABLES = ("BACKUP_DIR", "BACKUP_SFTP_ENABLED", "BACKUP_SFTP_HOST",
                       "BACKUP_SFTP_PORT", "BACKUP_SFTP_USER", "BACKUP_SFTP_DIRECTORY",
                       "BACKUP_SFTP_KEY_FILE", "BACKUP_SFTP_KNOWN_HOSTS")

_BY_KEY = {s.key: s for s in SETTINGS}
_SECTIONS = {k.split(".")[0] for k in _BY_KEY if "." in k}
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _valid_name(name: str) -> bool:
    """A store or cluster name: letters, digits, '_', '.', '-'; starting with a letter or
    digit; at most 64 characters (string methods: `re` costs push ~2 ms of start-up)."""
    return (0 < len(name) <= 64 and all(c in _NAME_CHARS for c in name)
            and name[0] not in "_.-")


class Config:
    def __init__(self, path: str | None, values: dict, stores: list, env=None):
        self.path = path          # absolute path of the file read; None: environment only
        self.values = values
        self.stores = stores
        self.env = os.environ if env is None else env
        self._keyring = None

    def __getitem__(self, key: str):
        return self.values[key]

    @property
    def cluster(self) -> str:
        return self.values["cluster"]

    @property
    def state_dir(self) -> str:
        v = self.values["state_dir"]
        if v:
            return os.path.expanduser(v)
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return os.path.join(base, "walkeeper")

    @property
    def encrypted(self) -> bool:
        return bool(self.values["encryption.passphrase_env"] or self.values["encryption.key_file"])

    @property
    def keyring(self):
        """The archive's crypto.Keyring, or None when [encryption] is absent. The secret
        is read on first use, not here."""
        if not self.encrypted:
            return None
        if self._keyring is None:
            from walkeeper.format.crypto import Keyring

            self._keyring = Keyring(self.values["encryption.passphrase_env"],
                                    self.values["encryption.key_file"], self.env,
                                    os.path.join(self.state_dir, "keys"))
        return self._keyring


def _where(path: str | None, key: str) -> str:
    return f"config {path}: {key}" if path else f"configuration: {key}"


def _flatten(data: dict, path: str | None) -> dict:
    flat: dict = {}
    for k, v in data.items():
        if k == "stores":
            continue
        if isinstance(v, dict) and k in _SECTIONS:
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[k] = v
    for k in flat:
        if k not in _BY_KEY:
            raise ConfigError(f"{_where(path, k)}: unknown setting; see docs/configuration.md")
    return flat


def _store_from(raw: dict, index: int, path: str | None) -> StoreConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(path, f'stores[{index}]')}: expected a table ([[stores]])")
    where = _where(path, f"stores[{index}]")
    for k in ("name", "type"):
        if not raw.get(k) or not isinstance(raw[k], str):
            raise ConfigError(f"{where}.{k}: missing; every store needs a name and a type "
                              f"({', '.join(known())})")
    if not _valid_name(raw["name"]):
        raise ConfigError(f"{where}.name: {raw['name']!r} must be letters, digits, '.', '_' "
                          f"or '-'")
    try:
        t = store_type(raw["type"])
    except ConfigError as exc:
        raise ConfigError(f"{where}.type: {exc}") from None
    rows = {s.key.split(".", 1)[1]: s for s in t.settings}
    out: dict = {}
    for k, v in raw.items():
        if k in ("name", "type"):
            continue
        s = rows.get(k)
        if s is None:
            raise ConfigError(f"{where}.{k}: unknown setting for a {t.name} store; see "
                              f"docs/configuration.md")
        out[k] = _coerce(s, v, f"{where}.{k}")
    for k in t.required:
        if not out.get(k):
            raise ConfigError(f"{where}.{k}: missing for a {t.name} store")
    if t.validate:
        t.validate(out, where)
    return StoreConfig(raw["name"], t.name, **out)


def _env_stores(env: dict[str, str]) -> list[StoreConfig]:
    stores = []
    if env.get("BACKUP_DIR"):
        d = env["BACKUP_DIR"]
        if not os.path.isabs(d):
            raise ConfigError(f"BACKUP_DIR={d!r}: must be an absolute path")
        stores.append(StoreConfig("local", "local", path=d))
    enabled = _coerce(Setting("BACKUP_SFTP_ENABLED", bool, False, ""),
                      env.get("BACKUP_SFTP_ENABLED", ""), "environment BACKUP_SFTP_ENABLED")
    if enabled:
        missing = [v for v in ("BACKUP_SFTP_HOST", "BACKUP_SFTP_USER") if not env.get(v)]
        if missing:
            raise ConfigError(f"BACKUP_SFTP_ENABLED is set but {', '.join(missing)} is not")
        where = "BACKUP_SFTP_PORT"
        port_row = next(s for s in store_type("sftp").settings if s.key == "store.port")
        port = _coerce(port_row, env.get("BACKUP_SFTP_PORT", "22"), where)
        stores.append(StoreConfig(
            "sftp", "sftp", host=env["BACKUP_SFTP_HOST"], port=port,
            user=env["BACKUP_SFTP_USER"],
            password_env="BACKUP_SFTP_PASSWORD" if env.get("BACKUP_SFTP_PASSWORD") else "",
            key_file=env.get("BACKUP_SFTP_KEY_FILE", ""),
            directory=env.get("BACKUP_SFTP_DIRECTORY", "/backups"),
            known_hosts=env.get("BACKUP_SFTP_KNOWN_HOSTS", "~/.ssh/known_hosts")))
    if env.get("BACKUP_S3_BUCKET"):
        keys = bool(env.get("BACKUP_S3_ACCESS_KEY") or env.get("BACKUP_S3_SECRET_KEY"))
        values = dict(
            bucket=env["BACKUP_S3_BUCKET"], endpoint=env.get("BACKUP_S3_ENDPOINT", ""),
            region=env.get("BACKUP_S3_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            prefix=env.get("BACKUP_S3_PREFIX", ""),
            access_key_env="BACKUP_S3_ACCESS_KEY" if keys else "",
            secret_key_env="BACKUP_S3_SECRET_KEY" if keys else "",
            ca_file=env.get("BACKUP_S3_CA_FILE", ""))
        t = store_type("s3")
        rows = {r.key.split(".", 1)[1]: r for r in t.settings}
        if env.get("BACKUP_S3_ADDRESSING"):
            values["addressing"] = _coerce(rows["addressing"], env["BACKUP_S3_ADDRESSING"],
                                           "environment BACKUP_S3_ADDRESSING")
        t.validate(values, "environment BACKUP_S3_*")
        stores.append(StoreConfig("s3", "s3", **values))
    return stores


def _read_toml(path: str, env: dict[str, str]) -> dict:
    """The parsed config file, through a cache of the parse in ~/.cache/walkeeper.

    push and fetch run once per WAL segment and read the same file every time;
    importing tomllib (with re, typing and datetime) is ~6 ms of their ~20 ms fast
    paths. The cache is a marshal of the parsed dict, trusted only while the file's
    device, inode, size, mtime and ctime are unchanged; any problem with it means a
    normal parse.
    """
    import marshal

    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        sig = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cache_dir = os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                 "walkeeper")
        import binascii

        cache = os.path.join(cache_dir, "config-%08x.marshal" % binascii.crc32(path.encode()))
        try:
            with open(cache, "rb") as c:
                if os.fstat(c.fileno()).st_uid == os.getuid():
                    cached_sig, data = marshal.load(c)
                    if cached_sig == sig and isinstance(data, dict):
                        return data
        except (OSError, ValueError, EOFError, TypeError):
            pass
        import tomllib

        data = tomllib.load(f)
    try:
        blob = marshal.dumps((sig, data))     # ValueError: a value marshal cannot hold
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as c:
            c.write(blob)
        os.replace(tmp, cache)
    except (OSError, ValueError):
        pass
    return data


def load(path: str | None = None, env: dict[str, str] | None = None,
         data: dict | None = None) -> Config:
    """Read the config file (if any) and the environment into a validated Config.

    data: the file's content already parsed (a dict shaped like the TOML file, e.g.
    Django's WALKEEPER setting), used instead of reading any file."""
    env = dict(os.environ) if env is None else env
    explicit = path or env.get("WALKEEPER_CONFIG")
    file_path: str | None = None
    if data is not None:
        if not isinstance(data, dict):
            raise ConfigError("configuration: expected a dict shaped like the TOML file")
    elif explicit or os.path.exists(DEFAULT_PATH):
        file_path = os.path.abspath(os.path.expanduser(explicit or DEFAULT_PATH))
        try:
            data = _read_toml(file_path, env)
        except FileNotFoundError:
            raise ConfigError(f"config file {file_path} does not exist; create it "
                              f"(see conf/walkeeper.toml) or unset WALKEEPER_CONFIG") from None
        except PermissionError:
            raise ConfigError(f"config file {file_path} is not readable by this user",
                              hint="check its owner and mode (e.g. chmod 640, group of "
                                   "this user)") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {file_path} is a directory",
                              hint=f"give the file's path, e.g. --config "
                                   f"{os.path.join(file_path, 'walkeeper.toml')}") from None
        except OSError as exc:
            raise ConfigError(f"config file {file_path} cannot be read: "
                              f"{exc.strerror or exc}", hint="check the path") from None
        except ValueError as exc:       # tomllib.TOMLDecodeError
            raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from None
    else:
        data = {}
    flat = _flatten(data, file_path)
    values: dict = {}
    for s in SETTINGS:
        if s.key in flat:
            values[s.key] = _coerce(s, flat[s.key], _where(file_path, s.key))
            continue
        for var in s.env:
            if env.get(var):
                values[s.key] = _coerce(s, env[var], f"environment {var}")
                break
        else:
            values[s.key] = s.default
    if not _valid_name(values["cluster"]):
        raise ConfigError(f"{_where(file_path, 'cluster')}: {values['cluster']!r} must be "
                          f"letters, digits, '.', '_' or '-'")
    raw_stores = data.get("stores", [])
    if not isinstance(raw_stores, list):
        raise ConfigError(f"{_where(file_path, 'stores')}: use [[stores]] tables")
    stores = [_store_from(r, i, file_path) for i, r in enumerate(raw_stores)] or _env_stores(env)
    if not stores:
        raise ConfigError("no store configured: add [[stores]] to the config file or set "
                          "BACKUP_DIR", hint=None)
    names = [s.name for s in stores]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{_where(file_path, 'stores')}: duplicate store name {sorted(dup)[0]!r}")
    enc = data.get("encryption")
    if enc is not None:
        where = _where(file_path, "[encryption]")
        if not isinstance(enc, dict):
            raise ConfigError(f"{where}: expected a table")
        if bool(values["encryption.passphrase_env"]) == bool(values["encryption.key_file"]):
            raise ConfigError(f"{where}: give exactly one of passphrase_env and key_file")
    return Config(path=file_path, values=values, stores=stores, env=env)


def reference_markdown() -> str:
    """The configuration reference, generated from the tables above."""
    lines = ["# Configuration reference", "",
             "Generated by `python -m walkeeper.config`; do not edit by hand.", "",
             "| key | type | default | environment | meaning |", "|---|---|---|---|---|"]

    def row(s: Setting, key: str) -> str:
        default = "" if s.default is None else repr(s.default).replace("'", '"')
        kind = s.kind.__name__ + (f" ({' / '.join(map(str, s.choices))})" if s.choices else "")
        return f"| `{key}` | {kind} | `{default}` | {', '.join(f'`{e}`' for e in s.env)} | {s.doc} |"

    lines += [row(s, s.key) for s in SETTINGS]
    lines += ["", "## `[[stores]]`", "", "| key | type | default | environment | meaning |",
              "|---|---|---|---|---|"]
    lines += [row(s, s.key.split(".", 1)[1]) for s in STORE_SETTINGS]
    for name in known():
        t = store_type(name)
        lines += ["", f"### `type = \"{name}\"`", "",
                  "| key | type | default | environment | meaning |", "|---|---|---|---|---|"]
        lines += [row(s._replace(doc="required; " + s.doc) if s.key[6:] in t.required else s,
                      s.key.split(".", 1)[1]) for s in t.settings]
    lines += ["", "## Environment only", "",
              "With no `[[stores]]` in the file, stores come from the environment:", "",
              "- `BACKUP_DIR`: a local store named `local` at this absolute path.",
              "- `BACKUP_SFTP_ENABLED=True`: an SFTP store named `sftp` from `BACKUP_SFTP_HOST`, "
              "`BACKUP_SFTP_PORT` (22), `BACKUP_SFTP_USER`, `BACKUP_SFTP_PASSWORD`, "
              "`BACKUP_SFTP_DIRECTORY` (`/backups`), `BACKUP_SFTP_KEY_FILE`, "
              "`BACKUP_SFTP_KNOWN_HOSTS` (`~/.ssh/known_hosts`).",
              "- `BACKUP_S3_BUCKET`: an S3 store named `s3` in that bucket, with `BACKUP_S3_ENDPOINT` "
              "(empty: AWS), `BACKUP_S3_REGION` (else `AWS_DEFAULT_REGION`, else `us-east-1`), "
              "`BACKUP_S3_PREFIX`, `BACKUP_S3_ADDRESSING` (`path`), `BACKUP_S3_CA_FILE`, and the "
              "keys in `BACKUP_S3_ACCESS_KEY`/`BACKUP_S3_SECRET_KEY` (both unset: the standard "
              "AWS chain, `AWS_ACCESS_KEY_ID`, `~/.aws`, an instance role).",
              "- `WALKEEPER_CONFIG`: the config file (else `/etc/walkeeper/walkeeper.toml` if it "
              "exists).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
