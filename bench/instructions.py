#!/usr/bin/env python3
"""Instructions, not seconds, of the per-segment paths: `valgrind --tool=callgrind`
counts what one call executes, the same whatever else the machine is doing, so two
checkouts can be compared on a loaded machine where wall-clock figures are noise.

    bench/instructions.py [--python PY] CHECKOUT [CHECKOUT...]

Each CHECKOUT (a git work tree of walkeeper; compare main with an older one made by
`git worktree add /tmp/old REV`) is run as `PY CHECKOUT/bin/walkeeper`, with its
bytecode compiled first (as pip installs it; without .pyc files every call compiles
its modules and the figures measure the compiler). Rows, each the median of --reps
calls:

- `python -c pass`: the interpreter alone, with its teardown (walkeeper's served
  calls skip the teardown with os._exit);
- served push: a segment the background pusher already stored (config file, one
  local store);
- served fetch: a segment the prefetcher already spooled;
- absent fetch: a segment no store holds (config, store lookup, message; exit 1).

Synthetic 16 MiB segments (a real long page header, zero bytes after): the content
does not matter to these paths. Standard library only; needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEG = 16 << 20
SYSID = 7311111111111111111


def segment(name: str) -> bytes:
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    lsn = (log * (0x100000000 // SEG) + seg) * SEG
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, lsn, 0, SYSID, SEG, 8192)
    return header + bytes(SEG - len(header))


def name(i: int) -> str:
    return f"00000001000000000000{i:04X}"


def count(cmd: list[str], env: dict) -> int:
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run(["valgrind", "--tool=callgrind",
                            f"--callgrind-out-file={out}/cg.%p", *cmd],
                           env=env, capture_output=True, text=True)
        # The parent's file: the lowest pid (a served fetch may fork a prefetcher).
        files = sorted(Path(out).glob("cg.*"), key=lambda p: int(p.name.split(".")[1]))
        if not files:
            sys.exit(f"valgrind wrote nothing for {cmd}: {r.stderr[-500:]}")
        m = re.search(r"^summary: (\d+)", files[0].read_text(), re.M)
        return int(m.group(1))


def measure(py: str, checkout: Path, reps: int) -> dict[str, int]:
    subprocess.run([py, "-m", "compileall", "-q", str(checkout / "walkeeper")],
                   check=True, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith(("BACKUP_", "WALKEEPER_"))}
    out: dict[str, list[int]] = {"python -c pass": [], "served push": [], "served fetch": [],
                                 "absent fetch": []}
    with tempfile.TemporaryDirectory(prefix="wk-instr-") as d:
        d = Path(d)
        (d / "store").mkdir(mode=0o700)
        wal = d / "pg_wal"
        (wal / "archive_status").mkdir(parents=True)
        cfg = d / "walkeeper.toml"
        cfg.write_text(f'state_dir = "{d / "state"}"\n[[stores]]\nname = "local"\n'
                       f'type = "local"\npath = "{d / "store"}"\n')
        wk = [py, str(checkout / "bin" / "walkeeper"), "--config", str(cfg)]
        total = 2 + 2 * reps
        for i in range(1, total + 1):
            (wal / name(i)).write_bytes(segment(name(i)))
            (wal / "archive_status" / f"{name(i)}.ready").touch()
        for _ in range(reps):
            out["python -c pass"].append(count([py, "-c", "pass"], env))
        # push 1 starts the background pusher, which stores the rest
        subprocess.run([*wk, "push", str(wal / name(1)), name(1)], env=env, check=True)
        time.sleep(3)
        for i in range(2, 2 + reps):
            out["served push"].append(count([*wk, "push", str(wal / name(i)), name(i)], env))
            os.replace(wal / "archive_status" / f"{name(i)}.ready",
                       wal / "archive_status" / f"{name(i)}.done")
        for i in range(2 + reps, total + 1):       # the rest, for the fetch rows
            subprocess.run([*wk, "push", str(wal / name(i)), name(i)], env=env, check=True)
        dest = d / "restored"
        dest.mkdir()
        for _ in range(reps):
            out["absent fetch"].append(count([*wk, "fetch", name(0xFFF), str(dest / "x")], env))
        subprocess.run([*wk, "fetch", name(1), str(dest / "RECOVERYXLOG")], env=env, check=True)
        for i in range(2, 2 + reps):
            spool = d / "state" / "spool" / "default"
            deadline = time.monotonic() + 60
            while not any(p.name.startswith(name(i)) for p in spool.glob("0*")):
                if time.monotonic() > deadline:
                    sys.exit(f"{name(i)} never reached the spool")
                time.sleep(0.1)
            out["served fetch"].append(count([*wk, "fetch", name(i), str(dest / "RECOVERYXLOG")],
                                             env))
            if (dest / "RECOVERYXLOG").read_bytes()[:40] != segment(name(i))[:40]:
                sys.exit(f"fetch of {name(i)} wrote the wrong file")
    return {k: int(statistics.median(v)) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkouts", nargs="+", type=Path)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    results = {str(c): measure(a.python, c.resolve(), a.reps) for c in a.checkouts}
    rows = list(next(iter(results.values())))
    width = max(len(c) for c in results)
    print(f"{'instructions (M)':<{width}}  " + "  ".join(f"{r:>15}" for r in rows))
    for c, res in results.items():
        print(f"{c:<{width}}  " + "  ".join(f"{res[r] / 1e6:>15.1f}" for r in rows))
    base = next(iter(results.values()))
    for c, res in list(results.items())[1:]:
        print(f"{'vs first':<{width}}  " + "  ".join(
            f"{(res[r] / base[r] - 1) * 100:>+14.1f}%" for r in rows))


if __name__ == "__main__":
    main()
