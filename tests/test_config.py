"""Configuration: TOML file, environment, validation, generated reference.

Every test passes an explicit env dict to config.load and points
config.DEFAULT_PATH at a file that does not exist, so nothing on the machine
running the tests (an /etc/walkeeper/walkeeper.toml, BACKUP_* variables) leaks in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from walkeeper import config
from walkeeper.config import Config, StoreConfig
from walkeeper.errors import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Pa55word-do-not-print"

FULL_TOML = """\
cluster = "ecar"                   # namespace of this cluster inside each store
state_dir = "/var/lib/walkeeper"

[postgres]
pgdata = "/var/lib/postgresql/15/main"
conninfo = "host=localhost port=5432 user=ecar_user dbname=ecar_db"
bindir = ""

[compression]
algorithm = "zstd"
level = 3

[[stores]]
name = "local"
type = "local"
path = "/var/backups/walkeeper"

[[stores]]
name = "offsite"
type = "sftp"
host = "backup.example.com"
port = 22
user = "walkeeper"
key_file = "/var/lib/postgresql/.ssh/id_ed25519"
password_env = "WALKEEPER_SFTP_PASSWORD"
directory = "/backups"
known_hosts = "/var/lib/postgresql/.ssh/known_hosts"

[retention]
full_count = 10
daily = 7
weekly = 4
monthly = 12
yearly = -1

[fetch]
on_error = "abort"

[drill]
sql = ""
"""

MINIMAL_TOML = """\
[[stores]]
name = "local"
type = "local"
path = "/srv/wal"
"""


@pytest.fixture(autouse=True)
def no_default_file(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "no-such-dir" / "walkeeper.toml"))


@pytest.fixture
def write(tmp_path):
    def _write(text: str, name: str = "walkeeper.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return _write


def load_error(path=None, env=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.load(str(path) if path is not None else None, env=env or {})
    exc = info.value
    assert exc.exit_code == EXIT_CONFIG == 3
    return exc


# ---------------------------------------------------------------- full file
def test_full_file_like_the_contract(write, monkeypatch):
    # Loading never connects anywhere (backup.example.com need not resolve,
    # the key file need not exist yet, the password variable need not be set).
    def no_network(*a, **kw):
        raise AssertionError("config.load opened a network connection")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    path = write(FULL_TOML)
    cfg = config.load(str(path), env={})
    assert isinstance(cfg, Config)
    assert cfg.path == str(path.absolute())
    assert cfg.cluster == "ecar"
    assert cfg.state_dir == "/var/lib/walkeeper"
    assert cfg["postgres.pgdata"] == "/var/lib/postgresql/15/main"
    assert cfg["postgres.conninfo"] == "host=localhost port=5432 user=ecar_user dbname=ecar_db"
    assert cfg["postgres.bindir"] == ""
    assert cfg["compression.algorithm"] == "zstd"
    assert cfg["compression.level"] == 3
    assert (cfg["retention.full_count"], cfg["retention.daily"], cfg["retention.weekly"],
            cfg["retention.monthly"], cfg["retention.yearly"]) == (10, 7, 4, 12, -1)
    assert cfg["fetch.on_error"] == "abort"
    assert cfg["drill.sql"] == ""
    assert [s.name for s in cfg.stores] == ["local", "offsite"]  # order kept: first is primary
    local, offsite = cfg.stores
    assert local == StoreConfig(name="local", type="local", path="/var/backups/walkeeper")
    assert offsite.type == "sftp"
    assert offsite.host == "backup.example.com"
    assert offsite.port == 22
    assert offsite.user == "walkeeper"
    assert offsite.key_file == "/var/lib/postgresql/.ssh/id_ed25519"
    assert offsite.password_env == "WALKEEPER_SFTP_PASSWORD"
    assert offsite.directory == "/backups"
    assert offsite.known_hosts == "/var/lib/postgresql/.ssh/known_hosts"
    assert offsite.timeout >= 1 and offsite.retries >= 1


def test_defaults_with_minimal_file(write):
    cfg = config.load(str(write(MINIMAL_TOML)), env={})
    assert cfg.cluster == "default"
    assert cfg["compression.algorithm"] == "zstd"
    assert cfg["compression.level"] == 3
    assert cfg["retention.full_count"] == 10
    assert cfg["retention.yearly"] == -1
    assert cfg["fetch.on_error"] == "abort"
    assert cfg.stores == [StoreConfig(name="local", type="local", path="/srv/wal")]


def test_state_dir_default_follows_xdg(write, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = config.load(str(write(MINIMAL_TOML)), env={})
    assert cfg.state_dir == str(tmp_path / "xdg" / "walkeeper")


def test_sftp_store_defaults(write):
    cfg = config.load(str(write(
        '[[stores]]\nname = "s"\ntype = "sftp"\nhost = "h"\nuser = "u"\nkey_file = "/k"\n')),
        env={})
    (s,) = cfg.stores
    assert (s.port, s.directory, s.known_hosts) == (22, "/backups", "~/.ssh/known_hosts")


# -------------------------------------------------------------- environment
def test_environment_only_local(tmp_path):
    cfg = config.load(None, env={"BACKUP_DIR": "/backups", "BACKUP_RETENTION_COUNT": "4"})
    assert cfg.path is None
    assert cfg.stores == [StoreConfig(name="local", type="local", path="/backups")]
    assert cfg["retention.full_count"] == 4


def test_environment_only_with_sftp():
    env = {
        "BACKUP_DIR": "/var/backups/wal",
        "BACKUP_RETENTION_COUNT": "7",
        "BACKUP_SFTP_ENABLED": "True",
        "BACKUP_SFTP_HOST": "backup.example.com",
        "BACKUP_SFTP_PORT": "2222",
        "BACKUP_SFTP_USER": "django",
        "BACKUP_SFTP_PASSWORD": SECRET,
        "BACKUP_SFTP_DIRECTORY": "/srv/backups",
        "WALKEEPER_CLUSTER": "shop",
        "PGDATA": "/var/lib/postgresql/15/main",
    }
    cfg = config.load(None, env=env)
    assert cfg.path is None
    assert cfg.cluster == "shop"
    assert cfg["retention.full_count"] == 7
    assert cfg["postgres.pgdata"] == "/var/lib/postgresql/15/main"
    assert [s.name for s in cfg.stores] == ["local", "sftp"]
    local, sftp = cfg.stores
    assert (local.type, local.path) == ("local", "/var/backups/wal")
    assert sftp.type == "sftp"
    assert (sftp.host, sftp.port, sftp.user, sftp.directory) == (
        "backup.example.com", 2222, "django", "/srv/backups")
    assert isinstance(sftp.port, int)
    assert sftp.password_env == "BACKUP_SFTP_PASSWORD"
    for text in (repr(sftp), str(sftp), repr(cfg), str(cfg), repr(cfg.stores), repr(sftp._asdict())):
        assert SECRET not in text


def test_environment_sftp_defaults():
    cfg = config.load(None, env={"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_HOST": "h",
                                 "BACKUP_SFTP_USER": "u", "BACKUP_SFTP_PASSWORD": SECRET})
    (s,) = cfg.stores
    assert (s.type, s.port, s.directory) == ("sftp", 22, "/backups")
    assert SECRET not in repr(cfg)


@pytest.mark.parametrize("flag", ["False", "false", "0", ""])
def test_environment_sftp_disabled(flag):
    cfg = config.load(None, env={"BACKUP_DIR": "/b", "BACKUP_SFTP_ENABLED": flag,
                                 "BACKUP_SFTP_HOST": "h", "BACKUP_SFTP_USER": "u"})
    assert [s.type for s in cfg.stores] == ["local"]


def test_environment_sftp_enabled_without_host_is_an_error():
    exc = load_error(env={"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_USER": "u"})
    assert "BACKUP_SFTP_HOST" in str(exc)


def test_walkeeper_pgdata_before_pgdata():
    cfg = config.load(None, env={"BACKUP_DIR": "/b", "WALKEEPER_PGDATA": "/one", "PGDATA": "/two"})
    assert cfg["postgres.pgdata"] == "/one"


# --------------------------------------------------------------- precedence
def test_file_keys_win_over_environment(write):
    path = write(FULL_TOML)
    env = {"WALKEEPER_CLUSTER": "from-env", "BACKUP_RETENTION_COUNT": "99",
           "PGDATA": "/env/pgdata", "WALKEEPER_PGDATA": "/env/pgdata2",
           "BACKUP_DIR": "/env/backups", "BACKUP_SFTP_ENABLED": "True",
           "BACKUP_SFTP_HOST": "env-host", "BACKUP_SFTP_USER": "env-user"}
    cfg = config.load(str(path), env=env)
    assert cfg.cluster == "ecar"
    assert cfg["retention.full_count"] == 10
    assert cfg["postgres.pgdata"] == "/var/lib/postgresql/15/main"
    assert [s.name for s in cfg.stores] == ["local", "offsite"]
    assert cfg.stores[0].path == "/var/backups/walkeeper"


def test_environment_fills_keys_the_file_leaves_out(write):
    path = write('cluster = "ecar"\n')
    cfg = config.load(str(path), env={"BACKUP_DIR": "/env/backups",
                                      "BACKUP_RETENTION_COUNT": "5",
                                      "PGDATA": "/env/pgdata"})
    assert cfg.cluster == "ecar"
    assert cfg["retention.full_count"] == 5
    assert cfg["postgres.pgdata"] == "/env/pgdata"
    assert cfg.stores == [StoreConfig(name="local", type="local", path="/env/backups")]


def test_walkeeper_config_is_honoured(write, tmp_path):
    path = write(FULL_TOML)
    cfg = config.load(None, env={"WALKEEPER_CONFIG": str(path)})
    assert cfg.path == str(path.absolute())
    assert cfg.cluster == "ecar"


def test_explicit_path_beats_walkeeper_config(write):
    a = write(MINIMAL_TOML.replace("/srv/wal", "/srv/a"), "a.toml")
    b = write(MINIMAL_TOML.replace("/srv/wal", "/srv/b"), "b.toml")
    cfg = config.load(str(a), env={"WALKEEPER_CONFIG": str(b)})
    assert cfg.stores[0].path == "/srv/a"


def test_default_path_is_used_when_present(write, monkeypatch):
    path = write(MINIMAL_TOML)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(path))
    cfg = config.load(None, env={"BACKUP_DIR": "/ignored"})
    assert cfg.path == str(path)
    assert cfg.stores[0].path == "/srv/wal"


def test_relative_config_path_is_made_absolute(write, monkeypatch, tmp_path):
    write(MINIMAL_TOML)
    monkeypatch.chdir(tmp_path)
    cfg = config.load("walkeeper.toml", env={})
    assert cfg.path is not None and os.path.isabs(cfg.path)
    assert cfg.path == str(tmp_path / "walkeeper.toml")


# --------------------------------------------------------------- invalid
SFTP_STORE = '[[stores]]\nname = "s"\ntype = "sftp"\nhost = "h"\nuser = "u"\n'


@pytest.mark.parametrize("text,words", [
    (SFTP_STORE + 'port = "abc"\n', ["port", "abc"]),
    (SFTP_STORE + "port = 0\n", ["port"]),
    (SFTP_STORE + "port = 70000\n", ["port", "70000"]),
    (SFTP_STORE + "port = true\n", ["port"]),
    (SFTP_STORE + "port = 22.5\n", ["port"]),
    (SFTP_STORE + "retries = 0\n", ["retries"]),
    (SFTP_STORE + "timeout = 0\n", ["timeout"]),
    (MINIMAL_TOML + "[compression]\nlevel = 0\n", ["compression.level", "0"]),
    (MINIMAL_TOML + "[compression]\nlevel = 23\n", ["compression.level", "23"]),
    (MINIMAL_TOML + '[compression]\nlevel = "high"\n', ["compression.level"]),
    (MINIMAL_TOML + '[compression]\nalgorithm = "gzip"\n', ["compression.algorithm", "gzip"]),
    (MINIMAL_TOML + '[fetch]\non_error = "ignore"\n', ["fetch.on_error", "ignore"]),
    (MINIMAL_TOML + "[retention]\nfull_count = 0\n", ["retention.full_count"]),
    (MINIMAL_TOML + "[retention]\ndaily = -2\n", ["retention.daily"]),
    ('clutser = "x"\n' + MINIMAL_TOML, ["clutser"]),
    (MINIMAL_TOML + "[compression]\nlevle = 3\n", ["compression.levle"]),
    (MINIMAL_TOML + "[s3]\nbucket = \"b\"\n", ["s3"]),
    ('compression = "zstd"\n' + MINIMAL_TOML, ["compression"]),
    ('cluster = 5\n' + MINIMAL_TOML, ["cluster"]),
    ('cluster = "../etc"\n' + MINIMAL_TOML, ["cluster"]),
    (MINIMAL_TOML + "pth = \"/x\"\n", ["pth"]),
    ('[[stores]]\nname = "x"\ntype = "ftp"\npath = "/x"\n', ["type", "ftp"]),
    ('[[stores]]\nname = "x"\ntype = "local"\n', ["path"]),
    ('[[stores]]\nname = "x"\ntype = "local"\npath = ""\n', ["path"]),
    ('[[stores]]\nname = "x"\ntype = "local"\npath = "relative/dir"\n', ["path"]),
    ('[[stores]]\ntype = "local"\npath = "/x"\n', ["name"]),
    ('[[stores]]\nname = "x"\npath = "/x"\n', ["type"]),
    ('[[stores]]\nname = "x"\ntype = "sftp"\nuser = "u"\n', ["host"]),
    ('[[stores]]\nname = "x"\ntype = "sftp"\nhost = "h"\n', ["user"]),
    ('[[stores]]\nname = "a b/c"\ntype = "local"\npath = "/x"\n', ["name"]),
    (MINIMAL_TOML + MINIMAL_TOML.replace("/srv/wal", "/srv/other"), ["local"]),
    ('stores = "local"\n', ["stores"]),
    (MINIMAL_TOML + '[encryption]\n', ["encryption", "exactly one"]),
    (MINIMAL_TOML + '[encryption]\npassphrase_env = "P"\nkey_file = "/k"\n', ["exactly one"]),
    (MINIMAL_TOML + '[encryption]\npassphrase = "secret"\n', ["encryption.passphrase"]),
])
def test_invalid_file_values_raise_config_error_naming_the_key(write, text, words):
    path = write(text)
    exc = load_error(path)
    message = str(exc)
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert str(path) in message or "stores" in message or "cluster" in message


def test_duplicate_store_names(write):
    text = MINIMAL_TOML + SFTP_STORE.replace('"s"', '"local"') + 'key_file = "/k"\n'
    exc = load_error(write(text))
    assert "duplicate" in str(exc) and "local" in str(exc)


def test_encryption_section(write):
    from walkeeper.format.crypto import Keyring

    cfg = config.load(write(FULL_TOML + '\n[encryption]\npassphrase_env = "WK_PASS"\n'),
                      env={"WK_PASS": "s3cret"})
    assert cfg.encrypted and isinstance(cfg.keyring, Keyring)
    assert cfg.keyring.secret() == b"s3cret"
    assert cfg.keyring is cfg.keyring
    plain = config.load(write(FULL_TOML), env={})
    assert not plain.encrypted and plain.keyring is None


def test_invalid_toml(write):
    path = write('cluster = "ecar\n[[stores]\n')
    exc = load_error(path)
    assert str(path) in str(exc)
    assert "TOML" in str(exc)


def test_missing_explicit_config_file(tmp_path):
    path = tmp_path / "nope.toml"
    exc = load_error(path, env={"BACKUP_DIR": "/b"})   # env does not paper over it
    assert str(path) in str(exc)


def test_missing_walkeeper_config_file(tmp_path):
    path = tmp_path / "nope.toml"
    exc = load_error(env={"WALKEEPER_CONFIG": str(path), "BACKUP_DIR": "/b"})
    assert str(path) in str(exc)


def test_unreadable_config_file(write):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write(MINIMAL_TOML)
    path.chmod(0)
    exc = load_error(path)
    assert str(path) in str(exc)


def test_no_store_at_all(write):
    exc = load_error(env={})
    assert "store" in str(exc)
    exc = load_error(write('cluster = "ecar"\n'), env={})
    assert "store" in str(exc)


@pytest.mark.parametrize("env,words", [
    ({"BACKUP_DIR": "relative/backups"}, ["BACKUP_DIR"]),
    ({"BACKUP_DIR": "/b", "BACKUP_RETENTION_COUNT": "many"}, ["BACKUP_RETENTION_COUNT", "many"]),
    ({"BACKUP_DIR": "/b", "BACKUP_RETENTION_COUNT": "0"}, ["BACKUP_RETENTION_COUNT"]),
    ({"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_HOST": "h", "BACKUP_SFTP_USER": "u",
      "BACKUP_SFTP_PORT": "abc"}, ["BACKUP_SFTP_PORT", "abc"]),
    ({"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_HOST": "h", "BACKUP_SFTP_USER": "u",
      "BACKUP_SFTP_PORT": "0"}, ["BACKUP_SFTP_PORT"]),
    ({"BACKUP_DIR": "/b", "WALKEEPER_CLUSTER": "a/b"}, ["cluster"]),
])
def test_invalid_environment_values(env, words):
    exc = load_error(env=env)
    for w in words:
        assert w in str(exc), f"{w!r} not in {str(exc)!r}"


def test_config_errors_never_show_the_password():
    exc = load_error(env={"BACKUP_SFTP_ENABLED": "True", "BACKUP_SFTP_HOST": "h",
                          "BACKUP_SFTP_USER": "u", "BACKUP_SFTP_PORT": "x",
                          "BACKUP_SFTP_PASSWORD": SECRET})
    assert SECRET not in str(exc) and SECRET not in exc.line()


# ---------------------------------------------------------------- reference
REGENERATE = "regenerate with `python -m walkeeper.config > docs/configuration.md`"


def test_docs_configuration_md_is_current():
    doc = REPO / "docs" / "configuration.md"
    assert doc.exists(), f"docs/configuration.md is missing; {REGENERATE}"
    assert doc.read_text() == config.reference_markdown(), (
        f"docs/configuration.md is out of date; {REGENERATE}")


def test_reference_via_python_m_matches_function():
    out = subprocess.run([sys.executable, "-m", "walkeeper.config"], capture_output=True,
                         text=True, check=True).stdout
    assert out == config.reference_markdown()


def test_reference_names_every_setting():
    ref = config.reference_markdown()
    for s in config.SETTINGS:
        assert f"`{s.key}`" in ref
        for var in s.env:
            assert f"`{var}`" in ref
    for s in config.STORE_SETTINGS:
        assert f"`{s.key.split('.', 1)[1]}`" in ref
    for var in ("BACKUP_DIR", "BACKUP_SFTP_ENABLED", "BACKUP_SFTP_PASSWORD", "WALKEEPER_CONFIG"):
        assert var in ref


def test_parsed_config_is_cached_until_the_file_changes(write, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    path = write('cluster = "one"\n' + MINIMAL_TOML)
    assert config.load(path, env=env).cluster == "one"
    (cached,) = (tmp_path / "cache" / "walkeeper").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cache" / "walkeeper").stat().st_mode & 0o777 == 0o700
    assert config.load(path, env=env).cluster == "one"          # from the cache
    # An edit (even of the same size, within the same second) is seen at once.
    path.write_text('cluster = "two"\n' + MINIMAL_TOML)
    assert config.load(path, env=env).cluster == "two"
    # A damaged cache is ignored and replaced.
    cached.write_bytes(b"\x00garbage")
    assert config.load(path, env=env).cluster == "two"
    # and so is one that belongs to another file
    other = write('cluster = "three"\n' + MINIMAL_TOML, "other.toml")
    import shutil
    shutil.copy(cached, tmp_path / "cache" / "walkeeper" / "stale")
    assert config.load(other, env=env).cluster == "three"
    # An unwritable cache directory only costs the parse.
    (tmp_path / "cache" / "walkeeper").chmod(0o500)
    try:
        path.write_text('cluster = "four"\n' + MINIMAL_TOML)
        assert config.load(path, env=env).cluster == "four"
    finally:
        (tmp_path / "cache" / "walkeeper").chmod(0o700)


def test_invalid_toml_is_refused_even_after_a_cached_parse(write, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    path = write(MINIMAL_TOML)
    config.load(path, env=env)
    path.write_text('cluster = "x\n')
    exc = load_error(path, env=env)
    assert "not valid TOML" in str(exc)
