"""Schedules on PostgreSQL: claims per second, and the lag from a tick to its job:

    python -m bench.scheduler [--schedules 10000] [--workers 3] [--only claims,burst,steady]

Every case runs on the local server (`$AGENTKEEP_BENCH_PG`) in a fresh schema of its own,
dropped afterwards, loaded with `--schedules` schedules by `import_jsonl`. Worker and
scheduler processes are started with multiprocessing (spawn), each with its own PostgresDb
(its own connections).

claims: every schedule is due. Each worker process loops `claim_due_schedules(worker_id=...,
limit=50, lease_seconds=30)` and `release_schedule(id, worker_id=..., next_run_at=<a day
later>)` of each schedule it claimed, until a claim comes back empty; the clock runs from a
barrier all workers pass to the last worker's end. Figure: schedules claimed and released
per second, overall. Checks: no id was claimed twice (the ids the workers report), and every
schedule's revision in the db went up by exactly 2 (one claim, one release). Baseline, in the
same run: 1 worker.

burst and steady: the real scheduler, `AgentOS(agents=[], db=PostgresDb(...), jobs=False)`'s
`scheduler.serve()` (poll every `--poll` s, 1 s as AgentOS's default; batches of 50) in each
of `--workers` processes. A tick becomes a `schedule.fire` job whose `created_at` is when it
was queued; lag = created_at - payload["tick_at"]. The schedules are loaded with their next
tick a day ahead; once every scheduler process polls, one transaction moves the next ticks to
the times below, so the ticks fall due while the schedulers run.
- burst: every schedule due at one instant T (cron `0 0 * * *`, next tick T = 1 s after the
  move). Figures over the 10,000 ticks: lag p50 / p99 / max, and ticks queued per second
  (10,000 over the time from the first job to the last). Baseline: 1 scheduler process.
- steady: schedule i has cron `<i % 60> * * * * *` (second i % 60 of every minute): 10,000
  ticks a minute, ~167 a second, evenly. Figures over the ticks of one minute from T (each
  schedule fires once in it): lag p50 / p99 / max.
Each also gives the schedulers' CPU time per tick (user + system of their processes).
Checks: one job per schedule and tick, each tick the one expected."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
import uuid
from pathlib import Path

PG_URL = os.environ.get("AGENTKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "agentkeep_"  # the dbs' default table prefix
FIRE = "schedule.fire"
UTC = dt.timezone.utc
BATCH = 50
LATER = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def db_url(schema: str) -> str:
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}db_schema={schema}"


def raw():
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def seed(schema: str, n: int, cron_of, next_run_at: dt.datetime) -> float:
    """`n` schedules (ids s00000..) loaded with import_jsonl; the seconds it took."""
    from agentkeep.db import connect
    from agentkeep.db.models import Schedule, ScheduleTarget

    now = _now()
    target = ScheduleTarget(type="agent", id="support", payload={"message": "the daily report"})
    lines = [json.dumps({"format": "agentkeep-export", "version": 1, "tables": ["schedules"]})]
    for i in range(n):
        s = Schedule(id=f"s{i:05d}", name=f"schedule {i}", cron=cron_of(i), target=target, next_run_at=next_run_at,
                     user_id=f"u{i % 50:02d}", revision=1, created_at=now, updated_at=now)
        lines.append(json.dumps({"table": "schedules", "record": s.model_dump(mode="json")}, separators=(",", ":")))
    db = connect(db_url(schema))
    try:
        db.list_jobs(limit=1)  # the tables exist before any worker starts
        began = time.perf_counter()
        db.import_jsonl(io.StringIO("\n".join(lines) + "\n"))
        took = time.perf_counter() - began
    finally:
        db.close()
    with raw() as con:  # the planner sees the loaded table as it is
        con.execute(f'ANALYZE "{schema}".{PREFIX}schedules')
    return took


def drop(schema: str) -> None:
    with raw() as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- claims ----------------------------------------------------------------------------------


def claimer(url: str, worker_id: str, barrier, out) -> None:
    """A worker process: claim and release until nothing is due; reports what it claimed."""
    from agentkeep.db import connect

    db = connect(url)
    try:
        db.get_schedule("warm-up")  # a pooled connection is open before the clock starts
        later = _now() + LATER
        ids: list[str] = []
        claim_s: list[float] = []
        release_s: list[float] = []
        barrier.wait()
        began = time.monotonic()
        while True:
            t = time.perf_counter()
            claimed = db.claim_due_schedules(worker_id=worker_id, limit=BATCH, lease_seconds=30)
            claim_s.append(time.perf_counter() - t)
            if not claimed:
                break
            for schedule in claimed:
                t = time.perf_counter()
                db.release_schedule(schedule.id, worker_id=worker_id, next_run_at=later)
                release_s.append(time.perf_counter() - t)
                ids.append(schedule.id)
        out.put({"ids": ids, "began": began, "ended": time.monotonic(), "claim_s": claim_s,
                 "release_s": release_s})
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        db.close()


def claims(n: int, workers: int, tag: str) -> dict:
    schema = f"bench_sched_{tag}_claims{workers}"
    ctx = mp.get_context("spawn")
    try:
        seed_s = seed(schema, n, lambda i: "0 * * * *", _now() - dt.timedelta(minutes=5))
        barrier, out = ctx.Barrier(workers), ctx.Queue()
        procs = [ctx.Process(target=claimer, args=(db_url(schema), f"w{k}", barrier, out)) for k in range(workers)]
        for p in procs:
            p.start()
        reports = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        errors = [r["error"] for r in reports if "error" in r]
        if errors:
            raise RuntimeError("; ".join(errors))
        ids = [i for r in reports for i in r["ids"]]
        seconds = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
        with raw() as con:
            revisions = dict(con.execute(f'SELECT revision, count(*) FROM "{schema}".{PREFIX}schedules '
                                         "GROUP BY revision").fetchall())
        claim_s = [s for r in reports for s in r["claim_s"]]
        release_s = [s for r in reports for s in r["release_s"]]
        return {"workers": workers, "n": n, "seed_s": seed_s, "claimed": len(ids), "twice": len(ids) - len(set(ids)),
                "seconds": seconds, "rate": len(set(ids)) / seconds, "revisions": revisions,
                "intact": revisions == {3: n} and len(set(ids)) == n == len(ids),
                "claim_p50_ms": percentile(claim_s, 0.5) * 1000, "release_p50_ms": percentile(release_s, 0.5) * 1000,
                "per_worker": [len(r["ids"]) for r in reports]}
    finally:
        drop(schema)


# -- the scheduler ---------------------------------------------------------------------------


def scheduler_process(url: str, poll: float, ready, stop, out) -> None:
    """AgentOS's scheduler polling until `stop` is set; reports the process's CPU seconds."""
    from agentkeep.db import connect
    from agentkeep.os import AgentOS

    db = connect(url)
    try:
        db.list_jobs(limit=1)  # a pooled connection is open before the ticks fall due
        agent_os = AgentOS(agents=[], db=db, jobs=False, sweep_seconds=None, metrics_seconds=None,
                           approvals_sweep_seconds=None, schedule_poll_seconds=poll)

        async def serve() -> None:
            task = asyncio.create_task(agent_os.scheduler.serve())
            await asyncio.sleep(0)
            ready.put(os.getpid())
            cpu = cpu_seconds()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            out.put(cpu_seconds() - cpu)

        asyncio.run(serve())
    finally:
        db.close()


def ticks(n: int, workers: int, poll: float, kind: str, tag: str, deadline_s: float) -> dict:
    """kind "burst" (every schedule due at one instant) or "steady" (one tick a minute each,
    at second i % 60)."""
    from agentkeep.db import connect

    schema = f"bench_sched_{tag}_{kind}{workers}"
    cron_of = (lambda i: "0 0 * * *") if kind == "burst" else (lambda i: f"{i % 60} * * * * *")
    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = []
    try:
        seed_s = seed(schema, n, cron_of, _now() + LATER)
        url = db_url(schema)
        procs = [ctx.Process(target=scheduler_process, args=(url, poll, ready, stop, out)) for _ in range(workers)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=120)
        time.sleep(2 * poll)  # each has polled (and found nothing due) at least once
        table = f'"{schema}".{PREFIX}schedules'
        with raw() as con:
            start = (_now() + dt.timedelta(seconds=1)).replace(microsecond=0) + dt.timedelta(seconds=1)
            expected: dict[str, dt.datetime] = {}
            with con.transaction():
                if kind == "burst":
                    con.execute(f"UPDATE {table} SET next_run_at = %s", (start,))
                    expected = {f"s{i:05d}": start for i in range(n)}
                else:
                    for second in range(60):
                        tick = start + dt.timedelta(seconds=(second - start.second) % 60)
                        con.execute(f"UPDATE {table} SET next_run_at = %s WHERE cron = %s",
                                    (tick, f"{second} * * * * *"))
                        expected.update({f"s{i:05d}": tick for i in range(second, n, 60)})
            moved = _now()
            # the ticks measured: T's (burst), or those of the minute from T (steady)
            end = start + (dt.timedelta(seconds=60) if kind == "steady" else dt.timedelta(milliseconds=1))
            window = (f"SELECT count(*) FROM \"{schema}\".{PREFIX}jobs WHERE kind = %s "
                      "AND (payload->>'tick_at')::timestamptz < %s")
            limit = time.monotonic() + deadline_s + (end - _now()).total_seconds()
            while True:
                queued = con.execute(window, (FIRE, end)).fetchone()[0]
                if (queued >= n and _now() > end) or time.monotonic() > limit:
                    break
                time.sleep(0.2)
        stop.set()
        cpu = sum(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(60)
        db = connect(url)
        try:
            jobs, cursor = [], None
            while True:
                page = db.list_jobs(kind=FIRE, limit=1000, cursor=cursor)
                jobs += page.items
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        finally:
            db.close()
        mine = [(j, dt.datetime.fromisoformat(j.payload["tick_at"])) for j in jobs]
        mine = [(j, t) for j, t in mine if t < end]
        lags = [(j.created_at - t).total_seconds() for j, t in mine]
        got = {}
        for j, t in mine:
            got.setdefault(j.payload["schedule_id"], []).append(t)
        created = sorted(j.created_at for j, _ in mine)
        spread = (created[-1] - created[0]).total_seconds() if len(created) > 1 else math.nan
        return {"kind": kind, "workers": workers, "n": n, "seed_s": seed_s, "ticks": len(mine),
                "moved_before_s": (start - moved).total_seconds(),
                "p50_ms": percentile(lags, 0.5) * 1000, "p99_ms": percentile(lags, 0.99) * 1000,
                "max_ms": max(lags) * 1000 if lags else math.nan,
                "rate": len(mine) / spread if kind == "burst" else len(mine) / 60,
                "drain_s": (created[-1] - start).total_seconds() if created else math.nan,
                "cpu_ms_per_tick": cpu / max(len(mine), 1) * 1000, "cpu_s": cpu,
                "intact": got == {k: [v] for k, v in expected.items()}}
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
        drop(schema)


# -- the report ------------------------------------------------------------------------------


def server_line() -> str:
    import psycopg

    with raw() as con:
        version = con.execute("SHOW server_version").fetchone()[0].split()[0]
        sync = con.execute("SHOW synchronous_commit").fetchone()[0]
    return f"PostgreSQL {version} (synchronous_commit={sync}), psycopg {psycopg.__version__}"


def render(title: str, header: list[str], body: list[list[str]], console, md: list[str]) -> None:
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    console.print(table)
    md += [f"{title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
           *["| " + " | ".join(row) + " |" for row in body], ""]


def check(ok: bool) -> str:
    return "✓" if ok else "✗"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler")
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--poll", type=float, default=1.0, help="the schedulers' poll_seconds")
    parser.add_argument("--only", default="claims,burst,steady")
    parser.add_argument("--markdown", help="also write the tables as markdown to this file")
    args = parser.parse_args()

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=220)  # piped: do not wrap at 80 columns
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    tag = uuid.uuid4().hex[:6]
    n, k = args.schedules, args.workers
    head = f"{os.cpu_count()} cores, {server_line()}, load average {os.getloadavg()[0]:.1f} at start"
    console.print(head)
    md = [head, ""]
    began = time.monotonic()
    if "claims" in only:
        results = [claims(n, 1, tag), claims(n, k, tag)]
        header = ["workers", "claimed + released /s", "vs 1 worker", "s", "claim(limit=50) p50 ms",
                  "release p50 ms", "claimed twice", "each claimed once", "per worker", "loaded in"]
        body = [[f"{r['workers']}" + (" (baseline)" if r["workers"] == 1 else ""), f"{r['rate']:,.0f}",
                 f"{r['rate'] / results[0]['rate']:.2f}×", f"{r['seconds']:.1f}", f"{r['claim_p50_ms']:.1f}",
                 f"{r['release_p50_ms']:.2f}", f"{r['twice']}", check(r["intact"]),
                 " / ".join(f"{c:,}" for c in r["per_worker"]), f"{r['seed_s']:.1f} s"] for r in results]
        render(f"claim_due_schedules + release_schedule, {n:,} due schedules", header, body, console, md)
    rows = []
    if "burst" in only:
        rows += [ticks(n, 1, args.poll, "burst", tag, 120), ticks(n, k, args.poll, "burst", tag, 120)]
    if "steady" in only:
        rows.append(ticks(n, k, args.poll, "steady", tag, 60))
    if rows:
        header = ["ticks", "scheduler processes", "lag p50 ms", "lag p99 ms", "lag max ms", "ticks queued /s",
                  "last job after T, s", "scheduler CPU ms / tick", "one job per tick"]
        body = []
        for r in rows:
            what = (f"burst: {r['ticks']:,} due at one instant T" if r["kind"] == "burst"
                    else f"steady: {r['ticks']:,} in a minute from T, ~{r['n'] / 60:.0f}/s")
            body.append([what, f"{r['workers']}" + (" (baseline)" if r["workers"] == 1 else ""),
                         f"{r['p50_ms']:,.0f}", f"{r['p99_ms']:,.0f}", f"{r['max_ms']:,.0f}",
                         f"{r['rate']:,.0f}" + (" (offered)" if r["kind"] == "steady" else ""),
                         f"{r['drain_s']:.1f}", f"{r['cpu_ms_per_tick']:.2f}", check(r["intact"])])
        render(f"Scheduler.serve() (poll_seconds={args.poll:g}, batch {BATCH}) in its own processes, "
               f"{n:,} schedules: lag = job.created_at - tick", header, body, console, md)
        for r in rows:
            if r["moved_before_s"] < 0:
                console.print(f"note: the ticks of {r['kind']} x{r['workers']} were moved {-r['moved_before_s']:.2f} s "
                              "after T (the lag includes it)")
    tail = f"total {time.monotonic() - began:.0f} s, load average {os.getloadavg()[0]:.1f} at the end"
    console.print(tail)
    md.append(tail)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
