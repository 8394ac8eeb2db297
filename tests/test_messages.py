"""What an operator reads on a bad day: one line per failure, the documented exit code,
and a failure counter that counts failures of the work, not typos (issue 15)."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from walfiles import write_segment
from walkeeper import config
from walkeeper.errors import ConfigError

SEG = "000000010000000000000005"


def local_config(tmp_path, extra: str = "") -> str:
    (tmp_path / "store").mkdir(exist_ok=True)
    cfg = tmp_path / "walkeeper.toml"
    cfg.write_text(f'cluster = "c"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[postgres]\nconninfo = "host={tmp_path} port=1 dbname=postgres"\n'
                   f'[[stores]]\nname = "local"\ntype = "local"\npath = "{tmp_path / "store"}"\n'
                   + extra)
    return str(cfg)


def only_walkeeper_lines(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines, "expected a message"
    assert all(line.startswith("walkeeper") for line in lines), stderr


# ------------------------------------------------ item 6: nothing but our lines

class _Server:
    """A TCP port that accepts and then closes, or answers like a web server."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.reply:
                    conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"],
                         ids=["accepts-and-closes", "not-ssh"])
@pytest.mark.parametrize("command", ["push", "fetch", "list"])
def test_a_port_that_is_not_ssh_gives_one_line_and_no_traceback(wk, tmp_path, reply, command):
    server = _Server(reply)
    try:
        (tmp_path / "known_hosts").write_text("")
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'cluster = "c"\nstate_dir = "{tmp_path / "state"}"\n'
                       f'[[stores]]\nname = "off"\ntype = "sftp"\nhost = "127.0.0.1"\n'
                       f'port = {server.port}\nuser = "u"\npassword_env = "WK_TEST_PW"\n'
                       f'known_hosts = "{tmp_path / "known_hosts"}"\ntimeout = 5\nretries = 2\n')
        args = {"push": ("push", write_segment(tmp_path, SEG), SEG),
                "fetch": ("fetch", SEG, tmp_path / "out"),
                "list": ("list",)}[command]
        r = wk("--config", cfg, *args, env={"WK_TEST_PW": "secret"})
        assert r.returncode != 0
        only_walkeeper_lines(r.stderr)
        assert "paramiko" not in r.stderr
        assert str(server.port) in r.stderr
        # -v shows paramiko's own detail, on walkeeper's prefixed lines.
        r = wk("-v", "--config", cfg, *args, env={"WK_TEST_PW": "secret"})
        assert r.returncode != 0
    finally:
        server.close()


@pytest.mark.parametrize("reply", [b"", b"SSH-2.0-OpenSSH_9.2\r\n"],
                         ids=["accepts-and-closes", "not-http"])
@pytest.mark.parametrize("command", ["push", "fetch", "list"])
def test_an_s3_endpoint_that_is_not_s3_gives_one_line_and_no_traceback(wk, tmp_path, reply,
                                                                          command):
    """The same rule for the S3 driver's libraries (botocore, urllib3)."""
    server = _Server(reply)
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'cluster = "c"\nstate_dir = "{tmp_path / "state"}"\n'
                       f'[[stores]]\nname = "obj"\ntype = "s3"\n'
                       f'endpoint = "http://127.0.0.1:{server.port}"\nbucket = "b"\n'
                       f'access_key_env = "WK_AK"\nsecret_key_env = "WK_SK"\n'
                       f'timeout = 5\nretries = 2\n')
        args = {"push": ("push", write_segment(tmp_path, SEG), SEG),
                "fetch": ("fetch", SEG, tmp_path / "out"),
                "list": ("list",)}[command]
        r = wk("--config", cfg, *args, env={"WK_AK": "ak", "WK_SK": "sk"})
        assert r.returncode != 0
        only_walkeeper_lines(r.stderr)
    finally:
        server.close()


# ------------------------------------------------ item 7: ordinary conditions

def test_config_pointing_at_a_directory_is_exit_3_naming_it(wk, tmp_path):
    for args in (("list",), ("push", write_segment(tmp_path, SEG), SEG), ("status",)):
        r = wk("--config", tmp_path, *args)
        assert r.returncode == 3, r.stderr
        only_walkeeper_lines(r.stderr)
        assert "unexpected" not in r.stderr
        assert f"{tmp_path} is a directory" in r.stderr
        assert "walkeeper.toml" in r.stderr             # the fix


def test_config_under_a_file_is_exit_3(wk, tmp_path):
    r = wk("--config", tmp_path / "walkeeper.toml.d" / "x", "list",
           env={"HOME": str(tmp_path)})
    assert r.returncode == 3
    (tmp_path / "f").write_text("")
    r = wk("--config", tmp_path / "f" / "x.toml", "list")
    assert r.returncode == 3 and "unexpected" not in r.stderr, r.stderr
    only_walkeeper_lines(r.stderr)


@pytest.mark.skipif(os.getuid() == 0, reason="root ignores modes")
def test_recover_into_an_unwritable_place_is_exit_2_before_planning(wk, tmp_path):
    cfg = local_config(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        # Said up front, even though the archive is empty (planning would fail too).
        r = wk("--config", cfg, "recover", "--pgdata", locked / "restored", "--latest")
        assert r.returncode == 2, r.stderr
        only_walkeeper_lines(r.stderr)
        assert f"{locked}" in r.stderr and "not writable" in r.stderr
        r = wk("--config", cfg, "recover", "--pgdata", locked, "--latest")
        assert r.returncode == 2, r.stderr
        assert "not writable" in r.stderr
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("where", ["missing-dir", "is-a-directory", "unwritable"])
def test_status_html_to_a_bad_path_is_exit_2(wk, tmp_path, where):
    if where == "unwritable" and os.getuid() == 0:
        pytest.skip("root ignores modes")
    cfg = local_config(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    target = {"missing-dir": tmp_path / "no" / "x.html", "is-a-directory": tmp_path,
              "unwritable": locked / "x.html"}[where]
    locked.chmod(0o555)
    try:
        r = wk("--config", cfg, "status", "--html", target)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 2, r.stderr
    only_walkeeper_lines(r.stderr)
    assert str(target) in r.stderr


def test_an_unanticipated_os_error_names_the_path(wk, tmp_path):
    """The fall-back for an OSError nothing caught: the path and what to check, never
    "unexpected error"."""
    from walkeeper.errors import EXIT_ARCHIVE_UNREADABLE, from_os_error

    err = from_os_error(PermissionError(13, "Permission denied", "/var/lib/x"))
    assert err.exit_code == 1
    assert "/var/lib/x: Permission denied" in err.line() and "owner" in err.line()
    assert from_os_error(IsADirectoryError(21, "Is a directory", "/d"),
                         fetch=True).exit_code == EXIT_ARCHIVE_UNREADABLE


# ------------------------------------------------ item 8: unknown ids are exit 2

@pytest.mark.parametrize("args", [
    ("restore-dump", "NOPE", "--database", "x"),
    ("restore-dump", "20261203T000000Z-ab12", "--database", "x"),
    ("recover", "--backup", "NOPE", "--pgdata", "{tmp}/r", "--latest"),
    ("recover", "--backup", "NOPE", "--pgdata", "{tmp}/r", "--latest", "--dry-run"),
    ("verify-chain", "--store", "NOPE"),
], ids=["restore-dump", "restore-dump-id-shape", "recover", "recover-dry-run", "verify-chain"])
def test_an_unknown_id_or_name_is_exit_2_for_every_command(wk, tmp_path, args):
    cfg = local_config(tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    r = wk("--config", cfg, *args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    only_walkeeper_lines(r.stderr)
    assert "NOPE" in r.stderr or "20261203T000000Z-ab12" in r.stderr
    assert r.stderr.count("\n") == 1


def test_sync_unknown_store_is_exit_2(wk, tmp_path):
    cfg = local_config(tmp_path)
    for opt in ("--from", "--to"):
        r = wk("--config", cfg, "sync", opt, "NOPE")
        assert r.returncode == 2, r.stderr
        only_walkeeper_lines(r.stderr)


def test_fetch_of_a_wal_file_in_no_store_stays_exit_1(wk, tmp_path):
    """The one exception to the rule, for PostgreSQL: the end of the archive."""
    cfg = local_config(tmp_path)
    assert wk("--config", cfg, "fetch", SEG, tmp_path / "out").returncode == 1


# ------------------------------------------------ item 9: the failure counter

def _failures_total(wk, cfg) -> dict[str, float]:
    r = wk("--config", cfg, "status", "--prometheus")
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("walkeeper_failures_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def test_typos_are_not_counted_as_failures(wk, tmp_path):
    cfg = local_config(tmp_path)
    typos = [("recover", "--pgdata", tmp_path / "r", "--target-time", "yesterday-ish"),
             ("recover", "--pgdata", tmp_path / "r", "--target-lsn", "zz"),
             ("restore-dump", "NOPE", "--database", "x"),
             ("recover", "--backup", "NOPE", "--pgdata", tmp_path / "r", "--latest"),
             ("verify-chain", "--store", "NOPE"),
             ("status", "--html", tmp_path / "no" / "such" / "dir.html"),
             ("push", tmp_path / "missing", SEG),
             ("push", write_segment(tmp_path, SEG), "not-a-wal-name")]
    for args in typos:
        r = wk("--config", cfg, *args)
        assert r.returncode == 2, (args, r.stderr)
    counts = _failures_total(wk, cfg)
    assert counts and all(v == 0 for v in counts.values()), counts
    assert not (tmp_path / "state" / "failures.jsonl").exists()
    # A failure of the work still counts: a backup with PostgreSQL unreachable.
    r = wk("--config", cfg, "basebackup", "--no-progress")
    assert r.returncode == 1
    assert _failures_total(wk, cfg)["basebackup"] == 1
    r = wk("--config", cfg, "status", "--json")
    failures = json.loads(r.stdout)["failures"]
    assert [f["command"] for f in failures] == ["basebackup"]


# ------------------------------------------------ items 11, 12: bad values

@pytest.mark.parametrize("value", ["garbage", "Ture", "2", "enabled"])
def test_backup_sftp_enabled_garbage_is_rejected(value):
    with pytest.raises(ConfigError) as info:
        config.load(None, env={"BACKUP_DIR": "/b", "BACKUP_SFTP_ENABLED": value,
                               "BACKUP_SFTP_HOST": "h", "BACKUP_SFTP_USER": "u"})
    assert info.value.exit_code == 3
    assert "BACKUP_SFTP_ENABLED" in str(info.value) and value in str(info.value)


def test_backup_sftp_enabled_garbage_on_the_command_line(wk, tmp_path):
    r = wk("list", env={"BACKUP_DIR": str(tmp_path), "BACKUP_SFTP_ENABLED": "garbage"})
    assert r.returncode == 3 and "BACKUP_SFTP_ENABLED" in r.stderr
    only_walkeeper_lines(r.stderr)


@pytest.mark.parametrize("env, says", [
    ({"BACKUP_RETENTION_COUNT": "0"}, "must be >= 1"),
    ({"BACKUP_RETENTION_COUNT": "-5"}, "must be >= 1"),
])
def test_out_of_range_messages_name_the_bound(env, says):
    with pytest.raises(ConfigError) as info:
        config.load(None, env={"BACKUP_DIR": "/b", **env})
    text = str(info.value)
    assert says in text and "None" not in text and "[" not in text


# ------------------------------------------------ item 10: last push by position

def test_status_last_push_is_the_newest_wal_position_not_the_newest_file_time(wk, tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o700)          # as `walkeeper check` creates it on first-time setup
    env = {"BACKUP_DIR": str(store), "WALKEEPER_STATE_DIR": str(tmp_path / "push-state")}
    names = [f"00000001000000000000000{i}" for i in (1, 2, 3)]
    for name in names:
        r = wk("push", write_segment(tmp_path, name), name, env=env)
        assert r.returncode == 0, r.stderr
    # Someone touches the oldest segment (or copies the store without its times).
    [oldest] = list(store.rglob(names[0] + "*"))
    later = os.stat(oldest).st_mtime + 3600
    os.utime(oldest, (later, later))
    # Seen from the archive alone (status run with another state directory)...
    r = wk("status", "--json", env={**env, "WALKEEPER_STATE_DIR": str(tmp_path / "other")})
    data = json.loads(r.stdout)
    assert data["last_push"]["name"] == names[-1], data["last_push"]
    assert data["last_push"]["source"] == "archive"
    assert {s["name"]: s["newest_wal"] for s in data["stores"]} == {"local": names[-1]}
    # ... and with push's own record, which the touched file must not override.
    data = json.loads(wk("status", "--json", env=env).stdout)
    assert data["last_push"]["name"] == names[-1]
    assert data["last_push"]["source"] == "state"


@pytest.mark.parametrize("command", [("drill",), ("restore-dump", "NOPE", "--database", "x")])
def test_a_state_dir_that_is_a_file_is_a_config_error_naming_it(wk, tmp_path, command):
    (tmp_path / "store").mkdir()
    (tmp_path / "state").write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[[stores]]\nname = "l"\n'
                   f'type = "local"\npath = "{tmp_path / "store"}"\n')
    r = wk("--config", cfg, *command)
    assert r.returncode == 3, r.stderr
    assert f"state_dir {tmp_path / 'state'}: exists and is not a directory" in r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr


def test_an_encryption_key_file_that_is_a_directory_is_exit_3(wk, tmp_path):
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    keydir.chmod(0o700)
    cfg = local_config(tmp_path, f'[encryption]\nkey_file = "{keydir}"\n')
    r = wk("--config", cfg, "push", write_segment(tmp_path, SEG), SEG)
    assert r.returncode == 3, r.stderr
    assert f"key_file {keydir} is not a file" in r.stderr
    only_walkeeper_lines(r.stderr)
