#!/usr/bin/env python3
"""walkeeper basebackup of the pgbench database to Ceph RGW beside the same backup to a
local store, in one run (issue 17): printed and saved as JSON in bench/out/.

The cluster is bench/backup_restore.py's (its Cluster class: `pgbench -i -s 100`, ~1.5 GB,
made on first use in WORK/pgdata and reused), in a work directory of its own
(default /tmp/walkeeper-bench/s3br). Its archive_command is `walkeeper --config
WORK/walkeeper.toml push %p %f`; before each walkeeper row that file is rewritten to name
the row's store only (a fresh local directory, or a fresh bucket on RGW's HTTPS endpoint
with rgw-up.sh's CA) and a fresh state_dir, so the WAL the backup waits for goes to the
same store as the backup. Rows, rotated per round, medians of --rounds:

    pg_basebackup -Ft -D - -X none -c fast | zstd -3 -q > FILE   context (the issue-3 baseline)
    walkeeper basebackup  (local store, zstd 3)
    walkeeper basebackup  (S3 store on RGW, zstd 3)   bar: <= 1.3x the local row;
                                                      peak RSS < 150 MB

Each timed command runs after an untimed sync and a wait for an idle machine
(backup_restore.timed). Memory of a walkeeper row: its own VmHWM sampled from /proc
every 50 ms, and /usr/bin/time's %M (wait4 ru_maxrss of walkeeper and its children, the
largest single process, measured from a small parent so no harness RSS leaks into it).

Run as a non-root user with an interpreter that has botocore (walkeeper[s3]'s venv):
`bench/run.sh --s3-backup` does both.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import s3 as s3b
from backup_restore import PGBIN_DEFAULT, QUIET, Cluster, timed
from benchlib import du, loadavg, save_json

HERE = Path(__file__).resolve().parent
ROWS = ["pg_basebackup | zstd -3", "walkeeper basebackup (local)", "walkeeper basebackup (s3)"]
RSS_BAR_MB = 150
RATIO_BAR = 1.3


def log(msg: str) -> None:
    print(f"[s3-backup] {msg}", file=sys.stderr, flush=True)


class StoreCluster(Cluster):
    """backup_restore's cluster whose walkeeper config names one chosen store."""

    stores_toml = ""
    state_dir: Path | None = None

    def write_config(self) -> None:
        stores = self.stores_toml or (f'[[stores]]\nname = "local"\ntype = "local"\n'
                                      f'path = "{self.store}"\n')
        self.cfg.write_text(f'''cluster = "bench"
state_dir = "{self.state_dir or self.work / 'state'}"
[postgres]
conninfo = "{self.conninfo}"
bindir = "{self.pgbin}"
[compression]
algorithm = "zstd"
level = 3
{stores}''')


def wait_archived(c: Cluster, timeout: float = 120) -> None:
    """Untimed: until the archiver has nothing .ready (the previous row's WAL is out)."""
    status = c.pgdata / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.suffix == ".ready" for p in status.iterdir()):
        time.sleep(0.2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("WKBENCH_S3BR_DIR",
                                                     "/tmp/walkeeper-bench/s3br"))
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pgbin", default=os.environ.get("PGBIN", PGBIN_DEFAULT))
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"))
    ap.add_argument("--quiet-wait", type=float, default=60.0, metavar="S")
    ap.add_argument("--memstore-gib", type=int, default=6)
    ap.add_argument("--prepare-only", action="store_true",
                    help="make (or check) the cluster, stop it, measure nothing")
    ap.add_argument("--keep-running", action="store_true")
    ap.add_argument("--out-dir", default=str(HERE / "out"))
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("s3_backup.py: PostgreSQL refuses root; run bench/run.sh --s3-backup")
    wk = shlex.split(a.walkeeper)
    wk[0] = shutil.which(wk[0]) or wk[0]
    QUIET["max_wait"] = a.quiet_wait
    work = Path(a.work).resolve()
    c = StoreCluster(work, Path(a.pgbin), wk)
    c.ensure(a.scale)
    if a.prepare_only:
        c.stop()
        log(f"cluster ready in {c.pgdata}")
        return 0
    scratch = work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    rgw = s3b.rgw_up(scratch / "rgw", a.memstore_gib << 30, tls=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALKEEPER_", "AWS_"))}
    env.update(WALKEEPER_S3_ACCESS_KEY=rgw["S3_ACCESS_KEY"],
               WALKEEPER_S3_SECRET_KEY=rgw["S3_SECRET_KEY"])
    os.environ.update(WALKEEPER_S3_ACCESS_KEY=rgw["S3_ACCESS_KEY"],   # the archiver's too:
                      WALKEEPER_S3_SECRET_KEY=rgw["S3_SECRET_KEY"])   # see the restart below
    # The server's archive_command needs the S3 keys in its environment: restart the
    # cluster from this process's environment.
    c.stop()
    c.start()
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": a.rounds,
               "walkeeper": wk, "walkeeper_version": subprocess.run(
                   [*wk, "--version"], capture_output=True, text=True).stdout.strip(),
               "scale": a.scale, "cpus": os.cpu_count(), "loadavg_start": loadavg(),
               "database_bytes": int(c.sql("select pg_database_size('postgres')")),
               "endpoint": "RGW HTTPS (RGW_TLS=1), ca_file = rgw-up.sh's CA",
               "radosgw": subprocess.run(["radosgw", "--version"], capture_output=True,
                                         text=True).stdout.strip(), "rows": {r: [] for r in ROWS}}
    cl = s3b.client(rgw, tls=True)
    pbb = c.pgbin / "pg_basebackup"
    try:
        for rnd in range(a.rounds):
            order = ROWS[rnd % len(ROWS):] + ROWS[:rnd % len(ROWS)]
            for row in order:
                out = scratch / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if row == "pg_basebackup | zstd -3":
                    wait_archived(c)
                    cmd = (f"set -o pipefail; {shlex.quote(str(pbb))} -d {shlex.quote(c.conninfo)} "
                           f"-Ft -D - -X none -c fast | zstd -3 -q > "
                           f"{shlex.quote(str(out / 'base.tar.zst'))}")
                    r = timed(["bash", "-c", cmd])
                    r["stored_bytes"] = du(out)
                else:
                    kind = "s3" if row.endswith("(s3)") else "local"
                    c.state_dir = scratch / f"state-{kind}-r{rnd}"
                    if kind == "s3":
                        bucket = f"bb-r{rnd}"
                        cl.create_bucket(Bucket=bucket)
                        c.stores_toml = s3b.s3_store(rgw, bucket, tls=True)
                    else:
                        store = scratch / f"store-r{rnd}"
                        store.mkdir(mode=0o700)   # as `walkeeper check` makes it
                        c.stores_toml = (f'[[stores]]\nname = "local"\ntype = "local"\n'
                                         f'path = "{store}"\n')
                    c.write_config()
                    wait_archived(c)
                    tf = scratch / "time.out"
                    r = timed(["/usr/bin/time", "-f", "%M", "-o", str(tf), *wk, "--config",
                               str(c.cfg), "basebackup", "--no-progress", "--json"],
                              env=env, sample=True)
                    r["time_maxrss_kb"] = int(tf.read_text().split()[-1]) \
                        if tf.exists() and tf.read_text().split() else None
                    wk_hwm = [p["hwm_kb"] for p in r.get("processes", [])
                              if p["name"] not in ("time", "pg_basebackup")]
                    r["walkeeper_hwm_kb"] = max(wk_hwm) if wk_hwm else None
                    r["store"] = kind
                    if kind == "s3":
                        r["bucket"] = bucket
                        r["stored_bytes"] = s3b.bucket_bytes(cl, bucket)
                        keys = [o["Key"] for p in cl.get_paginator("list_objects_v2").paginate(
                            Bucket=bucket) for o in p.get("Contents", ())]
                        r["complete"] = any(k.endswith("backup.json") for k in keys)
                    else:
                        r["stored_bytes"] = du(store)
                        r["complete"] = any(store.rglob("backup.json"))
                    # the archiver's config back to the cluster's own store (which is
                    # kept) before this row's store goes: it archives on between rows
                    c.stores_toml, c.state_dir = "", None
                    c.write_config()
                    if kind == "local":
                        shutil.rmtree(store, ignore_errors=True)
                    if r["rc"] == 0 and not r["complete"]:
                        r["rc"], r["error"] = -1, "no backup.json in the store after exit 0"
                r["round"] = rnd
                r["loadavg_after"] = loadavg()
                results["rows"][row].append(r)
                mem = ""
                if r.get("walkeeper_hwm_kb"):
                    mem = (f", walkeeper VmHWM {r['walkeeper_hwm_kb'] / 1024:.0f} MiB, "
                           f"time %M {r['time_maxrss_kb'] / 1024:.0f} MiB")
                log(f"round {rnd + 1} {row}: {r['seconds']:.2f} s rc={r['rc']}, "
                    f"{r['stored_bytes'] / 2**20:.0f} MiB stored{mem}; machine busy "
                    f"{r['machine_busy']:.0%} during, {r['busy_before']:.0%} before "
                    f"(waited {r['waited_s']:.0f} s)" + (f" ERROR {r.get('error')}" if r["rc"] else ""))
            shutil.rmtree(scratch / "out", ignore_errors=True)
    finally:
        c.stores_toml, c.state_dir = "", None
        c.write_config()                  # back to the cluster's own local store
        if not a.keep_running:
            c.stop()
        subprocess.run([str(s3b.RGW / "rgw-down.sh"), str(scratch / "rgw")], timeout=120)
    results["loadavg_end"] = loadavg()
    text = summarize(results)
    results["summary"] = text
    name = time.strftime("s3br-%Y%m%dT%H%M%S.json")
    save_json(results, name, [str(work / "results"), a.out_dir])
    print(f"database {results['database_bytes'] / 2**20:.0f} MiB, {os.cpu_count()} CPUs, "
          f"load {results['loadavg_start']} at start, {results['loadavg_end']} at end")
    print(text)
    print(f"JSON: {Path(a.out_dir) / name}")
    return 0


def summarize(res: dict) -> str:
    rows = res["rows"]
    med = {}
    L = [f"{'row':32} {'median s':>9} {'MiB stored':>10}  {'wk VmHWM MiB':>12} "
         f"{'%M MiB':>7}  seconds per round"]
    for row, rs in rows.items():
        good = [r for r in rs if r["rc"] == 0]
        if len(good) != len(rs) or not rs:
            L.append(f"{row:32} FAILED: {next((r.get('error') for r in rs if r['rc']), '-')}")
            continue
        med[row] = statistics.median(r["seconds"] for r in good)
        hwm = [r["walkeeper_hwm_kb"] for r in good if r.get("walkeeper_hwm_kb")]
        tm = [r["time_maxrss_kb"] for r in good if r.get("time_maxrss_kb")]
        L.append(f"{row:32} {med[row]:9.2f} {statistics.median(r['stored_bytes'] for r in good) / 2**20:10.0f}  "
                 f"{(max(hwm) / 1024 if hwm else 0):12.0f} {(max(tm) / 1024 if tm else 0):7.0f}  "
                 + " ".join(f"{r['seconds']:.2f}" for r in rs))
    L.append("\nbars:")
    s3r, loc = "walkeeper basebackup (s3)", "walkeeper basebackup (local)"
    if s3r in med and loc in med:
        ratio = med[s3r] / med[loc]
        per = [x["seconds"] / y["seconds"] for x, y in zip(rows[s3r], rows[loc])]
        verdict = ("PASS" if ratio <= RATIO_BAR and max(per) <= RATIO_BAR else
                   "median passes, inside the round-to-round spread" if ratio <= RATIO_BAR
                   else "FAIL")
        L.append(f"  basebackup to RGW <= {RATIO_BAR}x to a local store: {ratio:.3f} "
                 f"(rounds {', '.join(f'{x:.3f}' for x in per)}) {verdict}")
        res["bars"] = {"s3_vs_local": {"ratio": ratio, "per_round": per, "verdict": verdict}}
        for row in (loc, s3r):
            hwm = max(r["walkeeper_hwm_kb"] for r in rows[row]) / 1000
            tm = max(r["time_maxrss_kb"] for r in rows[row]) / 1000
            ok = max(hwm, tm) < RSS_BAR_MB
            L.append(f"  {row} peak RSS < {RSS_BAR_MB} MB: walkeeper VmHWM {hwm:.0f} MB, "
                     f"/usr/bin/time %M (largest process of the tree) {tm:.0f} MB "
                     f"{'PASS' if ok else 'FAIL'}")
            res["bars"][f"rss_{row}"] = {"vmhwm_mb": hwm, "time_maxrss_mb": tm, "pass": ok}
    else:
        L.append("  not measured (a walkeeper row failed)")
    if "pg_basebackup | zstd -3" in med and loc in med:
        L.append(f"  context: local walkeeper basebackup / pg_basebackup | zstd -3 = "
                 f"{med[loc] / med['pg_basebackup | zstd -3']:.3f}")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
