"""Benchmark 10, `first_calls`: a process that starts under load. `callers` threads (coroutines
on an async db) make their first call on a new db object at once, released together;
the figure is the time until the last of them has its answer, and how many failed.

Three bursts of `list_sessions(user_id=...)`, on one backend:
- absent: a new db object on an empty location (the burst also creates the tables);
- present: a second new object over the same, now existing tables (a restarted process);
- warm: the same calls again on that second object, its schema already checked (the
  baseline of the two others, measured in the same run).
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
    failed = absent_failed + present_failed + sum(n for _, n in warm)
    ctx.metrics["no_errors"] = failed == 0
    ctx.note(f"{callers} callers; {failed} calls failed" + ("" if failed else " (none)"))
