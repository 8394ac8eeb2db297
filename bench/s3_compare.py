#!/usr/bin/env python3
"""walkeeper push/fetch to Ceph RGW beside pgBackRest (repo1-type=s3, async) and
barman-cloud, in one run: printed as a table and saved as JSON (issue 17).

Over the 64 real 16 MiB WAL segments of bench/make_wal.py, one process per segment as
PostgreSQL runs archive_command / restore_command, every tool against the same RGW
(tests/rgw/rgw-up.sh with RGW_TLS=1, all three through its HTTPS endpoint, trusting its
throwaway CA), each tool's round into a bucket of its own that is empty (pgBackRest's
only holds what stanza-create wrote):

  push   walkeeper push (read-ahead, push.parallel = 2, zstd 3) from a pg_wal whose 64
         segments are all .ready  |  pgbackrest archive-push, archive-async=y,
         process-max=2, compress-type=zst level 3, from the same kind of pg_wal  |
         barman-cloud-wal-archive --zstd --compression-level 3
  fetch  walkeeper fetch (prefetch = 8)  |  pgbackrest archive-get, archive-async=y,
         process-max=2, archive-get-queue-max=1GiB  |  barman-cloud-wal-restore
         (its default: no parallel download)  |  the same with --parallel N (context)
  start  `python -c pass` of the interpreter that runs walkeeper (before and after)

Rounds (>= 3) rotate the tool order; the table shows medians, per-round ratios and the
bars: walkeeper push >= pgBackRest async push, walkeeper fetch >= pgBackRest async get,
walkeeper push and fetch >= 3x barman-cloud. A bar whose margin is inside the
round-to-round spread is reported as such, not as met.

Run as a non-root user with an interpreter that has botocore (the walkeeper[s3] venv:
it makes the buckets): `bench/run.sh --s3` does both. Timings never go into tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import s3 as s3b                       # bench/s3.py: RGW and botocore helpers
from backup_restore import cpu_jiffies, wait_quiet
from benchlib import free_port, loadavg, sha256
from push_fetch import (backlog, mark_done, out_of, python_of, run_per_segment,
                        wait_prefetcher, wait_pusher)

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
STANZA = "bench"
FAST_PUSH, FAST_FETCH = "walkeeper push (fast line)", "walkeeper fetch (fast line)"
PUSH = ["walkeeper push (read-ahead)", "pgbackrest async push", "barman-cloud-wal-archive",
        FAST_PUSH]
FETCH = ["walkeeper fetch (prefetch)", "pgbackrest async get", "barman-cloud-wal-restore",
         "barman-cloud-wal-restore --parallel", FAST_FETCH]
FETCH_FROM = {"walkeeper fetch (prefetch)": "walkeeper push (read-ahead)",
              FAST_FETCH: FAST_PUSH,
              "pgbackrest async get": "pgbackrest async push",
              "barman-cloud-wal-restore": "barman-cloud-wal-archive",
              "barman-cloud-wal-restore --parallel": "barman-cloud-wal-archive"}
BUCKET = {"walkeeper push (read-ahead)": "wk", "pgbackrest async push": "pgbr",
          "barman-cloud-wal-archive": "barman", FAST_PUSH: "wkfast"}


def fast_line(a, cfg: Path, env: dict, key: str) -> str:
    """Untimed: the line `walkeeper commands` prints (walkeeper-fast first)."""
    r = subprocess.run([*a.walkeeper, "--config", str(cfg), "commands", "--json"], env=env,
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    if not out["fast_push" if key == "archive_command" else "fast_fetch"]:
        raise SystemExit(f"no walkeeper-fast in {out[key]!r}")
    return out[key]


def log(msg: str) -> None:
    print(f"[s3-compare] {msg}", file=sys.stderr, flush=True)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def wait_procs(marker: str, timeout: float = 60.0) -> float:
    """Untimed: wait until no process of ours has `marker` in its command line (a
    detached pgBackRest async worker, say); seconds waited."""
    t0 = time.monotonic()
    me = os.getpid()
    while time.monotonic() - t0 < timeout:
        busy = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        busy = True
                        break
            except OSError:
                pass
        if not busy:
            break
        time.sleep(0.05)
    return time.monotonic() - t0


# --------------------------------------------------------------------------- pgBackRest

def pgbr_conf(base: Path, rgw: dict, bucket: str, pg1: Path, port: int, sock: Path) -> Path:
    """An async pgBackRest config for bucket on RGW's HTTPS endpoint (the CA trusted)."""
    for d in ("lock", "log", "spool"):
        (base / d).mkdir(parents=True, exist_ok=True)
    host_port = rgw["S3_TLS_ENDPOINT"].removeprefix("https://")
    host, _, tls_port = host_port.rpartition(":")
    conf = base / "pgbackrest.conf"
    conf.write_text(f"""[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket={bucket}
repo1-s3-endpoint={host}
repo1-storage-port={tls_port}
repo1-s3-region=us-east-1
repo1-s3-key={rgw['S3_ACCESS_KEY']}
repo1-s3-key-secret={rgw['S3_SECRET_KEY']}
repo1-s3-uri-style=path
repo1-storage-ca-file={rgw['S3_CA_FILE']}
lock-path={base}/lock
log-path={base}/log
spool-path={base}/spool
log-level-console=warn
log-level-stderr=warn
log-level-file=off
compress-type=zst
compress-level=3
archive-async=y
process-max=2
archive-get-queue-max=1GiB
archive-push-queue-max=4GiB

[{STANZA}]
pg1-path={pg1}
pg1-port={port}
pg1-socket-path={sock}
pg1-user=postgres
""")
    return conf


def stanza_create(a, rgw: dict, buckets: list[str], work: Path, env: dict) -> None:
    """stanza-create into every pgBackRest bucket of the run (untimed), with the WAL
    set's kept cluster started for that alone (archive_mode off), as push_fetch.py."""
    pgbin, pgdata = Path(a.meta["pgbin"]), Path(a.meta["pgdata"])
    sock = Path(tempfile.mkdtemp(prefix="wks3c", dir="/tmp"))
    port = free_port()
    opts = (f"-c port={port} -c unix_socket_directories={sock} -c archive_mode=off "
            f"-c listen_addresses=''")
    subprocess.run([str(pgbin / "pg_ctl"), "-D", str(pgdata), "-w", "-l",
                    str(work / "stanza-pg.log"), "-o", opts, "start"], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    try:
        for b in buckets:
            conf = pgbr_conf(work / f"stanza-{b}", rgw, b, pgdata, port, sock)
            subprocess.run([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "stanza-create"], check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run([str(pgbin / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL, env=env)
        shutil.rmtree(sock, ignore_errors=True)


# --------------------------------------------------------------------------- the rows

def barman_base(a, rgw: dict) -> list[str]:
    return ["--cloud-provider", "aws-s3", "--endpoint-url", rgw["S3_TLS_ENDPOINT"],
            "--addressing-style", "path"]


def push_steps(name: str, a, rgw: dict, bucket: str, d: Path, envs: dict):
    if name in ("walkeeper push (read-ahead)", FAST_PUSH):
        cfg = d / "walkeeper.toml"
        cfg.write_text(f'cluster = "bench"\nstate_dir = "{d / "state"}"\n'
                       f'[compression]\nalgorithm = "zstd"\nlevel = 3\n'
                       f"{s3b.s3_store(rgw, bucket, tls=True)}")
        pg_wal = backlog(d, a.segs)
        if name == FAST_PUSH:    # as PostgreSQL runs archive_command: sh -c
            line = fast_line(a, cfg, envs["walkeeper"], "archive_command")
            return (lambda s: [(["sh", "-c", line.replace("%p", str(pg_wal / s.name))
                                 .replace("%f", s.name)], envs["walkeeper"]),
                               (lambda: mark_done(pg_wal, s.name), None)]), cfg
        return (lambda s: [([*a.walkeeper, "--config", str(cfg), "push", str(pg_wal / s.name),
                             s.name], envs["walkeeper"]),
                           (lambda: mark_done(pg_wal, s.name), None)]), cfg
    if name == "pgbackrest async push":
        # pgBackRest's async push scans <pg1-path>/pg_wal/archive_status: a data directory
        # of its own holding the kept cluster's pg_control (as in push_fetch.py).
        pgdata = d / "pgdata"
        (pgdata / "global").mkdir(parents=True)
        shutil.copy(Path(a.meta["pgdata"]) / "global" / "pg_control", pgdata / "global")
        shutil.copy(Path(a.meta["pgdata"]) / "PG_VERSION", pgdata)
        conf = pgbr_conf(d, rgw, bucket, pgdata, 5432, Path("/nonexistent"))
        pg_wal = backlog(pgdata, a.segs)
        return (lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                             "archive-push", str(pg_wal / s.name)], envs["plain"]),
                           (lambda: mark_done(pg_wal, s.name), None)]), conf
    if name == "barman-cloud-wal-archive":
        pg_wal = backlog(d, a.segs)
        exe = str(Path(a.barman_venv) / "bin" / "barman-cloud-wal-archive")
        return (lambda s: [([exe, *barman_base(a, rgw), "--zstd", "--compression-level", "3",
                             f"s3://{bucket}/barman", STANZA, str(pg_wal / s.name)],
                            envs["barman"]),
                           (lambda: mark_done(pg_wal, s.name), None)]), d
    raise KeyError(name)


def fetch_steps(name: str, a, rgw: dict, bucket: str, d: Path, envs: dict):
    dest = d / "pg_wal"
    dest.mkdir(parents=True)
    if name in ("walkeeper fetch (prefetch)", FAST_FETCH):
        cfg = d / "walkeeper.toml"
        cfg.write_text(f'cluster = "bench"\nstate_dir = "{d / "state"}"\n'
                       f"[fetch]\nprefetch = 8\n{s3b.s3_store(rgw, bucket, tls=True)}")
        if name == FAST_FETCH:   # as PostgreSQL runs restore_command: sh -c
            line = fast_line(a, cfg, envs["walkeeper"], "restore_command")
            return lambda s: [(["sh", "-c", line.replace("%f", s.name).replace(
                "%p", str(dest / s.name))], envs["walkeeper"])], dest, cfg
        return lambda s: [([*a.walkeeper, "--config", str(cfg), "fetch", s.name,
                            str(dest / s.name)], envs["walkeeper"])], dest, cfg
    if name == "pgbackrest async get":
        conf = pgbr_conf(d, rgw, bucket, Path(a.meta["pgdata"]), 5432, Path("/nonexistent"))
        return lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "archive-get", s.name, str(dest / s.name)], envs["plain"])], dest, conf
    if name.startswith("barman-cloud-wal-restore"):
        exe = str(Path(a.barman_venv) / "bin" / "barman-cloud-wal-restore")
        extra = []
        if name.endswith("--parallel"):
            extra = ["--parallel", str(a.barman_parallel), "--spool-dir", str(d / "spool")]
        return lambda s: [([exe, *barman_base(a, rgw), *extra, f"s3://{bucket}/barman", STANZA,
                            s.name, str(dest / s.name)], envs["barman"])], dest, d
    raise KeyError(name)


def measured(name: str, steps, a, env: dict) -> dict:
    """run_per_segment with the machine's state around it."""
    quiet = wait_quiet(a.quiet_wait)
    la = loadavg()
    j0 = cpu_jiffies()
    res = run_per_segment(name, steps, a.segs, env)
    j1 = cpu_jiffies()
    res.update(quiet)
    res["loadavg_before"] = la
    res["machine_busy"] = round((j1[0] - j0[0]) / max(j1[1] - j0[1], 1), 3)
    return res


def one_round(r: int, a, rgw: dict, c, work: Path, envs: dict) -> dict:
    rdir = work / f"round{r}"
    rdir.mkdir()
    order = PUSH[r % len(PUSH):] + PUSH[:r % len(PUSH)]
    pushes = {}
    for name in order:
        d = rdir / f"push-{slug(name)}"
        d.mkdir()
        bucket = f"{BUCKET[name]}-r{r}"
        steps, marker = push_steps(name, a, rgw, bucket, d, envs)
        log(f"round {r + 1}: push  {name} -> s3://{bucket}")
        res = measured(name, steps, a, envs["plain"])
        if name.startswith("walkeeper"):
            wait_pusher(d / "state")          # untimed: every call returned already
        else:
            res["after_wait_s"] = round(wait_procs(str(marker)), 2)
        res["bucket"] = bucket
        if res["ok"]:
            res["stored_mib"] = s3b.bucket_bytes(c, bucket) / MIB
            log(f"  {res['total_s']:.1f} s, {res['seg_per_s']:.2f} seg/s, "
                f"{res['stored_mib']:.0f} MiB stored, machine busy {res['machine_busy']:.0%}")
        pushes[name] = res
    fetches = {}
    forder = [f for f in FETCH if a.barman_parallel or not f.endswith("--parallel")]
    forder = forder[r % len(forder):] + forder[:r % len(forder)]
    for name in forder:
        src = FETCH_FROM[name]
        if not pushes[src]["ok"]:
            fetches[name] = {"tool": name, "ok": False, "error": f"no archive: {src} failed"}
            continue
        d = rdir / f"fetch-{slug(name)}"
        d.mkdir()
        bucket = pushes[src]["bucket"]
        steps, dest, marker = fetch_steps(name, a, rgw, bucket, d, envs)
        log(f"round {r + 1}: fetch {name} <- s3://{bucket}")
        res = measured(name, steps, a, envs["plain"])
        if name.startswith("walkeeper"):
            wait_prefetcher(d / "state")
        else:
            res["after_wait_s"] = round(wait_procs(str(marker)), 2)
        if res["ok"]:      # verify, untimed: a fast wrong answer is no answer
            bad = [s.name for s in a.segs if sha256(dest / s.name) != a.sums[s.name]]
            if bad:
                res["ok"], res["error"] = False, f"fetched content differs: {bad[:3]}"
            else:
                log(f"  {res['total_s']:.1f} s, {res['seg_per_s']:.2f} seg/s, all {len(a.segs)} "
                    f"identical, machine busy {res['machine_busy']:.0%}")
        fetches[name] = res
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(rdir, ignore_errors=True)
    return {"order_push": order, "order_fetch": forder, "push": pushes, "fetch": fetches}


def python_pass(py: str, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([py, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- report

def summarize(result: dict) -> dict:
    rounds = result["rounds"]
    summ: dict = {"push": {}, "fetch": {}, "bars": {}}
    for phase in ("push", "fetch"):
        names = []
        for r in rounds:
            names += [n for n in r[phase] if n not in names]
        for n in names:
            rows = [r[phase].get(n, {"ok": False, "error": "not run"}) for r in rounds]
            good = [x for x in rows if x.get("ok")]
            errs = [x.get("error") for x in rows if not x.get("ok")]
            summ[phase][n] = {
                "ok": not errs, "error": errs[0] if errs else None,
                "seg_per_s_median": statistics.median(x["seg_per_s"] for x in good) if good else None,
                "mib_per_s_median": statistics.median(x["mib_per_s"] for x in good) if good else None,
                "total_s_median": statistics.median(x["total_s"] for x in good) if good else None,
                "per_segment_ms_median": statistics.median(x["per_segment_ms_median"]
                                                           for x in good) if good else None,
                "stored_mib": statistics.median(x["stored_mib"] for x in good)
                if good and phase == "push" else None,
                "seg_per_s_rounds": [x.get("seg_per_s") for x in rows],
            }

    def bar(label: str, phase: str, num: str, den: str, need: float) -> None:
        x, y = summ[phase].get(num, {}), summ[phase].get(den, {})
        if not (x.get("ok") and y.get("ok")):
            summ["bars"][label] = {"ratio": None, "bar": f">= {need}", "verdict": "NOT MEASURED",
                                   "error": x.get("error") or y.get("error") or "not run"}
            return
        ratio = x["seg_per_s_median"] / y["seg_per_s_median"]
        per = [r[phase][num]["seg_per_s"] / r[phase][den]["seg_per_s"] for r in rounds]
        if ratio >= need and min(per) >= need:
            verdict = "PASS"
        elif ratio >= need:
            verdict = "median passes, inside the round-to-round spread"
        elif max(per) >= need:
            verdict = "FAIL (median), some rounds pass: inside the spread"
        else:
            verdict = "FAIL"
        summ["bars"][label] = {"ratio": ratio, "per_round": per, "bar": f">= {need}",
                               "verdict": verdict}

    bar("push_vs_pgbackrest_async_s3", "push", PUSH[0], "pgbackrest async push", 1.0)
    bar("push_vs_barman_cloud_wal_archive", "push", PUSH[0], "barman-cloud-wal-archive", 3.0)
    bar("fetch_vs_pgbackrest_async_get_s3", "fetch", FETCH[0], "pgbackrest async get", 1.0)
    bar("fetch_vs_barman_cloud_wal_restore", "fetch", FETCH[0], "barman-cloud-wal-restore", 3.0)
    # The lines `walkeeper commands` prints (walkeeper-fast first), against the same bars.
    bar("fast_line_push_vs_pgbackrest_async_s3", "push", FAST_PUSH, "pgbackrest async push", 1.0)
    bar("fast_line_push_vs_barman_cloud_wal_archive", "push", FAST_PUSH,
        "barman-cloud-wal-archive", 3.0)
    bar("fast_line_fetch_vs_pgbackrest_async_get_s3", "fetch", FAST_FETCH,
        "pgbackrest async get", 1.0)
    bar("fast_line_fetch_vs_barman_cloud_wal_restore", "fetch", FAST_FETCH,
        "barman-cloud-wal-restore", 3.0)
    if any("barman-cloud-wal-restore --parallel" in r["fetch"] for r in rounds):
        bar("fetch_vs_barman_cloud_wal_restore_parallel (context)", "fetch", FETCH[0],
            "barman-cloud-wal-restore --parallel", 3.0)
    return summ


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(result: dict) -> str:
    s = result["summary"]
    v = result["versions"]
    pp = result["python_c_pass_ms"]
    L = [f"walkeeper {v['walkeeper']} ({v['walkeeper_cmd']}); {v['pgbackrest']}; "
         f"barman-cloud {v['barman']} (boto3 {v['boto3']}); RGW: {v['radosgw']}",
         f"{result['host']['cpus']} cpus; load average at start {result['loadavg_start']}, "
         f"at end {result['loadavg_end']}",
         f"python -c pass ({v['python']}): median {pp['median']:.1f} ms (min {pp['min']:.1f}, "
         f"max {pp['max']:.1f}; {pp['n']} runs, half before, half after the rounds)",
         f"{result['segments_used']} segments x 16 MiB, one process per segment, HTTPS to "
         f"RGW on loopback; median of {len(result['rounds'])} rounds", ""]
    hdr = (f"{'':6} {'tool':38} {'seg/s':>7} {'MiB/s':>7} {'ms/seg':>7} {'total s':>8} "
           f"{'MiB':>6}  seg/s per round")
    L += [hdr, "-" * len(hdr)]
    for phase in ("push", "fetch"):
        for t, x in s[phase].items():
            if not x["ok"]:
                L.append(f"{phase:6} {t:38} FAILED: {x['error']}")
                continue
            L.append(f"{phase:6} {t:38} {fmt(x['seg_per_s_median'], '7.2f')} "
                     f"{fmt(x['mib_per_s_median'], '7.1f')} "
                     f"{fmt(x['per_segment_ms_median'], '7.1f')} "
                     f"{fmt(x['total_s_median'], '8.2f')} "
                     f"{fmt(x['stored_mib'], '6.0f') if phase == 'push' else '':>6}  "
                     + ", ".join(fmt(y, ".2f") for y in x["seg_per_s_rounds"]))
    L += ["", "bars (ratio of median seg/s; per-round ratios of the same round):"]
    for k, b in s["bars"].items():
        per = ", ".join(f"{x:.2f}" for x in b.get("per_round", ()))
        L.append(f"  {k:52} {fmt(b['ratio'], '6.2f')}  (bar {b['bar']})  {b['verdict']}"
                 + (f"  rounds: {per}" if per else "") + (f"  ({b['error']})" if b.get("error") else ""))
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def ensure_barman(venv: Path) -> None:
    if (venv / "bin" / "barman-cloud-wal-archive").exists():
        return
    log(f"installing barman[cloud] with zstandard into {venv} (from PyPI)")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "barman[cloud,zstandard,snappy]"], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"),
                    help="walkeeper command with the [s3] extra, split like a shell line")
    ap.add_argument("--pgbackrest", default=shutil.which("pgbackrest") or "pgbackrest")
    ap.add_argument("--barman-venv", default=os.environ.get(
        "WKBENCH_BARMAN_VENV", "/tmp/walkeeper-bench/barmanvenv"),
        help="venv with barman[cloud] (+ zstandard); made with pip if missing")
    ap.add_argument("--barman-parallel", type=int, default=8,
                    help="also barman-cloud-wal-restore --parallel N (context row; 0: not)")
    ap.add_argument("--wal-dir", default=os.environ.get("WKBENCH_WAL_DIR",
                                                        "/tmp/walkeeper-bench/wal"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--segments", type=int, default=0,
                    help="only the first N segments (a quick try; default all)")
    ap.add_argument("--python-reps", type=int, default=20,
                    help="python -c pass runs before and after the rounds (each)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, metavar="S",
                    help="before each row wait up to S s for the machine to be idle")
    ap.add_argument("--memstore-gib", type=int, default=8, help="RGW's memory OSD size")
    ap.add_argument("--out-dir", default=str(HERE / "out"))
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("s3_compare.py: run as a non-root user (bench/run.sh --s3 does that)")
    a.walkeeper = shlex.split(a.walkeeper)
    a.walkeeper[0] = shutil.which(a.walkeeper[0]) or a.walkeeper[0]
    a.python = python_of(a.walkeeper)
    wal = Path(a.wal_dir).resolve()
    if not (wal / "meta.json").exists():
        raise SystemExit(f"no WAL set in {wal} (bench/make_wal.py --out {wal})")
    a.meta = json.loads((wal / "meta.json").read_text())
    a.segs = [wal / "segments" / n for n in a.meta["segments"]]
    if a.segments:
        a.segs = a.segs[:a.segments]
    a.sums = a.meta["sha256"]
    ensure_barman(Path(a.barman_venv))

    plain = {k: v for k, v in os.environ.items()
             if not k.startswith(("WALKEEPER_", "PGBACKREST_", "AWS_")) and k != "BACKUP_DIR"}
    plain["LC_ALL"] = "C"
    work = Path(tempfile.mkdtemp(prefix="wks3cmp", dir="/tmp"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log(f"scratch {work}; RGW with TLS, memstore {a.memstore_gib} GiB")
    rgw = s3b.rgw_up(work / "rgw", a.memstore_gib << 30, tls=True)
    envs = {"plain": plain,
            "walkeeper": {**plain, "WALKEEPER_S3_ACCESS_KEY": rgw["S3_ACCESS_KEY"],
                          "WALKEEPER_S3_SECRET_KEY": rgw["S3_SECRET_KEY"]},
            # boto3 >= 1.36 sends aws-chunked uploads with trailing checksums by
            # default, which RGW 16 refuses (MissingContentLength): AWS's documented
            # switch back to checksums only when an operation requires them.
            "barman": {**plain, "AWS_ACCESS_KEY_ID": rgw["S3_ACCESS_KEY"],
                       "AWS_SECRET_ACCESS_KEY": rgw["S3_SECRET_KEY"],
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": rgw["S3_CA_FILE"],
                       "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                       "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}}
    bpy = str(Path(a.barman_venv) / "bin" / "python")
    result = {
        "timestamp": stamp, "argv": sys.argv,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "walkeeper": out_of([*a.walkeeper, "--version"]),
            "walkeeper_cmd": shlex.join(a.walkeeper), "python": a.python,
            "python_version": out_of([a.python, "--version"]),
            "pgbackrest": out_of([a.pgbackrest, "version"]),
            "barman": out_of([str(Path(a.barman_venv) / "bin" / "barman-cloud-wal-archive"),
                              "--version"]),
            "boto3": out_of([bpy, "-c", "import boto3; print(boto3.__version__)"]),
            "radosgw": out_of(["radosgw", "--version"]),
            "postgresql": a.meta["pg_version"]},
        "settings": {"endpoint": "RGW HTTPS (rgw-up.sh RGW_TLS=1), CA verified by all three",
                     "walkeeper": "zstd level 3, push.parallel = 2 (read-ahead), fetch.prefetch = 8",
                     "pgbackrest": "archive-async=y process-max=2 compress-type=zst "
                                   "compress-level=3 archive-get-queue-max=1GiB "
                                   "repo1-s3-uri-style=path repo1-storage-ca-file",
                     "barman": f"--zstd --compression-level 3; restore default and "
                               f"--parallel {a.barman_parallel}",
                     "memstore_gib": a.memstore_gib},
        "segments": a.meta["segments"], "segments_used": len(a.segs), "loadavg_start": loadavg(), "rounds": []}
    try:
        c = s3b.client(rgw, tls=True)
        buckets = [f"{BUCKET[t]}-r{r}" for r in range(a.rounds) for t in PUSH]
        for b in buckets:
            c.create_bucket(Bucket=b)
        log("pgBackRest stanza-create into each round's bucket (kept cluster started briefly)")
        stanza_create(a, rgw, [b for b in buckets if b.startswith("pgbr-")], work, plain)
        for s in a.segs:            # warm the page cache alike for every tool
            s.read_bytes()
        before = python_pass(a.python, a.python_reps)
        for r in range(a.rounds):
            result["rounds"].append(one_round(r, a, rgw, c, work, envs))
        after = python_pass(a.python, a.python_reps)
    finally:
        subprocess.run([str(s3b.RGW / "rgw-down.sh"), str(work / "rgw")], timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    ms = [x * 1e3 for x in before + after]
    result["python_c_pass_ms"] = {"median": statistics.median(ms), "min": min(ms),
                                  "max": max(ms), "n": len(ms),
                                  "median_before": statistics.median(ms[:len(before)]),
                                  "median_after": statistics.median(ms[len(before):]),
                                  "runs": ms}
    result["loadavg_end"] = loadavg()
    result["summary"] = summarize(result)
    text = table(result)
    result["table"] = text
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"s3cmp-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
