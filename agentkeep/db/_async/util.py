"""Small helpers whose sync and async forms differ in more than `await` (so both are written
out: `agentkeep/db/_sync/util.py` is the sync form)."""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

T = TypeVar("T")


async def to_thread(fn: Callable[[], T]) -> T:
    """Run blocking work (catalog reads) off the event loop."""
    return await asyncio.to_thread(fn)


def gate() -> asyncio.Lock:
    """A lock that one task holds while the others wait (no thread is blocked)."""
    return asyncio.Lock()
