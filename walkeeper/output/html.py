"""`status --html`: the status object as one self-contained page.

Inline CSS and inline SVG only: no script, no font, no image, nothing fetched, so
the page can be mailed, archived or opened from a file share. It shows a timeline
of backups and WAL coverage per timeline with gaps, recoverable windows and
failures; backup sizes over time; free space per store; and the tables behind them.
Pure: status data in, text out.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from walkeeper.log import human_bytes, plural
from walkeeper.output.text import age as _age, backup_size_text, when as _when
from walkeeper.reports.status import parse_time as _t

WIDTH = 1180            # drawing width of the charts, in SVG units
LABEL = 90              # left margin for row labels
PALETTE = ("#2f6fb0", "#c77c1e", "#6a4fa3", "#2f8f6f", "#a34f6a")

CSS = """
:root { --ok: #2e7d32; --warn: #b26a00; --bad: #c62828; --muted: #667; --line: #dde; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2330; background: #f5f6fa; }
header { background: #1d2330; color: #fff; padding: 14px 24px; }
header h1 { font-size: 20px; margin: 0; }
header p { margin: 2px 0 0; color: #b9c0d0; }
main { padding: 16px 24px 40px; max-width: 1260px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
          padding: 12px 16px; margin: 0 0 16px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
         gap: 10px; background: none; border: 0; padding: 0; }
.card { background: #fff; border: 1px solid var(--line); border-left: 5px solid var(--muted);
        border-radius: 6px; padding: 8px 12px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.card .v { font-size: 17px; font-weight: 600; }
.card .d { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.ok { border-left-color: var(--ok); } .warn { border-left-color: var(--warn); }
.bad { border-left-color: var(--bad); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.none { color: var(--muted); font-style: italic; }
.bad-text { color: var(--bad); font-weight: 600; } .ok-text { color: var(--ok); }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #445; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px;
            vertical-align: middle; }
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


# ---------------------------------------------------------------- summary

def _card(key: str, value: str, detail: str, level: str) -> str:
    return (f'<div class="card {level}"><div class="k">{_e(key)}</div>'
            f'<div class="v">{_e(value)}</div><div class="d">{_e(detail)}</div></div>')


def _summary(d: dict, now: datetime) -> str:
    cards = []
    p = d["last_push"]
    cards.append(_card("Last WAL push", _age(p["time"], now) if p else "never",
                       f"{p['name']} at {_when(p['time'])}" if p else "nothing archived",
                       "ok" if p else "bad"))
    lag = d["archive_lag_bytes"]
    srv = d["postgres"]
    cards.append(_card("Archive lag", "unknown" if lag is None else
                       ("caught up" if lag == 0 else human_bytes(lag)),
                       srv.get("error") or f"last archived {srv.get('last_archived_wal') or '-'}",
                       "warn" if lag is None else "ok" if lag == 0 else "bad"))
    b = d["last_backup"]
    age = (now - _t(b["time"])).total_seconds() if b and _t(b["time"]) else None
    cards.append(_card("Last backup", _age(b["time"], now) if b else "none",
                       f"{b['id']}, " + backup_size_text(b.get("database_bytes"),
                                                         b.get("stored_bytes") or {})
                       if b else "no complete backup",
                       "bad" if age is None or age > 7 * 86400 else
                       "warn" if age > 26 * 3600 else "ok"))
    dr = d["last_drill"]
    if dr is None:
        cards.append(_card("Last restore drill", "never", "run walkeeper drill", "warn"))
    elif dr["ok"]:
        cards.append(_card("Last restore drill", "passed",
                           f"{_age(dr['time'], now)}: backup {dr.get('backup')} ready in "
                           f"{float(dr.get('seconds') or 0):.1f} s", "ok"))
    else:
        cards.append(_card("Last restore drill", "FAILED",
                           f"{_age(dr['time'], now)}: {dr.get('reason') or ''}", "bad"))
    dm = d.get("last_dump")
    if dm is not None:
        cards.append(_card("Last dump", _age(dm["time"], now),
                           f"{dm.get('name') or dm['id']} of {dm['database']}, in "
                           f"{', '.join(sorted(dm['stored_bytes']))}", "ok"))
    ends = [w["to_time"] for w in d["windows"]]
    cards.append(_card("Recoverable until", _when(max(ends, key=lambda x: _t(x))) if ends
                       else "nothing", plural(len(d['windows']), 'window'),
                       "ok" if ends else "bad"))
    n = len(d["failures"])
    cards.append(_card("Failures (24 h)", str(n),
                       f"last: {d['failures'][0]['command']} {_age(d['failures'][0]['time'], now)}"
                       if n else "none", "bad" if n else "ok"))
    down = [s["name"] for s in d["stores"] if not s["reachable"]]
    cards.append(_card("Stores", f"{len(d['stores']) - len(down)} of {len(d['stores'])} up",
                       "unreachable: " + ", ".join(down) if down else
                       ", ".join(s["name"] for s in d["stores"]), "bad" if down else "ok"))
    return f'<section class="cards" id="summary">{"".join(cards)}</section>'


# ---------------------------------------------------------------- the timeline

class _Scale:
    def __init__(self, t0: float, t1: float, x0: float, x1: float):
        self.t0, self.t1, self.x0, self.x1 = t0, max(t1, t0 + 1), x0, x1

    def __call__(self, t: datetime) -> float:
        f = (t.timestamp() - self.t0) / (self.t1 - self.t0)
        return self.x0 + min(1.0, max(0.0, f)) * (self.x1 - self.x0)


def _ticks(scale: _Scale, y: float, height: float) -> str:
    out = []
    span = scale.t1 - scale.t0
    fmt = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M" if span > 3 * 3600 else "%H:%M:%S"
    for i in range(7):
        ts = scale.t0 + span * i / 6
        x = scale.x0 + (scale.x1 - scale.x0) * i / 6
        label = datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime(fmt)
        anchor = "start" if i == 0 else "end" if i == 6 else "middle"
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + height}" '
                   f'stroke="#eef" />'
                   f'<text x="{x:.1f}" y="{y + height + 14}" text-anchor="{anchor}">{label}</text>')
    return "".join(out)


def _timeline(d: dict, now: datetime) -> str:
    times = [now]
    for b in d["backups"]:
        times += [_t(b["start_time"]), _t(b["stop_time"])]
    for r in d["wal"]:
        for run in r["runs"]:
            times += [_t(run["from_time"]), _t(run["to_time"])]
    times += [_t(w["from_time"]) for w in d["windows"]]
    times += [_t(f["time"]) for f in d["failures"]]
    times = [t for t in times if t is not None]
    t0 = min(times).timestamp()
    t1 = max(times).timestamp()
    pad = max(1.0, (t1 - t0) * 0.03)
    scale = _Scale(t0 - pad, t1 + pad, LABEL, WIDTH - 10)
    tls = sorted({r["timeline"] for r in d["wal"]} | {b["timeline"] for b in d["backups"]}
                 | {w["timeline"] for w in d["windows"]})
    row_h = 46
    top = 8
    rows_h = row_h * (len(tls) + 1)
    parts = [_ticks(scale, top, rows_h)]
    windows = {}
    for w in d["windows"]:
        windows.setdefault(w["timeline"], []).append(w)
    wal = {r["timeline"]: r for r in d["wal"]}
    for i, tli in enumerate(tls):
        y = top + i * row_h
        parts.append(f'<g class="timeline-row" data-timeline="{tli}">'
                     f'<text x="4" y="{y + 18}">timeline {tli}</text>')
        runs = wal.get(tli, {}).get("runs", [])
        prev = None
        for run in runs:
            a, b = _t(run["from_time"]), _t(run["to_time"])
            if a is None or b is None:
                continue
            if prev is not None:
                x_gap = scale(prev)
                parts.append(f'<rect class="wal-gap" x="{x_gap:.1f}" y="{y + 6}" width="'
                             f'{max(3.0, scale(a) - x_gap):.1f}" height="16" fill="#c62828">'
                             f'<title>gap in the WAL before {_e(run["first"])}</title></rect>')
            x = scale(a)
            parts.append(f'<rect class="wal-run" x="{x:.1f}" y="{y + 6}" width="'
                         f'{max(2.0, scale(b) - x):.1f}" height="16" fill="#8fb4dc">'
                         f'<title>WAL {_e(run["first"])} .. {_e(run["last"])}</title></rect>')
            prev = b
        for w in windows.get(tli, []):
            a, b = _t(w["from_time"]), _t(w["to_time"])
            x = scale(a)
            parts.append(f'<rect class="window" x="{x:.1f}" y="{y + 26}" width="'
                         f'{max(2.0, scale(b) - x):.1f}" height="7" fill="#2e7d32">'
                         f'<title>recoverable {_e(_when(w["from_time"]))} .. '
                         f'{_e(_when(w["to_time"]))}</title></rect>')
        for bk in d["backups"]:
            if bk["timeline"] != tli:
                continue
            x = scale(_t(bk["stop_time"]))
            parts.append(f'<path class="backup-mark" d="M{x:.1f},{y + 2} l6,-8 h-12 z" '
                         f'fill="#1d2330"><title>backup {_e(bk["id"])} '
                         f'(stop {_e(_when(bk["stop_time"]))})</title></path>')
        parts.append("</g>")
    y = top + len(tls) * row_h
    parts.append(f'<text x="4" y="{y + 18}">failures</text>')
    for f in d["failures"]:
        x = scale(_t(f["time"]))
        parts.append(f'<line class="failure-mark" x1="{x:.1f}" y1="{y + 4}" x2="{x:.1f}" '
                     f'y2="{y + 26}" stroke="#c62828" stroke-width="3"><title>{_e(f["command"])} '
                     f'{_e(f["target"])} failed at {_e(_when(f["time"]))}: '
                     f'{_e(f["reason"])}</title></line>')
    x = scale(now)
    parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + rows_h}" '
                 f'stroke="#889" stroke-dasharray="3,3" /><text x="{x - 4:.1f}" y="{top + 8}" '
                 f'text-anchor="end">now</text>')
    height = top + rows_h + 24
    legend = ('<p class="legend"><span><i style="background:#8fb4dc"></i>WAL archived</span>'
              '<span><i style="background:#c62828"></i>gap / failure</span>'
              '<span><i style="background:#2e7d32"></i>recoverable window</span>'
              '<span><i style="background:#1d2330"></i>base backup (stop)</span></p>')
    return (f'<section id="timelines"><h2>Timeline: backups and WAL coverage per timeline</h2>'
            f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="timeline of backups and WAL">{"".join(parts)}</svg>{legend}</section>')


# ---------------------------------------------------------------- tables and charts

def _table(section_id: str, title: str, head: list[str], rows: list[list[str]],
           empty: str, extra: str = "") -> str:
    if rows:
        body = "".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
        table = (f"<table><thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr></thead>"
                 f"<tbody>{body}</tbody></table>")
    else:
        table = f'<p class="none">{_e(empty)}</p>'
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{extra}{table}</section>'


def _td(value, num: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if num else f"<td>{_e(value)}</td>"


def _windows(d: dict) -> str:
    rows = [[_td(w["timeline"]), _td(_when(w["from_time"])), _td(_when(w["to_time"])),
             _td(w["from_lsn"]), _td(w["to_lsn"])] for w in d["windows"]]
    return _table("windows", "Recoverable windows", ["timeline", "from", "to", "from LSN",
                                                      "to LSN"], rows,
                  "No recoverable window: no complete backup has its WAL in the archive.")


def _wal(d: dict) -> str:
    rows = []
    for r in d["wal"]:
        gaps = ", ".join(a if a == b else f"{a} .. {b}" for a, b in r["gaps"])
        rows.append([_td(r["timeline"]), f"<td><code>{_e(r['first'])}</code></td>",
                     f"<td><code>{_e(r['last'])}</code></td>", _td(r["segments"], True),
                     f'<td class="bad-text">{_e(gaps)}</td>' if gaps else
                     '<td class="ok-text">none</td>'])
    return _table("wal", "WAL per timeline", ["timeline", "first", "last", "segments", "gaps"],
                  rows, "No WAL archived yet.")


def _sizes_chart(d: dict) -> str:
    backups = d["backups"]
    if not backups:
        return ""
    names = [s["name"] for s in d["stores"]]
    series = ["database"] + names
    top = max([b["database_bytes"] or 0 for b in backups]
              + [v for b in backups for v in b["stored_bytes"].values()] + [1])
    h, base, left = 160, 176, 70
    slot = (WIDTH - left - 10) / len(backups)
    bar = max(2.0, min(26.0, slot * 0.8 / len(series)))
    parts = [f'<line x1="{left}" y1="{base}" x2="{WIDTH - 10}" y2="{base}" stroke="#99a" />',
             f'<text x="{left - 6}" y="{base - h + 4}" text-anchor="end">{human_bytes(top)}</text>',
             f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>']
    for i, b in enumerate(backups):
        x = left + i * slot + (slot - bar * len(series)) / 2
        values = [b["database_bytes"] or 0] + [b["stored_bytes"].get(n, 0) for n in names]
        for j, v in enumerate(values):
            bh = h * v / top
            color = "#b0b6c3" if j == 0 else PALETTE[(j - 1) % len(PALETTE)]
            parts.append(f'<rect class="size-bar" x="{x + j * bar:.1f}" y="{base - bh:.1f}" '
                         f'width="{bar - 1:.1f}" height="{bh:.1f}" fill="{color}"><title>'
                         f'{_e(b["id"])} {_e(series[j])}: {_e(human_bytes(v))}</title></rect>')
        if len(backups) <= 12 or i % max(1, len(backups) // 12) == 0:
            label = _t(b["stop_time"]).astimezone().strftime("%m-%d %H:%M")
            parts.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{base + 14}" '
                         f'text-anchor="middle">{label}</text>')
    legend = "".join(f'<span><i style="background:{"#b0b6c3" if j == 0 else PALETTE[(j - 1) % len(PALETTE)]}"></i>'
                     f'{_e(s if j else "database size")}</span>' for j, s in enumerate(series))
    return (f'<div id="sizes"><svg viewBox="0 0 {WIDTH} 196" width="{WIDTH}" height="196" '
            f'role="img" aria-label="backup sizes over time">{"".join(parts)}</svg>'
            f'<p class="legend">{legend}</p></div>')


def _backups(d: dict) -> str:
    names = [s["name"] for s in d["stores"]]
    rows = [[f"<td><code>{_e(b['id'])}</code></td>", _td(b["label"]),
             _td(_when(b["stop_time"])), _td(b["timeline"]),
             _td(human_bytes(b["database_bytes"]), True)]
            + [_td(human_bytes(b["stored_bytes"].get(n)) if b["stored_bytes"].get(n) else "-",
                   True) for n in names] for b in d["backups"]]
    extra = _sizes_chart(d)
    if d.get("incomplete_backups"):
        extra += (f'<p class="bad-text">Incomplete (not restorable): '
                  f'{_e(", ".join(d["incomplete_backups"]))}</p>')
    return _table("backups", f"Base backups ({len(d['backups'])}) and their sizes over time",
                  ["id", "label", "stop", "timeline", "database"] + [f"in {n}" for n in names],
                  rows, "No complete base backup.", extra)


def _dumps(d: dict) -> str:
    names = [s["name"] for s in d["stores"]]
    rows = [[f"<td><code>{_e(x.get('name') or x['id'])}</code></td>", _td(x["database"]),
             _td(_when(x["time"]))]
            + [_td(human_bytes(x["stored_bytes"][n]) if x["stored_bytes"].get(n) else "-", True)
               for n in names] for x in d.get("dumps", [])]
    return _table("dumps", f"Dumps ({len(rows)})", ["dump", "database", "time"]
                  + [f"in {n}" for n in names], rows, "No dump.")


def _free_bar(s: dict) -> str:
    used, free = s["bytes"] or 0, s["free_bytes"]
    if free is None:
        return '<span class="none">free space unknown</span>'
    total = max(1, used + free)
    w = 320
    uw = max(1.0, w * used / total)
    return (f'<svg class="free-space" viewBox="0 0 {w} 14" width="{w}" height="14">'
            f'<rect x="0" y="0" width="{w}" height="14" fill="#d7e8d8" />'
            f'<rect x="0" y="0" width="{uw:.1f}" height="14" fill="#2f6fb0">'
            f'<title>{_e(human_bytes(used))} used by this archive</title></rect></svg>')


def _stores(d: dict) -> str:
    rows = []
    for s in d["stores"]:
        if s["reachable"]:
            state = '<td class="ok-text">up</td>'
        else:
            state = f'<td class="bad-text">unreachable: {_e(s["error"])}</td>'
        rows.append([f"<td><b>{_e(s['name'])}</b> <span class='none'>{_e(s['type'])}</span></td>",
                     _td(s.get("location")), state, _td(s["backups"], True),
                     _td(human_bytes(s["bytes"]), True),
                     _td(human_bytes(s["free_bytes"]), True),
                     f"<td>{_free_bar(s) if s['reachable'] else ''}</td>",
                     f"<td><code>{_e(s['newest_wal'] or '-')}</code></td>"])
    return _table("stores", "Stores and free space",
                  ["store", "location", "state", "backups", "stored", "free",
                   "archive / free space", "newest WAL"], rows, "No store configured.")


def _failures(d: dict) -> str:
    rows = [[_td(_when(f["time"])), _td(f["command"]), f"<td><code>{_e(f['target'])}</code></td>",
             _td(f["reason"])] for f in d["failures"]]
    return _table("failures", "Failures in the last 24 hours", ["time", "command", "target",
                                                                 "reason"],
                  rows, "No failure recorded in the last 24 hours.")


def render(d: dict) -> str:
    now = _t(d["generated"]) or datetime.now(timezone.utc).astimezone()
    body = "".join([_summary(d, now), _timeline(d, now), _windows(d), _wal(d), _backups(d),
                    _dumps(d), _stores(d), _failures(d)])
    title = f"walkeeper: {d['cluster']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>status at {_e(_when(d['generated']))}</p></header>"
            f"<main>{body}</main></body></html>\n")
