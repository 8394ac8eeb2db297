"""Text for a terminal: one function per command, data in, text out (pure).

Each takes what the command's function returns (see walkeeper.commands) and returns
the text the CLI prints; TEXT maps command names to them.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from walkeeper.log import human_bytes, plural
from walkeeper.reports.status import RECENT_FAILURES, parse_time


def when(text) -> str:
    """An ISO 8601 time as `YYYY-MM-DD HH:MM:SS+HH:MM`, "-" when unknown."""
    t = parse_time(text)
    return t.isoformat(sep=" ", timespec="seconds") if t else "-"


def age(text, now: datetime) -> str:
    """How long before `now` a time was: "42 s ago", "5 min ago", "3 h ago", "2 days ago"."""
    t = parse_time(text)
    if t is None:
        return ""
    s = max(0, int((now - t).total_seconds()))
    for unit, n in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * n:
            return f"{s // n} {unit} ago"
    return f"{s} s ago"


def status(data: dict) -> str:
    now = parse_time(data["generated"]) or datetime.now(timezone.utc)
    lines = [f"walkeeper status of cluster {data['cluster']} at {when(data['generated'])}", ""]
    p = data["last_push"]
    lines.append("last push     " + (f"{p['name']} at {when(p['time'])} ({age(p['time'], now)})"
                                     if p else "never"))
    lag = data["archive_lag_bytes"]
    srv = data["postgres"]
    if lag is not None:
        lag_text = "caught up" if lag == 0 else f"{human_bytes(lag)} not yet archived"
    elif srv.get("error"):
        lag_text = f"unknown ({srv['error']})"
    else:
        lag_text = "unknown (archive_mode is off)" if srv.get("archive_mode") == "off" else "unknown"
    lines.append(f"archive lag   {lag_text}")
    if srv.get("failed_count") and srv.get("last_failed_time") and \
            (srv.get("last_archived_time") or "") < srv["last_failed_time"]:
        lines.append(f"archiver      FAILING: {srv['last_failed_wal']} failed at "
                     f"{when(srv['last_failed_time'])}")
    b = data["last_backup"]
    lines.append("last backup   " + (
        f"{b['id']} at {when(b['time'])} ({age(b['time'], now)}), "
        f"{backup_size_text(b.get('database_bytes'), b.get('stored_bytes') or {})}" if b else "none"))
    d = data["last_drill"]
    if d is None:
        lines.append("last drill    never")
    elif d["ok"]:
        lines.append(f"last drill    passed at {when(d['time'])} ({age(d['time'], now)}): backup "
                     f"{d.get('backup')} ready in {float(d.get('seconds') or 0):.1f} s")
    else:
        lines.append(f"last drill    FAILED at {when(d['time'])}: {d.get('reason') or '?'}")
    for w in data["windows"]:
        lines.append(f"recoverable   timeline {w['timeline']}: {when(w['from_time'])} .. "
                     f"{when(w['to_time'])}")
    if not data["windows"]:
        lines.append("recoverable   nothing: no backup with its WAL")
    for r in data["wal"]:
        if r["gaps"]:
            lines.append(f"WAL gaps      timeline {r['timeline']}: " + ", ".join(
                a if a == b else f"{a}..{b}" for a, b in r["gaps"]))
    for w in data.get("warnings") or []:
        lines.append(f"WARNING       {w}")
    lines += ["", "stores"]
    for s in data["stores"]:
        if not s["reachable"]:
            lines.append(f"  {s['name']:<12} UNREACHABLE: {s['error']}")
            continue
        lines.append(f"  {s['name']:<12} {plural(s['backups'], 'backup')}, {human_bytes(s['bytes'])} "
                     f"stored, {human_bytes(s['free_bytes'])} free, newest WAL "
                     f"{s['newest_wal'] or '-'}")
    recent = data["failures"]
    lines += ["", f"failures in the last {int(RECENT_FAILURES.total_seconds() // 3600)} h: "
                  f"{len(recent)}" + (" (newest first)" if recent else "")]
    for f in recent[:10]:
        target = f" {f['target']}" if f["target"] else ""
        lines.append(f"  {when(f['time'])}  {f['command']}{target}: {f['reason']}")
    return "\n".join(lines) + "\n"




# ---------------------------------------------------------------- list

def stored_text(per_store: dict) -> str:
    """What a backup or dump takes in each store, as every report prints it (binary
    units, human_bytes): `list`, `status` and the dashboard must not disagree."""
    return ", ".join(f"{n} {human_bytes(v) if v else '-'}" for n, v in per_store.items())


def backup_size_text(database_bytes, stored_bytes: dict) -> str:
    """'21.5 MiB of data, stored: local 2.1 MiB, offsite 2.1 MiB' (list's DB SIZE and
    STORED columns, in one phrase)."""
    return (f"{human_bytes(database_bytes)} of data, stored: "
            f"{stored_text(stored_bytes) or '-'}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [header, *rows]]


def _gaps(gaps: list) -> str:
    if not gaps:
        return "no gaps"
    return ", ".join(a if a == b else f"{a}..{b}" for a, b in gaps)


def list_(data: dict) -> str:
    lines = [f"Backups ({len(data['backups'])})"]
    if data["backups"]:
        lines += _table(
            ["ID", "LABEL", "START", "STOP", "START LSN", "STOP LSN", "TLI", "DB SIZE", "STORED"],
            [[b["id"], b["label"] or "-", when(b["start_time"]), when(b["stop_time"]),
              b["start_lsn"], b["stop_lsn"], str(b["timeline"]), human_bytes(b["database_bytes"]),
              stored_text(b["stored_bytes"])] for b in data["backups"]])
    else:
        lines.append("  none")
    if data.get("incomplete_backups"):
        lines.append("  incomplete (not restorable): " + ", ".join(data["incomplete_backups"]))
    lines += ["", "WAL"]
    if data["wal"]:
        lines += _table(["TLI", "FIRST", "LAST", "SEGMENTS", "GAPS"],
                        [[str(w["timeline"]), w["first"], w["last"], str(w.get("segments", "?")),
                          _gaps(w["gaps"])] for w in data["wal"]])
    else:
        lines.append("  none")
    lines += ["", f"Dumps ({len(data['dumps'])})"]
    if data["dumps"]:
        named = any(d.get("name") for d in data["dumps"])      # Django's create_backup
        lines += _table(["ID", "DATABASE", "TIME", "STORED"] + (["NAME"] if named else []),
                        [[d["id"], str(d["database"]), when(d["time"]), stored_text(d["stored_bytes"])]
                         + ([d.get("name") or "-"] if named else []) for d in data["dumps"]])
    else:
        lines.append("  none")
    for name, msg in data.get("store_errors", {}).items():
        lines.append(f"warning: not listed: {msg}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- verify-chain

def verify_chain(report) -> str:
    lines = ["recoverable windows:" if report.windows else "recoverable windows: none"]
    for w in report.windows:
        lines.append(f"  timeline {w['timeline']}: {w['from_time']} ({w['from_lsn']}) .. "
                     f"{w['to_time']} ({w['to_lsn']})")
    if report.problems:
        lines.append(f"problems ({len(report.problems)}):")
        width = max(len(p.kind) for p in report.problems)
        for p in report.problems:
            lines.append(f"  {p.kind:<{width}}  {p.store}  {p.object}: {p.detail}")
    mode = "quick (trailers and sizes)" if report.quick else "deep (decoded and verified)"
    lines.append(f"checked {plural(report.objects, 'object')} "
                 f"({report.bytes / (1 << 20):.1f} MiB read) in {', '.join(report.stores)}, "
                 f"{mode}: " + ("no problem" if report.ok
                               else plural(len(report.problems), "problem")))
    if getattr(report, "old_format", 0):
        from walkeeper.format.objects import FORMAT_VERSION

        lines.append(f"{plural(report.old_format, 'object')} of a format version before "
                     f"{FORMAT_VERSION} (written by an earlier walkeeper; readable, but they "
                     f"record no name, so a copy under the wrong name is caught by content "
                     f"checks only)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- check

def check_line(c) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
    text = f"{mark} {c.name}: {c.detail}"
    if c.ok is False and c.fix:
        text += f"; {c.fix}"
    return text


def check(checks) -> str:
    return "".join(check_line(c) + "\n" for c in checks)


# ---------------------------------------------------------------- backups

def basebackup(info) -> str:
    return (f"backup {info.id} complete: {info.start_wal} .. {info.stop_wal}, "
            f"{human_bytes(info.database_bytes)} of data, stored as "
            + ", ".join(f"{human_bytes(n)} in {s}" for s, n in info.stored_bytes.items()) + "\n")


def recover(plan, dry_run: bool = False, pgdata: str | None = None,
            passphrase_env: str | None = None) -> str:
    from walkeeper.wal import format_lsn

    b = plan.backup
    head = "plan (dry run, nothing written)" if dry_run else "recovery plan"
    lines = [
        f"{head}:",
        f"  backup      {b.id} (stop {b.stop_time.isoformat()}, LSN {format_lsn(b.stop_lsn)}, "
        f"timeline {b.timeline})",
        f"  timelines   {' -> '.join(map(str, plan.timelines))}",
        f"  WAL         {plan.first_wal} .. {plan.last_wal} "
        f"({plural(len(plan.segments), 'segment')})",
        f"  to fetch    {human_bytes(plan.bytes)}",
        f"  target      {plan.target.kind}"
        + (f" {plan.target.value}" if plan.target.value is not None else ""),
    ]
    if pgdata:
        lines += _copy(plan, os.path.abspath(pgdata), dry_run)
    if not dry_run and pgdata:
        where = os.path.abspath(pgdata)
        env = f"{passphrase_env}=... " if passphrase_env else ""
        lines.append(f"restored into {where}; start it with: {env}pg_ctl -D {where} start"
                     + (f" (restore_command needs ${passphrase_env})" if passphrase_env else ""))
    return "\n".join(lines) + "\n"


def _copy(plan, pgdata: str, dry_run: bool) -> list[str]:
    """What recover chose for the restored copy: stores, port, archiving."""
    lines = []
    if plan.skipped_stores:
        lines.append(f"  stores      only {', '.join(plan.stores)}: "
                     f"{', '.join(plan.skipped_stores)} could not be read, so the plan and "
                     f"restore_command use only what was read (recovery can finish from it)")
        lines.append(f"              to fetch from every store once it is back, set in "
                     f"{pgdata}/postgresql.auto.conf:")
        lines.append(f"                restore_command = '{plan.widen_command}'")
        lines.append(f"              then: pg_ctl -D {pgdata} reload")
    else:
        lines.append(f"  stores      {', '.join(plan.stores)}")
    lines.append(f"  port        {plan.port}" if plan.port is not None else
                 "  port        the source's (give --port N to run it beside the source)")
    lines.append("  archiving   on: once promoted, the copy archives into this archive with "
                 "walkeeper push (for a copy that replaces the source)" if plan.archive else
                 "  archiving   off (archive_mode = off; --archive on if this copy "
                 "replaces the source)")
    if dry_run:
        lines.append("  read back   every object above has a good copy")
    return lines


def sync(result: dict) -> str:
    verb = "would copy" if result["dry_run"] else "copied"
    n = len(result["copied"])
    total = sum(r["bytes"] for r in result["copied"])
    lines = []
    for u in result["unrecoverable"]:
        lines.append(f"  UNRECOVERABLE  {u['store']}  {u['key']}: {u['detail']}")
    for s in result["skipped"]:
        lines.append(f"  skipped        {s['store']}  {s['key']}: {s['detail']}")
    for name, err in result["store_errors"].items():
        lines.append(f"  store error    {name}: {err}")
    lines.append(f"sync{' (dry run, nothing written)' if result['dry_run'] else ''}: {verb} "
                 f"{plural(n, 'object')} ({human_bytes(total)}); "
                 f"{result['good']} of {result['checked']} already held verified")
    return "\n".join(lines) + "\n"


def dump(info: dict) -> str:
    return f"dump {info['id']} of {info['database']} complete\n"


def restore_dump(info: dict) -> str:
    return f"dump {info['id']} restored into {info['database']}\n"


def expire(result: dict, dry_run: bool = False) -> str:
    verb = "would delete" if dry_run else "deleted"
    w = len(verb)
    lines = ["expire (dry run, nothing deleted):" if dry_run else "expire:"]
    lines += [f"  {'keep':<{w}}  backup {k['id']}  ({', '.join(k['reasons'])})"
              for k in result["kept"]]
    lines += [f"  {verb}  backup {i}" for i in result["deleted_backups"]]
    lines += [f"  {verb}  incomplete backup {i} (left by an interrupted run)"
              for i in result["deleted_incomplete"]]
    lines += [f"  {'keep':<{w}}  dump {k['id']}  ({', '.join(k['reasons'])})"
              for k in result["kept_dumps"]]
    lines += [f"  {verb}  dump {i}" for i in result["deleted_dumps"]]
    cut = ", ".join(f"{s} on timeline {t}" for t, s in result["wal_cut"].items())
    lines.append(f"  WAL: {verb} {plural(result['deleted_wal'], 'file')}"
                 + (f", everything below {cut}" if cut else ""))
    lines += [f"  {verb}  unfinished upload {k} in {s}"
              for s, keys in result.get("aborted_uploads", {}).items() for k in keys]
    return "\n".join(lines) + "\n"


def drill(result: dict) -> str:
    text = (f"drill passed: backup {result['backup']} restored and recovered to the "
            f"end of the archive in {result['seconds']:.1f} s (until it accepted "
            f"connections with recovery finished); "
            f"{plural(len(result['databases']), 'database')} checked"
            + ("; [drill] sql ran" if result["sql"] else "") + "\n")
    if result["kept"]:
        text += (f"restored copy kept in {result['kept']} (stopped; start it with: "
                 f"pg_ctl -D {result['kept']} start)\n")
    return text


def commands(result: dict) -> str:
    from walkeeper.archiving.hooks import conf_value

    text = "".join(f"{k} = {conf_value(result[k])}\n"
                   for k in ("archive_command", "restore_command"))
    if result["walkeeper_fast"] is None:
        text += ("# walkeeper-fast is not installed beside this walkeeper: every call "
                 "starts Python\n")
    return text


TEXT = {"commands": commands, "status": status, "list": list_, "verify-chain": verify_chain, "check": check,
        "basebackup": basebackup, "recover": recover, "dump": dump,
        "restore-dump": restore_dump, "expire": expire, "drill": drill, "sync": sync}
