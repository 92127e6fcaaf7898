"""The daily metrics rollup, `db.refresh_metrics()`, on a day of 100,000 runs:

    python -m bench.metrics [--runs 100000] [--backends sqlite,postgres] [--markdown FILE]

Per backend, a fresh db (SQLite: a file in a temp dir; PostgreSQL: the local server, a
schema of its own, dropped afterwards) is loaded with `import_jsonl` (one transaction) with
one day (yesterday, UTC) of sessions of 10 runs each (`--per-session`), spread over the day,
from 50 users, 5 agents and 3 models, one run in 20 with status "error", every run with
tokens, a cost and `metrics.duration_ms`. Then, timed:

- the first `refresh_metrics()` (no watermark yet: every run and session is new);
- a second one right after, nothing changed;
- a third one after 100 runs (`--append`) were appended with `append_run` to sessions of
  that day, with created_at in that day (an incremental refresh).

Each figure gives the rows the refresh wrote (one row for all users and one per user active
that day) and the seconds. A check after the last refresh reads the day back with
`get_metrics` (the runs, errors and sessions of the all-users row must be what was loaded).

Baselines in the same run, on the same db: the day's runs read with the raw driver (sqlite3
/ psycopg; the same columns and range `refresh_metrics` reads, JSON decoded), and
`metrics_rows` (the pure-Python fold of those runs into the day's rows) alone, so the
refresh's time can be set against what reading the day and folding it cost."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

PG_URL = os.environ.get("AGENTKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "agentkeep_"  # the dbs' default table prefix
UTC = dt.timezone.utc
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku")
FIELDS = ("run_id", "user_id", "agent_id", "team_id", "workflow_id", "status", "metrics")
perf = time.perf_counter


def dump(day: dt.date, runs: int, per_session: int, users: int, agents: int) -> tuple[str, dict]:
    """The day as an export_jsonl dump: (the text, what the all-users row must count)."""
    from agentkeep.db.models import Run, RunMetrics, Session

    rnd = random.Random(7)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    sessions = runs // per_session
    step = (86_400 - 60 * per_session) / sessions  # every run of every session inside the day
    header = {"format": "agentkeep-export", "version": 1, "tables": ["sessions", "runs"]}
    session_lines, run_lines = [], []
    errors = 0
    for i in range(sessions):
        sid, user, agent = f"s{i:06d}", f"u{i % users:03d}", f"agent-{i % agents}"
        began = start + dt.timedelta(seconds=i * step)
        last = began + dt.timedelta(seconds=60 * per_session)
        session = Session(session_id=sid, user_id=user, agent_id=agent, name=f"session {i}", revision=1,
                          created_at=began, updated_at=last)
        session_lines.append(json.dumps({"table": "sessions", "record": session.model_dump(mode="json"),
                                         "internal": {"last_seq": per_session}}, separators=(",", ":")))
        for seq in range(1, per_session + 1):
            created = began + dt.timedelta(seconds=60 * (seq - 1) + rnd.uniform(0, 30))
            duration = rnd.lognormvariate(7.5, 0.6)  # ms; median ~1.8 s
            tokens_in, tokens_out = rnd.randint(200, 4000), rnd.randint(20, 600)
            status = "error" if rnd.random() < 0.05 else "completed"
            errors += status == "error"
            run = Run(
                run_id=f"{sid}-r{seq:02d}", session_id=sid, user_id=user, agent_id=agent, seq=seq, status=status,
                input=f"question {seq} of session {i}", content=f"answer {seq} of session {i}: " + "text " * 20,
                messages=[{"role": "user", "content": f"question {seq}"},
                          {"role": "assistant", "content": "text " * 20}],
                metrics=RunMetrics(input_tokens=tokens_in, output_tokens=tokens_out,
                                   total_tokens=tokens_in + tokens_out, cost=round(tokens_in * 1.5e-7, 8),
                                   duration_ms=round(duration, 1), model=MODELS[(i + seq) % len(MODELS)]),
                created_at=created, updated_at=created + dt.timedelta(milliseconds=duration))
            run_lines.append(json.dumps({"table": "runs", "record": run.model_dump(mode="json")},
                                        separators=(",", ":")))
    text = "\n".join([json.dumps(header), *session_lines, *run_lines]) + "\n"
    return text, {"runs": sessions * per_session, "errors": errors, "sessions": sessions}


def appended(day: dt.date, n: int, sessions: int, users: int, agents: int) -> list:
    """`n` runs for sessions spread over the day, created late in the day."""
    from agentkeep.db.models import Run, RunMetrics

    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    out = []
    for k in range(n):
        i = k * (sessions // n)
        out.append(Run(run_id=f"late-{k:04d}", session_id=f"s{i:06d}", user_id=f"u{i % users:03d}",
                       agent_id=f"agent-{i % agents}", status="error" if k % 10 == 0 else "completed",
                       input="one more question", content="one more answer",
                       metrics=RunMetrics(input_tokens=300, output_tokens=40, total_tokens=340, cost=4.5e-5,
                                          duration_ms=1500.0, model=MODELS[0]),
                       created_at=start + dt.timedelta(hours=23, minutes=59, seconds=k * 0.5)))
    return out


def timed(call) -> tuple[float, object]:
    began = perf()
    result = call()
    return perf() - began, result


def raw_read(backend: str, where: str, schema: str, day: dt.date) -> tuple[float, list[dict]]:
    """The day's runs, the columns refresh_metrics reads, with the raw driver (JSON decoded)."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + dt.timedelta(days=1)
    cols = ", ".join(FIELDS)
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            # the time columns' stored form, as the db wrote them
            sample = con.execute(f"SELECT created_at FROM {PREFIX}runs LIMIT 1").fetchone()[0]
            lo, hi = (start, end) if not isinstance(sample, str) else (_like(sample, start), _like(sample, end))
            if isinstance(sample, (int, float)):
                lo, hi = _epoch_like(sample, start), _epoch_like(sample, end)
            began = perf()
            rows = con.execute(f"SELECT {cols} FROM {PREFIX}runs WHERE created_at >= ? AND created_at < ? "
                               "ORDER BY created_at, run_id", (lo, hi)).fetchall()
            out = [dict(zip(FIELDS, r[:-1] + (json.loads(r[-1]) if r[-1] else None,))) for r in rows]
            return perf() - began, out
        finally:
            con.close()
    import psycopg

    with psycopg.connect(PG_URL) as con:
        began = perf()
        rows = con.execute(f'SELECT {cols} FROM "{schema}".{PREFIX}runs WHERE created_at >= %s AND created_at < %s '
                           "ORDER BY created_at, run_id", (start, end)).fetchall()
        out = [dict(zip(FIELDS, r)) for r in rows]
        return perf() - began, out


def _like(sample: str, t: dt.datetime) -> str:
    """`t` written as the sample time text is (ISO with a T or a space, with or without an offset)."""
    text = t.isoformat(sep="T" if "T" in sample else " ", timespec="microseconds")
    if not (sample.endswith("+00:00") or sample.endswith("Z")):
        text = text.replace("+00:00", "")
    return text.replace("+00:00", "Z") if sample.endswith("Z") else text


def _epoch_like(sample: float, t: dt.datetime) -> float:
    scale = 1_000_000 if sample > 1e14 else 1_000 if sample > 1e11 else 1
    return t.timestamp() * scale


def run_backend(backend: str, args, work: str) -> dict:
    from agentkeep.db import connect
    from agentkeep.db.metrics import metrics_rows

    day = (dt.datetime.now(UTC) - dt.timedelta(days=1)).date()
    schema = f"bench_metrics_{os.getpid()}"
    where = f"{work}/metrics.db"
    url = f"sqlite:///{where}" if backend == "sqlite" else f"{PG_URL}?db_schema={schema}"
    text, expected = dump(day, args.runs, args.per_session, args.users, args.agents)
    db = connect(url)
    out: dict = {"backend": backend, "day": day}
    try:
        source, text = io.StringIO(text), ""  # one copy of the dump in memory
        out["seed_s"], _ = timed(lambda: db.import_jsonl(source))
        source.close()
        if backend == "postgres":  # the planner sees the loaded tables as they are
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as con:
                con.execute(f'ANALYZE "{schema}".{PREFIX}runs')
                con.execute(f'ANALYZE "{schema}".{PREFIX}sessions')
        out["first_s"], out["first_rows"] = timed(db.refresh_metrics)
        out["again_s"], out["again_rows"] = timed(db.refresh_metrics)
        late = appended(day, args.append, expected["runs"] // args.per_session, args.users, args.agents)
        out["append_s"], _ = timed(lambda: [db.append_run(r) for r in late])
        out["incr_s"], out["incr_rows"] = timed(db.refresh_metrics)
        got = db.get_metrics(start_date=day, end_date=day)
        want = (expected["runs"] + len(late), expected["errors"] + sum(r.status == "error" for r in late),
                expected["sessions"])
        have = (got[0].agent_runs, got[0].errors, got[0].sessions) if got else None
        out["check"] = have == want
        out["check_text"] = f"all-users row (runs, errors, sessions) {have}, expected {want}"
        out["raw_s"], rows = raw_read(backend, where, schema, day)
        out["raw_rows"] = len(rows)
        now = dt.datetime.now(UTC)
        out["fold_s"], _ = timed(lambda: metrics_rows(day, rows, [{"user_id": f"u{i % args.users:03d}"}
                                                                  for i in range(expected["sessions"])], now))
    finally:
        db.close()
        if backend == "postgres":
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return out


def server_line() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as con:
            version = con.execute("SHOW server_version").fetchone()[0].split()[0]
            sync = con.execute("SHOW synchronous_commit").fetchone()[0]
        return f"PostgreSQL {version} (synchronous_commit={sync})"
    except Exception as exc:  # noqa: BLE001 - any failure: not reachable
        return f"PostgreSQL not reachable ({type(exc).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--per-session", type=int, default=10)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--append", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=220)  # piped: do not wrap at 80 columns
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    load = os.getloadavg()[0]
    results = []
    for backend in backends:
        work = tempfile.mkdtemp(prefix="bench-metrics-")
        try:
            results.append(run_backend(backend, args, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    sessions = args.runs // args.per_session
    title = (f"refresh_metrics, one day of {args.runs:,} runs ({sessions:,} sessions, {args.users} users, "
             f"{args.agents} agents); {os.cpu_count()} cores, load average {load:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after; {server_line() if 'postgres' in backends else ''}")
    header = ["step", *[r["backend"] for r in results]]
    lines = [
        ("loaded with import_jsonl (not a figure)", lambda r: f"{r['seed_s']:.1f} s"),
        ("1. first refresh (no watermark): rows written, s", lambda r: f"{r['first_rows']} rows, {r['first_s']:.2f} s"),
        ("2. again, nothing changed", lambda r: f"{r['again_rows']} rows, {r['again_s'] * 1000:.1f} ms"),
        (f"{args.append} runs appended to the day (not a figure)", lambda r: f"{r['append_s']:.2f} s"),
        ("3. refresh after the append", lambda r: f"{r['incr_rows']} rows, {r['incr_s']:.2f} s"),
        ("check: get_metrics of the day", lambda r: "✓" if r["check"] else f"✗ {r['check_text']}"),
        ("baseline: the day's runs read with the raw driver, s",
         lambda r: f"{r['raw_rows']:,} runs, {r['raw_s']:.2f} s"),
        ("baseline: metrics_rows on them (the fold alone), s", lambda r: f"{r['fold_s']:.2f} s"),
        ("refresh 3 / (raw read + fold)", lambda r: f"{r['incr_s'] / (r['raw_s'] + r['fold_s']):.1f}×"),
    ]
    body = [[label, *[cell(r) for r in results]] for label, cell in lines]
    table = Table(title=title, header_style="bold")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    console.print(table)
    if args.markdown:
        md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
              *["| " + " | ".join(row) + " |" for row in body]]
        Path(args.markdown).write_text(title + "\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
