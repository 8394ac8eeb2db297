#!/usr/bin/env python3
"""Live run (issue 6): pgbench writing against a cluster archiving with walkeeper.

One throwaway cluster (initdb in WORK/pgdata, random port, unix socket in a short
/tmp directory, archive_mode = on, wal_level = replica, fsync and synchronous_commit
at their defaults), `pgbench -i -s SCALE`, then for each variant and round:

    VACUUM ANALYZE the pgbench tables, TRUNCATE pgbench_history, CHECKPOINT
    ALTER SYSTEM SET archive_command = <variant>; pg_reload_conf()
    pg_switch_wal(), and wait until nothing is left to archive and the switched
    segment is in the variant's destination (proof the new command is in use)
    pgbench -n -c 4 -j 2 -T DURATION             TPS from pgbench's own output
    at pgbench's exit: the newest complete segment (the newest NAME.ready or
    NAME.done in pg_wal/archive_status), how many .ready files are left, and
    pg_stat_archiver; then poll until that segment's .ready is gone (the
    archiver renames it .done once archive_command succeeded): the seconds from
    pgbench's exit to then are the archiver lag (0 if it was archived already)

Variants (each walkeeper variant with a fresh local store and state_dir):

    cp + sync                    cp %p ARCH/%f && sync ARCH/%f ARCH
                                 (fsync of the file and of the directory, as walkeeper
                                 does for each object)
    walkeeper push (sequential)  walkeeper --config C push %p %f, push.parallel = 1
    walkeeper push (read-ahead)  the same with the default push.parallel (2)

Rounds rotate the order of the variants (round r starts with variant r mod 3). The
table shows every round; the bars use the median TPS of the rounds and the largest
lag. Each variant also records how long every segment completed during the run
waited to be archived (.ready seen to .ready gone, archive_status listed every
20 ms), the load average before and after, the machine's CPU use during pgbench and
how much of it was not this cluster's (other users' work on a shared 2-core machine),
and the CPU time of archive_command (the archiver's waited-for children, from /proc,
plus any detached walkeeper helper). Before each variant the machine must have been
idle for --quiet-window seconds; a variant during which other work took more than
--max-other-cpu of the CPU is discarded and run again (pgbench is stopped early once
that is certain), up to --retries times; the last attempt is kept, flagged, and left
out of the bars when the variant has quiet runs. `--report FILE.json` prints the
table and bars of an earlier run.

Must run as a non-root user (PostgreSQL refuses root); `bench/run.sh --live` handles
that. Standard library only. The cluster and every store are deleted at the end
(--keep leaves them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import du_files, free_port, initdb, loadavg, pg_env, run, save_json

PGBIN_DEFAULT = "/usr/lib/postgresql/15/bin"
CLUSTER = "live"
SEG_RE = re.compile(r"^([0-9A-F]{24})\.(ready|done)$")
VARIANTS = ("cp + sync", "walkeeper push (sequential)", "walkeeper push (read-ahead)")
BASELINE = VARIANTS[0]


def log(msg: str) -> None:
    print(f"[live] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ CPU accounting

def cpu_jiffies() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine, from /proc/stat; busy
    includes steal (time the hypervisor gave to other guests)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v), v[7] if len(v) > 7 else 0


def proc_cpu(pid: int) -> tuple[int, int] | None:
    """(own utime+stime, waited-for children's cutime+cstime) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3 of stat); utime is field 14
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def cluster_ticks(postmaster: int) -> tuple[int, dict[int, int]]:
    """CPU of the cluster so far: postmaster (own + exited children) and each live
    child (own + its exited children, e.g. the archiver's archive_command runs)."""
    pm = proc_cpu(postmaster) or (0, 0)
    kids = {}
    for c in children(postmaster):
        t = proc_cpu(c)
        if t:
            kids[c] = t[0] + t[1]
    return pm[0] + pm[1], kids


def cluster_delta(before, after) -> int:
    """Ticks this cluster used between two cluster_ticks() snapshots. A child that
    exited in between is in the postmaster's children time with its whole life, so
    what it had used before is subtracted."""
    return (after[0] - before[0]) + sum(after[1].values()) - sum(before[1].values())


# ------------------------------------------------------------------ WAL names

def seg_no(name: str, seg_size: int) -> int:
    return int(name[8:16], 16) * (2**32 // seg_size) + int(name[16:24], 16)


# ------------------------------------------------------------------ the cluster

class Cluster:
    def __init__(self, work: Path, pgbin: Path):
        self.work, self.pgbin = work, pgbin
        self.pgdata = work / "pgdata"
        self.status = self.pgdata / "pg_wal" / "archive_status"
        self.sockdir = Path(tempfile.mkdtemp(prefix="wkl", dir="/tmp"))  # socket path limit
        self.port = free_port()
        self.env = pg_env(self.sockdir, self.port)

    def create(self, scale: int) -> None:
        log(f"initdb {self.pgdata}")
        initdb(self.pgbin, self.pgdata, self.port, self.sockdir, """\
# walkeeper live bench: fsync, synchronous_commit, max_wal_size, shared_buffers
# are PostgreSQL's defaults
archive_command = 'true'
""")
        self.start()
        log(f"pgbench -i -s {scale}")
        t0 = time.monotonic()
        run([self.pgbin / "pgbench", "-i", "-q", "-s", scale], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"pgbench -i took {time.monotonic() - t0:.0f} s")

    def start(self) -> None:
        run([self.pgbin / "pg_ctl", "-D", self.pgdata, "-l", self.work / "postgres.log",
             "-w", "start"], env=self.env, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        run([self.pgbin / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop"],
            env=self.env, check=False, stdout=subprocess.DEVNULL)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def sql(self, q: str) -> str:
        return run([self.pgbin / "psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", q],
                   env=self.env, capture_output=True, text=True).stdout.strip()

    def postmaster(self) -> int:
        with open(self.pgdata / "postmaster.pid") as f:
            return int(f.readline())

    def archiver(self) -> int:
        return int(self.sql("select pid from pg_stat_activity where backend_type = 'archiver'"))

    def archiver_stats(self) -> dict:
        row = self.sql("select archived_count, coalesce(last_archived_wal, ''), failed_count, "
                       "coalesce(last_failed_wal, ''), pg_current_wal_lsn(), "
                       "(pg_walfile_name_offset(pg_current_wal_lsn())).file_name, "
                       "(pg_walfile_name_offset(pg_current_wal_lsn())).file_offset, "
                       "pg_current_wal_lsn() - '0/0'::pg_lsn from pg_stat_archiver")
        a, la, f, lf, lsn, cur, off, pos = row.split("|")
        # current_wal_offset: bytes of the current, incomplete segment, which no
        # archive_command can see until it is complete (or archive_timeout switches)
        return {"archived_count": int(a), "last_archived_wal": la, "failed_count": int(f),
                "last_failed_wal": lf, "lsn": lsn, "current_wal_file": cur,
                "current_wal_offset": int(off), "lsn_bytes": int(pos)}

    def status_names(self) -> tuple[list[str], list[str]]:
        """(segments marked .ready, segments marked .done), sorted."""
        ready, done = [], []
        for e in os.listdir(self.status):
            m = SEG_RE.match(e)
            if m:
                (ready if m.group(2) == "ready" else done).append(m.group(1))
        return sorted(ready), sorted(done)

    def set_archive_command(self, cmd: str) -> None:
        self.sql(f"ALTER SYSTEM SET archive_command = '{cmd.replace(chr(39), chr(39) * 2)}'")
        self.sql("select pg_reload_conf()")

    def wait_archived(self, timeout: float) -> float:
        """Wait until no segment is marked .ready; seconds waited."""
        t0 = time.monotonic()
        while True:
            ready = [e for e in os.listdir(self.status) if e.endswith(".ready")]
            if not ready:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"the archiver did not catch up in {timeout:.0f} s "
                                 f"({len(ready)} files still .ready); see {self.work}/postgres.log")
            time.sleep(0.05)


# ------------------------------------------------------------------ variants

def variant_setup(name: str, vdir: Path, wk: list[str], pgbin: Path) -> tuple[str, Path]:
    """(archive_command, destination directory) for one variant in the fresh VDIR."""
    dest = vdir / ("archive" if name == BASELINE else "store")
    dest.mkdir(parents=True)
    if name == BASELINE:
        d = shlex.quote(str(dest))
        return f"cp %p {d}/%f && sync {d}/%f {d}", dest
    cfg = vdir / "walkeeper.toml"
    push = "[push]\nparallel = 1\n" if "sequential" in name else ""
    cfg.write_text(f'''cluster = "{CLUSTER}"
state_dir = "{vdir / 'state'}"
[postgres]
bindir = "{pgbin}"
[compression]
algorithm = "zstd"
level = 3
{push}[[stores]]
name = "local"
type = "local"
path = "{dest}"
''')
    words = " ".join(shlex.quote(w) for w in wk)
    return f"{words} --config {shlex.quote(str(cfg))} push %p %f", dest


def holds(dest: Path, name: str) -> bool:
    for _, _, files in os.walk(dest):
        if any(f.startswith(name) for f in files):
            return True
    return False


def detached(mark: bytes) -> dict[int, int]:
    """CPU ticks of the detached processes (session leaders, as a forked background
    helper that called setsid is) whose command line contains MARK."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if mark not in f.read():
                    continue
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == int(p):            # session id == pid
            out[int(p)] = int(fields[11]) + int(fields[12])
    return out


class Backlog(threading.Thread):
    """Counts the .ready files every `interval` seconds while pgbench runs, and follows
    any detached helper of walkeeper (its CPU is nobody's waited-for child time)."""

    def __init__(self, c: Cluster, mark: str | None, interval: float = 0.5):
        super().__init__(daemon=True)
        self.c, self.interval = c, interval
        self.mark = mark.encode() if mark else None
        self.stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self.helpers: dict[int, int] = {}       # pid -> CPU ticks, last seen
        self.t0 = time.monotonic()
        self.before = detached(self.mark) if self.mark else {}  # count only the rest
        self.abort: dict | None = None          # set by watch_other(): the run is lost
        self.guard = None

    def watch_other(self, pgbench: subprocess.Popen, pm: int, ticks0, j0, duration: float,
                    limit: float) -> None:
        """Stop pgbench as soon as other work has used more than LIMIT of the CPU the
        whole run will have: that run would be discarded anyway."""
        self.guard = (pgbench, pm, ticks0, j0, duration, limit)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.sample()
            n += 1
            if self.guard and n % 2 == 0 and self.abort is None:
                self.check_other()
            self.stop.wait(self.interval)

    def check_other(self) -> None:
        pgbench, pm, ticks0, j0, duration, limit = self.guard
        j = cpu_jiffies()
        t = proc_cpu(pgbench.pid)
        ours = cluster_delta(ticks0, cluster_ticks(pm)) + (t[0] if t else 0) \
            + self.helper_ticks()
        busy, total = j[0] - j0[0], j[1] - j0[1]
        elapsed = time.monotonic() - self.t0
        if elapsed < 2 or total <= 0:
            return
        whole_run = total * max(duration / elapsed, 1.0)
        other = max(busy - ours, 0)
        if other > limit * whole_run:
            self.abort = {"after_s": round(elapsed, 1),
                          "other_cpu_share_so_far": round(other / total, 3)}
            pgbench.terminate()

    def sample(self) -> None:
        try:
            n = sum(1 for e in os.listdir(self.c.status) if e.endswith(".ready"))
        except OSError:
            n = -1
        self.samples.append((round(time.monotonic() - self.t0, 2), n))
        if self.mark:
            self.helpers.update(detached(self.mark))

    def helper_ticks(self) -> int:
        return sum(t - self.before.get(p, 0) for p, t in self.helpers.items())


class ReadyWatch(threading.Thread):
    """How long each segment waits to be archived: from the first listing that shows
    NAME.ready (PostgreSQL creates it the moment the segment is complete) to the first
    that does not (the archiver renamed it .done after archive_command succeeded);
    pg_wal/archive_status listed every `interval` seconds."""

    def __init__(self, c: Cluster, interval: float = 0.02):
        super().__init__(daemon=True)
        self.c, self.interval = c, interval
        self.stop = threading.Event()
        self.seen: dict[str, float] = {}
        self.waits: dict[str, float] = {}
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                ready = {e[:-6] for e in os.listdir(self.c.status) if e.endswith(".ready")}
            except OSError:
                ready = set()
            for n in ready:
                self.seen.setdefault(n, now)
            for n, t in list(self.seen.items()):
                if n not in ready and n not in self.waits:
                    self.waits[n] = now - t
            self.stop.wait(self.interval)

    def report(self, until: float) -> dict:
        """Waits of the segments that became ready before UNTIL (pgbench's end)."""
        w = sorted(self.waits[n] for n, t in self.seen.items() if n in self.waits and t <= until)
        if not w:
            return {"segments": 0}
        return {"segments": len(w), "median_s": round(statistics.median(w), 3),
                "p90_s": round(w[min(len(w) - 1, int(0.9 * len(w)))], 3),
                "max_s": round(w[-1], 3), "all_s": [round(x, 3) for x in w]}


def parse_pgbench(out: str) -> dict:
    r = {}
    m = re.search(r"^tps = ([0-9.]+)", out, re.M)
    r["tps"] = float(m.group(1)) if m else None
    m = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
    r["latency_ms"] = float(m.group(1)) if m else None
    m = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
    r["transactions"] = int(m.group(1)) if m else None
    m = re.search(r"^number of failed transactions: (\d+)", out, re.M)
    r["failed_transactions"] = int(m.group(1)) if m else None
    r["progress_tps"] = [float(x) for x in re.findall(r"^progress: [0-9.]+ s, ([0-9.]+) tps",
                                                      out, re.M)]
    return r


QUIET = {"max_wait": 600.0, "busy": 0.15, "window": 15.0}


def wait_quiet() -> dict:
    """Wait (up to QUIET["max_wait"] s) until the machine has been idle (<= 15 % busy
    in every 0.5 s) for QUIET["window"] seconds in a row: someone else's test suite
    on 2 cores would skew TPS."""
    t0 = time.monotonic()
    calm = 0.0
    while True:
        b0, t_0, _ = cpu_jiffies()
        time.sleep(0.5)
        b1, t_1, _ = cpu_jiffies()
        busy = (b1 - b0) / max(t_1 - t_0, 1)
        calm = calm + 0.5 if busy <= QUIET["busy"] else 0.0
        waited = time.monotonic() - t0
        if calm >= QUIET["window"] or waited >= QUIET["max_wait"]:
            return {"busy_before": round(busy, 3), "quiet_waited_s": round(waited, 1),
                    "quiet": calm >= QUIET["window"]}


def one_variant(c: Cluster, name: str, rnd: int, a, wk: list[str], pgbin: Path,
                may_abort: bool) -> dict:
    vdir = c.work / "variants" / f"r{rnd}-{re.sub(r'[^a-z]+', '-', name).strip('-')}"
    shutil.rmtree(vdir, ignore_errors=True)
    cmd, dest = variant_setup(name, vdir, wk, pgbin)
    r: dict = {"variant": name, "round": rnd, "archive_command": cmd}
    log(f"round {rnd} {name}: vacuum, checkpoint, archive_command, pg_switch_wal")
    c.sql("VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts")
    c.sql("TRUNCATE pgbench_history")
    c.sql("CHECKPOINT")
    c.set_archive_command(cmd)
    # Proof that the archiver uses the new command: a switched segment lands in DEST.
    for attempt in range(5):
        time.sleep(1.0)
        c.sql("select txid_current()")      # some WAL, so that there is something to switch
        switched = c.sql("select pg_walfile_name(pg_switch_wal())")
        c.wait_archived(a.drain_timeout)
        if holds(dest, switched):
            break
        log(f"  {switched} was archived by the previous command; again")
    else:
        raise SystemExit(f"{name}: the archiver does not use {cmd!r}")
    quiet = wait_quiet()
    r.update(quiet)
    seg_size = int(c.sql("select setting from pg_settings where name = 'wal_segment_size'"))
    before = c.archiver_stats()
    arch_pid = c.archiver()
    arch0 = proc_cpu(arch_pid)
    pm = c.postmaster()
    ticks0 = cluster_ticks(pm)
    r["loadavg_start"] = loadavg()
    j0 = cpu_jiffies()
    cfg = vdir / "walkeeper.toml"
    backlog = Backlog(c, str(cfg) if cfg.exists() else None)
    backlog.start()
    waits = ReadyWatch(c)
    waits.start()
    log(f"round {rnd} {name}: pgbench -c {a.clients} -j {a.jobs} -T {a.duration} "
        f"(load {r['loadavg_start'][0]:.2f})")
    t_start = time.monotonic()
    proc = subprocess.Popen([str(pgbin / "pgbench"), "-n", "-c", str(a.clients), "-j",
                             str(a.jobs), "-T", str(a.duration), "-P", "10"],
                            env=c.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if may_abort:
        backlog.watch_other(proc, pm, ticks0, j0, a.duration, a.max_other_cpu)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    t_end = time.monotonic()
    # --- the moment pgbench ended: what is complete, what is left to archive
    ready_end, done_end = c.status_names()
    j1 = cpu_jiffies()
    ticks1 = cluster_ticks(pm)
    backlog.stop.set()
    backlog.join()
    backlog.sample()
    helper_ticks_run = backlog.helper_ticks()
    if backlog.abort:
        waits.stop.set()
        log(f"  other work took {backlog.abort['other_cpu_share_so_far']:.0%} of the machine "
            f"in {backlog.abort['after_s']:.0f} s: pgbench stopped, this run is discarded")
        c.wait_archived(a.drain_timeout)
        shutil.rmtree(vdir, ignore_errors=True)
        r.update(aborted=True, **backlog.abort, other_cpu_share=backlog.abort[
            "other_cpu_share_so_far"], loadavg_end=loadavg())
        return r
    stats_end = c.archiver_stats()
    r["loadavg_end_of_pgbench"] = loadavg()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"pgbench failed (exit {rc}):\n{out}")
    r.update(parse_pgbench(out))
    r["pgbench_seconds"] = round(t_end - t_start, 3)
    r["pgbench_output"] = out.strip().splitlines()[-12:]
    complete = max(ready_end + done_end)          # the newest complete segment at the end
    r["end"] = {"newest_complete_segment": complete, "ready_files": len(ready_end),
                "ready": ready_end, **stats_end}
    behind = None
    last = stats_end["last_archived_wal"]
    if re.fullmatch(r"[0-9A-F]{24}", last):
        behind = seg_no(complete, seg_size) - seg_no(last, seg_size)
    r["end"]["segments_behind_last_archived"] = behind
    # --- archiver lag: until the newest complete segment's .ready is gone
    target_ready = c.status / f"{complete}.ready"
    if complete not in ready_end:
        lag = 0.0
    else:
        deadline = t_end + a.drain_timeout
        while target_ready.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"{complete} not archived {a.drain_timeout:.0f} s after pgbench")
            time.sleep(0.01)
        lag = time.monotonic() - t_end
    r["lag_s"] = round(lag, 3)
    c.wait_archived(a.drain_timeout)     # and whatever autovacuum wrote since
    r["drain_all_s"] = round(time.monotonic() - t_end, 3)
    time.sleep(0.1)
    waits.stop.set()
    waits.join()
    r["ready_to_done"] = waits.report(t_end)
    after = c.archiver_stats()
    arch1 = proc_cpu(arch_pid)
    backlog.sample()
    hz = os.sysconf("SC_CLK_TCK")
    r["detached_helpers"] = len(backlog.helpers)
    r["detached_helper_cpu_s"] = round(backlog.helper_ticks() / hz, 2)
    r["loadavg_end"] = loadavg()
    r["archived_during_run"] = stats_end["archived_count"] - before["archived_count"]
    r["archived_until_drained"] = after["archived_count"] - before["archived_count"]
    r["failed_archive_commands"] = after["failed_count"] - before["failed_count"]
    r["wal_bytes"] = stats_end["lsn_bytes"] - before["lsn_bytes"]
    r["wal_segments"] = r["wal_bytes"] / seg_size
    if arch0 and arch1:
        ticks = (arch1[0] + arch1[1]) - (arch0[0] + arch0[1]) + backlog.helper_ticks()
        r["archive_cpu_s"] = round(ticks / hz, 2)
        n = r["archived_until_drained"]
        r["archive_cpu_ms_per_segment"] = round(1000 * ticks / hz / n, 1) if n else None
    busy, total = j1[0] - j0[0], max(j1[1] - j0[1], 1)
    ours = cluster_delta(ticks0, ticks1) + round((ru.ru_utime + ru.ru_stime) * hz) \
        + helper_ticks_run
    r["machine_busy"] = round(busy / total, 3)
    r["steal_share"] = round((j1[2] - j0[2]) / total, 3)
    r["cluster_and_pgbench_cpu_share"] = round(ours / total, 3)
    r["other_cpu_share"] = round(max(busy - ours, 0) / total, 3)
    r["backlog_max"] = max((n for _, n in backlog.samples), default=0)
    r["backlog_samples"] = backlog.samples
    size, files = du_files(dest)
    r["stored_bytes"], r["stored_files"] = size, files
    if r["failed_archive_commands"]:
        r["last_failed_wal"] = after["last_failed_wal"]
    rd = r["ready_to_done"]
    log(f"round {rnd} {name}: {r['tps']:.1f} tps, lag {lag:.2f} s, .ready to .done "
        f"median {rd.get('median_s', 0):.2f} s max {rd.get('max_s', 0):.2f} s "
        f"({len(ready_end)} .ready at the end), backlog max {r['backlog_max']}, "
        f"{r['archived_during_run']} archived, archive cpu {r.get('archive_cpu_s')} s, "
        f"other cpu {r['other_cpu_share']:.0%}, load {r['loadavg_end'][0]:.2f}")
    shutil.rmtree(vdir, ignore_errors=True)
    return r


# ------------------------------------------------------------------ report

def summarize(res: dict) -> str:
    rows = res["runs"]
    lines = [f"\n{'variant':28} {'rnd':>3} {'tps':>7} {'x cp':>6} {'lat ms':>6} "
             f"{'WAL seg':>7} {'arch':>4} {'max rdy':>7} {'rdy end':>7} {'lag s':>5} "
             f"{'open MiB':>8} {'rdy->done med/max s':>19} {'cpu ms/seg':>10} "
             f"{'other':>5} {'load':>11}"]
    base = {r["round"]: r["tps"] for r in rows if r["variant"] == BASELINE}
    for r in sorted(rows, key=lambda r: (VARIANTS.index(r["variant"]), r["round"])):
        ratio = r["tps"] / base[r["round"]] if base.get(r["round"]) else None
        rd = r.get("ready_to_done") or {}
        waits = (f"{rd['median_s']:.2f} / {rd['max_s']:.2f}" if rd.get("segments") else "-")
        lines.append(
            f"{r['variant']:28} {r['round']:>3} {r['tps']:7.1f} "
            f"{(f'{ratio:6.3f}' if ratio else '     -')} {r['latency_ms']:6.2f} "
            f"{r['wal_segments']:7.1f} {r['archived_during_run']:4d} {r['backlog_max']:7d} "
            f"{r['end']['ready_files']:7d} {r['lag_s']:5.2f} "
            f"{r['end']['current_wal_offset'] / 2**20:8.1f} {waits:>19} "
            f"{(r.get('archive_cpu_ms_per_segment') or 0):10.1f} "
            f"{r['other_cpu_share']:5.0%} "
            f"{r['loadavg_start'][0]:5.2f}-{r['loadavg_end'][0]:<5.2f}"
            + ("  (busy machine)" if r.get("over_other_cpu") else ""))
    lines.append("open MiB: WAL in the current, incomplete segment when pgbench ended, which "
                 "no archive_command sees before the segment is complete; rdy->done: how long "
                 "each segment completed during the run waited to be archived")
    if res.get("discarded"):
        lines.append(f"{len(res['discarded'])} variant run(s) discarded and repeated: other work "
                     f"took > {res['max_other_cpu']:.0%} of the CPU (" + ", ".join(
                         f"{d['variant']} r{d['round']} {d['other_cpu_share']:.0%}"
                         for d in res["discarded"]) + ")")
    # The bars count the runs on a quiet machine only, when a variant has any.
    def kept(v):
        mine = [r for r in rows if r["variant"] == v]
        clean = [r for r in mine if not r.get("over_other_cpu")]
        return clean or mine
    flagged = [r for r in rows if r.get("over_other_cpu")]
    lines.append("\nbars (median TPS of the rounds, largest lag"
                 + (f"; without the {len(flagged)} run(s) on a busy machine" if flagged else "")
                 + "):")
    med = {v: statistics.median([r["tps"] for r in kept(v)])
           for v in VARIANTS if any(r["variant"] == v for r in rows)}
    for v in med:
        t = [r["tps"] for r in kept(v)]
        lines.append(f"  {v}: median {med[v]:.1f} tps, {min(t):.1f}-{max(t):.1f} over "
                     f"{len(t)} run(s) ({(max(t) - min(t)) / med[v]:.0%} of the median)")
    clean_base = {r["round"]: r["tps"] for r in kept(BASELINE)}
    bars = {}
    for v in VARIANTS[1:]:
        if v not in med or BASELINE not in med:
            continue
        ratio = med[v] / med[BASELINE]
        per = [r["tps"] / clean_base[r["round"]] for r in kept(v) if r["round"] in clean_base]
        lag = max(r["lag_s"] for r in rows if r["variant"] == v)
        worst = max([r["ready_to_done"]["max_s"] for r in rows if r["variant"] == v
                     and (r.get("ready_to_done") or {}).get("segments")], default=None)
        bars[v] = {"tps_ratio_vs_cp": round(ratio, 3),
                   "tps_ratio_rounds": [round(x, 3) for x in per],
                   "tps_pass": ratio >= 0.95, "max_lag_s": lag, "lag_pass": lag < 1.0,
                   "max_ready_to_done_s": worst}
        rng = f" (rounds {min(per):.3f}-{max(per):.3f})" if per else ""
        lines.append(f"  {v}: TPS {ratio:.3f}x cp{rng} "
                     f"{'pass' if ratio >= 0.95 else 'FAIL'} (>= 0.95); "
                     f"archiver lag {lag:.2f} s {'pass' if lag < 1.0 else 'FAIL'} (< 1 s); "
                     + (f"longest wait of a segment during the run {worst:.2f} s"
                        if worst is not None else "no per-segment waits recorded"))
    res["bars"] = bars
    lag_cp = max(r["lag_s"] for r in rows if r["variant"] == BASELINE)
    worst = max([r["ready_to_done"]["max_s"] for r in rows if r["variant"] == BASELINE
                 and (r.get("ready_to_done") or {}).get("segments")], default=None)
    lines.append(f"  (cp + sync: archiver lag {lag_cp:.2f} s"
                 + (f"; longest wait of a segment {worst:.2f} s)" if worst is not None else ")"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("WKBENCH_LIVE_DIR",
                                                     "/tmp/walkeeper-bench/live"),
                    help="cluster and stores (default: $WKBENCH_LIVE_DIR or %(default)s)")
    ap.add_argument("--duration", type=int, default=60, help="pgbench -T seconds (default 60)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every variant (default 1)")
    ap.add_argument("--scale", type=int, default=20, help="pgbench -i scale (default 20)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--jobs", type=int, default=2, help="pgbench -j (default 2)")
    ap.add_argument("--warmup", type=int, default=15,
                    help="seconds of untimed pgbench before the first variant (default 15)")
    ap.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))),
                    help="comma-separated indexes into: " + "; ".join(
                        f"{i} {v}" for i, v in enumerate(VARIANTS)))
    ap.add_argument("--drain-timeout", type=float, default=900.0,
                    help="longest wait for the archiver to catch up (default %(default)s s)")
    ap.add_argument("--quiet-wait", type=float, default=600.0, metavar="S",
                    help="before each variant, wait up to S seconds for the machine to be "
                    "idle (<= 15%% busy in every 0.5 s for --quiet-window s; default "
                    "%(default)s)")
    ap.add_argument("--quiet-window", type=float, default=15.0, metavar="S",
                    help="seconds of idle machine wanted before each variant (default %(default)s)")
    ap.add_argument("--max-other-cpu", type=float, default=0.10, metavar="SHARE",
                    help="a variant during which work outside this cluster and pgbench "
                    "took more than SHARE of the machine's CPU is discarded (kept in the "
                    "JSON) and run again (default %(default)s)")
    ap.add_argument("--retries", type=int, default=5,
                    help="reruns of a variant discarded for other work (default %(default)s; "
                    "pgbench is stopped early once the run is sure to be discarded); the "
                    "last one runs to the end and is kept, flagged")
    ap.add_argument("--pgbin", default=os.environ.get("PGBIN", PGBIN_DEFAULT))
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"),
                    help="the walkeeper command (split like a shell line)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster (stopped)")
    ap.add_argument("--out-dir", help="write the JSON here too")
    ap.add_argument("--report", metavar="JSON",
                    help="print the table and bars of an earlier run's JSON, run nothing")
    a = ap.parse_args(argv)
    if a.report:
        res = json.loads(Path(a.report).read_text())
        print(summarize(res))
        return 0
    if os.geteuid() == 0:
        raise SystemExit("live.py: PostgreSQL refuses root; run bench/run.sh --live "
                         "or as an unprivileged user")
    wk = shlex.split(a.walkeeper)
    wk[0] = shutil.which(wk[0]) or wk[0]
    QUIET["max_wait"], QUIET["window"] = a.quiet_wait, a.quiet_window
    pgbin = Path(a.pgbin)
    variants = [VARIANTS[int(i)] for i in a.variants.split(",")]
    if BASELINE not in variants:
        raise SystemExit("live.py: the cp baseline (variant 0) is needed for the ratios")
    work = Path(a.work).resolve()
    shutil.rmtree(work / "pgdata", ignore_errors=True)
    shutil.rmtree(work / "variants", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_at_start": loadavg(),
           "cpus": os.cpu_count(), "walkeeper": wk, "duration_s": a.duration,
           "rounds": a.rounds, "scale": a.scale, "clients": a.clients, "jobs": a.jobs,
           "warmup_s": a.warmup,
           "versions": {
               "postgres": run([pgbin / "postgres", "--version"], capture_output=True,
                               text=True).stdout.strip(),
               "walkeeper": run([*wk, "--version"], capture_output=True,
                                text=True).stdout.strip()},
           "max_other_cpu": a.max_other_cpu, "runs": [], "discarded": []}
    c = Cluster(work, pgbin)
    try:
        c.create(a.scale)
        res["settings"] = dict(
            line.split("|", 1) for line in c.sql(
                "select name, current_setting(name) from pg_settings where name in "
                "('fsync', 'synchronous_commit', 'wal_level', 'max_wal_size', 'shared_buffers', "
                "'wal_segment_size', 'checkpoint_timeout', 'full_page_writes', "
                "'wal_compression', 'archive_timeout')").splitlines())
        if a.warmup:
            log(f"warm-up: pgbench -T {a.warmup} (archive_command 'true')")
            run([pgbin / "pgbench", "-n", "-c", a.clients, "-j", a.jobs, "-T", a.warmup],
                env=c.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rnd in range(a.rounds):
            k = rnd % len(variants)
            for name in variants[k:] + variants[:k]:
                for attempt in range(a.retries + 1):
                    r = one_variant(c, name, rnd, a, wk, pgbin, attempt < a.retries)
                    r["attempt"] = attempt
                    if r.get("aborted"):
                        res["discarded"].append(r)
                        continue
                    if r["other_cpu_share"] <= a.max_other_cpu or attempt == a.retries:
                        r["over_other_cpu"] = r["other_cpu_share"] > a.max_other_cpu
                        res["runs"].append(r)
                        break
                    log(f"  other work took {r['other_cpu_share']:.0%} of the machine "
                        f"(> {a.max_other_cpu:.0%}): discarded, again")
                    res["discarded"].append(r)
    finally:
        if a.keep:
            c.stop()
            shutil.rmtree(c.sockdir, ignore_errors=True)
        else:
            c.destroy()
            shutil.rmtree(work / "variants", ignore_errors=True)
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["loadavg_at_end"] = loadavg()
    text = summarize(res)
    res["summary"] = text
    name = time.strftime("live-%Y%m%dT%H%M%S.json")
    save_json(res, name, [str(work / "results"), a.out_dir])
    print(f"pgbench -c {a.clients} -j {a.jobs} -T {a.duration}, scale {a.scale}, "
          f"{a.rounds} round(s), {os.cpu_count()} CPUs, load {res['loadavg_at_start'][0]:.2f} "
          f"at start, {res['loadavg_at_end'][0]:.2f} at the end; JSON {name}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
