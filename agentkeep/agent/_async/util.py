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


class ThreadedDb:
    """A sync db driven from async code: each call runs in a worker thread."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.db, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

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
