#!/usr/bin/env python3
"""Make 64 real 16 MiB WAL segments for the push/fetch benchmark.

Creates a throwaway PostgreSQL cluster (initdb in OUT/pgdata, random port, unix
socket in a short /tmp directory, archive_mode=on with a plain `cp` archive_command),
runs `pgbench -i` and then pgbench load until enough full segments are archived,
stops the cluster and keeps:

    OUT/segments/<64 WAL files under their real names>
    OUT/pgdata/          the stopped cluster (pgBackRest's pg1-path: its pg_control
                         must match the segments' system identifier)
    OUT/meta.json        system identifier, PostgreSQL version, segment names, sha256

If OUT/meta.json already describes a complete set it is reused as is.
Must run as a non-root user (PostgreSQL refuses root); bench/run.sh handles that.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, initdb, pg_env, run, sha256

PGBIN_DEFAULT = "/usr/lib/postgresql/15/bin"
SEG_SIZE = 16 * 1024 * 1024
SEG_RE = re.compile(r"^[0-9A-F]{24}$")


def log(msg: str) -> None:
    print(f"[make_wal] {msg}", file=sys.stderr, flush=True)





def controldata(pgbin: Path, pgdata: Path) -> dict[str, str]:
    out = run([pgbin / "pg_controldata", pgdata], capture_output=True, text=True,
              env={**os.environ, "LC_ALL": "C"}).stdout
    return {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in out.splitlines()) if v}


def full_segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()
                  if SEG_RE.match(p.name) and p.stat().st_size == SEG_SIZE)


def existing_ok(out: Path, count: int) -> bool:
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
        names = meta["segments"]
    except (ValueError, KeyError):
        return False
    if len(names) < count or not (out / "pgdata" / "global" / "pg_control").exists():
        return False
    return all((out / "segments" / n).is_file() and
               (out / "segments" / n).stat().st_size == SEG_SIZE for n in names)


def make(out: Path, count: int, scale: int, pgbin: Path) -> None:
    pgdata = out / "pgdata"
    archive = out / "archive"
    segments = out / "segments"
    for d in (pgdata, archive, segments):
        if d.exists():
            shutil.rmtree(d)
    archive.mkdir(parents=True)
    segments.mkdir()
    sockdir = Path(tempfile.mkdtemp(prefix="wkb", dir="/tmp"))  # short: socket path limit
    port = free_port()
    log(f"initdb {pgdata}")
    initdb(pgbin, pgdata, port, sockdir, f"""\
# walkeeper bench
archive_command = 'cp %p {archive}/%f'
max_wal_size = 4GB
min_wal_size = 1GB
shared_buffers = 128MB
fsync = on
synchronous_commit = off   # WAL volume is what matters here, not commit latency
full_page_writes = on
""")
    env = pg_env(sockdir, port)
    log(f"start cluster (port {port}, socket {sockdir})")
    run([pgbin / "pg_ctl", "-D", pgdata, "-l", out / "postgres.log", "-w", "start"],
        env=env, stdout=subprocess.DEVNULL)
    try:
        log(f"pgbench -i -s {scale}")
        run([pgbin / "pgbench", "-i", "-q", "-s", scale], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start_seg = len(full_segments(archive))
        # Keep segments written by the OLTP load, not by initialisation; a few extra
        # so that every kept segment is full and archived by the cluster itself.
        want = start_seg + count + 2
        deadline = time.monotonic() + 1800
        while len(full_segments(archive)) < want:
            if time.monotonic() > deadline:
                raise SystemExit("pgbench load did not produce enough WAL in 30 minutes")
            have = len(full_segments(archive))
            log(f"pgbench load: {have - start_seg}/{count + 2} segments archived")
            run([pgbin / "pgbench", "-n", "-c", "4", "-j", "2", "-T", "20"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        log("stop cluster")
        run([pgbin / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], env=env,
            stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(sockdir, ignore_errors=True)
    finish(out, count, pgbin)


def finish(out: Path, count: int, pgbin: Path) -> None:
    """Copy the kept segments out of OUT/archive and write OUT/meta.json."""
    pgdata, archive, segments = out / "pgdata", out / "archive", out / "segments"
    names = full_segments(archive)
    # The last `count` full segments before the final (possibly just-archived) one.
    keep = names[-(count + 1):-1]
    for n in keep:
        shutil.copy2(archive / n, segments / n)
    cd = controldata(pgbin, pgdata)
    version = run([pgbin / "postgres", "--version"], capture_output=True, text=True).stdout.strip()
    meta = {
        "system_identifier": cd["Database system identifier"],
        "pg_control_version": cd.get("pg_control version number"),
        "catalog_version": cd.get("Catalog version number"),
        "pg_version": version,
        "pg_major": re.search(r"\(PostgreSQL\)\s+(\d+)", version).group(1),
        "pgbin": str(pgbin),
        "pgdata": str(pgdata),
        "segment_size": SEG_SIZE,
        "segments": keep,
        "sha256": {n: sha256(segments / n) for n in keep},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(archive)
    log(f"kept {len(keep)} segments {keep[0]}..{keep[-1]} in {segments}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("WKBENCH_WAL_DIR", "/tmp/walkeeper-bench/wal"),
                    help="output directory (default: $WKBENCH_WAL_DIR or %(default)s)")
    ap.add_argument("--count", type=int, default=64, help="segments to keep (default 64)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    ap.add_argument("--pgbin", default=os.environ.get("PGBIN", PGBIN_DEFAULT))
    ap.add_argument("--force", action="store_true", help="rebuild even if a set exists")
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("make_wal.py: PostgreSQL refuses root; run bench/run.sh "
                         "or as an unprivileged user")
    out = Path(a.out).resolve()
    if not a.force and existing_ok(out, a.count):
        log(f"reusing {out}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        make(out, a.count, a.scale, Path(a.pgbin))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
