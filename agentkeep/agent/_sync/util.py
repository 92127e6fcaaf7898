"""Hand-written on both sides: how the sync runner calls a tool and keeps a run's lease."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import logging
import threading
import time
from typing import Any, Callable, Iterator

from agentkeep.agent.live import LIVE_RUNS

log = logging.getLogger("agentkeep.agent")


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


class _LeaseKeeper:
    """One thread renews the leases of every sync run in progress in this process (a
    thread per run would cost more than the run's own writes)."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[Any, float]] = {}
        self.due: list[tuple[float, str]] = []  # (when to renew, run id)
        self.wake = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, db: Any, run_id: str, seconds: float) -> None:
        with self.wake:
            self.runs[run_id] = (db, seconds)
            heapq.heappush(self.due, (time.monotonic() + seconds / 3, run_id))
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, name="agentkeep-run-leases", daemon=True)
                self.thread.start()
            self.wake.notify()

    def remove(self, run_id: str) -> None:
        with self.wake:
            self.runs.pop(run_id, None)

    def _beat(self) -> None:  # a daemon thread, started with the first sync run, kept
        while True:
            with self.wake:
                while not (self.due and self.due[0][0] <= time.monotonic()):
                    self.wake.wait(self.due[0][0] - time.monotonic() if self.due else None)
                _, run_id = heapq.heappop(self.due)
                held = self.runs.get(run_id)
            if held is None:  # ended since
                continue
            db, seconds = held
            try:
                keep = db.renew_run_lease(run_id, lease_seconds=seconds)
            except Exception as exc:  # a db hiccup: the next beat tries again
                log.warning("could not renew the lease of run %s: %s", run_id, exc)
                keep = True
            with self.wake:
                if self.runs.get(run_id) is held:  # not ended (nor ended and resumed) meanwhile
                    if keep:
                        heapq.heappush(self.due, (time.monotonic() + seconds / 3, run_id))
                    else:
                        del self.runs[run_id]


_keeper = _LeaseKeeper()


@contextlib.contextmanager
def leased(db: Any, run_id: str, seconds: float) -> Iterator[None]:
    """Renew the run's lease every third of it while the block runs, so only a run whose
    process died lets its lease lapse (and is then failed by `fail_expired_runs`)."""
    if db is None:
        yield
        return
    _keeper.add(db, run_id, seconds)
    LIVE_RUNS.add(run_id)
    try:
        yield
    finally:
        LIVE_RUNS.discard(run_id)
        _keeper.remove(run_id)
