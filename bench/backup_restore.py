#!/usr/bin/env python3
"""Base backup and restore benchmark (issues 3 and 4), side by side in one run.

Backup (issue 3) of a pgbench database (default `pgbench -i -s 100`, ~1.5 GB):

    pg_basebackup -Ft -D - -X none -c fast | zstd -3 > FILE     the baseline
    pg_basebackup -Ft -D DIR -X none -c fast --compress=server-zstd:3
    pgbackrest backup --type=full (compress-type=zst, level 3)  unless --no-pgbackrest
    walkeeper basebackup (local store, zstd level 3)            bar: <= 1.3x the baseline,
                                                                peak RSS < 150 MB

Restore (issue 4) of the newest walkeeper backup:

    tar -xf base.tar -C DIR      base.tar = the very bytes walkeeper stored (zstd -d of
                                 the stored object), made once, outside the timing
    walkeeper recover --pgdata DIR --immediate                  bar: <= 1.3x tar -x
    and its pieces: `recover --dry-run` (start-up, catalog, plan), decode only
    (stored object -> nothing: zstd + SHA-256), extract only (walkeeper.backups.recover.extract
    fed the plain tar: tarfile + writes); `zstd -d -c > /dev/null` for context.

The cluster (WORK/pgdata, archiving with `walkeeper push` into WORK/store) is made on
first use and reused; it is started for the run and stopped after. Every timed command
runs after an untimed `sync` (no dirty pages of the previous one), nothing is dropped
from the page cache (the database and the tar are warm for every tool alike), tool
order rotates per round, medians are reported, the JSON holds every raw figure.

Memory: while walkeeper runs, its process tree is sampled from /proc every 50 ms:
walkeeper's own peak (VmHWM, exact as of the last sample), pg_basebackup's, and the
peak of their summed RSS; plus wait4's ru_maxrss (the largest of the tree).

Must run as a non-root user (PostgreSQL refuses root); `bench/run.sh --backup-restore`
handles that. Standard library only (plus the walkeeper under test).
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
import threading
import time
from pathlib import Path

from benchlib import du, free_port, initdb, pg_env, run, save_json

PGBIN_DEFAULT = "/usr/lib/postgresql/15/bin"
CLUSTER = "bench"


def log(msg: str) -> None:
    print(f"[backup_restore] {msg}", file=sys.stderr, flush=True)





# ------------------------------------------------------------------ measuring

def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _status(pid: int) -> dict[str, str]:
    d = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        pass
    return d


class TreeSampler(threading.Thread):
    """Peak memory of a process tree, from /proc, every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.stop = threading.Event()
        self.hwm: dict[int, tuple[str, int]] = {}     # pid -> (name, VmHWM kB)
        self.peak_sum_kb = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def sample(self) -> None:
        todo, seen, total = [self.pid], set(), 0
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            st = _status(p)
            if "VmRSS" in st:
                total += int(st["VmRSS"].split()[0])
                self.hwm[p] = (st.get("Name", "?"), int(st["VmHWM"].split()[0]))
            todo += _children(p)
        self.peak_sum_kb = max(self.peak_sum_kb, total)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


QUIET = {"max_wait": 120.0, "busy": 0.15}


def wait_quiet(max_wait: float | None = None, busy_max: float | None = None) -> dict:
    """Wait (up to max_wait s, default QUIET["max_wait"]) until the machine is idle
    (<= busy_max over 0.5 s): other work on a 2-core box (a test suite, another
    benchmark) would skew any figure."""
    max_wait = QUIET["max_wait"] if max_wait is None else max_wait
    busy_max = QUIET["busy"] if busy_max is None else busy_max
    t0 = time.monotonic()
    while True:
        b0, t_0 = cpu_jiffies()
        time.sleep(0.5)
        b1, t_1 = cpu_jiffies()
        busy = (b1 - b0) / max(t_1 - t_0, 1)
        waited = time.monotonic() - t0
        if busy <= busy_max or waited >= max_wait:
            return {"busy_before": round(busy, 3), "waited_s": round(waited, 1)}


def timed(argv, *, env=None, shell=False, sample=False, stdout=subprocess.DEVNULL) -> dict:
    """Run once after an untimed sync, on an idle machine; wall seconds, exit code,
    CPU of the command, busy share of the machine, memory if sampled."""
    os.sync()
    quiet = wait_quiet()
    j0 = cpu_jiffies()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, shell=shell, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid) if sample else None
    if sampler:
        sampler.start()
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    j1 = cpu_jiffies()
    r = {"seconds": secs, "rc": proc.returncode, "tree_maxrss_kb": ru.ru_maxrss,
         "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
         "machine_busy": round((j1[0] - j0[0]) / max(j1[1] - j0[1], 1), 3), **quiet}
    if sampler:
        sampler.stop.set()
        sampler.join()
        r["peak_sum_rss_kb"] = sampler.peak_sum_kb
        procs = [{"pid": p, "name": n, "hwm_kb": k} for p, (n, k) in sampler.hwm.items()]
        r["processes"] = procs
        own = [x["hwm_kb"] for x in procs if x["pid"] == proc.pid]
        r["own_hwm_kb"] = own[0] if own else None
    if proc.returncode != 0:
        r["error"] = err.decode(errors="replace").strip()[-2000:]
    return r


# ------------------------------------------------------------------- the cluster

class Cluster:
    def __init__(self, work: Path, pgbin: Path, wk: list[str]):
        self.work, self.pgbin, self.wk = work, pgbin, wk
        self.pgdata = work / "pgdata"
        self.store = work / "store"
        self.cfg = work / "walkeeper.toml"
        self.meta_path = work / "cluster.json"

    @property
    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text())

    @property
    def env(self) -> dict:
        m = self.meta
        return pg_env(m["socket_dir"], m["port"])

    @property
    def conninfo(self) -> str:
        m = self.meta
        return f"host={m['socket_dir']} port={m['port']} user=postgres dbname=postgres"

    def ensure(self, scale: int) -> None:
        if self.meta_path.exists() and self.meta.get("scale") == scale \
                and self.meta.get("ready") and (self.pgdata / "PG_VERSION").exists():
            log(f"reusing the cluster in {self.pgdata}")
            self.write_config()
            self.start()
            return
        for p in (self.pgdata, self.store, self.work / "state"):
            shutil.rmtree(p, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(mode=0o700)    # as `walkeeper check` makes it: writes never create it
        sockdir = f"/tmp/wkbr-{os.getuid()}"       # short: socket path limit
        os.makedirs(sockdir, exist_ok=True)
        self.meta_path.write_text(json.dumps({"port": free_port(), "socket_dir": sockdir,
                                              "scale": scale, "ready": False}))
        self.write_config()
        log(f"initdb {self.pgdata}")
        archive = " ".join(shlex.quote(w) for w in self.wk) + \
            f" --config {shlex.quote(str(self.cfg))} push %p %f"
        m = self.meta
        initdb(self.pgbin, self.pgdata, m["port"], m["socket_dir"], f"""\
# walkeeper backup/restore bench
archive_command = '{archive.replace("'", "''")}'
max_wal_size = 4GB
min_wal_size = 1GB
shared_buffers = 128MB
""")
        self.start()
        log(f"pgbench -i -s {scale} (archiving with walkeeper push)")
        t0 = time.monotonic()
        run([self.pgbin / "pgbench", "-i", "-q", "-s", scale], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run([self.pgbin / "psql", "-qXc", "CHECKPOINT"], env=self.env)
        log(f"pgbench -i took {time.monotonic() - t0:.0f} s")
        m = self.meta
        m["ready"] = True
        self.meta_path.write_text(json.dumps(m))

    def write_config(self) -> None:
        for path, compress in ((self.cfg, "auto"), (self.client_cfg, "client")):
            self._write_config(path, compress)

    @property
    def client_cfg(self) -> Path:
        """The same configuration with walkeeper compressing on the client."""
        return self.cfg.with_name("walkeeper-client.toml")

    def _write_config(self, path: Path, compress: str) -> None:
        path.write_text(f'''cluster = "{CLUSTER}"
state_dir = "{self.work / 'state'}"
[backup]
compress = "{compress}"
[postgres]
conninfo = "{self.conninfo}"
bindir = "{self.pgbin}"
[compression]
algorithm = "zstd"
level = 3
[[stores]]
name = "local"
type = "local"
path = "{self.store}"
''')

    def start(self) -> None:
        if run([self.pgbin / "pg_ctl", "-D", self.pgdata, "status"], check=False,
               stdout=subprocess.DEVNULL).returncode == 0:
            return
        run([self.pgbin / "pg_ctl", "-D", self.pgdata, "-l", self.work / "postgres.log",
             "-w", "start"], stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        run([self.pgbin / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL)

    def sql(self, q: str) -> str:
        return run([self.pgbin / "psql", "-qAtXc", q], env=self.env, capture_output=True,
                   text=True).stdout.strip()


# ------------------------------------------------------------------- pgBackRest

def pgbackrest_setup(c: Cluster, scratch: Path) -> tuple[Path, Path]:
    """An empty stanza-created repo to copy per round, and the config naming REPO."""
    base = scratch / "pgbr-empty"
    shutil.rmtree(base, ignore_errors=True)
    (base / "repo").mkdir(parents=True)
    (base / "log").mkdir()
    (base / "lock").mkdir()
    conf = scratch / "pgbackrest.conf"
    repo = scratch / "pgbr-repo"
    m = c.meta

    def write(repo_path: Path) -> None:
        conf.write_text(f"""[global]
repo1-path={repo_path}
log-path={base / 'log'}
lock-path={base / 'lock'}
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=3
archive-check=n
start-fast=y
process-max=1

[bench]
pg1-path={c.pgdata}
pg1-socket-path={m['socket_dir']}
pg1-port={m['port']}
pg1-user=postgres
""")
    write(base / "repo")
    run(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"],
        capture_output=True)
    write(repo)
    return conf, base / "repo"


# ------------------------------------------------------------------- the rounds

def median(xs):
    return statistics.median(xs) if xs else None


def backup_rounds(c: Cluster, a, scratch: Path, results: dict) -> None:
    pbb = c.pgbin / "pg_basebackup"
    conn = shlex.quote(c.conninfo)
    tools = ["pg_basebackup | zstd -3", "pg_basebackup server-zstd:3", "walkeeper basebackup",
             "walkeeper basebackup (client)"]
    pgbr = None
    if not a.no_pgbackrest and shutil.which("pgbackrest"):
        pgbr = pgbackrest_setup(c, scratch)
        tools.append("pgbackrest backup (zst 3)")
    rows = {t: [] for t in tools}
    backups = c.store / CLUSTER / "backups"
    for rnd in range(a.rounds):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
        for tool in order:
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if tool == "pg_basebackup | zstd -3":
                cmd = (f"set -o pipefail; {shlex.quote(str(pbb))} -d {conn} -Ft -D - -X none "
                       f"-c fast | zstd -3 -q > {shlex.quote(str(out / 'base.tar.zst'))}")
                r = timed(["bash", "-c", cmd])
            elif tool == "pg_basebackup server-zstd:3":
                r = timed([str(pbb), "-d", c.conninfo, "-Ft", "-D", str(out / "d"), "-X", "none",
                           "-c", "fast", "--compress=server-zstd:3"])
            elif tool.startswith("walkeeper basebackup"):
                # The default (compress = auto: the server compresses with zstd, two
                # workers) and compress = client (walkeeper compresses pg_basebackup's tar).
                cfg = c.client_cfg if tool.endswith("(client)") else c.cfg
                before = set(os.listdir(backups)) if backups.exists() else set()
                r = timed([*c.wk, "--config", str(cfg), "basebackup", "--no-progress",
                           "--json"], sample=True)
                new = set(os.listdir(backups)) - before if backups.exists() else set()
                r["stored_bytes"] = sum(du(backups / b) for b in new)
                # keep only the newest walkeeper backup (the one the restore uses)
                for old in sorted(before):
                    shutil.rmtree(backups / old, ignore_errors=True)
            else:
                conf, empty = pgbr
                repo = scratch / "pgbr-repo"
                shutil.rmtree(repo, ignore_errors=True)
                shutil.copytree(empty, repo)
                r = timed(["pgbackrest", f"--config={conf}", "--stanza=bench", "backup",
                           "--type=full"])
                r["stored_bytes"] = du(repo)
                shutil.rmtree(repo, ignore_errors=True)
            if "stored_bytes" not in r:
                r["stored_bytes"] = du(out)
            r["round"] = rnd
            rows[tool].append(r)
            mem = ""
            if "own_hwm_kb" in r:
                mem = (f", walkeeper {r['own_hwm_kb'] / 1024:.0f} MB, tree sum "
                       f"{r['peak_sum_rss_kb'] / 1024:.0f} MB")
            log(f"backup round {rnd} {tool}: {r['seconds']:.2f} s rc={r['rc']}{mem}{_load(r)}"
                + (f" ERROR {r.get('error')}" if r["rc"] else ""))
        shutil.rmtree(scratch / "out", ignore_errors=True)
    results["backup"] = rows


def _load(r: dict) -> str:
    return (f"; cpu {r['cpu_s']:.2f} s, machine busy {r['machine_busy']:.0%} during, "
            f"{r['busy_before']:.0%} before (waited {r['waited_s']:.0f} s)")


def newest_backup(c: Cluster) -> tuple[str, Path]:
    backups = c.store / CLUSTER / "backups"
    done = sorted(b for b in os.listdir(backups) if (backups / b / "backup.json").exists())
    if not done:
        raise SystemExit("no complete walkeeper backup in the store")
    return done[-1], backups / done[-1] / "base.tar.zst"


def restore_rounds(c: Cluster, a, scratch: Path, results: dict) -> None:
    if not (c.store / CLUSTER / "backups").exists() or not any(
            (c.store / CLUSTER / "backups").glob("*/backup.json")):
        log("no backup yet: taking one")
        r = timed([*c.wk, "--config", str(c.cfg), "basebackup", "--no-progress"])
        if r["rc"]:
            raise SystemExit(r["error"])
    bid, obj = newest_backup(c)
    meta = json.loads((obj.parent / "backup.json").read_text())
    tar = scratch / "base.tar"
    log(f"restore of backup {bid}: writing {tar} (zstd -d of the stored object)")
    with open(tar, "wb") as f:
        run(["zstd", "-d", "-q", "-c", obj], stdout=f)
    assert tar.stat().st_size == meta["files"][0]["size"], "base.tar size differs"
    py = a.python
    decode_only = ("import sys; from walkeeper.format.objects import decode; "
                   "f = open(sys.argv[1], 'rb'); decode(f.read, None)")
    extract_only = ("import sys, os; from walkeeper.backups.recover import extract; "
                    "os.mkdir(sys.argv[2], 0o700); f = open(sys.argv[1], 'rb'); "
                    "extract(f, sys.argv[2])")
    tools = ["tar -x", "zstd -d | tar -x", "walkeeper recover"]
    pieces = ["recover --dry-run", "decode only", "extract only", "zstd -d > /dev/null"]
    rows = {t: [] for t in tools + pieces}
    for rnd in range(a.rounds):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)] + pieces
        for tool in order:
            dest = scratch / "restored"
            shutil.rmtree(dest, ignore_errors=True)
            if tool == "tar -x":
                dest.mkdir(mode=0o700)
                r = timed(["tar", "-xf", str(tar), "-C", str(dest)])
            elif tool == "zstd -d | tar -x":
                dest.mkdir(mode=0o700)
                r = timed(["bash", "-c", f"set -o pipefail; zstd -d -q -c {shlex.quote(str(obj))}"
                           f" | tar -x -C {shlex.quote(str(dest))}"])
            elif tool == "walkeeper recover":
                r = timed([*c.wk, "--config", str(c.cfg), "recover", "--pgdata", str(dest),
                           "--immediate"], sample=True)
            elif tool == "recover --dry-run":
                r = timed([*c.wk, "--config", str(c.cfg), "recover", "--pgdata", str(dest),
                           "--immediate", "--dry-run"])
            elif tool == "decode only":
                r = timed([py, "-c", decode_only, str(obj)], sample=True)
            elif tool == "extract only":
                r = timed([py, "-c", extract_only, str(tar), str(dest)], sample=True)
            else:
                r = timed(["bash", "-c", f"zstd -d -q -c {shlex.quote(str(obj))} > /dev/null"])
            if dest.exists() and tool in ("tar -x", "zstd -d | tar -x", "walkeeper recover",
                                          "extract only"):
                r["restored_bytes"] = du(dest)
            r["round"] = rnd
            rows[tool].append(r)
            mem = f", walkeeper {r['own_hwm_kb'] / 1024:.0f} MB" if r.get("own_hwm_kb") else ""
            log(f"restore round {rnd} {tool}: {r['seconds']:.2f} s rc={r['rc']}{mem}{_load(r)}"
                + (f" ERROR {r.get('error')}" if r["rc"] else ""))
    shutil.rmtree(scratch / "restored", ignore_errors=True)
    results["restore"] = rows
    results["restore_backup"] = {"id": bid, "tar_bytes": tar.stat().st_size,
                                 "stored_bytes": obj.stat().st_size}
    tar.unlink()


# ------------------------------------------------------------------- report

def summarize(results: dict) -> str:
    lines = []
    for part in ("backup", "restore"):
        rows = results.get(part)
        if not rows:
            continue
        base_name = "pg_basebackup | zstd -3" if part == "backup" else "tar -x"
        ok = lambda rs: [r for r in rs if r["rc"] == 0]
        base = median([r["seconds"] for r in ok(rows.get(base_name, []))])
        lines.append(f"\n{part}: median of {results['rounds']} rounds (raw seconds per round)")
        lines.append(f"{'tool':32} {'median s':>9} {'x base':>7}  {'MiB stored/out':>14}  "
                     f"{'wk MB':>6} {'tree MB':>7}  rounds")
        for tool, rs in rows.items():
            good = ok(rs)
            if not good:
                lines.append(f"{tool:32} FAILED: {rs[0].get('error', '?') if rs else '-'}")
                continue
            med = median([r["seconds"] for r in good])
            ratio = f"{med / base:7.2f}" if base else "      -"
            size = median([r.get("stored_bytes") or r.get("restored_bytes") or 0 for r in good])
            own = [r["own_hwm_kb"] for r in good if r.get("own_hwm_kb")]
            tree = [r["peak_sum_rss_kb"] for r in good if r.get("peak_sum_rss_kb")]
            lines.append(f"{tool:32} {med:9.2f} {ratio}  {size / 2**20:14.1f}  "
                         f"{(max(own) / 1024 if own else 0):6.0f} "
                         f"{(max(tree) / 1024 if tree else 0):7.0f}  "
                         + " ".join(f"{r['seconds']:.2f}" for r in rs))
    every = [x for part in ("backup", "restore") for rs in (results.get(part) or {}).values()
             for x in rs]
    noisy = [x for x in every if x["busy_before"] > QUIET["busy"]]
    lines.append(f"\n{len(noisy)} of {len(every)} timed commands started on a machine busier "
                 f"than {QUIET['busy']:.0%} (waited up to {QUIET['max_wait']:.0f} s for it)")
    b, r = results.get("backup"), results.get("restore")
    lines.append("\nbars:")
    if b:
        base = median([x["seconds"] for x in b["pg_basebackup | zstd -3"] if x["rc"] == 0])
        wk = [x for x in b["walkeeper basebackup"] if x["rc"] == 0]
        if base and wk:
            ratio = median([x["seconds"] for x in wk]) / base
            per = [x["seconds"] / y["seconds"] for x, y in
                   zip(b["walkeeper basebackup"], b["pg_basebackup | zstd -3"])
                   if x["rc"] == 0 and y["rc"] == 0]
            own = max(x["own_hwm_kb"] for x in wk) / 1024
            tree = max(x["peak_sum_rss_kb"] for x in wk) / 1024
            lines.append(f"  basebackup <= 1.3x pg_basebackup | zstd -3: {ratio:.3f} "
                         f"(rounds {min(per):.3f}-{max(per):.3f}) "
                         f"{'pass' if ratio <= 1.3 else 'FAIL'}")
            lines.append(f"  basebackup <= 0.8x pg_basebackup | zstd -3 (issue 19): {ratio:.3f} "
                         f"(rounds {min(per):.3f}-{max(per):.3f}) "
                         f"{'pass' if ratio <= 0.8 and max(per) <= 0.8 else 'FAIL'}")
            lines.append(f"  basebackup peak memory < 150 MB: walkeeper {own:.0f} MB, "
                         f"walkeeper + pg_basebackup {tree:.0f} MB "
                         f"{'pass' if own < 150 else 'FAIL'}")
    if r:
        base = median([x["seconds"] for x in r["tar -x"] if x["rc"] == 0])
        wk = [x for x in r["walkeeper recover"] if x["rc"] == 0]
        if base and wk:
            ratio = median([x["seconds"] for x in wk]) / base
            per = [x["seconds"] / y["seconds"] for x, y in
                   zip(r["walkeeper recover"], r["tar -x"]) if x["rc"] == 0 and y["rc"] == 0]
            lines.append(f"  recover <= 1.3x tar -x: {ratio:.3f} "
                         f"(rounds {min(per):.3f}-{max(per):.3f}) "
                         f"{'pass' if ratio <= 1.3 else 'FAIL'}")
        pipe = median([x["seconds"] for x in r.get("zstd -d | tar -x", []) if x["rc"] == 0])
        if pipe and wk:
            lines.append(f"  recover vs zstd -d | tar -x of the same object (issue 19, "
                         f"recorded): {median([x['seconds'] for x in wk]) / pipe:.3f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("WKBENCH_BR_DIR",
                                                     "/tmp/walkeeper-bench/br"),
                    help="cluster, store and scratch (default: $WKBENCH_BR_DIR or %(default)s)")
    ap.add_argument("--scale", type=int, default=100, help="pgbench -i scale (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per measurement (default 3)")
    ap.add_argument("--pgbin", default=os.environ.get("PGBIN", PGBIN_DEFAULT))
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"),
                    help="the walkeeper command (split like a shell line)")
    ap.add_argument("--python", help="the interpreter of that walkeeper, for the "
                    "decode/extract pieces (default: its #! line)")
    ap.add_argument("--only", choices=["backup", "restore"], help="one half only")
    ap.add_argument("--no-pgbackrest", action="store_true")
    ap.add_argument("--keep-running", action="store_true", help="leave the cluster started")
    ap.add_argument("--quiet-wait", type=float, default=120.0, metavar="S",
                    help="before each timed command, wait up to S seconds for the machine "
                    "to be idle (<= 15%% busy over 0.5 s; default %(default)s)")
    ap.add_argument("--out-dir", help="write the JSON here too")
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("backup_restore.py: PostgreSQL refuses root; run "
                         "bench/run.sh --backup-restore or as an unprivileged user")
    wk = shlex.split(a.walkeeper)
    wk[0] = shutil.which(wk[0]) or wk[0]
    if not a.python:
        with open(wk[0], "rb") as f:
            first = f.readline().decode().strip()
        a.python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
    QUIET["max_wait"] = a.quiet_wait
    work = Path(a.work).resolve()
    c = Cluster(work, Path(a.pgbin), wk)
    c.ensure(a.scale)
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": a.rounds,
               "walkeeper": wk, "python": a.python, "scale": a.scale,
               "loadavg_at_start": os.getloadavg(), "cpus": os.cpu_count(),
               "database_bytes": int(c.sql("select pg_database_size('postgres')")),
               "pgdata_bytes": du(c.pgdata),
               "versions": {
                   "postgres": run([c.pgbin / "postgres", "--version"], capture_output=True,
                                   text=True).stdout.strip(),
                   "zstd": run(["zstd", "--version"], capture_output=True,
                               text=True).stdout.strip(),
                   "tar": run(["tar", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]}}
    try:
        if a.only in (None, "backup"):
            backup_rounds(c, a, scratch, results)
        if a.only in (None, "restore"):
            restore_rounds(c, a, scratch, results)
    finally:
        if not a.keep_running:
            c.stop()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    text = summarize(results)
    results["summary"] = text
    name = time.strftime("br-%Y%m%dT%H%M%S.json")
    save_json(results, name, [str(work / "results"), a.out_dir])
    print(f"database {results['database_bytes'] / 2**20:.0f} MiB "
          f"(pgdata {results['pgdata_bytes'] / 2**20:.0f} MiB), {os.cpu_count()} CPUs, "
          f"load {results['loadavg_at_start'][0]:.2f} at start")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
