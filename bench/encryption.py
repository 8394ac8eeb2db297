#!/usr/bin/env python3
"""push and fetch with encryption on, beside the same without it (issue 8's bar).

The 64 real 16 MiB segments of bench/make_wal.py (WAL_DIR/segments) are pushed one
process per segment (as PostgreSQL's archiver calls archive_command) into a fresh
local store, then fetched back one process per segment, for three configurations in
the same run: no encryption, `[encryption] key_file`, and `[encryption]
passphrase_env` (scrypt; the derived key is cached in state_dir after the first
process, as in production). Read-ahead and prefetch are off (push.parallel = 1,
fetch.prefetch = 0) so that each process does exactly one segment's work. The order
of the configurations rotates per round; the median of the rounds is reported, with
the ratios to the unencrypted run. Standard library only.

    bench/encryption.py [--rounds 3] [--walkeeper "/path/to/walkeeper"]

Run it as any user that can read WAL_DIR (default /tmp/walkeeper-bench/wal, or
WKBENCH_WAL_DIR); WALKEEPER_CMD or --walkeeper says which walkeeper to time (default:
/tmp/walkeeper-bench/venv/bin/walkeeper, the regular install bench/run.sh makes).
"""

from __future__ import annotations

import argparse
import json
import os
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
PASSPHRASE = "bench passphrase, not a secret"


def log(msg: str) -> None:
    print(f"[encryption-bench] {msg}", file=sys.stderr, flush=True)


def write_config(root: Path, mode: str) -> tuple[Path, dict]:
    store = root / "store"
    store.mkdir(mode=0o700, parents=True, exist_ok=True)   # as `walkeeper check` makes it
    state = root / "state"
    lines = ['cluster = "bench"', f'state_dir = "{state}"', "",
             "[push]", "parallel = 1", "", "[fetch]", "prefetch = 0", "",
             "[[stores]]", 'name = "local"', 'type = "local"', f'path = "{store}"', ""]
    env = dict(os.environ)
    if mode == "key_file":
        key = root / "key"
        key.write_bytes(os.urandom(48).hex().encode())
        key.chmod(0o600)
        lines += ["[encryption]", f'key_file = "{key}"', ""]
    elif mode == "passphrase":
        lines += ["[encryption]", 'passphrase_env = "WKBENCH_PASSPHRASE"', ""]
        env["WKBENCH_PASSPHRASE"] = PASSPHRASE
    path = root / "walkeeper.toml"
    path.write_text("\n".join(lines))
    return path, env


def timed(cmds: list[list[str]], env: dict) -> float:
    started = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    return time.perf_counter() - started


def one(wk: list[str], segs: list[Path], mode: str, work: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"enc-{mode}-", dir=work))
    try:
        cfg, env = write_config(root, mode)
        # The first push of an archive records its encryption (and, with a passphrase,
        # derives and caches the key): done once, untimed, as in production.
        first = segs[0]
        timed([wk + ["--config", str(cfg), "push", str(first), first.name]], env)
        push_cmds = [wk + ["--config", str(cfg), "push", str(p), p.name] for p in segs[1:]]
        push_s = timed(push_cmds, env)
        out = root / "out"
        out.mkdir()
        fetch_cmds = [wk + ["--config", str(cfg), "fetch", p.name, str(out / p.name)] for p in segs[1:]]
        fetch_s = timed(fetch_cmds, env)
        for p in segs[1:]:
            if (out / p.name).stat().st_size != p.stat().st_size:
                raise SystemExit(f"fetch of {p.name} gave a wrong size")
        stored = sum(f.stat().st_size for f in (root / "store").rglob("*.zst"))
        n = len(segs) - 1
        return {"mode": mode, "push_seg_s": n / push_s, "fetch_seg_s": n / fetch_s,
                "stored_bytes": stored}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--walkeeper", default=os.environ.get(
        "WALKEEPER_CMD", "/tmp/walkeeper-bench/venv/bin/walkeeper"))
    ap.add_argument("--wal-dir", default=os.environ.get("WKBENCH_WAL_DIR",
                                                        "/tmp/walkeeper-bench/wal"))
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    wk = shlex.split(args.walkeeper)
    segs = sorted(p for p in (Path(args.wal_dir) / "segments").iterdir() if len(p.name) == 24)
    if len(segs) < 2:
        raise SystemExit(f"no segments in {args.wal_dir}/segments: run bench/run.sh first")
    modes = ["plain", "key_file", "passphrase"]
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="wk-enc-bench-"))
    rounds = []
    try:
        for r in range(args.rounds):
            order = modes[r % 3:] + modes[:r % 3]
            row = {}
            for mode in order:
                row[mode] = one(wk, segs, mode, work)
                log(f"round {r + 1} {mode}: push {row[mode]['push_seg_s']:.1f} seg/s, "
                    f"fetch {row[mode]['fetch_seg_s']:.1f} seg/s")
            rounds.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "segments": len(segs) - 1, "rounds": rounds, "load_start": load0,
              "load_end": os.getloadavg()[0], "walkeeper": args.walkeeper, "summary": {}}
    print(f"{'configuration':<28} {'push seg/s':>10} {'x plain':>8} {'fetch seg/s':>11} "
          f"{'x plain':>8}")
    med = {m: {k: statistics.median(r[m][k] for r in rounds) for k in ("push_seg_s",
                                                                         "fetch_seg_s")}
           for m in modes}
    for m in modes:
        ratios = {k: statistics.median(r[m][k] / r["plain"][k] for r in rounds)
                  for k in ("push_seg_s", "fetch_seg_s")}
        result["summary"][m] = {**med[m], "push_ratio": ratios["push_seg_s"],
                                "fetch_ratio": ratios["fetch_seg_s"]}
        print(f"{m:<28} {med[m]['push_seg_s']:>10.1f} {ratios['push_seg_s']:>8.2f} "
              f"{med[m]['fetch_seg_s']:>11.1f} {ratios['fetch_seg_s']:>8.2f}")
    print(f"load average {load0:.2f} at start, {result['load_end']:.2f} at the end")
    os.makedirs(args.out, exist_ok=True)
    name = Path(args.out) / f"encryption-{datetime.now():%Y%m%dT%H%M%S}.json"
    try:
        name.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {name}")
    except OSError as exc:
        log(f"cannot write {name}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
