"""The agentkeep benchmarks. Each runs in its own child process (bench/child.py) with a
fresh db in a temp dir and fills `ctx.metrics` (figures) and `ctx.notes` (short strings).
"""

from __future__ import annotations

import gc
import importlib
import os
import sqlite3
from statistics import fmean

from bench import data
from bench.common import Progress, RssSampler, med, perf, server, timed_us

BACKEND_MODULES = {
    "inmemory": ("agentkeep.db.in_memory", "InMemoryDb"),
    "sqlite": ("agentkeep.db.sqlite", "SqliteDb"),
    "json": ("agentkeep.db.json", "JsonDb"),
    "postgres": ("agentkeep.db.postgres", "PostgresDb"),
    "mysql": ("agentkeep.db.mysql", "MysqlDb"),
}

# Server backends: every make_db gets its own new schema (a database on MySQL), named
# SCHEMA_PREFIX + a counter (the child sets the prefix from its spec); the child drops them
# all after the case.
SCHEMA_PREFIX = "bench_"
SCHEMAS: list[str] = []


def backend_class(backend: str):
    # BENCH_BACKEND_OVERRIDE="sqlite=pkg.mod:Class,..." swaps in another class (harness self-test,
    # or benchmarking an alternative implementation with the same constructor arguments).
    overrides = dict(
        item.split("=", 1) for item in os.environ.get("BENCH_BACKEND_OVERRIDE", "").split(",") if "=" in item
    )
    if backend in overrides:
        mod, cls = overrides[backend].split(":")
    else:
        mod, cls = BACKEND_MODULES[backend]
    return getattr(importlib.import_module(mod), cls)


def make_db(backend: str, location: str):
    """A fresh db of `backend` whose files (if any) live under the empty dir `location`."""
    cls = backend_class(backend)
    os.makedirs(location, exist_ok=True)
    if backend == "inmemory":
        return cls()
    if backend == "sqlite":
        return cls(db_file=os.path.join(location, "agentkeep.db"))
    if backend == "json":
        return cls(path=os.path.join(location, "keep"))
    schema = f"{SCHEMA_PREFIX}{len(SCHEMAS)}"
    if backend == "postgres":
        from bench import pg

        SCHEMAS.append(schema)
        return cls(db_url=pg.url(), db_schema=schema)
    if backend == "mysql":
        from bench import mysql

        SCHEMAS.append(schema)
        return cls(db_url=mysql.create_schema(schema))
    raise ValueError(backend)


def close(db) -> None:
    fn = getattr(db, "close", None)
    if fn is not None:
        fn()


def models():
    import agentkeep.db as m

    return m


def users(n: int) -> list[str]:
    return [f"user-{i:03d}" for i in range(n)]


# --------------------------------------------------------------------------- 1. first boot
def first_boot(ctx) -> None:
    m = models()
    t0 = perf()
    backend_class(ctx.backend)  # import cost is reported as a note, not in the figure
    ctx.note(f"import {1000 * (perf() - t0):.0f} ms")
    times = []
    for i in range(ctx.sizes["reps"]):
        session = m.Session(user_id="user-000", agent_id="support-agent")
        t0 = perf()
        db = make_db(ctx.backend, ctx.path(f"boot{i}"))
        db.upsert_session(session)
        times.append(1000 * (perf() - t0))
        close(db)
    ctx.metrics["boot_ms"] = med(times)
    ctx.note(f"1st in process {times[0]:.1f} ms, max {max(times):.1f} ms")


# --------------------------------------------------------------- 2. new session + first run
def new_session(ctx) -> None:
    m = models()
    n = ctx.sizes["n"]
    db = ctx.fresh_db()
    rnd = data.seed("new_session")
    us = users(100)
    warm = m.Session(user_id=us[0], **data.session_payload(rnd, -1))
    db.upsert_session(warm)  # tables exist before timing
    db.append_run(m.Run(session_id=warm.session_id, user_id=us[0], **data.run_payload(rnd, 0)))
    pairs = []
    for i in range(n):
        s = m.Session(user_id=us[i % 100], **data.session_payload(rnd, i))
        pairs.append((s, m.Run(session_id=s.session_id, user_id=s.user_id, **data.run_payload(rnd, 0))))
    progress = Progress(f"{n:,} x (upsert_session + append_run)", n, ctx.budget)
    t0 = perf()
    for i, (s, r) in enumerate(pairs):
        db.upsert_session(s)
        db.append_run(r)
        if i % 100 == 99:
            progress.check(i + 1)
    ctx.metrics["rate"] = n / (perf() - t0)
    if ctx.backend == "sqlite":
        ctx.note(sqlite_pragmas(ctx.path("db")))
    if server(ctx.backend):
        ctx.note(server_settings(ctx.backend))


def pg_after_analyze(ctx, tables: list[str], fn, calls: int) -> None:
    """PostgreSQL only, a note (never a figure): the figure was measured on freshly seeded
    tables as autovacuum left them; say when they were last analyzed, then ANALYZE the
    case's schema and time `fn` again (median µs of `calls`)."""
    if ctx.backend != "postgres" or not SCHEMAS:
        return
    from bench import pg

    schema = SCHEMAS[-1]
    try:
        with pg.connect(autocommit=True) as con:
            stats = []
            for t in tables:
                row = con.execute(
                    "SELECT n_live_tup, n_mod_since_analyze, "
                    "extract(epoch FROM now() - greatest(last_analyze, last_autoanalyze)) "
                    "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                    (schema, f"agentkeep_{t}")).fetchone()
                if row:
                    ago = "never analyzed" if row[2] is None else f"auto-analyzed {float(row[2]):.0f} s before"
                    stats.append(f"{t}: {ago}, {row[1]:,} rows changed since")
            names = [r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
            for name in names:
                con.execute(f'ANALYZE "{schema}"."{name}"')
        times = [timed_us(fn)[1] for _ in range(calls)]
        ctx.note(f"at measurement {'; '.join(stats)}; after an explicit ANALYZE: {med(times):,.0f} µs median "
                 f"(not the figure)")
    except Exception as exc:  # noqa: BLE001 - informative only
        ctx.note(f"ANALYZE re-measure failed: {type(exc).__name__}: {exc}")


def server_settings(backend: str) -> str:
    srv = server(backend)
    try:
        with srv.connect(autocommit=True) as con:
            return "server " + srv.server_settings(con)
    except Exception as exc:  # noqa: BLE001 - informative only
        return f"server settings: {exc}"


def sqlite_pragmas(location: str) -> str:
    path = os.path.join(location, "agentkeep.db")
    try:
        con = sqlite3.connect(path)
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        con.close()
        return f"file journal_mode={mode}"
    except sqlite3.Error as exc:  # pragma: no cover - informative only
        return f"journal_mode: {exc}"


# ----------------------------------------------------------------------- 3. append_run cost
def append_run(ctx) -> None:
    m = models()
    checkpoints = sorted(ctx.sizes["checkpoints"])
    window = ctx.sizes["window"]
    db = ctx.fresh_db()
    rnd = data.seed("append_run")
    s = db.upsert_session(m.Session(user_id="user-000", **data.session_payload(rnd, 0)))
    last = checkpoints[-1] + window - 1
    timed: dict[int, list[float]] = {c: [] for c in checkpoints}
    progress = Progress(f"{last:,} append_run on one session", last, ctx.budget)
    done_cp = 0
    try:
        for i in range(1, last + 1):  # i = the run number being appended
            run = m.Run(session_id=s.session_id, user_id="user-000", **data.run_payload(rnd, i))
            _, us = timed_us(db.append_run, run)
            for c in checkpoints:
                if c <= i < c + window:
                    timed[c].append(us)
            while done_cp < len(checkpoints) and i == checkpoints[done_cp] + window - 1:
                ctx.metrics[f"us_at_{done_cp}"] = med(timed[checkpoints[done_cp]])
                done_cp += 1
            if i % 100 == 0:
                progress.check(i)
    finally:
        ctx.metrics["checkpoints"] = checkpoints
    ctx.metrics["ratio"] = ctx.metrics[f"us_at_{len(checkpoints) - 1}"] / ctx.metrics["us_at_0"]
    got = db.get_session(s.session_id, runs=1)
    if got is None or not got.runs or got.runs[-1].seq is None:
        ctx.note("check: get_session(runs=1) returned no run with a seq")


# ---------------------------------------------------------------------- 4. get_session(10)
def get_session(ctx) -> None:
    m = models()
    n_runs, last, calls = ctx.sizes["runs"], ctx.sizes["last"], ctx.sizes["calls"]
    db = ctx.fresh_db()
    rnd = data.seed("get_session")
    s = db.upsert_session(m.Session(user_id="user-000", **data.session_payload(rnd, 0)))
    progress = Progress(f"seeding {n_runs:,} runs", n_runs, ctx.budget)
    t0 = perf()
    for i in range(n_runs):
        db.append_run(m.Run(session_id=s.session_id, user_id="user-000", **data.run_payload(rnd, i)))
        if i % 100 == 99:
            progress.check(i + 1)
    ctx.seed_note(perf() - t0)
    got = db.get_session(s.session_id, runs=last)
    if got is None or len(got.runs or []) != last:
        ctx.note(f"check: runs={last} returned {None if got is None else len(got.runs or [])} runs")
    times = [timed_us(db.get_session, s.session_id, runs=last)[1] for _ in range(calls)]
    ctx.metrics["us"] = med(times)
    pg_after_analyze(ctx, ["sessions", "runs"], lambda: db.get_session(s.session_id, runs=last), calls)


# --------------------------------------------------------------------- 5. list_sessions
def list_sessions(ctx) -> None:
    m = models()
    z = ctx.sizes
    db = ctx.fresh_db()
    rnd = data.seed("list_sessions")
    us = users(z["users"])
    progress = Progress(f"seeding {z['sessions']:,} sessions", z["sessions"], ctx.budget)
    t_seed = 0.0
    for i in range(z["sessions"]):
        s = m.Session(user_id=us[i % len(us)], **data.session_payload(rnd, i))
        t0 = perf()
        db.upsert_session(s)
        t_seed += perf() - t0
        if i % 200 == 199:
            progress.check(i + 1)
    ctx.seed_note(t_seed)
    first = []
    for k in range(z["calls"]):
        page, t = timed_us(db.list_sessions, user_id=us[k % len(us)], limit=z["limit"])
        first.append(t)
        if k == 0 and len(page.items) != min(z["limit"], z["sessions"] // len(us)):
            ctx.note(f"check: first page has {len(page.items)} items")
    ctx.metrics["first_us"] = med(first)
    pages, short = [], 0
    for u in us[: z["walk_users"]]:
        cursor = None
        for p in range(z["pages"]):
            page, t = timed_us(db.list_sessions, user_id=u, limit=z["limit"], cursor=cursor)
            pages.append(t)
            cursor = page.next_cursor
            if cursor is None:
                short += p < z["pages"] - 1
                break
    ctx.metrics["pages_mean_us"] = fmean(pages)
    if short:
        ctx.note(f"{short} walks ended before page {z['pages']}")
    pg_after_analyze(ctx, ["sessions"], lambda: db.list_sessions(user_id=rnd.choice(us), limit=z["limit"]),
                     z["calls"])


# --------------------------------------------------------------------- 6. list_memories
def list_memories(ctx) -> None:
    m = models()
    z = ctx.sizes
    db = ctx.fresh_db()
    rnd = data.seed("list_memories")
    us = users(z["users"])
    total, batch = z["memories"], z["batch"]
    progress = Progress(f"seeding {total:,} memories (upsert_memories x{batch})", total, ctx.budget)
    t_seed, done = 0.0, 0
    while done < total:
        k = min(batch, total - done)
        mems = [m.UserMemory(**data.memory_payload(rnd, us[(done + j) % len(us)])) for j in range(k)]
        t0 = perf()
        db.upsert_memories(mems)
        t_seed += perf() - t0
        done += k
        progress.check(done)
    ctx.seed_note(t_seed, f"{total / t_seed:,.0f}/s")
    times, empty = [], 0
    for k in range(z["calls"]):
        page, t = timed_us(db.list_memories, user_id=rnd.choice(us), topics=[rnd.choice(data.TOPICS)])
        times.append(t)
        empty += not page.items
    ctx.metrics["us"] = med(times)
    if empty:
        ctx.note(f"check: {empty} empty pages")
    pg_after_analyze(ctx, ["memories", "memories_topics"],
                     lambda: db.list_memories(user_id=rnd.choice(us), topics=[rnd.choice(data.TOPICS)]), z["calls"])


# ------------------------------------------------------------------------ 7. span ingest
def spans(ctx) -> None:
    m = models()
    z = ctx.sizes
    db = ctx.fresh_db()
    rnd = data.seed("spans")
    per_trace = z["batch"] // z["traces_per_batch"]
    warm = [m.Span(**s) for s in data.span_batch(rnd, -1, 1, per_trace)]
    db.write_spans(warm)  # tables exist before timing
    batches = [
        [m.Span(**s) for s in data.span_batch(rnd, b, z["traces_per_batch"], per_trace)] for b in range(z["batches"])
    ]
    progress = Progress(f"{z['batches']} write_spans batches", z["batches"], ctx.budget)
    elapsed = 0.0
    for i, b in enumerate(batches):
        t0 = perf()
        db.write_spans(b)
        elapsed += perf() - t0
        progress.check(i + 1)
    n = sum(len(b) for b in batches)
    ctx.metrics["rate"] = n / elapsed
    tr = db.get_trace(batches[-1][0].trace_id)
    if tr is None or tr.span_count != per_trace:
        ctx.note(f"check: trace span_count={None if tr is None else tr.span_count}, expected {per_trace}")


# ------------------------------------------------------------------ 8. export / import
def seed_sessions_with_runs(db, n: int, budget: float, run_size: str = "small") -> None:
    m = models()
    rnd = data.seed("export_import")
    us = users(100)
    progress = Progress(f"seeding {n:,} sessions + runs", n, budget)
    for i in range(n):
        s = m.Session(user_id=us[i % 100], **data.session_payload(rnd, i))
        db.upsert_session(s)
        db.append_run(m.Run(session_id=s.session_id, user_id=s.user_id, **data.run_payload(rnd, 0, run_size)))
        if i % 500 == 499:
            progress.check(i + 1)


def prepare_dump(ctx) -> None:
    """Builds the export/import dataset once (in its own process) as an export_jsonl dump."""
    n = ctx.sizes["sessions"]
    db = ctx.fresh_db()
    t0 = perf()
    seed_sessions_with_runs(db, n, ctx.budget)
    ctx.metrics["seed_s"] = perf() - t0
    t0 = perf()
    ctx.metrics["count"] = db.export_jsonl(ctx.shared["dump_path"])
    ctx.metrics["export_s"] = perf() - t0
    ctx.metrics["bytes"] = os.path.getsize(ctx.shared["dump_path"])


def export_import(ctx) -> None:
    n = ctx.sizes["sessions"]
    src = ctx.fresh_db("src")
    dump = ctx.shared.get("dump_path")
    t0 = perf()
    seeded = False
    if dump and os.path.exists(dump):
        try:
            with RssSampler() as seed_rss:
                got = src.import_jsonl(dump)
            seeded = True
            ctx.note(f"source seeded by import_jsonl of the {ctx.shared.get('dump_from', '?')} dump "
                     f"({got:,} records, RSS peak {seed_rss.peak:.0f} MB)")
        except Exception as exc:  # noqa: BLE001 - reported; fall back to a loop
            ctx.note(f"seeding by import_jsonl failed ({type(exc).__name__}: {str(exc)[:200]}); seeded by a loop")
            close(src)
            src = ctx.fresh_db("src2")
            t0 = perf()
    if not seeded:
        seed_sessions_with_runs(src, n, ctx.budget)
    ctx.metrics["seed_s"] = perf() - t0
    out = ctx.path("export.jsonl")
    with RssSampler() as exp_rss:
        t0 = perf()
        count = src.export_jsonl(out)
        ctx.metrics["export_s"] = perf() - t0
    close(src)
    del src
    gc.collect()
    dst = ctx.fresh_db("dst")
    with RssSampler() as imp_rss:
        t0 = perf()
        got = dst.import_jsonl(out)
        ctx.metrics["import_s"] = perf() - t0
    ctx.note(f"{count:,} exported / {got:,} imported, {os.path.getsize(out) / 2**20:.0f} MB file; "
             f"RSS {exp_rss.start:.0f}->{exp_rss.peak:.0f} MB in export, {imp_rss.start:.0f}->{imp_rss.peak:.0f} MB "
             f"in import (start->peak; the import starts after the source db was closed and freed)")
    page = dst.list_sessions(limit=1)
    if not page.items or len((dst.get_session(page.items[0].session_id, runs=-1).runs or [])) != 1:
        ctx.note("check: imported session does not have its 1 run")


CASES = {
    "first_boot": first_boot,
    "new_session": new_session,
    "append_run": append_run,
    "get_session": get_session,
    "list_sessions": list_sessions,
    "list_memories": list_memories,
    "spans": spans,
    "export_import": export_import,
    "prepare_dump": prepare_dump,
}
