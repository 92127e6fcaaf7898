"""Helpers shared by the benchmark cases (child side: keep imports light)."""

from __future__ import annotations

import importlib
import os
import resource
import threading
import time
from statistics import median

perf = time.perf_counter
perf_ns = time.perf_counter_ns


class Infeasible(Exception):
    """A size cannot be reached within the time budget (partial metrics are kept)."""


class Progress:
    """Stops a long loop early when it will clearly not finish within `budget_s`.

    After at least 5 s and 5% of the work, the total time is projected linearly; past
    1.2x the budget (or past the budget outright) the loop raises `Infeasible` with the
    rate measured so far, so the report can say "infeasible" instead of shrinking sizes.
    """

    def __init__(self, what: str, total: int, budget_s: float):
        self.what, self.total, self.budget = what, total, budget_s
        self.t0 = perf()

    def elapsed(self) -> float:
        return perf() - self.t0

    def check(self, done: int) -> None:
        el = self.elapsed()
        if done <= 0:
            return
        if el > self.budget:
            raise Infeasible(
                f"{self.what}: stopped after {el:.0f} s at {done:,}/{self.total:,} "
                f"({done / el:,.0f}/s; budget {self.budget:.0f} s; use --budget or --sizes)"
            )
        if el > 5 and done >= 0.05 * self.total:
            projected = el / done * self.total
            if projected > 1.2 * self.budget:
                raise Infeasible(
                    f"{self.what}: {done:,}/{self.total:,} took {el:.1f} s ({done / el:,.0f}/s), "
                    f"~{projected:,.0f} s projected > budget {self.budget:.0f} s; use --budget or --sizes"
                )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class RssSampler:
    """Samples the current RSS every `interval` s in a thread; `.peak` is the max seen."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.start = self.peak = current_rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())


ASYNC_SUFFIX = "_async"  # sqlite_async, postgres_async, mysql_async: the async twin of sqlite, ...


def base_backend(backend: str) -> str:
    """The sync backend an async twin mirrors ("postgres_async" -> "postgres"); else itself."""
    return backend[: -len(ASYNC_SUFFIX)] if backend.endswith(ASYNC_SUFFIX) else backend


def is_async_backend(backend: str) -> bool:
    return backend.endswith(ASYNC_SUFFIX)


def server(backend: str):
    """The plumbing module (bench.pg, bench.mysql) of a server backend (or its async twin) or
    of its raw baselines, else None: it creates and drops the case's schemas on that server."""
    name = {"postgres": "pg", "raw_pg": "pg", "mysql": "mysql", "raw_mysql": "mysql"}.get(base_backend(backend))
    return importlib.import_module(f"bench.{name}") if name else None


def timed_us(fn, *args, **kwargs):
    """(result, µs) of one call."""
    t0 = perf_ns()
    out = fn(*args, **kwargs)
    return out, (perf_ns() - t0) / 1000.0


def med(values) -> float:
    return float(median(values)) if values else float("nan")


def time_writes(ctx, one, n: int, what: str, warm: int = 1) -> None:
    """Record `rate`, calls per second of `one(i)` for i = warm .. warm + n - 1, after `warm`
    untimed calls (i = 0 .. warm - 1)."""
    for i in range(warm):
        one(i)
    progress = Progress(what, n, ctx.budget)
    t0 = perf()
    for i in range(n):
        one(warm + i)
        if i % 100 == 99:
            progress.check(i + 1)
    ctx.metrics["rate"] = n / (perf() - t0)


def time_pages(ctx, page, users, z) -> None:
    """Record the median µs of a first page (`first_us`) and the mean µs per page over a
    keyset walk of `z["pages"]` pages (`pages_mean_us`). `page(user, cursor)` returns
    (rows, next cursor or None)."""
    from statistics import fmean

    ctx.metrics["first_us"] = med([timed_us(page, users[k % len(users)], None)[1] for k in range(z["calls"])])
    pages = []
    for u in users[: z["walk_users"]]:
        cursor = None
        for _ in range(z["pages"]):
            (_rows, cursor), t = timed_us(page, u, cursor)
            pages.append(t)
            if cursor is None:
                break
    ctx.metrics["pages_mean_us"] = fmean(pages)
