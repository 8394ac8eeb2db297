"""walkeeper.contrib.django in a real Django project (tests/djangoproject) against a real
PostgreSQL 15 with password authentication, a real sshd, and Django's test client: the
management commands, the system checks, the dashboard and its JSON."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import clean_env, need
from pgharness import PG_BIN

import django
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from storeroot import root as store_root

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TESTS = Path(__file__).resolve().parent
PASSWORD = "Db-pw-7f3c9e2a-never-in-argv"


# ---------------------------------------------------------------- the project

@pytest.fixture(scope="session")
def dj():
    """Django set up with tests/djangoproject (no database touched yet)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "djangoproject.settings"
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    django.setup()
    from django.conf import settings

    return settings


@pytest.fixture(scope="session")
def djdb(dj, pg):
    """The project's databases on a kept cluster: role `app` with a password (scram over
    TCP; the harness keeps trust on its socket), `app` migrated and `app_copy`."""
    c = pg.new(keep=True)
    (c.pgdata / "pg_hba.conf").write_text(
        "local all all trust\nlocal replication all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n")
    c.reload()
    c.execute(f"CREATE ROLE app LOGIN CREATEDB REPLICATION PASSWORD '{PASSWORD}'")
    c.execute("GRANT pg_monitor TO app")
    c.execute("CREATE DATABASE app OWNER app")
    c.execute("CREATE DATABASE app_copy OWNER app")
    for alias in ("default", "copy"):
        dj.DATABASES[alias].update(HOST="127.0.0.1", PORT=str(c.port), USER="app",
                                   PASSWORD=PASSWORD)
    call_command("migrate", verbosity=0, skip_checks=True)
    yield c
    from django.db import connections

    connections.close_all()


def items(c, dbname: str = "app") -> list[tuple]:
    return c.sql("SELECT id, name FROM items ORDER BY id", dbname=dbname)


@pytest.fixture
def wrappers(tmp_path):
    """A postgres.bindir whose pg_dump, pg_restore and psql record their argv, and
    whether PGPASSWORD reached them, then run the real program."""
    d = tmp_path / "bin"
    d.mkdir()
    log = tmp_path / "programs.log"
    for name in ("pg_dump", "pg_restore", "psql", "pg_basebackup"):
        p = d / name
        p.write_text("#!/bin/sh\n"
                     f"printf '%s\\n' \"{name} $*\" >> '{log}'\n"
                     f"if [ -n \"$PGPASSWORD\" ]; then echo '{name} PGPASSWORD' >> '{log}'; fi\n"
                     f"exec '{PG_BIN / name}' \"$@\"\n")
        p.chmod(0o755)
    return SimpleNamespace(path=d, log=log)


@pytest.fixture
def site(dj, tmp_path, wrappers):
    """The runbook's settings for one test: a local BACKUP_DIR, walkeeper's own state
    directory and cluster name in WALKEEPER."""
    values = {"BACKUP_DIR": str(store_root(tmp_path / "local")), "BACKUP_SFTP_ENABLED": False,
              "WALKEEPER": {"cluster": "app", "state_dir": str(tmp_path / "state"),
                            "postgres": {"bindir": str(wrappers.path)}}}
    with override_settings(**values):
        yield values
    os.environ.pop("BACKUP_SFTP_PASSWORD", None)


class ArgvSampler:
    """Samples every process's command line (what `ps` shows) while running."""

    def __init__(self):
        self.seen: set[str] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            self.seen.add(f.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            self.rounds += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_command(*args, **options) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


# ---------------------------------------------------------------- backups and restores

@pytest.mark.slow
def test_create_backup_to_local_and_sftp_and_restore(djdb, site, sshd, tmp_path, wrappers):
    from walkeeper.contrib.django import signals

    djdb.execute("SET ROLE app; DROP TABLE IF EXISTS items; "
                 "CREATE TABLE items (id int PRIMARY KEY, name text); "
                 "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g",
                 dbname="app")
    before = items(djdb)
    sftp = {"BACKUP_SFTP_HOST": sshd.host, "BACKUP_SFTP_PORT": sshd.port,
            "BACKUP_SFTP_USER": sshd.user, "BACKUP_SFTP_DIRECTORY": str(sshd.directory),
            "BACKUP_SFTP_KNOWN_HOSTS": str(sshd.known_hosts)}
    if sshd.password:
        sftp["BACKUP_SFTP_PASSWORD"] = sshd.password
    else:
        sftp["BACKUP_SFTP_KEY_FILE"] = str(sshd.key_file)
    got = []

    def receiver(signal, sender, **kwargs):
        got.append((signal, kwargs))

    for s in (signals.backup_started, signals.backup_finished, signals.backup_failed):
        s.connect(receiver)
    try:
        with override_settings(**sftp), ArgvSampler() as sampler:
            out = run_command("create_backup", upload_to_sftp=True, as_json=True)
    finally:
        for s in (signals.backup_started, signals.backup_finished, signals.backup_failed):
            s.disconnect(receiver)
    doc = json.loads(out)
    info = doc["backup"]
    assert doc["kind"] == "dump" and info["database"] == "app"
    assert re.fullmatch(r"app_\d{8}_\d{6}", info["name"])
    assert set(info["stored_bytes"]) == {"local", "sftp"}
    local = tmp_path / "local" / info["key"]
    remote = sshd.directory / info["key"]
    assert local.is_file() and remote.is_file()
    assert local.read_bytes() == remote.read_bytes()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert doc["retention"]["deleted_dumps"] == []
    assert [s for s, _ in got] == [signals.backup_started, signals.backup_finished]
    assert got[1][1]["info"]["id"] == info["id"] and got[0][1]["kind"] == "dump"

    # No password on any command line; pg_dump got it through its environment.
    assert sampler.rounds > 0
    leaks = [c for c in sampler.seen if PASSWORD in c or (sshd.password and sshd.password in c)]
    assert leaks == []
    programs = wrappers.log.read_text()
    assert "pg_dump PGPASSWORD" in programs and PASSWORD not in programs

    # verified: every store's copy checks out
    with override_settings(**sftp, BACKUP_SFTP_ENABLED=True):
        report = json.loads(run_command("verify_backups", as_json=True))
    assert report["ok"], report["problems"]
    with override_settings(**sftp, BACKUP_SFTP_ENABLED=True):
        quick = json.loads(run_command("verify_backups", store="sftp", quick=True, as_json=True))
        with pytest.raises(CommandError) as err:
            run_command("verify_backups", store="nope")
    assert quick["ok"] and err.value.returncode == 2

    # Restore by the runbook's name from the SFTP copy alone (the local one is gone).
    djdb.execute("SET ROLE app; DELETE FROM items WHERE id > 10; INSERT INTO items "
                 "VALUES (-1, 'later')", dbname="app")
    shutil.rmtree(local.parent)
    wrappers.log.write_text("")
    with override_settings(**sftp, BACKUP_SFTP_ENABLED=True), ArgvSampler() as sampler:
        out = run_command("restore_backup", info["name"], clean=True, interactive=False)
    assert "restored walkeeper dump" in out
    assert items(djdb) == before
    assert [c for c in sampler.seen if PASSWORD in c] == []
    assert "pg_restore PGPASSWORD" in wrappers.log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sql", "sql.gz", "dump"])
def test_restore_backup_of_files_pg_dump_made(djdb, site, tmp_path, wrappers, kind):
    djdb.execute("SET ROLE app; DROP TABLE IF EXISTS items; "
                 "CREATE TABLE items (id int PRIMARY KEY, name text); "
                 "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 3000) g",
                 dbname="app")
    before = items(djdb)
    dump = tmp_path / f"app.{kind}"
    base = [str(PG_BIN / "pg_dump"), "-h", str(djdb.socket_dir), "-p", str(djdb.port),
            "-d", "app", "-t", "items"]
    if kind == "dump":
        subprocess.run(base + ["-Fc", "-f", str(dump)], check=True)
    else:
        sql = subprocess.run(base, check=True, capture_output=True).stdout
        dump.write_bytes(gzip.compress(sql) if kind == "sql.gz" else sql)
    djdb.execute("DROP TABLE IF EXISTS items", dbname="app_copy")

    # Into another database (the "copy" alias), then over changed rows with --clean.
    with ArgvSampler() as sampler:
        out = run_command("restore_backup", str(dump), database="copy", interactive=False)
    assert "restored file" in out and "app_copy" in out
    assert items(djdb, "app_copy") == before
    assert [c for c in sampler.seen if PASSWORD in c] == []
    assert "psql PGPASSWORD" in wrappers.log.read_text()

    djdb.execute("SET ROLE app; DELETE FROM items WHERE id > 5; CREATE TABLE extra (x int)",
                 dbname="app_copy")
    result = json.loads(run_command("restore_backup", str(dump), database="copy", clean=True,
                                    interactive=False, as_json=True))
    assert result["database"] == "app_copy" and result["clean"]
    assert items(djdb, "app_copy") == before
    assert djdb.sql("SELECT to_regclass('public.extra')", dbname="app_copy") == [(None,)]


@pytest.mark.slow
def test_sql_file_with_an_error_fails_and_changes_nothing(djdb, site, tmp_path):
    djdb.execute("DROP TABLE IF EXISTS items, fresh", dbname="app_copy")
    djdb.execute("SET ROLE app; CREATE TABLE items (id int, name text); "
                 "INSERT INTO items VALUES (1, 'kept')", dbname="app_copy")
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE fresh (a int);\nINSERT INTO fresh VALUES (1);\n"
                   "INSERT INTO no_such_table VALUES (1);\nINSERT INTO fresh VALUES (2);\n")
    with pytest.raises(CommandError) as err:
        run_command("restore_backup", str(bad), database="copy", clean=True, interactive=False)
    assert err.value.returncode == 1
    assert 'relation "no_such_table" does not exist' in str(err.value)
    assert "rolled back" in str(err.value)
    # --clean's drop was rolled back with the rest
    assert items(djdb, "app_copy") == [(1, "kept")]
    assert djdb.sql("SELECT to_regclass('public.fresh')", dbname="app_copy") == [(None,)]
    # ... and the failure is on the dashboard's list
    failures = (tmp_path / "state" / "failures.jsonl").read_text()
    assert "no_such_table" in failures and "restore-dump" in failures


@pytest.mark.slow
def test_manage_py_exit_codes_and_one_line(djdb, tmp_path):
    """The real manage.py: CommandError carries the CLI's exit codes."""
    env = clean_env({"WK_DJANGO_DB_HOST": "127.0.0.1", "WK_DJANGO_DB_PORT": djdb.port,
                     "WK_DJANGO_DB_PASSWORD": PASSWORD,
                     "WK_DJANGO_BACKUP_DIR": str(store_root(tmp_path / "local")),
                     "XDG_STATE_HOME": str(tmp_path / "xdg")})
    manage = [sys.executable, str(TESTS / "djangoproject" / "manage.py")]

    def run(*args):
        return subprocess.run(manage + list(args), env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    r = run("create_backup", "--json")
    assert r.returncode == 0, r.stderr
    dump_id = json.loads(r.stdout)["backup"]["id"]
    listed = json.loads(run("list_backups", "--json").stdout)
    assert [d["id"] for d in listed["dumps"]] == [dump_id]
    r = run("restore_backup", "20000101T000000Z", "--noinput")
    assert r.returncode == 2 and "no dump '20000101T000000Z'" in r.stderr   # an id that names nothing
    assert "Traceback" not in r.stderr
    r = run("restore_backup", str(tmp_path / "missing.sql"), "--noinput")
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("create_backup", "--database", "nope")
    assert r.returncode == 3 and "no such alias" in r.stderr
    r = run("create_backup", "--upload-to-sftp")
    assert r.returncode == 3 and "no SFTP store" in r.stderr
    # On a terminal it asks; anything but "yes" changes nothing.
    master, slave = os.openpty()
    try:
        os.write(master, b"no\n")
        r = subprocess.run(manage + ["restore_backup", dump_id, "--clean"], env=env,
                           capture_output=True, text=True, timeout=120, stdin=slave)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "restore cancelled; nothing was changed" in r.stderr
    assert "Type 'yes' to continue" in r.stdout
    r = run("backup_status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["last_dump"]["id"] == dump_id
    # BACKUP_DIR from the environment of settings.py is what the checks look at
    r = run("check")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- checks (no services)

def check_ids(**values) -> list[str]:
    from walkeeper.contrib.django.checks import check_settings

    with override_settings(**values):
        return [m.id for m in check_settings()]


def test_checks_pass_on_a_good_configuration(dj, tmp_path):
    assert check_ids(BACKUP_DIR=str(tmp_path / "b"), WALKEEPER={"state_dir": str(tmp_path)}) == []


def test_settings_take_paths_and_strings(dj, tmp_path):
    from walkeeper.contrib.django import conf

    with override_settings(BACKUP_DIR=tmp_path / "b", BACKUP_RETENTION_COUNT="4",
                           WALKEEPER={"state_dir": tmp_path / "s",
                                      "retention": {"daily": 2}}):
        cfg = conf.load()
    assert cfg.stores[0].path == str(tmp_path / "b") and cfg.state_dir == str(tmp_path / "s")
    assert cfg["retention.full_count"] == 4 and cfg["retention.daily"] == 2
    assert "dbname=app" in cfg["postgres.conninfo"]


def test_check_sftp_enabled_without_host(dj, tmp_path):
    assert check_ids(BACKUP_DIR=str(tmp_path), BACKUP_SFTP_ENABLED=True) == ["walkeeper.E001"]


def test_check_unwritable_backup_dir(dj, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: every directory is writable")
        assert check_ids(BACKUP_DIR=str(ro)) == ["walkeeper.E002"]
        assert check_ids(BACKUP_DIR=str(ro / "not" / "yet")) == ["walkeeper.E002"]
        assert check_ids(BACKUP_DIR="relative/dir") == ["walkeeper.E002"]
    finally:
        ro.chmod(0o700)


def test_check_missing_known_hosts_entry(dj, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("[other.example]:2222 ssh-ed25519 "
                  "AAAAC3NzaC1lZDI1NTE5AAAAIGm4S8gUc2l0ZVdhbGtlZXBlclRlc3RLZXkxMjM0\n")
    sftp = dict(BACKUP_DIR=str(tmp_path / "b"), BACKUP_SFTP_ENABLED=True,
                BACKUP_SFTP_HOST="backup.example", BACKUP_SFTP_PORT=2222,
                BACKUP_SFTP_USER="u", BACKUP_SFTP_KNOWN_HOSTS=str(kh))
    assert check_ids(**sftp) == ["walkeeper.E003"]
    assert check_ids(**{**sftp, "BACKUP_SFTP_KNOWN_HOSTS": str(tmp_path / "none")}) == \
        ["walkeeper.E003"]
    kh.write_text(kh.read_text().replace("other.example", "backup.example"))
    assert check_ids(**sftp) == []


def test_check_unknown_setting_names(dj, tmp_path):
    from walkeeper.contrib.django.checks import check_settings

    with override_settings(BACKUP_DIR=str(tmp_path), BACKUP_SFTP_HOSTNAME="typo"):
        [msg] = check_settings()
    assert msg.id == "walkeeper.E004" and "BACKUP_SFTP_HOSTNAME" in msg.msg
    assert "BACKUP_SFTP_HOST" in msg.hint
    assert check_ids(BACKUP_DIR=str(tmp_path), WALKEEPER={"retention": {"dayly": 3}}) == \
        ["walkeeper.E004"]
    assert check_ids(BACKUP_DIR=str(tmp_path), WALKEEPER={"compression": {"level": 99}}) == \
        ["walkeeper.E005"]


def test_manage_py_check_reports_the_id(dj, tmp_path):
    from django.core.management.base import SystemCheckError

    with override_settings(BACKUP_DIR=str(tmp_path), BACKUP_SFTP_ENABLED=True):
        with pytest.raises(SystemCheckError, match="walkeeper.E001"):
            call_command("check")


def test_damaged_files_are_refused_before_any_connection(dj, site, tmp_path):
    """inspect() reads the whole file first: a truncated gzip, a binary file or a damaged
    custom dump stop the restore before anything connects (no database runs here)."""
    sql = b"CREATE TABLE t (a int);\n" * 20000
    gz = tmp_path / "cut.sql.gz"
    gz.write_bytes(gzip.compress(sql)[:-200])
    binary = tmp_path / "random.sql"
    binary.write_bytes(os.urandom(4096) + b"\0")
    custom = tmp_path / "bad.dump"
    custom.write_bytes(b"PGDMP" + os.urandom(3000))
    for path, code in ((gz, 1), (binary, 2), (custom, 1), (tmp_path / "none.sql", 2)):
        with pytest.raises(CommandError) as err:
            run_command("restore_backup", str(path), interactive=False)
        assert err.value.returncode == code, (path, str(err.value))
        assert "nothing was restored" in str(err.value) or "no such file" in str(err.value)


def test_cli_and_hot_paths_do_not_import_django(tmp_path):
    code = ("import sys, walkeeper.cli, walkeeper.archiving.push, walkeeper.archiving.fetch, "
            "walkeeper.backups.dump, walkeeper.reports.status, walkeeper.backups.restore_file; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------- the dashboard

@pytest.mark.slow
def test_dashboard_is_staff_only_and_shows_the_four_items(djdb, site, tmp_path):
    from django.contrib.auth.models import User
    from django.test import Client

    from walkeeper import state

    run_command("create_backup")
    state.record_failure(str(tmp_path / "state"), "dump", "app", "pg_dump failed: disk full")
    User.objects.filter(username__in=["staff", "plain"]).delete()
    User.objects.create_user("staff", password="pw-staff", is_staff=True)
    User.objects.create_user("plain", password="pw-plain")

    anon = Client()
    for url in ("/backups/", "/backups/status.json"):
        r = anon.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/?next=")
        assert b"app_" not in r.content and b"disk full" not in r.content

    plain = Client()
    assert plain.login(username="plain", password="pw-plain")
    assert plain.get("/backups/").status_code == 403
    assert plain.get("/backups/status.json").status_code == 403

    staff = Client()
    assert staff.login(username="staff", password="pw-staff")
    r = staff.get("/backups/")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/html")
    assert "no-cache" in r.get("Cache-Control", "") or "no-store" in r.get("Cache-Control", "")
    html = r.content.decode()
    local = str(tmp_path / "local")
    for needle in ("Last dump", 'id="dumps"', "app_",          # last successful backup
                   local, "in local",                          # sizes and locations
                   'id="failures"', "disk full",               # failed attempts
                   'class="free-space"', "free",               # available storage space
                   "Last WAL push", "Archive lag"):            # the WAL archive
        assert needle in html, needle
    assert PASSWORD not in html

    assert staff.post("/backups/").status_code in (403, 405)      # read-only
    data = staff.get("/backups/status.json").json()
    assert data["last_dump"]["database"] == "app"
    assert data["stores"][0]["location"] == local and data["stores"][0]["free_bytes"] > 0
    assert any("disk full" in f["reason"] for f in data["failures"])
    assert {"last_push", "archive_lag_bytes", "wal"} <= data.keys()

    with override_settings(WALKEEPER_DASHBOARD_PERMISSION="auth.view_user"):
        from django.contrib.auth.models import Permission

        plain_user = User.objects.get(username="plain")
        plain_user.user_permissions.add(Permission.objects.get(codename="view_user"))
        assert plain.get("/backups/").status_code == 200

    need(CHROMIUM is not None, "chromium is not installed (bin/test installs it when run as root)")
    page = tmp_path / "dashboard.html"
    page.write_text(html)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", f"file://{page}"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
                         stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="dumps"' in dom.stdout and "disk full" in dom.stdout
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]
    assert console == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_create_backup_base_takes_a_walkeeper_base_backup(dj, pg, wk, tmp_path):
    """--base: pg_basebackup into the stores that archive_command feeds; the DATABASES
    connection is the one used, the stores come from WALKEEPER_CONFIG."""
    from test_backup import archiving_cluster

    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    db = {"ENGINE": "django.db.backends.postgresql", "HOST": str(cluster.socket_dir),
          "PORT": str(cluster.port), "NAME": "postgres", "USER": cluster.user}
    with override_settings(WALKEEPER_CONFIG=str(cfg_path), WALKEEPER=None, BACKUP_DIR=None,
                           DATABASES={"default": db}):
        doc = json.loads(run_command("create_backup", base=True, as_json=True))
        listed = json.loads(run_command("list_backups", as_json=True))
    assert doc["kind"] == "base" and doc["backup"]["label"] == "django postgres"
    assert [b["id"] for b in listed["backups"]] == [doc["backup"]["id"]]
    assert (tmp_path / "local" / "test" / "backups" / doc["backup"]["id"]).is_dir()


@pytest.mark.slow
def test_manage_py_drill_restores_the_newest_base_backup(dj, pg, wk, tmp_path):
    """manage.py drill is `walkeeper drill`: the newest base backup restored into a
    scratch cluster, the archive replayed, every database checked, the copy removed."""
    from test_backup import archiving_cluster

    cluster, cfg_path = archiving_cluster(pg, wk, tmp_path)
    cluster.execute("CREATE TABLE garage (n int)")
    cluster.execute("INSERT INTO garage SELECT generate_series(1, 500)")
    r = wk("--config", cfg_path, "basebackup", "--no-progress")
    assert r.returncode == 0, r.stderr
    cluster.execute("INSERT INTO garage SELECT generate_series(501, 900)")
    cluster.wait_archived(cluster.switch_wal())
    store = tmp_path / "local"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with override_settings(WALKEEPER_CONFIG=str(cfg_path), WALKEEPER=None, BACKUP_DIR=None):
        doc = json.loads(run_command("drill", as_json=True))
    assert doc["ok"] is True, doc
    record = json.loads((tmp_path / "state" / "last_drill.json").read_text())
    assert record["ok"] is True and "postgres" in record["databases"]
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing written
    cluster.stop()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_failed_backup_sends_backup_failed(dj, site, pg, tmp_path):
    """The database is down: exit 1, one line, the signal, and a recorded failure."""
    from walkeeper.contrib.django import signals

    c = pg.new()
    db = {"ENGINE": "django.db.backends.postgresql", "HOST": str(c.socket_dir),
          "PORT": str(c.port), "NAME": "postgres", "USER": c.user}
    c.stop()
    got = []

    def receiver(sender, **kwargs):
        got.append(kwargs)

    signals.backup_failed.connect(receiver)
    try:
        with override_settings(DATABASES={"default": db}), pytest.raises(CommandError) as err:
            run_command("create_backup")
    finally:
        signals.backup_failed.disconnect(receiver)
    assert err.value.returncode == 1 and "pg_dump" in str(err.value)
    assert len(got) == 1 and got[0]["exit_code"] == 1 and got[0]["kind"] == "dump"
    assert json.loads((tmp_path / "state" / "failures.jsonl").read_text())["command"] == "dump"


@pytest.mark.slow
def test_create_backup_applies_the_retention_count(djdb, site, tmp_path):
    policy = {"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
    walkeeper = {**site["WALKEEPER"], "retention": policy}
    with override_settings(BACKUP_RETENTION_COUNT=2, WALKEEPER=walkeeper):
        docs = [json.loads(run_command("create_backup", as_json=True)) for _ in range(3)]
        listed = json.loads(run_command("list_backups", as_json=True))
    names = [d["backup"]["name"] for d in docs]
    assert len(set(names)) == 3            # unique even within one second
    assert docs[2]["retention"]["deleted_dumps"] == [docs[0]["backup"]["id"]]
    assert [d["id"] for d in listed["dumps"]] == [d["backup"]["id"] for d in docs[1:]]
    assert [d["name"] for d in listed["dumps"]] == names[1:]
    with override_settings(WALKEEPER=walkeeper):
        text = run_command("list_backups")
    words = text.split()
    assert "NAME" in words and all(n in words for n in names[1:]) and names[0] not in words
