#!/usr/bin/env python3
"""walkeeper push/fetch to an S3 store (Ceph RGW on loopback) against the same to a local
store: one run, printed as a table and saved as JSON in bench/out/.

Over N real 16 MiB WAL segments (bench/make_wal.py OUT; --wal OUT), one process per
segment as PostgreSQL runs archive_command / restore_command:

  push   walkeeper push to a local store (read-ahead)  |  to S3 with push.parallel = 1
         (no read-ahead: every call pays botocore's import)  |  to S3 (read-ahead)
  fetch  walkeeper fetch from the local store (prefetch)  |  from S3 without prefetch
         |  from S3 with prefetch (the prefetcher holds one client for the burst)
  import botocore's import and client construction in this interpreter (median of 5)

RGW is started by tests/rgw/rgw-up.sh in a temporary directory (needs ceph-mon,
ceph-osd, radosgw: bin/setup.sh installs them) and stopped at the end. Run as the test
user (bench/run.sh does it when started as root), with walkeeper[s3] installed in the
interpreter that runs walkeeper. Timings live here and in bench/out/, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RGW = HERE.parent / "tests" / "rgw"


def log(msg: str) -> None:
    print(f"[bench-s3] {msg}", file=sys.stderr, flush=True)


def rgw_up(d: Path, memstore_bytes: int = 6 << 30, tls: bool = False) -> dict:
    """Start RGW in d (stopped by rgw-down.sh, or when this process dies); its env lines.
    tls: also an HTTPS endpoint (S3_TLS_ENDPOINT, S3_CA_FILE: a throwaway CA)."""
    p = subprocess.run([str(RGW / "rgw-up.sh"), str(d)], capture_output=True, text=True,
                       env={**os.environ, "RGW_WATCH_PID": str(os.getpid()),
                            "RGW_MEMSTORE_BYTES": str(memstore_bytes),
                            "RGW_TLS": "1" if tls else "0"}, timeout=180)
    if p.returncode:
        raise SystemExit(f"rgw-up.sh failed: {p.stderr[-2000:]}")
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def client(env: dict, tls: bool = False):
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=env["S3_TLS_ENDPOINT" if tls else "S3_ENDPOINT"],
        region_name="us-east-1", verify=env["S3_CA_FILE"] if tls else None,
        aws_access_key_id=env["S3_ACCESS_KEY"], aws_secret_access_key=env["S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def backlog(d: Path, segs: list[Path]) -> Path:
    pg_wal = d / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for s in segs:
        try:
            os.link(s, pg_wal / s.name)
        except OSError:
            shutil.copy(s, pg_wal / s.name)
        (pg_wal / "archive_status" / f"{s.name}.ready").touch()
    return pg_wal


def wait_unlocked(paths, timeout: float = 120) -> None:
    import fcntl

    deadline = time.monotonic() + timeout
    for p in paths:
        while time.monotonic() < deadline:
            fd = os.open(p, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                break
            except OSError:
                time.sleep(0.1)
            finally:
                os.close(fd)


def config(d: Path, store: str, extra: str = "") -> Path:
    p = d / "walkeeper.toml"
    p.write_text(f'cluster = "bench"\nstate_dir = "{d / "state"}"\n{extra}\n{store}')
    return p


def s3_store(env: dict, bucket: str, tls: bool = False) -> str:
    """A [[stores]] table for bucket; tls: the HTTPS endpoint, trusting rgw-up.sh's CA."""
    endpoint = env["S3_TLS_ENDPOINT" if tls else "S3_ENDPOINT"]
    return (f'[[stores]]\nname = "objects"\ntype = "s3"\nendpoint = "{endpoint}"\n'
            f'bucket = "{bucket}"\naccess_key_env = "WALKEEPER_S3_ACCESS_KEY"\n'
            f'secret_key_env = "WALKEEPER_S3_SECRET_KEY"\n'
            + (f'ca_file = "{env["S3_CA_FILE"]}"\n' if tls else ""))


def bucket_bytes(c, bucket: str) -> int:
    """Sum of the object sizes in bucket (listed, untimed)."""
    total = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += sum(o["Size"] for o in page.get("Contents", ()))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wal", type=Path, required=True, help="bench/make_wal.py's OUT")
    ap.add_argument("--segments", type=int, default=64)
    ap.add_argument("--walkeeper", default=shutil.which("walkeeper") or "walkeeper")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    a = ap.parse_args()
    segs = sorted(p for p in (a.wal / "segments").iterdir() if len(p.name) == 24)[:a.segments]
    if not segs:
        raise SystemExit(f"no segments in {a.wal / 'segments'} (run bench/make_wal.py)")
    work = Path(tempfile.mkdtemp(prefix="wks3b", dir="/tmp"))
    rgw = rgw_up(work / "rgw")
    env = {**os.environ, "WALKEEPER_S3_ACCESS_KEY": rgw["S3_ACCESS_KEY"],
           "WALKEEPER_S3_SECRET_KEY": rgw["S3_SECRET_KEY"]}
    c = client(rgw)
    results: dict = {"segments": len(segs), "segment_bytes": segs[0].stat().st_size,
                     "loadavg_start": [round(x, 2) for x in os.getloadavg()], "rows": {}}
    try:
        py = sys.executable
        cost = []
        for _ in range(5):
            r = subprocess.run([py, "-c", "import time; t = time.perf_counter(); "
                                "import botocore.session; from botocore.config import Config; "
                                "botocore.session.get_session().create_client('s3', "
                                "endpoint_url='http://127.0.0.1:1', region_name='us-east-1', "
                                "aws_access_key_id='a', aws_secret_access_key='b', "
                                "config=Config(request_checksum_calculation='when_required')); "
                                "print(time.perf_counter() - t)"],
                               capture_output=True, text=True, check=True)
            cost.append(float(r.stdout))
        results["botocore_import_and_client_s"] = round(statistics.median(cost), 3)
        log(f"botocore import + client: {statistics.median(cost) * 1000:.0f} ms (median of 5)")

        def push_row(label: str, store: str, extra: str = "") -> None:
            d = work / label.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")
            d.mkdir()
            cfg = config(d, store, extra)
            pg_wal = backlog(d, segs)
            t = time.perf_counter()
            for s in segs:
                subprocess.run([a.walkeeper, "--config", str(cfg), "push", str(pg_wal / s.name),
                                s.name], env=env, check=True, stdin=subprocess.DEVNULL)
                os.rename(pg_wal / "archive_status" / f"{s.name}.ready",
                          pg_wal / "archive_status" / f"{s.name}.done")
            dt = time.perf_counter() - t
            wait_unlocked((d / "state").glob("readahead/*/.pusher"))
            results["rows"][label] = {"seconds": round(dt, 2), "seg_per_s": round(len(segs) / dt, 2)}
            log(f"{label}: {dt:.1f} s, {len(segs) / dt:.2f} seg/s")
            return store

        def fetch_row(label: str, store: str, extra: str = "") -> None:
            d = work / ("f-" + label.replace(" ", "_").replace("(", "").replace(")", "")
                        .replace("=", ""))
            d.mkdir()
            cfg2 = config(d, store, extra)
            dest = d / "pg_wal"
            dest.mkdir()
            t = time.perf_counter()
            for s in segs:
                subprocess.run([a.walkeeper, "--config", str(cfg2), "fetch", s.name,
                                str(dest / "RECOVERYXLOG")], env=env, check=True,
                               stdin=subprocess.DEVNULL)
            dt = time.perf_counter() - t
            ok = (dest / "RECOVERYXLOG").read_bytes() == segs[-1].read_bytes()
            wait_unlocked((d / "state").glob("spool/*/.lock"))
            results["rows"][label] = {"seconds": round(dt, 2), "seg_per_s": round(len(segs) / dt, 2),
                                      "last_segment_identical": ok}
            log(f"{label}: {dt:.1f} s, {len(segs) / dt:.2f} seg/s")

        (work / "store").mkdir(mode=0o700, exist_ok=True)   # as `walkeeper check` makes it
        local = push_row("local push (read-ahead)",
                         f'[[stores]]\nname = "local"\ntype = "local"\npath = "{work / "store"}"\n')
        c.create_bucket(Bucket="bench-a")
        push_row("s3 push (push.parallel = 1)", s3_store(rgw, "bench-a"), "[push]\nparallel = 1\n")
        c.create_bucket(Bucket="bench-b")
        s3 = push_row("s3 push (read-ahead)", s3_store(rgw, "bench-b"))
        fetch_row("local fetch (prefetch)", local)
        fetch_row("s3 fetch (prefetch = 0)", s3, "[fetch]\nprefetch = 0\n")
        fetch_row("s3 fetch (prefetch)", s3)
    finally:
        subprocess.run([str(RGW / "rgw-down.sh"), str(work / "rgw")], timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"s3-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'row':<32} {'s':>7} {'seg/s':>7}")
    for label, r in results["rows"].items():
        print(f"{label:<32} {r['seconds']:>7} {r['seg_per_s']:>7}")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
