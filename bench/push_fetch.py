#!/usr/bin/env python3
"""walkeeper push/fetch benchmark: one run, printed as a table and saved as JSON.

Over the same 64 real 16 MiB WAL segments (made by bench/make_wal.py), one process
per segment as PostgreSQL's archiver runs it, each tool into an empty store:

  push   cp + sync FILE  |  zstd -3 -q  (also two at a time)  |  pgbackrest archive-push
         (sync, and async with process-max 2; zst level 3)  |  walkeeper push (local
         store, zstd level 3 by default), and with read-ahead from a pg_wal directory
         whose 64 segments are all marked .ready
  fetch  zstd -d -q  |  pgbackrest archive-get (sync, and async with a 1 GiB queue)  |
         walkeeper fetch (prefetch off, and on)
  start  python -c pass  vs  walkeeper push of an already-stored segment  vs
         walkeeper fetch of a missing one (interleaved, median of N)

The bars (project issues 2 and 6): walkeeper push/fetch start-up <= 8x `python -c pass`;
walkeeper push throughput >= 0.9x pgBackRest archive-push; read-ahead push >= pgBackRest
async and >= 0.75x two parallel zstd -3; prefetching fetch >= pgBackRest async get
(1 GiB queue) and >= 2x sequential walkeeper fetch; the fast paths <= 3x python -c pass.
Must run as a non-root user (pgBackRest's stanza-create needs the cluster running,
and PostgreSQL refuses root); bench/run.sh does that when started as root.
Standard library only. Timings never go into tests.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, sha256

HERE = Path(__file__).resolve().parent
SEG = 16 * 1024 * 1024
MIB = 1024 * 1024
STANZA = "bench"
PUSH_BAR = 0.9      # walkeeper push throughput / pgBackRest archive-push throughput, at least
STARTUP_BAR = 8.0   # walkeeper push(stored)/fetch(missing) median / python -c pass median, at most


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tree_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def out_of(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"


def python_of(walkeeper: list[str]) -> str:
    """The interpreter that runs walkeeper: the console script's shebang, else ours."""
    exe = shutil.which(walkeeper[0]) or walkeeper[0]
    if "python" in Path(exe).name:
        return exe
    try:
        with open(exe, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!") and "python" in first:
        parts = first[2:].split()
        if Path(parts[0]).name == "env" and len(parts) > 1:
            return shutil.which(parts[1]) or parts[1]
        return parts[0]
    return sys.executable


# --------------------------------------------------------------------------- timing

class Failed(Exception):
    pass


def timed(cmd: list[str], env: dict[str, str], ok=(0,)) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode not in ok:
        err = (r.stderr or r.stdout).decode(errors="replace").strip()
        raise Failed(f"exit {r.returncode} from `{shlex.join(cmd)}`: {err}")
    return dt, r


def run_per_segment(name: str, steps, segs: list[Path], env: dict[str, str]) -> dict:
    """steps(seg) -> list of (argv, env or None) run one after another (all timed).

    Environment overrides are passed to the child directly (no `env` exec in between)."""
    per = []
    t_start = time.perf_counter()
    try:
        for s in segs:
            t0 = time.perf_counter()
            for cmd, e in steps(s):
                if callable(cmd):       # in-process work the caller would do (no process)
                    cmd()
                else:
                    timed(cmd, e or env)
            per.append(time.perf_counter() - t0)
    except Failed as exc:
        log(f"{name}: FAILED on segment {len(per) + 1}/{len(segs)} ({s.name}): {exc}")
        return {"tool": name, "ok": False, "error": str(exc), "failed_segment": s.name,
                "segments_done": len(per)}
    total = time.perf_counter() - t_start
    n = len(segs)
    return {"tool": name, "ok": True, "segments": n, "total_s": total,
            "seg_per_s": n / total, "mib_per_s": n * SEG / MIB / total,
            "per_segment_ms_median": statistics.median(per) * 1e3,
            "per_segment_ms_max": max(per) * 1e3,
            "per_segment_s": per}


# --------------------------------------------------------------------------- pgBackRest



def pgbackrest_conf(base: Path, repo: Path, pgdata: Path, port: int, sock: Path) -> Path:
    conf = base / "pgbackrest.conf"
    conf.write_text(f"""[global]
repo1-path={repo}
lock-path={base}/lock
log-path={base}/log
spool-path={base}/spool
log-level-console=warn
log-level-stderr=warn
log-level-file=off
compress-type=zst
compress-level=3
archive-async=n

[{STANZA}]
pg1-path={pgdata}
pg1-port={port}
pg1-socket-path={sock}
pg1-user=postgres
""")
    return conf


def pgbackrest_template(pgb: str, meta: dict, work: Path, env: dict[str, str]) -> Path:
    """An empty repo right after stanza-create (needs the kept cluster running briefly)."""
    pgbin = Path(meta["pgbin"])
    pgdata = Path(meta["pgdata"])
    base = work / "pgbackrest-template"
    base.mkdir()
    sock = Path(tempfile.mkdtemp(prefix="wkb", dir="/tmp"))
    port = free_port()
    conf = pgbackrest_conf(base, base / "repo", pgdata, port, sock)
    opts = f"-c port={port} -c unix_socket_directories={sock} -c archive_mode=off -c listen_addresses=''"
    subprocess.run([str(pgbin / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(base / "pg.log"),
                    "-o", opts, "start"], check=True, stdout=subprocess.DEVNULL, env=env)
    try:
        subprocess.run([pgb, f"--config={conf}", f"--stanza={STANZA}", "stanza-create"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run([str(pgbin / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL, env=env)
        shutil.rmtree(sock, ignore_errors=True)
    return base


def fresh_pgbackrest(template: Path, dest: Path, asynchronous: bool = False) -> Path:
    """Copy the empty post-stanza-create repo; return the config pointing at the copy.

    asynchronous: archive-async=y with process-max=2 and a 1 GiB archive-get queue
    (the issue's best pgBackRest figures)."""
    shutil.copytree(template / "repo", dest / "repo")
    for d in ("lock", "log", "spool"):
        (dest / d).mkdir()
    text = (template / "pgbackrest.conf").read_text()
    text = text.replace(str(template), str(dest))
    if asynchronous:
        text = text.replace("archive-async=n", "archive-async=y\nprocess-max=2\n"
                            "archive-get-queue-max=1GiB\narchive-push-queue-max=4GiB")
    conf = dest / "pgbackrest.conf"
    conf.write_text(text)
    return conf


# --------------------------------------------------------------------------- phases

def push_tools(a, work: Path, env: dict[str, str]) -> dict:
    """name -> (setup(dir) -> steps, fetch_setup or None). Each round gets fresh dirs."""
    wk = a.walkeeper

    def cp_sync(d: Path):
        return lambda s: [(["cp", str(s), str(d / s.name)], None),
                          (["sync", str(d / s.name)], None)]

    def zstd3(d: Path):
        return lambda s: [([a.zstd, "-3", "-q", "-f", str(s), "-o", str(d / (s.name + ".zst"))],
                           None)]

    def pgbr(d: Path):
        conf = fresh_pgbackrest(a.pgbr_template, d)
        return lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "archive-push", str(s)], None)]

    def pgbr_async(d: Path):
        # pgBackRest's async push scans <pg1-path>/pg_wal/archive_status: give it a
        # data directory of its own holding the kept cluster's pg_control.
        conf = fresh_pgbackrest(a.pgbr_template, d, asynchronous=True)
        pgdata = d / "pgdata"
        (pgdata / "global").mkdir(parents=True)
        shutil.copy(Path(a.meta["pgdata"]) / "global" / "pg_control", pgdata / "global")
        shutil.copy(Path(a.meta["pgdata"]) / "PG_VERSION", pgdata)
        conf.write_text(conf.read_text().replace(f"pg1-path={a.meta['pgdata']}",
                                                 f"pg1-path={pgdata}"))
        pg_wal = backlog(pgdata, a.segs)
        return lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "archive-push", str(pg_wal / s.name)], None),
                          (lambda: mark_done(pg_wal, s.name), None)]

    def store_root(d: Path) -> str:
        # As `walkeeper check` leaves it on first-time setup: push never creates it.
        (d / "store").mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(d / "store")

    def walk(d: Path):
        e = {**env, "BACKUP_DIR": store_root(d), "WALKEEPER_STATE_DIR": str(d / "state")}
        return lambda s: [([*wk, "push", str(s), s.name], e)]

    def walk_readahead(d: Path):
        e = {**env, "BACKUP_DIR": store_root(d), "WALKEEPER_STATE_DIR": str(d / "state")}
        pg_wal = backlog(d, a.segs)
        return lambda s: [([*wk, "push", str(pg_wal / s.name), s.name], e),
                          (lambda: mark_done(pg_wal, s.name), None)]

    def walk_fast_line(d: Path):
        # The archive_command `walkeeper commands` prints, run as PostgreSQL runs it
        # (sh -c): walkeeper-fast acknowledges what the background pusher stored.
        e = {**env, "BACKUP_DIR": store_root(d), "WALKEEPER_STATE_DIR": str(d / "state")}
        pg_wal = backlog(d, a.segs)
        line = postgres_line(wk, e, [], "archive_command")
        return lambda s: [(["sh", "-c", line.replace("%p", shlex.quote(str(pg_wal / s.name)))
                            .replace("%f", s.name)], e),
                          (lambda: mark_done(pg_wal, s.name), None)]

    def zstd3_pairs(d: Path):
        # Two zstd processes at a time (2 cores): the issue's "two parallel zstd -3".
        index = {seg.name: i for i, seg in enumerate(a.segs)}

        def pair(s: Path) -> None:
            i = index[s.name]
            if i % 2:
                return
            procs = [subprocess.Popen([a.zstd, "-3", "-q", "-f", str(x), "-o",
                                       str(d / (x.name + ".zst"))], env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
                     for x in a.segs[i:i + 2]]
            for p in procs:
                _, err = p.communicate()
                if p.returncode:
                    raise Failed(f"exit {p.returncode} from zstd: {err.decode().strip()}")

        return lambda s: [(lambda: pair(s), None)]

    tools = {"cp + sync FILE": cp_sync, "zstd -3 -q": zstd3, "zstd -3 -q (2 parallel)": zstd3_pairs}
    if a.pgbr_template is not None:
        tools["pgbackrest archive-push"] = pgbr
        tools["pgbackrest async push"] = pgbr_async
    tools["walkeeper push"] = walk
    tools["walkeeper push (read-ahead)"] = walk_readahead
    tools[FAST_PUSH] = walk_fast_line
    return tools


FAST_PUSH = "walkeeper push (fast line)"
FAST_FETCH = "walkeeper fetch (fast line)"


def postgres_line(wk: list[str], env: dict[str, str], args: list[str], key: str) -> str:
    """Untimed: archive_command or restore_command as `walkeeper commands` prints it;
    it must start with walkeeper-fast."""
    r = subprocess.run([*wk, *args, "commands", "--json"], env=env, capture_output=True,
                       text=True)
    if r.returncode:
        raise Failed(f"walkeeper commands: {r.stderr.strip()}")
    out = json.loads(r.stdout)
    if not out["fast_push" if key == "archive_command" else "fast_fetch"]:
        raise Failed(f"walkeeper commands: no walkeeper-fast in {out[key]!r}")
    return out[key]


def backlog(d: Path, segs: list[Path]) -> Path:
    """The segments as a pg_wal directory with every one marked .ready (an archiver
    that fell behind), hard links where possible: untimed set-up."""
    pg_wal = d / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for s in segs:
        try:
            os.link(s, pg_wal / s.name)
        except OSError:
            shutil.copy(s, pg_wal / s.name)
        (pg_wal / "archive_status" / f"{s.name}.ready").touch()
    return pg_wal


def mark_done(pg_wal: Path, name: str) -> None:
    """What PostgreSQL's archiver does after archive_command succeeded."""
    os.rename(pg_wal / "archive_status" / f"{name}.ready",
              pg_wal / "archive_status" / f"{name}.done")


def wait_prefetcher(state: Path, timeout: float = 30.0) -> None:
    """Untimed: let walkeeper's detached prefetcher finish before the next row."""
    wait_unlocked(state.glob("spool/*/.lock"), timeout)


def wait_pusher(state: Path, timeout: float = 60.0) -> None:
    """Untimed: let walkeeper's detached read-ahead pusher finish (it exits ~1 s after
    its last segment) before the next row or repetition."""
    wait_unlocked(state.glob("readahead/*/.pusher"), timeout)


def wait_unlocked(locks, timeout: float) -> None:
    """Wait until no process holds an flock on any of `locks`."""
    deadline = time.monotonic() + timeout
    for lock in locks:
        fd = os.open(lock, os.O_RDWR)
        try:
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    time.sleep(0.02)
        finally:
            os.close(fd)


def fetch_steps(name: str, a, src: Path, dest: Path, env: dict[str, str]):
    if name == "zstd -d -q":
        return lambda s: [([a.zstd, "-d", "-q", "-f", str(src / (s.name + ".zst")), "-o",
                            str(dest / s.name)], None)]
    if name == "pgbackrest archive-get":
        conf = src / "pgbackrest.conf"
        return lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "archive-get", s.name, str(dest / s.name)], None)]
    if name == "pgbackrest async get":
        conf = src / "pgbackrest-get.conf"
        text = (src / "pgbackrest.conf").read_text().replace(
            "archive-async=n", "archive-async=y\nprocess-max=2\narchive-get-queue-max=1GiB")
        text = text.replace(f"spool-path={src}/spool", f"spool-path={dest}.spool")
        conf.write_text(text)
        return lambda s: [([a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}",
                            "archive-get", s.name, str(dest / s.name)], None)]
    if name in ("walkeeper fetch", "walkeeper fetch (prefetch)", FAST_FETCH):
        # The sequential row has prefetch off; the others use the defaults.
        prefetch = 0 if name == "walkeeper fetch" else 8
        state = dest.parent / (dest.name + ".state")
        cfg = dest.parent / (dest.name + ".toml")
        cfg.write_text(f'cluster = "default"\nstate_dir = "{state}"\n'
                       f"[fetch]\nprefetch = {prefetch}\n"
                       f'[[stores]]\nname = "local"\ntype = "local"\npath = "{src / "store"}"\n')
        if name == FAST_FETCH:
            # The restore_command `walkeeper commands` prints, run as PostgreSQL runs it.
            line = postgres_line(a.walkeeper, env, ["--config", str(cfg)], "restore_command")
            return lambda s: [(["sh", "-c", line.replace("%f", s.name).replace(
                "%p", shlex.quote(str(dest / s.name)))], None)]
        return lambda s: [([*a.walkeeper, "--config", str(cfg), "fetch", s.name,
                            str(dest / s.name)], None)]
    raise KeyError(name)


FETCH_FROM = {"zstd -d -q": "zstd -3 -q", "pgbackrest archive-get": "pgbackrest archive-push",
              "pgbackrest async get": "pgbackrest archive-push",
              "walkeeper fetch": "walkeeper push",
              "walkeeper fetch (prefetch)": "walkeeper push",
              FAST_FETCH: "walkeeper push"}


def one_round(r: int, a, segs: list[Path], sums: dict[str, str], work: Path,
              env: dict[str, str]) -> dict:
    rdir = work / f"round{r}"
    rdir.mkdir()
    tools = push_tools(a, work, env)
    names = list(tools)
    order = names[r % len(names):] + names[:r % len(names)]   # rotate order per round
    pushes, stores = {}, {}
    for name in order:
        d = rdir / ("push-" + name.replace(" ", "_").replace("(", "").replace(")", "")
                    .replace("+", ""))
        d.mkdir()
        steps = tools[name](d)
        log(f"round {r + 1}: push   {name}")
        res = run_per_segment(name, steps, segs, env)
        if name in ("walkeeper push (read-ahead)", FAST_PUSH):
            wait_pusher(d / "state")        # untimed: every segment was pushed already
        if res["ok"]:
            store = d / "repo" if name.startswith("pgbackrest") else d / "store" \
                if name.startswith("walkeeper") else d
            res["stored_mib"] = tree_bytes(store) / MIB
            if name == "cp + sync FILE":
                bad = [s.name for s in segs if sha256(d / s.name) != sums[s.name]]
                if bad:
                    res["ok"], res["error"] = False, f"copies differ: {bad[:3]}"
            stores[name] = d
        pushes[name] = res
    fetches = {}
    fnames = [f for f, p in FETCH_FROM.items() if p in tools]
    forder = fnames[r % len(fnames):] + fnames[:r % len(fnames)]
    for name in forder:
        src_name = FETCH_FROM[name]
        if src_name not in stores:
            fetches[name] = {"tool": name, "ok": False,
                             "error": f"no store: {src_name} failed"}
            continue
        dest = rdir / ("fetch-" + name.replace(" ", "_").replace("(", "").replace(")", ""))
        dest.mkdir()
        log(f"round {r + 1}: fetch  {name}")
        res = run_per_segment(name, fetch_steps(name, a, stores[src_name], dest, env), segs,
                               env)
        if res["ok"]:   # verify, untimed: a fast wrong answer is no answer
            bad = [s.name for s in segs if sha256(dest / s.name) != sums[s.name]]
            if bad:
                res["ok"], res["error"] = False, f"fetched content differs: {bad[:3]}"
        fetches[name] = res
        wait_prefetcher(dest.parent / (dest.name + ".state"))
        shutil.rmtree(dest)
    # keep the last walkeeper store for the start-up phase
    if "walkeeper push" in stores:
        keep = work / "walkeeper-store-last"
        shutil.rmtree(keep, ignore_errors=True)
        stores["walkeeper push"].rename(keep)
    shutil.rmtree(rdir)
    return {"order_push": order, "order_fetch": forder, "push": pushes, "fetch": fetches}


def startup(a, segs: list[Path], work: Path, env: dict[str, str]) -> dict:
    """Interleave python -c pass / push of a stored segment / fetch of a missing one."""
    d = work / "startup"
    d.mkdir()
    seg = segs[0]
    store, state = d / "store", d / "state"
    store.mkdir(mode=0o700)      # as `walkeeper check` leaves it: push never creates it
    wenv = {**env, "BACKUP_DIR": str(store), "WALKEEPER_STATE_DIR": str(state)}
    missing = "00000001" + "000000FF" + "000000FE"   # a valid name no run ever stores
    cmds = {
        "python -c pass": [a.python, "-c", "pass"],
        "walkeeper push (already stored)": [*a.walkeeper, "push", str(seg), seg.name],
        "walkeeper fetch (missing)": [*a.walkeeper, "fetch", missing, str(d / "out")],
    }
    envs = {k: env for k in cmds}
    envs["walkeeper push (already stored)"] = envs["walkeeper fetch (missing)"] = wenv
    if a.pgbr_template is not None:
        pdir = d / "pgbr"
        pdir.mkdir()
        conf = fresh_pgbackrest(a.pgbr_template, pdir)
        pg = [a.pgbackrest, f"--config={conf}", f"--stanza={STANZA}"]
        subprocess.run([*pg, "archive-push", str(seg)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        cmds["pgbackrest archive-push (already stored)"] = [*pg, "archive-push", str(seg)]
        cmds["pgbackrest archive-get (missing)"] = [*pg, "archive-get", missing, str(d / "out")]
    # Issue 6's fast paths, each prepared (untimed) before every repetition:
    # a push that read-ahead already did: an untimed push of segment 1 from a pg_wal
    # directory where segment 2 is also .ready starts the background pusher, which
    # stores and records segment 2; the timed push of segment 2 runs once the pusher
    # has exited (the records of the previous repetition removed first);
    pg_wal = d / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for s in segs[:2]:
        shutil.copy(s, pg_wal / s.name)
        (pg_wal / "archive_status" / f"{s.name}.ready").touch()
    read_ahead = [*a.walkeeper, "push", str(pg_wal / segs[0].name), segs[0].name]
    recorded = "walkeeper push (done by read-ahead)"
    cmds[recorded] = [*a.walkeeper, "push", str(pg_wal / segs[1].name), segs[1].name]
    envs[recorded] = wenv
    # a fetch served from the spool: an entry NAME.<sha256>.<boot> (the format
    # walkeeper/archiving/prefetcher.py writes: <boot> is the start of the kernel's boot id)
    # copied into the spool, with the spool's lock held as a running prefetcher
    # holds it (so no prefetcher is started).
    spool = state / "spool" / "default"
    spool.mkdir(parents=True)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text()[:8]
    entry = spool / f"{segs[1].name}.{sha256(segs[1])}.{boot}"
    served = "walkeeper fetch (served from the spool)"
    recovery = d / "recovery" / "pg_wal"
    recovery.mkdir(parents=True)
    cmds[served] = [*a.walkeeper, "fetch", segs[1].name, str(recovery / "RECOVERYXLOG")]
    envs[served] = wenv

    def prepare_recorded() -> None:
        wait_pusher(state)
        shutil.rmtree(state / "readahead", ignore_errors=True)
        timed(read_ahead, wenv)
        wait_pusher(state)
        if not (state / "readahead" / "default" / f"{segs[1].name}.json").exists():
            raise Failed("read-ahead did not record the second segment")

    def prepare_served() -> None:
        shutil.copy(segs[1], entry)
        (recovery / "RECOVERYXLOG").unlink(missing_ok=True)   # PostgreSQL does that

    # the same two calls through the lines `walkeeper commands` prints (sh -c, as
    # PostgreSQL runs them): walkeeper-fast does them without Python.
    fast_recorded = "walkeeper-fast push (done by read-ahead)"
    fast_served = "walkeeper-fast fetch (served from the spool)"
    try:
        push_line = postgres_line(a.walkeeper, wenv, [], "archive_command")
        fetch_line = postgres_line(a.walkeeper, wenv, [], "restore_command")
    except Failed as exc:
        log(f"startup: FAILED: {exc}")
        return {"ok": False, "error": str(exc), "commands": {}}
    cmds[fast_recorded] = ["sh", "-c", push_line.replace(
        "%p", shlex.quote(str(pg_wal / segs[1].name))).replace("%f", segs[1].name)]
    cmds[fast_served] = ["sh", "-c", fetch_line.replace("%f", segs[1].name).replace(
        "%p", shlex.quote(str(recovery / "RECOVERYXLOG")))]
    envs[fast_recorded] = envs[fast_served] = wenv

    prepare = {recorded: prepare_recorded, served: prepare_served,
               fast_recorded: prepare_recorded, fast_served: prepare_served}
    lock_fd = os.open(spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    ok = {k: (0,) for k in cmds}
    ok["walkeeper fetch (missing)"] = (1,)
    ok["pgbackrest archive-get (missing)"] = (1,)
    res = {k: {"command": shlex.join(v), "times_s": []} for k, v in cmds.items()}
    try:
        timed(cmds["walkeeper push (already stored)"], wenv)   # store it (first push, untimed)
        for i in range(a.startup_warmup + a.startup_reps):
            keys = list(cmds)
            random.Random(i).shuffle(keys)      # interleaved, order varies
            for k in keys:
                if k in prepare:
                    prepare[k]()
                dt, r = timed(cmds[k], envs.get(k, env), ok[k])
                if k in (served, fast_served) and \
                        (recovery / "RECOVERYXLOG").stat().st_size != SEG:
                    raise Failed("the fetch served from the spool wrote a wrong file")
                if k in (recorded, fast_recorded) and \
                        (state / "readahead" / "default" / f"{segs[1].name}.json").exists():
                    raise Failed(f"{k} did not take the pusher's record")
                if k in (served, fast_served) and entry.exists():
                    raise Failed("the fetch did not take the spool entry: walkeeper's "
                                 "spool format changed, update this benchmark")
                if i >= a.startup_warmup:
                    res[k]["times_s"].append(dt)
    except Failed as exc:
        log(f"startup: FAILED: {exc}")
        return {"ok": False, "error": str(exc), "commands": res}
    finally:
        os.close(lock_fd)
    for k, v in res.items():
        t = v["times_s"]
        v["median_ms"] = statistics.median(t) * 1e3
        v["min_ms"] = min(t) * 1e3
        v["max_ms"] = max(t) * 1e3
    base = res["python -c pass"]["median_ms"]
    for v in res.values():
        v["ratio_to_python"] = v["median_ms"] / base
    return {"ok": True, "reps": a.startup_reps, "warmup": a.startup_warmup, "commands": res}


# --------------------------------------------------------------------------- report

def med(rounds: list[dict], phase: str, tool: str, key: str):
    vals = [r[phase][tool][key] for r in rounds if r[phase].get(tool, {}).get("ok")]
    if len(vals) != len(rounds):
        return None
    return statistics.median(vals)


def summarize(result: dict) -> dict:
    rounds = result["rounds"]
    summ = {"push": {}, "fetch": {}}
    for phase in ("push", "fetch"):
        tools = list(rounds[0][phase]) if rounds else []
        for t in sorted(tools, key=lambda t: list(rounds[0][phase]).index(t)):
            errs = [r[phase][t].get("error") for r in rounds if not r[phase][t].get("ok")]
            summ[phase][t] = {
                "ok": not errs,
                "error": errs[0] if errs else None,
                "total_s_median": med(rounds, phase, t, "total_s"),
                "seg_per_s_median": med(rounds, phase, t, "seg_per_s"),
                "mib_per_s_median": med(rounds, phase, t, "mib_per_s"),
                "per_segment_ms_median": med(rounds, phase, t, "per_segment_ms_median"),
                "stored_mib": med(rounds, phase, t, "stored_mib") if phase == "push" else None,
                "total_s_rounds": [r[phase][t].get("total_s") for r in rounds],
            }
    bars = {}
    wk = summ["push"].get("walkeeper push", {})
    pb = summ["push"].get("pgbackrest archive-push", {})
    if wk.get("ok") and pb.get("ok"):
        ratio = wk["seg_per_s_median"] / pb["seg_per_s_median"]
        per_round = [r["push"]["walkeeper push"]["seg_per_s"] /
                     r["push"]["pgbackrest archive-push"]["seg_per_s"] for r in rounds]
        bars["push_throughput_vs_pgbackrest"] = {
            "ratio": ratio, "per_round": per_round, "bar": f">= {PUSH_BAR}",
            "pass": ratio >= PUSH_BAR}
    else:
        bars["push_throughput_vs_pgbackrest"] = {
            "ratio": None, "bar": f">= {PUSH_BAR}", "pass": False,
            "error": wk.get("error") or pb.get("error") or "not measured"}
    def ratio_bar(label: str, phase: str, num: str, den: str, bar: float, scale: float = 1.0):
        a_, b_ = summ[phase].get(num, {}), summ[phase].get(den, {})
        if a_.get("ok") and b_.get("ok"):
            ratio = a_["seg_per_s_median"] / (scale * b_["seg_per_s_median"])
            bars[label] = {"ratio": ratio, "bar": f">= {bar}", "pass": ratio >= bar}
        else:
            bars[label] = {"ratio": None, "bar": f">= {bar}", "pass": False,
                           "error": a_.get("error") or b_.get("error") or "not measured"}

    # Issue 6's bars.
    ratio_bar("readahead_push_vs_pgbackrest_async", "push", "walkeeper push (read-ahead)",
              "pgbackrest async push", 1.0)
    ratio_bar("readahead_push_vs_two_parallel_zstd", "push", "walkeeper push (read-ahead)",
              "zstd -3 -q (2 parallel)", 0.75)
    ratio_bar("prefetch_fetch_vs_pgbackrest_async_1gib", "fetch", "walkeeper fetch (prefetch)",
              "pgbackrest async get", 1.0)
    ratio_bar("prefetch_fetch_vs_sequential_fetch", "fetch", "walkeeper fetch (prefetch)",
              "walkeeper fetch", 2.0)
    # Issue 19's bars: the lines `walkeeper commands` prints, >= 1.1x pgBackRest async
    # in the median and in every round.
    for label, phase, num, den in (
            ("fast_line_push_vs_pgbackrest_async", "push", FAST_PUSH, "pgbackrest async push"),
            ("fast_line_fetch_vs_pgbackrest_async_1gib", "fetch", FAST_FETCH,
             "pgbackrest async get")):
        ratio_bar(label, phase, num, den, 1.1)
        if bars[label]["ratio"] is not None:
            per_round = [r[phase][num]["seg_per_s"] / r[phase][den]["seg_per_s"] for r in rounds]
            bars[label]["per_round"] = per_round
            bars[label]["pass"] = min(per_round) >= 1.1 and bars[label]["ratio"] >= 1.1
    st = result.get("startup", {})
    # The fast paths: most calls of the prefetch row are a fetch served from the spool;
    # their median per-segment time is that fast path. The read-ahead row's calls wait
    # for the background pusher (a call returns once its segment is stored): its median
    # is the pusher's pace, shown for information; the fast path itself is timed on its
    # own in the start-up phase (fast_push_recorded_vs_python).
    for row, phase, label in (("walkeeper push (read-ahead)", "push", "readahead_row_ms_vs_python"),
                              ("walkeeper fetch (prefetch)", "fetch", "prefetch_row_ms_vs_python")):
        v = summ[phase].get(row, {})
        info = row == "walkeeper push (read-ahead)"
        if st.get("ok") and v.get("ok"):
            ratio = v["per_segment_ms_median"] / st["commands"]["python -c pass"]["median_ms"]
            bars[label] = ({"ratio": ratio, "bar": "none, information", "pass": None} if info
                           else {"ratio": ratio, "bar": "<= 3.0", "pass": ratio <= 3.0})
        else:
            bars[label] = {"ratio": None, "bar": "<= 3.0", "pass": False,
                           "error": v.get("error") or st.get("error") or "not measured"}
    for k, label in (("walkeeper push (done by read-ahead)", "fast_push_recorded_vs_python"),
                     ("walkeeper fetch (served from the spool)", "fast_fetch_spool_vs_python"),
                     ("walkeeper-fast push (done by read-ahead)", "fast_line_push_recorded_vs_python"),
                     ("walkeeper-fast fetch (served from the spool)",
                      "fast_line_fetch_spool_vs_python")):
        if st.get("ok"):
            ratio = st["commands"][k]["ratio_to_python"]
            bars[label] = {"ratio": ratio, "bar": "<= 3.0", "pass": ratio <= 3.0}
        else:
            bars[label] = {"ratio": None, "bar": "<= 3.0", "pass": False,
                           "error": st.get("error", "not measured")}
    for k, label in (("walkeeper push (already stored)", "startup_push_vs_python"),
                     ("walkeeper fetch (missing)", "startup_fetch_vs_python")):
        if st.get("ok"):
            ratio = st["commands"][k]["ratio_to_python"]
            bars[label] = {"ratio": ratio, "bar": f"<= {STARTUP_BAR}",
                           "pass": ratio <= STARTUP_BAR}
        else:
            bars[label] = {"ratio": None, "bar": f"<= {STARTUP_BAR}", "pass": False,
                           "error": st.get("error", "not measured")}
    summ["bars"] = bars
    return summ


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(result: dict) -> str:
    s = result["summary"]
    n = len(result["segments"])
    rounds = len(result["rounds"])
    la = ", ".join(f"{x:.2f}" for x in result.get("loadavg_start", ()))
    L = [f"walkeeper: {result['versions']['walkeeper']} ({result['versions']['walkeeper_cmd']}); "
         f"{result['versions']['pgbackrest']}; zstd {result['versions']['zstd']}",
         f"cpus {result['host']['cpus']}; load average at start {la}",
         f"{n} segments x 16 MiB ({n * 16} MiB), one process per segment, "
         f"median of {rounds} round(s); MiB/s = uncompressed MiB per second", ""]
    hdr = f"{'':6} {'tool':30} {'seg/s':>8} {'MiB/s':>8} {'ms/seg':>8} {'total s':>8} {'stored MiB':>10}"
    L.append(hdr)
    L.append("-" * len(hdr))
    for phase in ("push", "fetch"):
        for t, v in s[phase].items():
            if v["ok"]:
                L.append(f"{phase:6} {t:30} {fmt(v['seg_per_s_median'], '8.1f')} "
                         f"{fmt(v['mib_per_s_median'], '8.1f')} "
                         f"{fmt(v['per_segment_ms_median'], '8.1f')} "
                         f"{fmt(v['total_s_median'], '8.2f')} "
                         f"{fmt(v['stored_mib'], '10.1f') if phase == 'push' else '':>10}")
            else:
                L.append(f"{phase:6} {t:30} FAILED: {v['error']}")
    st = result.get("startup", {})
    L += ["", f"start-up (interleaved, {st.get('reps', '?')} reps after "
              f"{st.get('warmup', '?')} warm-up; median ms):"]
    if st.get("ok"):
        for k, v in st["commands"].items():
            L.append(f"  {k:42} {v['median_ms']:8.1f} ms  (min {v['min_ms']:.1f}, "
                     f"max {v['max_ms']:.1f})  {v['ratio_to_python']:5.2f}x python")
    else:
        L.append(f"  FAILED: {st.get('error')}")
    L += ["", "the bar:"]
    for k, v in s["bars"].items():
        verdict = "info" if v["pass"] is None else "PASS" if v["pass"] else "FAIL"
        extra = f"  per round: {', '.join(f'{x:.3f}' for x in v['per_round'])}" \
            if v.get("per_round") else ""
        err = f"  ({v['error']})" if v.get("error") else ""
        L.append(f"  {k:40} {fmt(v['ratio'], '6.3f')}  (bar {v['bar']})  {verdict}{extra}{err}")
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--walkeeper", default=os.environ.get("WALKEEPER_CMD", "walkeeper"),
                    help="walkeeper command, split like a shell line "
                         "(default: $WALKEEPER_CMD, else `walkeeper` on PATH)")
    ap.add_argument("--python", default=os.environ.get("WKBENCH_PYTHON"),
                    help="interpreter for the `python -c pass` baseline (default: the one "
                         "in the walkeeper script's #! line)")
    ap.add_argument("--pgbackrest", default=shutil.which("pgbackrest") or "pgbackrest")
    ap.add_argument("--zstd", default=shutil.which("zstd") or "zstd")
    ap.add_argument("--wal-dir", default=os.environ.get("WKBENCH_WAL_DIR",
                                                        "/tmp/walkeeper-bench/wal"),
                    help="made by make_wal.py (run automatically if missing)")
    ap.add_argument("--work-dir", default=None,
                    help="parent of the scratch directory (default: the system temp dir)")
    ap.add_argument("--out-dir", default=str(HERE / "out"), help="JSON goes here")
    ap.add_argument("--rounds", type=int, default=5,
                    help="push+fetch rounds, each from empty stores (default 5)")
    ap.add_argument("--startup-reps", type=int, default=30)
    ap.add_argument("--startup-warmup", type=int, default=3)
    ap.add_argument("--no-pgbackrest", action="store_true")
    a = ap.parse_args(argv)
    if os.geteuid() == 0:
        raise SystemExit("push_fetch.py: run as a non-root user (bench/run.sh does that)")
    a.walkeeper = shlex.split(a.walkeeper)
    wk_exe = shutil.which(a.walkeeper[0])
    if wk_exe is None:
        raise SystemExit(f"walkeeper command not found: {a.walkeeper[0]!r} "
                         "(set WALKEEPER_CMD or --walkeeper)")
    a.walkeeper[0] = wk_exe
    a.python = a.python or python_of(a.walkeeper)

    wal = Path(a.wal_dir).resolve()
    subprocess.run([sys.executable, str(HERE / "make_wal.py"), "--out", str(wal)],
                   check=True, stdout=subprocess.DEVNULL)
    meta = json.loads((wal / "meta.json").read_text())
    segs = [wal / "segments" / n for n in meta["segments"]]
    a.segs = segs
    a.meta = meta
    sums = meta["sha256"]

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WALKEEPER_", "PGBACKREST_")) and k != "BACKUP_DIR"}
    env["LC_ALL"] = "C"
    work = Path(tempfile.mkdtemp(prefix="walkeeper-bench-", dir=a.work_dir))
    log(f"scratch {work}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = {
        "timestamp": stamp,
        "argv": sys.argv,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                 "machine": platform.machine()},
        "versions": {
            "walkeeper": out_of([*a.walkeeper, "--version"]),
            "walkeeper_cmd": shlex.join(a.walkeeper),
            "python_baseline": a.python,
            "python_baseline_version": out_of([a.python, "--version"]),
            "pgbackrest": out_of([a.pgbackrest, "version"]),
            "zstd": out_of([a.zstd, "--version"]),
            "postgresql": meta["pg_version"],
        },
        "wal": {"dir": str(wal), "system_identifier": meta["system_identifier"]},
        "segments": meta["segments"],
        "scratch": str(work),
        "scratch_df": subprocess.run(["df", "-T", str(work)], capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1:],
        "loadavg_start": os.getloadavg(),
        "rounds": [],
    }
    try:
        a.pgbr_template = None
        if not a.no_pgbackrest:
            try:
                a.pgbr_template = pgbackrest_template(a.pgbackrest, meta, work, env)
            except (subprocess.CalledProcessError, OSError) as exc:
                log(f"pgBackRest stanza-create failed, pgBackRest not measured: {exc}")
                result["pgbackrest_error"] = str(exc)
        for s in segs:          # warm the page cache the same way for every tool
            with open(s, "rb") as f:
                while f.read(1 << 20):
                    pass
        for r in range(a.rounds):
            result["rounds"].append(one_round(r, a, segs, sums, work, env))
        log("start-up")
        result["startup"] = startup(a, segs, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    result["summary"] = summarize(result)
    text = table(result)
    result["table"] = text
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
