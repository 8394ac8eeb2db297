#!/usr/bin/env python3
"""Deep verify-chain beside `zstd -t` (or `sha256sum` for codec none), side by side.

The bar of issue 5: a deep `walkeeper verify-chain` of 200 archived 16 MiB segments on
a local store runs at least at 60% of the speed of `zstd -t` over the same compressed
object files (`sha256sum` over the same raw object files with `--codec none`).

The 64 real segments of bench/make_wal.py (WAL_DIR/segments, made on first use) are
pushed with the walkeeper CLI under timelines 1, 2, 3 and 4 (a page header may carry
an older timeline than its name, as the first segment of a new timeline does), with
.history files that switch at the first segment, until 200 are stored; verify-chain
then finds a clean, continuous archive. Pushing is not timed. Before timing, every
object is read once (warm page cache for both tools alike); each round runs both
tools, order alternating, and the median of the rounds is reported.

    /path/to/venv/bin/python bench/verify.py [--rounds 5] [--codec zstd|none]

The interpreter must have walkeeper's dependencies; the walkeeper of this checkout is
run as `python -m walkeeper` with the checkout first on PYTHONPATH, unless --walkeeper
says otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEG_SIZE = 16 << 20
TIMELINES = (1, 2, 3, 4)


def log(msg: str) -> None:
    print(f"[verify-bench] {msg}", file=sys.stderr, flush=True)


def segments(wal_dir: Path) -> list[Path]:
    seg_dir = wal_dir / "segments"
    if not seg_dir.is_dir():
        log(f"no segments in {seg_dir}: making them with bench/make_wal.py (~10 min)")
        subprocess.run([sys.executable, str(HERE / "make_wal.py"), "--out", str(wal_dir)],
                       check=True)
    return sorted(p for p in seg_dir.iterdir() if len(p.name) == 24)


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def build_store(wk: list[str], env: dict, work: Path, segs: list[Path], count: int) -> int:
    """Push `count` segments (and the history files) with the CLI; return how many."""
    first = int(segs[0].name[8:], 16)     # log and segment of the first one
    switch = f"{first * SEG_SIZE >> 32:X}/{first * SEG_SIZE & 0xFFFFFFFF:X}"
    pushed = 0
    for tli in TIMELINES:
        if tli > 1:
            hist = work / f"{tli:08X}.history"
            lines = "".join(f"{t}\t{switch}\tbench\n" for t in range(1, tli))
            hist.write_text(lines)
            r = run(wk + ["push", str(hist), hist.name], env)
            if r.returncode:
                raise SystemExit(f"push {hist.name} failed: {r.stderr}")
        for seg in segs:
            if pushed == count:
                return pushed
            name = f"{tli:08X}{seg.name[8:]}"
            r = run(wk + ["push", str(seg), name], env)
            if r.returncode:
                raise SystemExit(f"push {name} failed: {r.stderr}")
            pushed += 1
    return pushed


def timed(cmd: list[str], env: dict | None = None):
    """(wall seconds, CPU seconds of the child: user + system, the result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = run(cmd, env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--walkeeper", default=None,
                    help="walkeeper command (default: this checkout via python -m walkeeper)")
    ap.add_argument("--wal-dir", default=os.environ.get("WKBENCH_WAL_DIR",
                                                        "/tmp/walkeeper-bench/wal"))
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--codec", choices=("zstd", "none"), default="zstd")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out-dir", default=str(HERE / "out"))
    args = ap.parse_args()

    env = dict(os.environ)
    if args.walkeeper:
        wk_base = shlex.split(args.walkeeper)
    else:
        wk_base = [sys.executable, "-m", "walkeeper"]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    segs = segments(Path(args.wal_dir))
    work = Path(tempfile.mkdtemp(prefix="wk-verify-bench-", dir="/tmp"))
    try:
        store = work / "store"
        store.mkdir(mode=0o700)     # as `walkeeper check` makes it: push never creates it
        cfg = work / "walkeeper.toml"
        cfg.write_text(f'cluster = "bench"\nstate_dir = "{work / "state"}"\n'
                       f'[compression]\nalgorithm = "{args.codec}"\nlevel = 3\n'
                       f'[[stores]]\nname = "local"\ntype = "local"\npath = "{store}"\n')
        wk = wk_base + ["--config", str(cfg)]
        log(f"pushing {args.segments} segments ({args.codec}) into {store}")
        n = build_store(wk, env, work, segs, args.segments)
        suffix = ".zst" if args.codec == "zstd" else ".raw"
        objects = sorted(str(p) for p in (store / "bench" / "wal").rglob("*" + suffix)
                         if len(p.name) == 24 + len(suffix))
        assert len(objects) == n, (len(objects), n)
        stored = sum(os.path.getsize(p) for p in objects)
        for p in objects:                       # warm the page cache for both tools
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
        baseline_name = "zstd -t" if args.codec == "zstd" else "sha256sum"
        baseline = (["zstd", "-t", "-q"] if args.codec == "zstd" else ["sha256sum"]) + objects
        verify = wk + ["verify-chain"]
        quick = wk + ["verify-chain", "--quick"]
        rows: dict[str, list[float]] = {baseline_name: [], "walkeeper verify-chain": [],
                                        "walkeeper verify-chain --quick": []}
        cpu: dict[str, list[float]] = {k: [] for k in rows}
        for rnd in range(args.rounds):
            order = [(baseline_name, baseline, None), ("walkeeper verify-chain", verify, env),
                     ("walkeeper verify-chain --quick", quick, env)]
            if rnd % 2:
                order = order[1:2] + order[:1] + order[2:]
            for label, cmd, e in order:
                secs, used, r = timed(cmd, e)
                if r.returncode != 0:
                    raise SystemExit(f"{label} failed (exit {r.returncode}): "
                                     f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
                rows[label].append(secs)
                cpu[label].append(used)
                log(f"round {rnd + 1}: {label}: {secs:.2f} s ({used:.2f} s CPU)")
        mib = n * SEG_SIZE / (1 << 20)
        med = {k: statistics.median(v) for k, v in rows.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = med[baseline_name] / med["walkeeper verify-chain"]
        result = {
            "time": datetime.now(timezone.utc).isoformat(), "segments": n, "codec": args.codec,
            "original_mib": mib, "stored_mib": stored / (1 << 20), "rounds": rows,
            "cpu_seconds": cpu, "median_seconds": med, "median_cpu_seconds": med_cpu, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "speed_vs_baseline": ratio, "bar": 0.6, "pass": ratio >= 0.6,
            "walkeeper": wk_base,
        }
        print(f"\n{n} segments, {mib:.0f} MiB original, {stored / (1 << 20):.0f} MiB stored "
              f"({args.codec}); median of {args.rounds} rounds, warm cache, {os.cpu_count()} CPUs")
        print("| tool | seconds | MiB/s (original) | seg/s | CPU seconds |\n"
              "|---|---:|---:|---:|---:|")
        for label, secs in med.items():
            print(f"| {label} | {secs:.2f} | {mib / secs:.0f} | {n / secs:.1f} | "
                  f"{med_cpu[label]:.2f} |")
        print(f"\nverify-chain speed / {baseline_name} speed = {ratio:.2f} "
              f"(bar >= 0.60: {'pass' if ratio >= 0.6 else 'FAIL'}); per round: "
              + ", ".join(f"{b / v:.2f}" for b, v in zip(rows[baseline_name],
                                                          rows["walkeeper verify-chain"])))
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"verify-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved: {path}")
        return 0 if ratio >= 0.6 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
