"""The command line as operators and PostgreSQL see it: exit codes and one-line errors."""

from __future__ import annotations

import pytest

from walfiles import write_segment

SEG = "000000010000000000000005"


def test_help_and_version(wk):
    r = wk("--help")
    assert r.returncode == 0
    for command in ("push", "fetch", "basebackup", "list", "recover"):
        assert command in r.stdout
    r = wk("--version")
    assert r.returncode == 0 and "walkeeper" in r.stdout


@pytest.mark.parametrize("text, key", [
    ('cluster = "x"\n[[stores]]\nname = "l"\ntype = "tape"\npath = "/x"\n', "stores[0].type"),
    ('[compression]\nlevel = "high"\n[[stores]]\nname = "l"\ntype = "local"\npath = "/x"\n',
     "compression.level"),
    ('colour = "blue"\n[[stores]]\nname = "l"\ntype = "local"\npath = "/x"\n', "colour"),
    ('[[stores]]\nname = "s"\ntype = "sftp"\nhost = "h"\n', "stores[0].user"),
    ("cluster = \n", "not valid TOML"),
])
def test_invalid_configuration_is_exit_3_with_one_line(wk, tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    seg = write_segment(tmp_path, SEG)
    for args in (("push", seg, SEG), ("fetch", SEG, tmp_path / "x"), ("list",)):
        r = wk("--config", cfg, *args)
        assert r.returncode == 3, (args, r.stderr)
        assert key in r.stderr and r.stderr.count("\n") == 1
        assert "Traceback" not in r.stderr


def test_missing_config_file_and_no_store(wk, tmp_path):
    r = wk("--config", tmp_path / "nope.toml", "push", "a", SEG)
    assert r.returncode == 3 and "does not exist" in r.stderr
    r = wk("push", write_segment(tmp_path, SEG), SEG)
    assert r.returncode == 3 and "BACKUP_DIR" in r.stderr


def test_key_file_readable_by_others_is_a_config_error(wk, tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    key.chmod(0o644)
    (tmp_path / "known_hosts").write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[stores]]\nname = "s"\ntype = "sftp"\nhost = "127.0.0.1"\nuser = "u"\n'
                   f'key_file = "{key}"\nknown_hosts = "{tmp_path / "known_hosts"}"\n')
    r = wk("--config", cfg, "push", write_segment(tmp_path, SEG), SEG)
    assert r.returncode == 3 and "chmod 600" in r.stderr


def test_usage_errors_are_exit_2(wk, tmp_path):
    env = {"BACKUP_DIR": str(tmp_path / "s")}
    assert wk("push", env=env).returncode == 2
    assert wk("fetch", SEG, env=env).returncode == 2
    assert wk("no-such-command", env=env).returncode == 2
    assert wk("push", tmp_path / "missing", SEG, env=env).returncode == 2
    r = wk("fetch", SEG, tmp_path / "no" / "dir" / "x", env=env)
    assert r.returncode == 2 and "no such directory" in r.stderr


def test_push_never_exits_126_or_more(wk, tmp_path):
    """PostgreSQL would restart the archiver and hide the failure from pg_stat_archiver."""
    seg = write_segment(tmp_path, SEG)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    blocked.chmod(0o500)
    r = wk("push", seg, SEG, env={"BACKUP_DIR": str(blocked / "store")})
    assert 1 <= r.returncode <= 125, r.stderr
    assert "blocked" in r.stderr
