"""Hand-written on both sides: how the sync runner calls a tool."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable


def pause(seconds: float) -> None:
    time.sleep(seconds)


def call_tool(fn: Callable, kwargs: dict) -> Any:
    """A sync tool is called; an async one runs to completion on an event loop of its own
    (so `Agent.run` cannot be called from inside a running loop with async tools: use
    `arun` there)."""
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
