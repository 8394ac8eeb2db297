"""S3 store settings: validation, the environment-only store, what is imported when.
Fast: no server (the behaviour against a real Ceph RGW is tests/test_s3.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from walkeeper import config
from walkeeper.errors import ConfigError
from walkeeper.stores import open_store
from walkeeper.stores.registry import fix, location

S3 = """
[[stores]]
name = "objects"
type = "s3"
endpoint = "https://rgw.internal:8443"
region = "eu-west-1"
bucket = "pg-archive"
prefix = "prod/"
addressing = "virtual"
access_key_env = "WALKEEPER_S3_ACCESS_KEY"
secret_key_env = "WALKEEPER_S3_SECRET_KEY"
ca_file = "/etc/ssl/rgw-ca.pem"
verify_tls = true
storage_class = "STANDARD_IA"
sse_kms_key_id = "arn:aws:kms:eu-west-1:1:key/abc"
timeout = 30
retries = 4
"""


@pytest.fixture(autouse=True)
def _no_default_file(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))


def load(tmp_path, text, env=None):
    p = tmp_path / "walkeeper.toml"
    p.write_text('cluster = "c"\n' + text)
    return config.load(str(p), env=env or {})


def test_every_contract_setting_is_read(tmp_path):
    [s] = load(tmp_path, S3).stores
    assert (s.type, s.endpoint, s.region, s.bucket, s.prefix, s.addressing) == (
        "s3", "https://rgw.internal:8443", "eu-west-1", "pg-archive", "prod/", "virtual")
    assert (s.access_key_env, s.secret_key_env, s.ca_file, s.verify_tls) == (
        "WALKEEPER_S3_ACCESS_KEY", "WALKEEPER_S3_SECRET_KEY", "/etc/ssl/rgw-ca.pem", True)
    assert (s.storage_class, s.sse_kms_key_id, s.timeout, s.retries) == (
        "STANDARD_IA", "arn:aws:kms:eu-west-1:1:key/abc", 30, 4)
    assert location(s) == "s3://pg-archive/prod/ at https://rgw.internal:8443"
    assert "pg-archive" in fix(s) and "$WALKEEPER_S3_SECRET_KEY" in fix(s)


def test_defaults(tmp_path):
    [s] = load(tmp_path, '[[stores]]\nname = "o"\ntype = "s3"\nbucket = "abc"\n').stores
    assert (s.endpoint, s.region, s.prefix, s.addressing, s.verify_tls, s.timeout, s.retries) == (
        "", "us-east-1", "", "path", True, 60, 5)
    assert location(s) == "s3://abc/ (AWS us-east-1)"


@pytest.mark.parametrize("line, words", [
    ('bucket = "ab"', "bucket"),
    ('bucket = "a/b/c"', "bucket"),
    ('endpoint = "rgw:8080"', "https://"),
    ('addressing = "dns"', "path"),
    ('access_key_env = "ONLY_ONE"', "both"),
    ('prefix = "a/../b"', "prefix"),
    ('timeout = 0', "timeout"),
    ('secret_key = "inline"', "unknown setting"),
])
def test_bad_settings_are_config_errors(tmp_path, line, words):
    base = {"bucket": 'bucket = "pg-archive"'}
    key = line.split(" ", 1)[0]
    lines = [base.get(key, 'bucket = "pg-archive"') if key != "bucket" else line]
    if key != "bucket":
        lines.append(line)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[[stores]]\nname = "o"\ntype = "s3"\n' + "\n".join(lines) + "\n")
    assert words in str(info.value)
    assert "\n" not in info.value.line()


def test_unset_key_variable_is_a_config_error_naming_it(tmp_path):
    [s] = load(tmp_path, S3).stores
    with pytest.raises(ConfigError) as info:
        open_store(s)
    assert "WALKEEPER_S3_ACCESS_KEY" in str(info.value)


def test_environment_only_s3():
    env = {"BACKUP_S3_BUCKET": "django-wal", "BACKUP_S3_ENDPOINT": "http://127.0.0.1:7480",
           "BACKUP_S3_PREFIX": "shop", "BACKUP_S3_ACCESS_KEY": "AK", "BACKUP_S3_SECRET_KEY": "SK"}
    [s] = config.load(None, env=env).stores
    assert (s.name, s.type, s.bucket, s.endpoint, s.prefix) == (
        "s3", "s3", "django-wal", "http://127.0.0.1:7480", "shop")
    assert (s.access_key_env, s.secret_key_env) == ("BACKUP_S3_ACCESS_KEY", "BACKUP_S3_SECRET_KEY")
    assert "SK" not in repr(s)
    [s] = config.load(None, env={"BACKUP_S3_BUCKET": "b-b", "AWS_DEFAULT_REGION": "eu-north-1"}).stores
    assert (s.region, s.access_key_env) == ("eu-north-1", "")     # the AWS chain
    with pytest.raises(ConfigError):
        config.load(None, env={"BACKUP_S3_BUCKET": "x"})


def test_loading_an_s3_config_imports_no_client(tmp_path):
    p = tmp_path / "walkeeper.toml"
    p.write_text('cluster = "c"\n' + S3)
    code = ("import sys; from walkeeper import config; c = config.load(sys.argv[1]); "
            "from walkeeper.stores.registry import location; location(c.stores[0]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('botocore', 'boto3', 'urllib3')]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
