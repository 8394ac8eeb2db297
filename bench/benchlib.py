"""Small helpers the benchmark scripts share (they run as scripts, so this module is
imported from the script's own directory)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
from pathlib import Path


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def free_port() -> int:
    for _ in range(50):
        port = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free loopback port found")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def du_files(path: Path) -> tuple[int, int]:
    """(bytes, files) under path."""
    total = files = 0
    for root, _, names in os.walk(path):
        for f in names:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def du(path: Path) -> int:
    return du_files(path)[0]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def save_json(data: dict, name: str, dirs) -> None:
    """Write data as NAME into each of the directories given (None entries skipped)."""
    for d in filter(None, dirs):
        os.makedirs(d, exist_ok=True)
        Path(d, name).write_text(json.dumps(data, indent=1) + "\n")


def pg_env(sockdir, port) -> dict[str, str]:
    """The environment for libpq programs talking to a bench cluster."""
    return {**os.environ, "PGHOST": str(sockdir), "PGPORT": str(port),
            "PGUSER": "postgres", "PGDATABASE": "postgres"}


def initdb(pgbin: Path, pgdata: Path, port: int, sockdir, settings: str, *args) -> None:
    """initdb PGDATA (trust, UTF8, C locale, superuser postgres; ARGS appended) and
    configure a server on a Unix socket only (SOCKDIR, PORT) with WAL archiving on,
    followed by SETTINGS (postgresql.conf lines)."""
    run([Path(pgbin) / "initdb", "-D", pgdata, "-A", "trust", "-E", "UTF8", "--locale=C",
         "-U", "postgres", *args], stdout=subprocess.DEVNULL)
    with open(Path(pgdata) / "postgresql.conf", "a") as f:
        f.write(f"""
listen_addresses = ''
port = {port}
unix_socket_directories = '{sockdir}'
wal_level = replica
archive_mode = on
{settings}""")
