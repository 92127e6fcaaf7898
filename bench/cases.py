"""The agentkeep benchmarks. Each runs in its own child process (bench/child.py) with a
fresh db in a temp dir and fills `ctx.metrics` (figures) and `ctx.notes` (short strings).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from statistics import fmean, quantiles

from bench import data
from bench.first_calls import first_calls
from bench.common import (Infeasible, Progress, RssSampler, base_backend, is_async_backend, med, perf, perf_ns,
                          server, timed_us)

BACKEND_MODULES = {
    "inmemory": ("agentkeep.db.in_memory", "InMemoryDb"),
    "sqlite": ("agentkeep.db.sqlite", "SqliteDb"),
    "json": ("agentkeep.db.json", "JsonDb"),
    "postgres": ("agentkeep.db.postgres", "PostgresDb"),
    "mysql": ("agentkeep.db.mysql", "MysqlDb"),
    # the async twins: same constructor arguments, every method a coroutine; the cases
    # drive them through Blocking (below), async_append drives them natively
    "sqlite_async": ("agentkeep.db.sqlite", "AsyncSqliteDb"),
    "postgres_async": ("agentkeep.db.postgres", "AsyncPostgresDb"),
    "mysql_async": ("agentkeep.db.mysql", "AsyncMysqlDb"),
    # built by their conformance entries (SERVICE_BACKENDS below); named here for imports
    "mongo": ("agentkeep.db.mongo", "MongoDb"),
    "redis": ("agentkeep.db.redis", "RedisDb"),
    "dynamodb": ("agentkeep.db.dynamo", "DynamoDb"),
    "firestore": ("agentkeep.db.firestore", "FirestoreDb"),
    "json_s3": ("agentkeep.db.json", "JsonDb"),
    "json_gcs": ("agentkeep.db.gcs_json", "GcsJsonDb"),
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


# Backends on a server or emulator that the test suite's starters run (tests/services/):
# each db is built exactly as the conformance suite builds it (its own database, key prefix,
# tables or bucket) and removed after the case. The parent starts each server once and
# the starters publish its address to the case processes through the environment.
SERVICE_BACKENDS = ("mongo", "redis", "dynamodb", "firestore", "json_s3", "json_gcs")
CLEANUPS: list = []  # what the service dbs of this case left behind, removed by close_all
OPENERS: dict = {}  # id(db) -> how another process (or object) opens a service db's data


def service_backend(backend: str):
    """The conformance suite's entry for a service backend (tests/conformance/backends.py)."""
    from tests.conformance.backends import BY_NAME

    return BY_NAME[backend]


def make_db(backend: str, location: str):
    """A fresh db of `backend` whose files (if any) live under the empty dir `location`; an
    async db comes wrapped in Blocking, so the same case code drives it."""
    if backend in SERVICE_BACKENDS:
        from pathlib import Path

        os.makedirs(location, exist_ok=True)
        handle = service_backend(backend).build(Path(location))
        if handle.cleanup is not None:
            CLEANUPS.append(handle.cleanup)
        OPENERS[id(handle.db)] = handle.opener
        return handle.db
    cls = backend_class(backend)
    db = _construct(cls, base_backend(backend), location)
    return Blocking(db, event_loop()) if is_async(cls) else db


def _construct(cls, base: str, location: str):
    os.makedirs(location, exist_ok=True)
    if base == "inmemory":
        return cls()
    if base == "sqlite":
        return cls(db_file=os.path.join(location, "agentkeep.db"))
    if base == "json":
        return cls(path=os.path.join(location, "keep"))
    schema = f"{SCHEMA_PREFIX}{len(SCHEMAS)}"
    if base == "postgres":
        from bench import pg

        SCHEMAS.append(schema)
        return cls(db_url=pg.url(), db_schema=schema)
    if base == "mysql":
        from bench import mysql

        SCHEMAS.append(schema)
        return cls(db_url=mysql.create_schema(schema))
    raise ValueError(base)


def reopen(ctx, db):
    """A second, new db object over the data of `db` (as a restarted process opens it);
    the case closes it with its other dbs."""
    if OPENERS.get(id(db)) is not None:
        other = OPENERS[id(db)]()
    else:
        inner = db.adb if isinstance(db, Blocking) else db
        kernel, cls, base = inner.kernel, type(inner), base_backend(ctx.backend)
        if base == "sqlite":
            other = cls(db_file=kernel.url.database)
        elif base == "postgres":
            from bench import pg

            other = cls(db_url=pg.url(), db_schema=kernel.schema)
        elif base == "mysql":
            other = cls(db_url=kernel.url.render_as_string(hide_password=False))
        else:
            raise Infeasible(f"{ctx.backend}: its data cannot be opened by a second db object")
        if isinstance(db, Blocking):
            other = Blocking(other, db.loop)
    ctx._dbs.append(other)
    return other


def is_async(cls) -> bool:
    return inspect.iscoroutinefunction(getattr(cls, "upsert_session", None))


# ------------------------------------------------------------------ async dbs, blocking
_LOOP: asyncio.AbstractEventLoop | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    """This child process's one private event loop (every case runs in its own process)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
        asyncio.set_event_loop(_LOOP)
    return _LOOP


def close_loop() -> None:
    """Ends the private loop after the case's dbs were closed (the child calls it)."""
    global _LOOP
    loop, _LOOP = _LOOP, None
    if loop is None or loop.is_closed():
        return
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


class Blocking:
    """An async db seen as a sync one: every coroutine method becomes
    `loop.run_until_complete(coro)` on the calling thread, on the child's one private loop.
    There is deliberately no background loop thread, so no thread hop (handing the call to
    another thread and waiting for its answer) inflates the figures; a call costs the
    coroutine plus one run_until_complete (a few µs, see `wrapper_us`). The loop runs only
    while a call is in progress, so the db's own background tasks (pool growth, health
    checks) advance only then. Not for use from several threads at once.
    `.adb` and `.loop` are the async db and its loop, for a case that drives them natively."""

    def __init__(self, adb, loop: asyncio.AbstractEventLoop):
        self.adb, self.loop = adb, loop

    def __getattr__(self, name):
        attr = getattr(self.adb, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args, **kwargs):
            return self.loop.run_until_complete(attr(*args, **kwargs))

        call.__name__ = name
        setattr(self, name, call)  # later lookups skip __getattr__
        return call


def wrapper_us(loop: asyncio.AbstractEventLoop, calls: int = 200) -> float:
    """Median µs of one run_until_complete of an empty coroutine: the wrapper's own cost."""
    async def nothing():
        return None

    return med([timed_us(loop.run_until_complete, nothing())[1] for _ in range(calls)])


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
    if base_backend(ctx.backend) == "sqlite":
        ctx.note(sqlite_pragmas(ctx.path("db")))
    if server(ctx.backend):
        ctx.note(server_settings(ctx.backend))


def pg_after_analyze(ctx, tables: list[str], fn, calls: int) -> None:
    """PostgreSQL only, a note (never a figure): the figure was measured on freshly seeded
    tables as autovacuum left them; say when they were last analyzed, then ANALYZE the
    case's schema and time `fn` again (median µs of `calls`)."""
    if base_backend(ctx.backend) != "postgres" or not SCHEMAS:
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


# ------------------------------------------------------------------- 9. async_append
THREADED = ("sqlite", "postgres", "mysql")  # sync dbs that get the threads variant of async_append


def not_run(backend: str, bench: str) -> str | None:
    """Why the (backend, benchmark) case is not run at all (its cells stay empty), else None."""
    if bench == "async_append" and not is_async_backend(backend) and backend not in THREADED:
        return "not run: only the async dbs, and with threads sqlite, postgres and mysql, run it"
    return None


def async_append(ctx) -> None:
    """`tasks` concurrent writers, each appending `runs` runs to its own session: coroutines
    (asyncio.gather) on an async db, threads (ThreadPoolExecutor(tasks)) on a sync one. The
    sessions are created first, concurrently by the same writers (untimed, so the pools are
    warm); then every session must hold exactly its runs, in order, seq 1..runs."""
    m = models()
    k, n = ctx.sizes["tasks"], ctx.sizes["runs"]
    db = ctx.fresh_db()
    rnd = data.seed("async_append")
    us = users(k)
    sessions = [m.Session(user_id=us[i], **data.session_payload(rnd, i)) for i in range(k)]
    runs = [[m.Run(session_id=s.session_id, user_id=s.user_id, **data.run_payload(rnd, j)) for j in range(n)]
            for s in sessions]
    lat: list[list[float]] = [[] for _ in range(k)]  # ms per append, per writer
    errors: list[str] = []
    stop: list[BaseException] = []  # an Infeasible raised by one writer stops them all
    progress = Progress(f"{k} writers x {n:,} append_run", k * n, ctx.budget)

    def record(i: int, t0: int, exc: BaseException | None) -> None:
        if exc is None:
            lat[i].append((perf_ns() - t0) / 1e6)
        else:
            errors.append(f"writer {i}: {type(exc).__name__}: {str(exc)[:200]}")
        if len(lat[i]) % 20 == 0 and not stop:
            try:
                progress.check(sum(map(len, lat)))
            except Infeasible as inf:
                stop.append(inf)

    db.get_session(sessions[0].session_id)  # untimed: the tables exist before the writers start
    cls = type(getattr(db, "adb", db))
    pool = inspect.signature(cls).parameters.get("pool_size")
    pool_text = f"{cls.__name__} with its default pool_size={pool.default}" if pool else cls.__name__
    if isinstance(db, Blocking):
        ctx.note(f"{k} coroutines on one event loop, {pool_text}")
        elapsed = _append_coroutines(db.adb, db.loop, sessions, runs, record, stop)
        key = "rate_async"
    else:
        elapsed, peak = _append_threads(db, sessions, runs, record, stop)
        ctx.note(f"{k} threads, {pool_text}"
                 + (f", at most {peak} connections checked out at once" if peak else "")
                 + (" (one connection per thread)" if ctx.backend == "sqlite" else ""))
        key = "rate_threads"
    done = sum(map(len, lat))
    ctx.metrics[key] = done / elapsed
    all_lat = sorted(x for w in lat for x in w)
    if len(all_lat) >= 20:
        ctx.metrics["p50_ms"] = med(all_lat)
        ctx.metrics["p95_ms"] = quantiles(all_lat, n=20)[18]
        ctx.note(f"latency mean {fmean(all_lat):.1f} ms, max {all_lat[-1]:.0f} ms")
    ctx.note(f"timed {elapsed:.2f} s for {done:,} appends")
    if stop:
        raise stop[0]
    problems = _check_appends(db, sessions, runs, errors)
    ctx.metrics["intact"] = not problems
    for p in problems:
        ctx.note(f"check: {p}")
    if not problems:
        ctx.note(f"checked: no exceptions; each of {k} sessions holds its {n} runs in order, seq 1..{n}")


def _append_coroutines(adb, loop, sessions, runs, record, stop) -> float:
    """Creates the sessions (untimed), then the timed gather; -> seconds."""
    async def create(s):
        await adb.upsert_session(s)

    async def writer(i: int) -> None:
        for r in runs[i]:
            if stop:
                return
            t0, exc = perf_ns(), None
            try:
                await adb.append_run(r)
            except Exception as e:  # noqa: BLE001 - counted, the writer goes on
                exc = e
            record(i, t0, exc)

    async def timed() -> float:
        t0 = perf()
        await asyncio.gather(*(writer(i) for i in range(len(runs))))
        return perf() - t0

    loop.run_until_complete(asyncio.gather(*(create(s) for s in sessions)))
    return loop.run_until_complete(timed())


def _append_threads(db, sessions, runs, record, stop) -> tuple[float, int]:
    """Each thread creates its session, all meet at a barrier (untimed: thread start and each
    thread's first connection), then append; -> (seconds from the barrier to the last append,
    the most connections a SQLAlchemy pool had checked out after an append, else 0)."""
    k = len(sessions)
    barrier = threading.Barrier(k + 1)
    created: list[BaseException] = []
    pool = getattr(getattr(getattr(db, "kernel", None), "engine", None), "pool", None)
    checkedout = getattr(pool, "checkedout", None)  # QueuePool; SqliteDb's NullPool has none
    peak = [0]

    def writer(i: int) -> None:
        try:
            db.upsert_session(sessions[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised below as a setup failure
            created.append(exc)
        finally:
            barrier.wait()
        if created:
            return
        for r in runs[i]:
            if stop:
                return
            t0, exc = perf_ns(), None
            try:
                db.append_run(r)
            except Exception as e:  # noqa: BLE001 - counted, the writer goes on
                exc = e
            record(i, t0, exc)
            if checkedout is not None:
                peak[0] = max(peak[0], checkedout())

    with ThreadPoolExecutor(k) as ex:
        futures = [ex.submit(writer, i) for i in range(k)]
        barrier.wait()
        t0 = perf()
        for f in futures:
            f.result()
        elapsed = perf() - t0
    if created:
        raise created[0]
    return elapsed, peak[0]


def _check_appends(db, sessions, runs, errors) -> list[str]:
    problems = []
    if errors:
        problems.append(f"{len(errors)} append_run raised, first: {errors[0]}")
    bad = []
    for s, mine in zip(sessions, runs):
        got = db.get_session(s.session_id, runs=-1)
        stored = (got.runs or []) if got is not None else []
        if [r.run_id for r in stored] != [r.run_id for r in mine] or [r.seq for r in stored] != list(
                range(1, len(mine) + 1)):
            bad.append(f"{s.session_id}: {len(stored)} runs, seq {[r.seq for r in stored][:5]}...")
    if bad:
        problems.append(f"{len(bad)} of {len(sessions)} sessions do not hold their {len(runs[0])} runs in order "
                        f"with seq 1..{len(runs[0])}, first: {bad[0]}")
    return problems


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
    "async_append": async_append,
    "first_calls": first_calls,
}
