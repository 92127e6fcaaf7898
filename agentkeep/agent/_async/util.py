"""Hand-written on both sides: how the async runner calls a tool and a sync db."""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable


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
