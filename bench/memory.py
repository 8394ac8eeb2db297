#!/usr/bin/env python3
"""Peak memory of walkeeper push and fetch with 16 MiB and 1 GiB WAL segments (issue 6).

For each segment size, a throwaway cluster (`initdb --wal-segsize=N`, random port,
unix socket in a short /tmp directory, archive_mode = on with an empty
archive_command, so that completed segments stay in pg_wal marked `.ready`) gets
INSERTs of rows of random md5 text (a table of 4 x 32 hex characters a row; its WAL
compresses ~2x at zstd -3, less than pgbench OLTP WAL's ~3.4x: more work for zstd)
until 4 full segments are ready after initdb's, then is stopped; the last three full
segments S1, S2, S3 stay `.ready`, the others are marked `.done`. On its pg_wal, each
command in a fresh store and state_dir:

    push (sequential)      walkeeper --config C push pg_wal/S1 S1, push.parallel = 1
    push (read-ahead)      the same with the default push.parallel = 2: S1, S2, S3 are
                           .ready, so S2 and S3 are read ahead (in this call, or by a
                           detached background pusher in versions that have one: its
                           peak is sampled from /proc, and awaited before going on)
    fetch (prefetch off)   walkeeper --config C fetch S1 OUT, fetch.prefetch = 0
    fetch (prefetch)       fetch S1, then S2 and S3 with the default fetch.prefetch = 8
                           (its own state_dir), each once the prefetcher spooled it: the
                           detached prefetcher's own peak is sampled from /proc
    python -c pass         the same interpreter, for scale

Peak RSS of a command is what `/usr/bin/time -f %M` prints (its wait4() ru_maxrss);
a detached helper (prefetcher, background pusher), which is not a child of anything
we wait for, is sampled every 20 ms (its VmHWM as of the last sample). Every fetched
file is checked against the sha256 of the segment. Bars: < 80 MB with 16 MiB
segments, < 120 MB with 1 GiB segments (MB = 10^6 bytes; the table also shows MiB).

Must run as a non-root user (PostgreSQL refuses root); `bench/run.sh --memory`
handles that. Standard library only. Everything is deleted at the end (--keep
leaves it).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import du, free_port, initdb, loadavg, pg_env, run, save_json, sha256

PGBIN_DEFAULT = "/usr/lib/postgresql/15/bin"
CLUSTER = "mem"
SEG_RE = re.compile(r"^([0-9A-F]{24})\.ready$")
BARS_MB = {16: 80, 1024: 120}


def log(msg: str) -> None:
    print(f"[memory] {msg}", file=sys.stderr, flush=True)


TIME = "/usr/bin/time"


def measure(argv: list[str], scratch: Path) -> dict:
    """Run once under `/usr/bin/time -f %M`: wall seconds, exit code, peak RSS (kB),
    CPU seconds. Not wait4() from here: Linux carries the RSS peak of the address
    space a process had before exec into ru_maxrss, and a child of this Python
    process (vfork) would report this process's ~20 MiB as its floor."""
    out = scratch / ".time"
    t0 = time.perf_counter()
    proc = subprocess.Popen([TIME, "-f", "%M", "-o", str(out), *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    r = {"seconds": round(time.perf_counter() - t0, 3),
         "rc": os.waitstatus_to_exitcode(status),
         "maxrss_kb": int(out.read_text().split()[-1]),
         "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}
    out.unlink()
    if r["rc"] != 0:
        r["error"] = err.decode(errors="replace").strip()[-2000:]
    return r


class Watch(threading.Thread):
    """Peak VmHWM of the detached prefetchers: processes whose command line mentions
    MARK (a prefetcher is a fork of `walkeeper --config MARK fetch`) and that lead
    their own session (it calls setsid; the fetch processes do not)."""

    def __init__(self, mark: str, interval: float = 0.02):
        super().__init__(daemon=True)
        self.mark = mark.encode()
        self.interval = interval
        self.stop = threading.Event()
        self.hwm: dict[int, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.pids():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.hwm[pid] = max(self.hwm.get(pid, 0), int(line.split()[1]))
                except OSError:
                    pass
            self.stop.wait(self.interval)

    def pids(self) -> list[int]:
        out = []
        me = os.getpid()
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == me:
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if self.mark not in f.read():
                        continue
                with open(f"/proc/{p}/stat") as f:
                    sid = int(f.read().rsplit(")", 1)[1].split()[3])
                if sid == int(p):
                    out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
        return out


# ------------------------------------------------------------------ making WAL

FILL = ("INSERT INTO fill SELECT i, md5(random()::text), md5(random()::text), "
        "md5(random()::text), md5(random()::text) FROM generate_series(1, {rows}) i")


def make_wal(work: Path, seg_mb: int, pgbin: Path, need: int) -> tuple[Path, list[str], dict]:
    """A stopped cluster in WORK/pgdata whose pg_wal holds NEED full .ready segments of
    insert WAL after the one initdb wrote; the names of the last NEED."""
    pgdata = work / "pgdata"
    sockdir = Path(tempfile.mkdtemp(prefix="wkm", dir="/tmp"))
    port = free_port()
    env = pg_env(sockdir, port)
    log(f"initdb --wal-segsize={seg_mb} {pgdata}")
    initdb(pgbin, pgdata, port, sockdir, f"""\
# walkeeper memory bench: empty archive_command, completed segments stay .ready
archive_command = ''
max_wal_size = {max(4 * seg_mb, 1024)}MB
min_wal_size = {2 * seg_mb}MB
""", f"--wal-segsize={seg_mb}")
    status = pgdata / "pg_wal" / "archive_status"
    seg_size = seg_mb << 20

    def ready() -> list[str]:
        names = []
        for e in os.listdir(status):
            m = SEG_RE.match(e)
            if m and (pgdata / "pg_wal" / m.group(1)).stat().st_size == seg_size:
                names.append(m.group(1))
        return sorted(names)

    run([pgbin / "pg_ctl", "-D", pgdata, "-l", work / "postgres.log", "-w", "start"],
        env=env, stdout=subprocess.DEVNULL)
    rows = max(50_000, seg_mb * 2000)     # ~170 bytes of WAL a row
    info = {"inserts": 0, "rows_per_insert": rows}
    try:
        t0 = time.monotonic()
        run([pgbin / "psql", "-qX", "-c", "CREATE TABLE fill (i int, a text, b text, "
             "c text, d text)"], env=env, stdout=subprocess.DEVNULL)
        while len(ready()) < need + 1:
            if info["inserts"] >= 100:
                raise SystemExit(f"{seg_mb} MiB segments: fewer than {need + 1} ready after "
                                 f"100 inserts")
            log(f"insert {rows} rows of random md5 text ({len(ready())}/{need + 1} segments "
                f"ready)")
            run([pgbin / "psql", "-qX", "-c", FILL.format(rows=rows)], env=env,
                stdout=subprocess.DEVNULL)
            info["inserts"] += 1
        info["make_seconds"] = round(time.monotonic() - t0, 1)
    finally:
        run([pgbin / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], env=env,
            check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(sockdir, ignore_errors=True)
    names = ready()
    log(f"{len(names)} full {seg_mb} MiB segments ready: {names[0]}..{names[-1]}")
    # only the last NEED stay .ready: read-ahead of the first takes exactly the others
    for n in names[:-need]:
        os.rename(status / f"{n}.ready", status / f"{n}.done")
    return pgdata / "pg_wal", names[-need:], info


# ------------------------------------------------------------------ the runs

def config(path: Path, store: Path, state: Path, extra: str = "") -> Path:
    store.mkdir(mode=0o700, parents=True, exist_ok=True)   # as `walkeeper check` makes it
    path.write_text(f'''cluster = "{CLUSTER}"
state_dir = "{state}"
[compression]
algorithm = "zstd"
level = 3
{extra}[[stores]]
name = "local"
type = "local"
path = "{store}"
''')
    return path


def one_size(work: Path, seg_mb: int, a, wk: list[str], pgbin: Path, py: str) -> dict:
    need = 3
    pg_wal, names, info = make_wal(work, seg_mb, pgbin, need)
    s1, s2, s3 = names
    res: dict = {"segment_mib": seg_mb, "segments": [s1, s2, s3], **info,
                 "sha256": {n: sha256(pg_wal / n) for n in (s1, s2, s3)}, "runs": {}}
    runs = res["runs"]
    log(f"{seg_mb} MiB: load {loadavg()[0]:.2f}")
    res["loadavg_start"] = loadavg()

    def done(label: str, r: dict) -> None:
        runs[label] = r
        log(f"{seg_mb} MiB {label}: {r['maxrss_kb'] / 1024:.1f} MiB peak, {r['seconds']:.2f} s, "
            f"rc {r['rc']}" + (f" ERROR {r['error']}" if r.get("error") else ""))

    done("python -c pass", measure([py, "-c", "pass"], work))
    # push, sequential
    seq = work / "seq"
    c_seq = config(work / "seq.toml", seq / "store", seq / "state", "[push]\nparallel = 1\n"
                   "[fetch]\nprefetch = 0\n")
    r = measure([*wk, "--config", str(c_seq), "push", str(pg_wal / s1), s1], work)
    r["stored_bytes"] = du(seq / "store")
    done("push (sequential)", r)
    # push with read-ahead of S2, S3
    ra = work / "ra"
    c_ra = config(work / "ra.toml", ra / "store", ra / "state")
    helper = Watch(str(c_ra))        # a detached background pusher, if this version has one
    helper.start()
    r = measure([*wk, "--config", str(c_ra), "push", str(pg_wal / s1), s1], work)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and helper.pids():
        time.sleep(0.1)
    helper.stop.set()
    helper.join()
    res["pusher_hwm_kb"] = max(helper.hwm.values()) if helper.hwm else None
    recs = ra / "state" / "readahead" / CLUSTER
    r["readahead_records"] = sorted(p.name for p in recs.glob("*.json")) if recs.exists() else []
    r["stored_bytes"] = du(ra / "store")
    done("push (read-ahead, 3 segments)", r)
    if helper.hwm:
        log(f"{seg_mb} MiB detached pusher: {res['pusher_hwm_kb'] / 1024:.1f} MiB peak")
    # fetch without prefetch
    out = work / "out"
    out.mkdir()
    r = measure([*wk, "--config", str(c_seq), "fetch", s1, str(out / s1)], work)
    r["sha256_ok"] = r["rc"] == 0 and sha256(out / s1) == res["sha256"][s1]
    (out / s1).unlink(missing_ok=True)
    done("fetch (prefetch off)", r)
    # fetch with the prefetcher: S1 from the store, S2 and S3 from the spool if it kept up
    c_pf = config(work / "pf.toml", ra / "store", ra / "state-fetch")
    watch = Watch(str(c_pf))
    watch.start()
    for n in (s1, s2, s3):
        if n != s1:
            spool = ra / "state-fetch" / "spool" / CLUSTER
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (
                    spool.exists() and any(e.startswith(n + ".") for e in os.listdir(spool))):
                time.sleep(0.05)
        r = measure([*wk, "--config", str(c_pf), "fetch", n, str(out / n)], work)
        r["sha256_ok"] = r["rc"] == 0 and sha256(out / n) == res["sha256"][n]
        (out / n).unlink(missing_ok=True)
        done(f"fetch (prefetch) {['first', 'second', 'third'][(s1, s2, s3).index(n)]}", r)
    # the prefetcher ends IDLE (5 s) after the last request
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and watch.pids():
        time.sleep(0.1)
    watch.stop.set()
    watch.join()
    res["prefetcher_hwm_kb"] = max(watch.hwm.values()) if watch.hwm else None
    res["prefetchers_seen"] = len(watch.hwm)
    log(f"{seg_mb} MiB prefetcher: " + (f"{res['prefetcher_hwm_kb'] / 1024:.1f} MiB peak"
                                        if watch.hwm else "not seen"))
    res["loadavg_end"] = loadavg()
    return res


def summarize(res: dict) -> str:
    lines = [f"\n{'segment':>8}  {'command':34} {'peak MiB':>9} {'peak MB':>8} {'s':>7} {'cpu s':>6}"]
    bars = {}
    for size in res["sizes"]:
        mb = size["segment_mib"]
        worst = 0
        for label, r in size["runs"].items():
            lines.append(f"{mb:>5} MiB  {label:34} {r['maxrss_kb'] / 1024:9.1f} "
                         f"{r['maxrss_kb'] * 1024 / 1e6:8.1f} {r['seconds']:7.2f} {r['cpu_s']:6.2f}"
                         + ("" if r["rc"] == 0 and r.get("sha256_ok", True) else "  FAILED"))
            if label != "python -c pass":
                worst = max(worst, r["maxrss_kb"])
        for key, label in (("pusher_hwm_kb", "background pusher (detached, VmHWM)"),
                           ("prefetcher_hwm_kb", "prefetcher (detached, VmHWM)")):
            k = size.get(key)
            if k:
                lines.append(f"{mb:>5} MiB  {label:34} {k / 1024:9.1f} {k * 1024 / 1e6:8.1f}")
                worst = max(worst, k)
        ok = all(r["rc"] == 0 and r.get("sha256_ok", True) for r in size["runs"].values())
        limit = BARS_MB.get(mb)
        if limit:
            bars[f"{mb} MiB"] = {"peak_mb": round(worst * 1024 / 1e6, 1), "bar_mb": limit,
                                 "pass": ok and worst * 1024 / 1e6 < limit}
    lines.append("\nbars (largest peak of any push or fetch process, MB = 10^6 bytes):")
    for k, b in bars.items():
        lines.append(f"  {k} segments: {b['peak_mb']:.1f} MB < {b['bar_mb']} MB "
                     f"{'pass' if b['pass'] else 'FAIL'}")
    res["bars"] = bars
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("WKBENCH_MEM_DIR",
                                                     "/tmp/walkeeper-bench/memory"),
                    help="clusters and stores (default: $WKBENCH_MEM_DIR or %(default)s)")
    ap.add_argument("--sizes", default="16,1024",
                    help="WAL segment sizes in MiB (default %(default)s)")
    ap.add_argument("--pgbin", default=os.environ.get("PGBIN", PGBIN_DEFAULT))
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"),
                    help="the walkeeper command (split like a shell line)")
    ap.add_argument("--python", help="the interpreter of that walkeeper (default: its #! line)")
    ap.add_argument("--keep", action="store_true", help="keep clusters and stores")
    ap.add_argument("--out-dir", help="write the JSON here too")
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("memory.py: PostgreSQL refuses root; run bench/run.sh --memory "
                         "or as an unprivileged user")
    if not os.access(TIME, os.X_OK):
        raise SystemExit(f"memory.py: needs {TIME} (Debian package `time`)")
    wk = shlex.split(a.walkeeper)
    wk[0] = shutil.which(wk[0]) or wk[0]
    if not a.python:
        with open(wk[0], "rb") as f:
            first = f.readline().decode().strip()
        a.python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
    pgbin = Path(a.pgbin)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_at_start": loadavg(),
           "cpus": os.cpu_count(), "walkeeper": wk, "python": a.python,
           "versions": {"postgres": run([pgbin / "postgres", "--version"], capture_output=True,
                                        text=True).stdout.strip(),
                        "walkeeper": run([*wk, "--version"], capture_output=True,
                                         text=True).stdout.strip()},
           "sizes": []}
    for mb in (int(x) for x in a.sizes.split(",")):
        d = work / f"seg{mb}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        try:
            res["sizes"].append(one_size(d, mb, a, wk, pgbin, a.python))
        finally:
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["loadavg_at_end"] = loadavg()
    text = summarize(res)
    res["summary"] = text
    name = time.strftime("memory-%Y%m%dT%H%M%S.json")
    save_json(res, name, [str(work / "results"), a.out_dir])
    print(f"{os.cpu_count()} CPUs, load {res['loadavg_at_start'][0]:.2f} at start, "
          f"{res['loadavg_at_end'][0]:.2f} at the end; JSON {name}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
