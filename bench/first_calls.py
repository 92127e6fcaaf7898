"""Benchmark 10, `first_calls`: a process that starts under load. `callers` threads (coroutines
on an async db) make their first call on a new db object at once, released together;
the figure is the time until the last of them has its answer, and how many failed.

Three bursts of `list_sessions(user_id=...)`, on one backend:
- absent: a new db object on an empty location (the burst also creates the tables);
- present: a second new object over the same, now existing tables (a restarted process);
- warm: the same calls again on that second object, its schema already checked (the
  baseline of the two others, measured in the same run);
and, on the async twins of the server backends, the same burst on a new pool of the driver
alone (psycopg_pool, aiomysql): the cost of opening a pool's connections, which a new
object pays whatever it does.
"""

from __future__ import annotations

import asyncio
import threading

from bench.common import med, perf


def _burst(db, callers: int) -> tuple[float, int]:
    """ms from the release of `callers` concurrent first calls to the last answer, and how
    many raised."""
    from bench.cases import Blocking

    calls = [f"user-{i % 5}" for i in range(callers)]
    if isinstance(db, Blocking):

        async def one(user: str) -> bool:
            try:
                await db.adb.list_sessions(user_id=user)
                return True
            except Exception:  # noqa: BLE001 - counted
                return False

        async def all_at_once() -> tuple[float, list]:
            t0 = perf()
            done = await asyncio.gather(*(one(u) for u in calls))
            return 1000 * (perf() - t0), done

        ms, done = db.loop.run_until_complete(all_at_once())
        return ms, done.count(False)
    barrier = threading.Barrier(callers + 1)
    failed = []

    def one(user: str) -> None:
        barrier.wait()
        try:
            db.list_sessions(user_id=user)
        except Exception:  # noqa: BLE001 - counted
            failed.append(user)

    threads = [threading.Thread(target=one, args=(u,)) for u in calls]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = perf()
    for t in threads:
        t.join()
    return 1000 * (perf() - t0), len(failed)


def _raw_pool_burst(ctx, db, callers: int) -> float | None:
    """ms for the same burst on a new pool of the driver alone (psycopg_pool, aiomysql; the
    size agentkeep's async db uses), over the same table: what any new process pays to open
    its connections. None for the backends without one."""
    from bench.common import base_backend

    base = base_backend(ctx.backend)
    if not ctx.backend.endswith("_async") or base not in ("postgres", "mysql"):
        return None
    kernel = db.adb.kernel
    table = kernel.tables["sessions"]
    name = f'"{kernel.schema}"."{table.name}"' if base == "postgres" else f"`{table.name}`"
    sql = f"SELECT * FROM {name} WHERE user_id = %s ORDER BY updated_at DESC, session_id DESC LIMIT 21"
    users = [f"user-{i % 5}" for i in range(callers)]

    async def postgres() -> float:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(kernel.conninfo, min_size=1, max_size=kernel.pool.max_size, open=False,
                                   kwargs={"autocommit": True})
        t0 = perf()
        await pool.open()

        async def one(user: str) -> None:
            async with pool.connection() as conn:
                await (await conn.execute(sql, (user,))).fetchall()

        await asyncio.gather(*(one(u) for u in users))
        ms = 1000 * (perf() - t0)
        await pool.close()
        return ms

    async def mysql() -> float:
        import aiomysql

        u = kernel.url
        t0 = perf()
        pool = await aiomysql.create_pool(host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
                                          db=u.database, autocommit=True, minsize=1, maxsize=kernel.pool_size)

        async def one(user: str) -> None:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql, (user,))
                await cur.fetchall()

        await asyncio.gather(*(one(u) for u in users))
        ms = 1000 * (perf() - t0)
        pool.close()
        await pool.wait_closed()
        return ms

    return db.loop.run_until_complete(postgres() if base == "postgres" else mysql())


def first_calls(ctx) -> None:
    from bench.cases import reopen

    callers = ctx.sizes["callers"]
    db = ctx.fresh_db("absent")
    ctx.metrics["absent_ms"], absent_failed = _burst(db, callers)
    other = reopen(ctx, db)
    ctx.metrics["present_ms"], present_failed = _burst(other, callers)
    warm = [_burst(other, callers) for _ in range(ctx.sizes["warm_reps"])]
    ctx.metrics["warm_ms"] = med([ms for ms, _ in warm])
    ctx.metrics["present_ratio"] = ctx.metrics["present_ms"] / ctx.metrics["warm_ms"]
    ctx.metrics["absent_ratio"] = ctx.metrics["absent_ms"] / ctx.metrics["warm_ms"]
    raw = _raw_pool_burst(ctx, other, callers)
    if raw is not None:
        ctx.metrics["raw_pool_ms"] = raw
        ctx.metrics["present_vs_raw"] = ctx.metrics["present_ms"] / raw
    failed = absent_failed + present_failed + sum(n for _, n in warm)
    ctx.metrics["no_errors"] = failed == 0
    ctx.note(f"{callers} callers; {failed} calls failed" + ("" if failed else " (none)"))
