"""Turns the per-case results into one table (rich for the terminal, markdown for files)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from bench.common import base_backend, is_async_backend

RAW = "raw"  # the results key of the raw sqlite3 baselines
RAW_PG = "raw_pg"  # the results key of the raw psycopg (PostgreSQL) baselines
RAW_MY = "raw_mysql"  # the results key of the raw pymysql (MySQL / MariaDB) baselines
RSS = "__rss__"


@dataclass
class Row:
    bench: str
    key: str  # a metric key, or RSS
    label: str
    fmt: str  # ms | us | rate | s | ratio | mb
    target: str = ""
    check: Optional[Callable[[str, float], Optional[bool]]] = None
    baselines: list = field(default_factory=list)  # [(raw case, metric key, short name)]
    raw: Optional[tuple] = None  # (raw case, metric key[, suffix]): shown in the raw sqlite3 column
    pg_baselines: list = field(default_factory=list)  # the same for the postgres column, vs raw psycopg
    pg_raw: Optional[tuple] = None  # shown in the raw psycopg column
    my_baselines: list = field(default_factory=list)  # the same for the mysql column, vs raw pymysql
    my_raw: Optional[tuple] = None  # shown in the raw pymysql column
    verdict: str = ""  # a boolean metric shown as ✓/✗ after the figure (the case's own check)
    applies: Optional[Callable[[str], bool]] = None  # which backends fill the row; the others' cells stay empty


def targets(**by_backend):
    """A check for Row.check from per-backend predicates: targets(sqlite=lambda v: v < 1000)."""
    return lambda be, v: by_backend[be](v) if be in by_backend else None


TITLES = {
    "first_boot": "1. first boot",
    "new_session": "2. new session + first run",
    "append_run": "3. append_run cost",
    "get_session": "4. get_session(runs=10)",
    "list_sessions": "5. list_sessions",
    "list_memories": "6. list_memories(topic)",
    "spans": "7. span ingest",
    "export_import": "8. export / import",
    "async_append": "9. concurrent appends",
    "first_calls": "10. first calls under load",
}


def build_rows(benches: list[str], sizes: dict) -> list[Row]:
    rows: list[Row] = []
    for b in benches:
        z = sizes[b]
        if b == "first_boot":
            rows.append(Row(b, "boot_ms", f"construct + first upsert_session, ms (median of {z['reps']} fresh dbs)", "ms"))
        elif b == "new_session":
            rows.append(Row(
                b, "rate", f"upsert_session + append_run per s (N={z['n']:,}, 1 thread)", "rate",
                target="sqlite ≥ 1,500/s, postgres ≥ 1,000/s",
                check=targets(sqlite=lambda v: v >= 1500, postgres=lambda v: v >= 1000),
                baselines=[("raw_new_session_full", "rate", "FULL"), ("raw_new_session_normal", "rate", "NORMAL")],
                raw=("raw_new_session_full", "rate", " (sync=FULL)"),
                pg_baselines=[("raw_pg_new_session", "rate", "psycopg")], pg_raw=("raw_pg_new_session", "rate"),
                my_baselines=[("raw_mysql_new_session", "rate", "pymysql")], my_raw=("raw_mysql_new_session", "rate"),
            ))
            rows.append(Row(b, "", "raw sqlite3, WAL, synchronous=NORMAL", "rate", raw=("raw_new_session_normal", "rate", " (sync=NORMAL)")))
        elif b == "append_run":
            cps = sorted(z["checkpoints"])
            for i, c in enumerate(cps):
                rows.append(Row(b, f"us_at_{i}", f"µs per append at run {c:,} (median of {z['window']})", "us"))
            rows.append(Row(b, "ratio", f"ratio run {cps[-1]:,} / run {cps[0]:,}", "ratio",
                            target="≤ 1.5×", check=lambda be, v: v <= 1.5))
        elif b == "get_session":
            rows.append(Row(b, "us", f"get_session(runs={z['last']}) of a {z['runs']:,}-run session, µs (median)", "us",
                            target="postgres < 2 ms", check=targets(postgres=lambda v: v < 2000)))
        elif b == "list_sessions":
            rows.append(Row(
                b, "first_us",
                f"first page (limit={z['limit']}), {z['sessions']:,} sessions / {z['users']} users, µs (median)", "us",
                target="sqlite < 1 ms, postgres < 2 ms",
                check=targets(sqlite=lambda v: v < 1000, postgres=lambda v: v < 2000),
                baselines=[("raw_list_sessions", "first_us", "raw")], raw=("raw_list_sessions", "first_us"),
                pg_baselines=[("raw_pg_list_sessions", "first_us", "psycopg")],
                pg_raw=("raw_pg_list_sessions", "first_us"),
                my_baselines=[("raw_mysql_list_sessions", "first_us", "pymysql")],
                my_raw=("raw_mysql_list_sessions", "first_us"),
            ))
            rows.append(Row(
                b, "pages_mean_us", f"mean µs per page, pages 1-{z['pages']} via next_cursor", "us",
                baselines=[("raw_list_sessions", "pages_mean_us", "raw")], raw=("raw_list_sessions", "pages_mean_us"),
                pg_baselines=[("raw_pg_list_sessions", "pages_mean_us", "psycopg")],
                pg_raw=("raw_pg_list_sessions", "pages_mean_us"),
                my_baselines=[("raw_mysql_list_sessions", "pages_mean_us", "pymysql")],
                my_raw=("raw_mysql_list_sessions", "pages_mean_us"),
            ))
        elif b == "list_memories":
            rows.append(Row(b, "us", f"one topic, over {z['memories']:,} memories / {z['users']} users, µs (median)", "us"))
        elif b == "spans":
            rows.append(Row(
                b, "rate",
                f"spans/s: {z['batches']} write_spans of {z['batch']} spans ({z['traces_per_batch']} traces)", "rate",
                target="postgres ≥ 20,000/s", check=targets(postgres=lambda v: v >= 20000),
                pg_baselines=[("raw_pg_spans", "rate", "psycopg")], pg_raw=("raw_pg_spans", "rate"),
            ))
        elif b == "export_import":
            rows.append(Row(b, "export_s", f"export_jsonl, {z['sessions']:,} sessions + 1 run each, s", "s"))
            rows.append(Row(b, "import_s", "import_jsonl into a fresh db, s", "s"))
        elif b == "async_append":
            each = f"each appending {z['runs']:,} runs to its own session"
            rows.append(Row(b, "rate_async", f"runs/s, {z['tasks']} coroutines (asyncio.gather) {each}; "
                                             "async dbs, default pool_size (10; sqlite 4)", "rate",
                            target="report throughput; no errors, nothing lost", verdict="intact",
                            applies=is_async_backend))
            rows.append(Row(b, "rate_threads", f"runs/s, the same from {z['tasks']} threads "
                                               f"(ThreadPoolExecutor({z['tasks']})); sync dbs, default pool", "rate",
                            verdict="intact", applies=lambda be: not is_async_backend(be)))
            rows.append(Row(b, "p50_ms", "ms per append_run as its writer saw it, p50", "ms"))
            rows.append(Row(b, "p95_ms", "ms per append_run, p95", "ms"))
        elif b == "first_calls":
            each = f"{z['callers']} concurrent first list_sessions calls (threads; coroutines on an async db)"
            rows.append(Row(b, "present_ms", f"{each} on a new object over existing tables, ms", "ms",
                            target="no errors", verdict="no_errors"))
            rows.append(Row(b, "absent_ms", "the same on a new object over an empty store (it creates the tables), ms",
                            "ms"))
            rows.append(Row(b, "warm_ms", f"the same on a warm object, ms (median of {z['warm_reps']})", "ms"))
            rows.append(Row(b, "present_ratio", "new object over existing tables / warm", "ratio",
                            target="≤ 2×", check=lambda be, v: v <= 2))
            rows.append(Row(b, "absent_ratio", "new object over an empty store / warm", "ratio"))
            rows.append(Row(b, "raw_pool_ms", "async twins: the same burst on a new pool of the driver alone "
                                              "(psycopg_pool, aiomysql), ms", "ms"))
            rows.append(Row(b, "present_vs_raw", "new object over existing tables / new driver pool", "ratio"))
        raw_rss = {"new_session": ("raw_new_session_full", RSS), "list_sessions": ("raw_list_sessions", RSS)}.get(b)
        pg_rss = {"new_session": ("raw_pg_new_session", RSS), "list_sessions": ("raw_pg_list_sessions", RSS)}.get(b)
        my_rss = {"new_session": ("raw_mysql_new_session", RSS), "list_sessions": ("raw_mysql_list_sessions", RSS)}.get(b)
        if b == "export_import":
            rows.append(Row(b, RSS, "peak RSS of the process (export + import), MB", "mb",
                            target="< 300 MB", check=lambda be, v: v < 300))
        else:
            rows.append(Row(b, RSS, "peak RSS, MB", "mb", raw=raw_rss, pg_raw=pg_rss, my_raw=my_rss))
    return rows


def fmt(kind: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if kind == "ms":
        return f"{v:.1f} ms" if v < 100 else f"{v:,.0f} ms"
    if kind == "us":
        if v < 10:
            return f"{v:.1f} µs"
        return f"{v:,.0f} µs" if v < 10_000 else f"{v / 1000:,.1f} ms"
    if kind == "rate":
        return f"{v:,.0f}/s"
    if kind == "s":
        return f"{v:.2f} s" if v < 100 else f"{v:,.0f} s"
    if kind == "ratio":
        return f"{v:.2f}×"
    if kind == "mb":
        return f"{v:,.0f} MB"
    return str(v)


def metric(res: Optional[dict], key: str):
    if not res:
        return None
    if key == RSS:
        return res.get("rss_mb")
    return (res.get("metrics") or {}).get(key)


class Footnotes:
    def __init__(self):
        self.items: list[tuple[str, str]] = []  # (marker, text)
        self._by_case: dict = {}

    def mark(self, case_key, kind: str, text: str) -> str:
        k = (case_key, kind)
        if k not in self._by_case:
            marker = f"{'E' if kind == 'error' else 'I'}{len(self.items) + 1}"
            self.items.append((marker, text))
            self._by_case[k] = marker
        return self._by_case[k]


def build_table(rows: list[Row], backends: list[str], results: dict, show_raw: bool, show_raw_pg: bool = False,
                show_raw_my: bool = False):
    """-> (header, body rows as lists of str, footnotes)."""
    notes = Footnotes()
    header = (["Benchmark", "Metric", "Target", *backends] + (["raw sqlite3"] if show_raw else [])
              + (["raw psycopg"] if show_raw_pg else []) + (["raw pymysql"] if show_raw_my else []) + ["Notes"])
    body = []
    last_bench = None
    for row in rows:
        cells = [TITLES[row.bench] if row.bench != last_bench else "", row.label, row.target]
        first_of_bench = row.bench != last_bench
        last_bench = row.bench
        for be in backends:
            res = results.get((be, row.bench))
            cells.append(_cell(row, be, res, results, notes) if row.key else "")
        if show_raw:
            cells.append(_raw_cell(row, row.raw, RAW, results, notes))
        if show_raw_pg:
            cells.append(_raw_cell(row, row.pg_raw, RAW_PG, results, notes))
        if show_raw_my:
            cells.append(_raw_cell(row, row.my_raw, RAW_MY, results, notes))
        cells.append(_seed_note(row, backends, results) if first_of_bench else "")
        body.append(cells)
    return header, body, notes


def _raw_cell(row: Row, spec: Optional[tuple], raw_key: str, results: dict, notes: Footnotes) -> str:
    if not spec:
        return ""
    case, key, suffix = (*spec, "")[:3]
    rres = results.get((raw_key, case))
    v = metric(rres, key)
    if v is not None:
        return fmt(row.fmt, v) + suffix
    if rres and (rres.get("error") or rres.get("infeasible")):
        return _problem(rres, (raw_key, case), notes)
    return ""


def _problem(res: dict, case_key, notes: Footnotes) -> str:
    if res.get("error"):
        last = res["error"].strip().splitlines()[-1]
        return f"error [{notes.mark(case_key, 'error', last)}]"
    return f"infeasible [{notes.mark(case_key, 'infeasible', res['infeasible'])}]"


def _cell(row: Row, be: str, res: Optional[dict], results: dict, notes: Footnotes) -> str:
    if res is None:
        return "not run"
    if res.get("skipped") or (row.applies and not row.applies(be)):
        return ""  # the case or the row does not apply to this backend (the notes say why)
    v = metric(res, row.key)
    if v is None:
        if res.get("error") or res.get("infeasible"):
            return _problem(res, (be, row.bench), notes)
        return "—"
    text = fmt(row.fmt, v) + ("*" if res.get("overridden") else "")
    ok = row.check(be, v) if row.check else metric(res, row.verdict) if row.verdict else None
    if ok is not None:
        text += " ✓" if ok else " ✗"
    ratios = []
    # an async twin (postgres_async) is compared with its sync backend's raw driver
    raw_key, baselines = {"postgres": (RAW_PG, row.pg_baselines), "mysql": (RAW_MY, row.my_baselines)}.get(
        base_backend(be), (RAW, row.baselines))
    for case, key, short in baselines:
        base = metric(results.get((raw_key, case)), key)
        if base:
            r = (base / v) if row.fmt == "rate" else (v / base)
            ratios.append(f"{_ratio(r)}× {short}")
    if ratios:
        text += f" ({', '.join(ratios)})"
    if res.get("error") or res.get("infeasible"):
        text += f" [{_problem(res, (be, row.bench), notes).split('[')[1]}"
    return text


def _ratio(r: float) -> str:
    return f"{r:.1f}" if r >= 0.95 else f"{r:.2g}"


def _seed_note(row: Row, backends: list[str], results: dict) -> str:
    parts = []
    for be in backends:
        s = metric(results.get((be, row.bench)), "seed_s")
        if s is not None:
            parts.append(f"{be} {s:.1f} s")
    return ("seeding: " + ", ".join(parts)) if parts else ""


def to_markdown(header, body) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in body:
        lines.append("| " + " | ".join(esc(c) for c in r) + " |")
    return "\n".join(lines)


def to_rich(header, body, title: str):
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if 3 <= i < len(header) - 1 else "left",
                         overflow="fold", no_wrap=False)
    prev = None
    for r in body:
        if r[0] and prev is not None:
            table.add_section()
        table.add_row(*r)
        prev = r
    return table
