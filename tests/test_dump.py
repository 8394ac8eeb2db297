"""Logical dumps end to end: pg_dump -Fc streamed into the stores, restored with
pg_restore after the checksum matched, and refused when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walkeeper import config as config_mod
from walkeeper.backups import dump
from walkeeper.errors import OperationFailed, UnknownName
from walkeeper.stores import archive_store
from walkeeper.stores.local_client import LocalStore
from conftest import make_config


def write_config(tmp_path: Path, cluster, extra: str = "") -> Path:
    return make_config(tmp_path, conninfo=cluster.conninfo, extra=extra)


def rows(cluster, dbname: str) -> list[tuple]:
    return cluster.sql("SELECT id, name FROM items ORDER BY id", dbname=dbname)


def databases(cluster) -> set[str]:
    return {r[0] for r in cluster.sql("SELECT datname FROM pg_database")}


@pytest.fixture
def app(cluster):
    cluster.execute('CREATE DATABASE "app/data"')
    cluster.execute("CREATE TABLE items (id int PRIMARY KEY, name text); "
                    "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g",
                    dbname="app/data")
    return cluster


@pytest.mark.parametrize("algorithm", ["zstd", "none"])
def test_dump_and_restore_into_a_new_database(app, tmp_path, algorithm):
    cfg = config_mod.load(str(write_config(tmp_path, app,
                                           f'[compression]\nalgorithm = "{algorithm}"')))
    doc = dump.take_dump(cfg, "app/data")
    suffix = ".zst" if algorithm == "zstd" else ".raw"
    assert doc["key"] == f"test/dumps/{doc['id']}/app_data.dump{suffix}"
    stored = tmp_path / "local" / doc["key"]
    assert doc["stored_bytes"] == {"local": stored.stat().st_size}
    meta = json.loads((stored.parent / "dump.json").read_text())
    assert meta == doc and meta["database"] == "app/data" and "+00:00" in meta["time"]
    assert dump.list_dumps(archive_store(LocalStore("local", str(tmp_path / "local"))), "test") == [doc]

    result = dump.restore_dump(cfg, doc["id"], "copy", clean=False)
    assert result["created"] and result["store"] == "local"
    assert rows(app, "copy") == rows(app, "app/data")
    assert len(rows(app, "copy")) == 5000

    # --clean puts the dumped state back over later changes.
    app.execute("DELETE FROM items WHERE id > 10; INSERT INTO items VALUES (-1, 'new')",
                dbname="copy")
    result = dump.restore_dump(cfg, doc["id"], "copy", clean=True)
    assert not result["created"]
    assert rows(app, "copy") == rows(app, "app/data")
    assert not list((tmp_path / "state").glob("*.dump*"))


def test_default_database_is_the_conninfo_one(cluster, tmp_path):
    cluster.execute("CREATE TABLE items (id int, name text); INSERT INTO items VALUES (1, 'a')")
    cfg = config_mod.load(str(write_config(tmp_path, cluster)))
    doc = dump.take_dump(cfg)
    assert doc["database"] == "postgres"
    dump.restore_dump(cfg, doc["id"], "other", clean=False)
    assert rows(cluster, "other") == [(1, "a")]


def test_flipped_byte_refuses_the_restore(app, tmp_path):
    cfg = config_mod.load(str(write_config(tmp_path, app)))
    doc = dump.take_dump(cfg, "app/data")
    stored = tmp_path / "local" / doc["key"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(OperationFailed) as exc:
        dump.restore_dump(cfg, doc["id"], "copy", clean=False)
    assert "nothing was restored" in exc.value.line()
    assert "copy" not in databases(app)
    assert not [p for p in (tmp_path / "state").iterdir() if "restore-dump" in p.name]


def test_unknown_dump_id_lists_the_known_ones(app, tmp_path):
    cfg = config_mod.load(str(write_config(tmp_path, app)))
    doc = dump.take_dump(cfg, "app/data")
    with pytest.raises(UnknownName) as exc:
        dump.restore_dump(cfg, "20200101T000000Z", "copy", clean=False)
    # An id that names nothing is bad input (exit 2), as for recover --backup.
    assert doc["id"] in exc.value.line() and exc.value.exit_code == 2
    assert "copy" not in databases(app)


def test_dump_of_a_missing_database_fails_and_stores_nothing(cluster, tmp_path):
    cfg = config_mod.load(str(write_config(tmp_path, cluster)))
    with pytest.raises(OperationFailed) as exc:
        dump.take_dump(cfg, "nosuchdb")
    assert "pg_dump failed" in exc.value.line() and "nosuchdb" in exc.value.line()
    assert not [p for p in (tmp_path / "local").rglob("*") if p.is_file()]
