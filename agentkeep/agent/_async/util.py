"""Hand-written on both sides: how the async runner calls a tool and a sync db, and keeps
a run's lease."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from typing import Any, AsyncIterator, Callable

from agentkeep.agent.live import LIVE_RUNS

log = logging.getLogger("agentkeep.agent")


async def pause(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def call_tool(fn: Callable, kwargs: dict) -> Any:
    """An async tool is awaited; a sync one runs in a worker thread so it cannot stall the
    event loop (a server's other requests)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    result = await asyncio.to_thread(functools.partial(fn, **kwargs))
    if inspect.isawaitable(result):
        return await result
    return result


# the methods that only read: a db with `quick_reads` (SQLite, in-memory) runs them inline
READS = frozenset((
    "get_session", "list_sessions", "get_run", "list_runs", "get_memory", "list_memories", "memory_topics",
    "memory_stats", "get_knowledge", "list_knowledge", "get_trace", "get_spans", "list_traces", "trace_stats",
    "get_approval", "list_approvals", "count_pending_approvals", "get_schedule", "list_schedules",
    "get_schedule_run", "list_schedule_runs", "get_metrics", "get_eval_run", "list_eval_runs", "get_job", "list_jobs",
    "schema_status",
))


class ThreadedDb:
    """A sync db driven from async code: each call runs in a worker thread, but for the
    reads of a db whose reads are brief (`quick_reads`), made inline: the hand-off to a thread
    (about 0.25 ms) costs more than such a read, which holds the GIL for most of it anyway."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.inline = READS if getattr(db, "quick_reads", False) else frozenset()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.db, name)
        if not callable(method):
            return method
        if name in self.inline:
            async def call(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **kwargs)
        else:
            async def call(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(functools.partial(method, *args, **kwargs))
        setattr(self, name, call)  # made once per wrapper
        return call


@contextlib.asynccontextmanager
async def leased(db: Any, run_id: str, seconds: float) -> AsyncIterator[None]:
    """Renew the run's lease every third of it while the block runs, so only a run whose
    process died lets its lease lapse (and is then failed by `fail_expired_runs`)."""
    if db is None:
        yield
        return

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                if not await db.renew_run_lease(run_id, lease_seconds=seconds):
                    return  # the run ended, or was failed as dead: nothing left to keep
            except Exception as exc:  # a db hiccup: the next beat tries again
                log.warning("could not renew the lease of run %s: %s", run_id, exc)

    task = asyncio.get_running_loop().create_task(renew())
    LIVE_RUNS.add(run_id)
    try:
        yield
    finally:
        LIVE_RUNS.discard(run_id)
        task.cancel()
