"""Interleaved A/B of two walkeeper installs: fetch (prefetch 0) of the same 64 real
segments, each install from a local store its own push wrote, alternating which goes
first; plus python3 -c pass and a fetch of a missing segment. Median per command.

    python3 bench/ab_fetch.py WALKEEPER_A WALKEEPER_B [ROUNDS]

with the WAL set of make_wal.py in $WKBENCH_WAL_DIR (default /tmp/walkeeper-bench/wal);
the JSON goes to $WKBENCH_OUT_DIR (default bench/out/), ab-<time>.json. Used for issue 14 (A: main before it, B:
the branch), because on a shared, loaded machine two separate runs of push_fetch.py
differ by more than what is measured.
"""
import json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
wal_dir = Path(os.environ.get("WKBENCH_WAL_DIR", "/tmp/walkeeper-bench/wal"))
segs = sorted((wal_dir / "segments").iterdir())
out_dir = Path(os.environ.get("WKBENCH_OUT_DIR", Path(__file__).resolve().parent / "out"))
work = Path(tempfile.mkdtemp(prefix="ab-", dir="/tmp"))
env0 = {k: v for k, v in os.environ.items() if not k.startswith("WALKEEPER_")}
def cfg(v):
    p = work / f"{v}.toml"
    (work / f"store-{v}").mkdir(mode=0o700)   # as `walkeeper check` makes it
    p.write_text(f'cluster = "ab"\nstate_dir = "{work}/state-{v}"\n[fetch]\nprefetch = 0\n'
                 f'[[stores]]\nname = "l"\ntype = "local"\npath = "{work}/store-{v}"\n')
    return p
wk = {"main": sys.argv[1], "mine": sys.argv[2]}
cf = {v: cfg(v) for v in wk}
for v in wk:
    for s in segs:
        subprocess.run([wk[v], "--config", cf[v], "push", str(s), s.name], check=True, env=env0)
times = {k: [] for k in ("python3 -c pass", "fetch main", "fetch mine", "missing main", "missing mine")}
def t(cmd):
    t0 = time.perf_counter(); subprocess.run(cmd, check=False, env=env0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); return (time.perf_counter() - t0) * 1000
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
load0 = os.getloadavg()
for r in range(rounds):
    for i, s in enumerate(segs):
        order = ("main", "mine") if (i + r) % 2 == 0 else ("mine", "main")
        times["python3 -c pass"].append(t(["/usr/bin/python3", "-c", "pass"]))
        for v in order:
            times[f"fetch {v}"].append(t([wk[v], "--config", str(cf[v]), "fetch", s.name, str(work / "out")]))
        if i % 4 == 0:
            for v in order:
                times[f"missing {v}"].append(t([wk[v], "--config", str(cf[v]), "fetch", "00000001000000FF000000FE", str(work / "out")]))
out = {k: {"median_ms": statistics.median(x), "n": len(x)} for k, x in times.items()}
out["fetch mine / fetch main"] = out["fetch mine"]["median_ms"] / out["fetch main"]["median_ms"]
out["loadavg_start"], out["loadavg_end"] = load0, os.getloadavg()
print(json.dumps(out, indent=1))
import shutil
shutil.rmtree(work, ignore_errors=True)
out_dir.mkdir(exist_ok=True)
(out_dir / f"ab-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(out, indent=1))
