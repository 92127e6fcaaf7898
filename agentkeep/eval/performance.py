"""Performance: the latency and peak memory of an agent run (or of any function) over N
iterations, after W warm-up iterations that are not counted (imports, connection pools and
caches fill up there).

Latency is timed with tracing of allocations off; memory is measured in N more iterations with
`tracemalloc` on (it slows the code it traces several times, so one pass cannot give both).
Memory is the peak of Python allocations during an iteration above what was allocated when it
began: allocations of other threads and tasks of the process in that time count too.

Budgets (`max_p95_ms`, `max_peak_memory_mib`) make the eval a gate: the score is the fraction
of budgets met and the threshold (1.0 by default: every budget) what it must reach. Without
budgets there is no score, and the eval passes once it completes."""

from __future__ import annotations

import gc
import inspect
import math
import threading
import time
import tracemalloc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.validate import check_bool, check_int
from agentkeep.eval.base import Call, Eval, RunAgent, Steps

MIB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(ms: Sequence[float]) -> dict:
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "mean": sum(ms) / len(ms), "min": min(ms),
            "max": max(ms)}


_tracing_lock = threading.Lock()
_tracing_users = 0
_tracing_ours = False


@contextmanager
def tracing_allocations() -> Iterator[None]:
    """tracemalloc on while any eval measures memory; stopped after the last one, unless it was
    on before the first (the application's own use of it is left alone)."""
    global _tracing_users, _tracing_ours
    with _tracing_lock:
        if _tracing_users == 0 and not tracemalloc.is_tracing():
            tracemalloc.start()
            _tracing_ours = True
        _tracing_users += 1
    try:
        yield
    finally:
        with _tracing_lock:
            _tracing_users -= 1
            if _tracing_users == 0 and _tracing_ours:
                tracemalloc.stop()
                _tracing_ours = False


class PerformanceEval(Eval):
    eval_type = "performance"
    default_threshold = 1.0

    def __init__(self, target: Any, *, input: str | None = None, num_iterations: int = 5,
                 warmup_iterations: int = 1, measure_memory: bool = True, max_p95_ms: float | None = None,
                 max_peak_memory_mib: float | None = None, threshold: float | None = None, name: str | None = None,
                 db: Any = None) -> None:
        """`target`: an Agent (run on `input`, a new session each iteration) or a function of
        no arguments (async ones with `arun`)."""
        from agentkeep.agent import Agent

        agent = target if isinstance(target, Agent) else None
        if agent is None and not callable(target):
            raise InvalidInputError(f"target must be an Agent or a function, got {type(target).__name__}")
        super().__init__(agent=agent, input=input, name=name, db=db, threshold=threshold,
                         num_iterations=num_iterations)
        if agent is not None and input is None:
            raise InvalidInputError("input must be a non-empty string: what the agent answers")
        self.function: Callable[[], Any] | None = None if agent is not None else target
        self.warmup_iterations = check_int(warmup_iterations, "warmup_iterations", 0, 1000)
        self.measure_memory = check_bool(measure_memory, "measure_memory")
        self.max_p95_ms = _budget(max_p95_ms, "max_p95_ms")
        self.max_peak_memory_mib = _budget(max_peak_memory_mib, "max_peak_memory_mib")
        if self.max_peak_memory_mib is not None and not self.measure_memory:
            raise InvalidInputError("max_peak_memory_mib needs measure_memory=True")

    def run(self, *, user_id: str | None = None, eval_run_id: str | None = None) -> Any:
        if self.function is not None and inspect.iscoroutinefunction(self.function):
            raise InvalidInputError("the function is async: use arun")
        return super().run(user_id=user_id, eval_run_id=eval_run_id)

    def _measure(self, user_id: str | None, done: list[dict]) -> Steps[tuple[float | None, dict]]:
        step = RunAgent(self.agent, self.input, user_id) if self.function is None else Call(self.function)
        for _ in range(self.warmup_iterations):
            yield step
        runs_ms = []
        for _ in range(self.num_iterations):
            began = time.perf_counter()
            yield step
            runs_ms.append((time.perf_counter() - began) * 1000)
        result: dict[str, Any] = {"num_iterations": self.num_iterations, "warmup_iterations": self.warmup_iterations,
                                  "latency_ms": latency_stats(runs_ms), "runs_ms": runs_ms}
        if self.measure_memory:
            peaks = []
            with tracing_allocations():
                for _ in range(self.num_iterations):
                    gc.collect()  # garbage of earlier iterations is not this one's
                    tracemalloc.reset_peak()
                    start = tracemalloc.get_traced_memory()[0]
                    yield step
                    peaks.append(max(0, tracemalloc.get_traced_memory()[1] - start))
            result.update(memory_peaks_bytes=peaks, peak_memory_mib=max(peaks) / MIB,
                          mean_peak_memory_mib=sum(peaks) / len(peaks) / MIB)
        checks = {}
        if self.max_p95_ms is not None:
            checks["p95_ms"] = {"budget": self.max_p95_ms, "measured": result["latency_ms"]["p95"]}
        if self.max_peak_memory_mib is not None:
            checks["peak_memory_mib"] = {"budget": self.max_peak_memory_mib, "measured": result["peak_memory_mib"]}
        for check in checks.values():
            check["met"] = check["measured"] <= check["budget"]
        result["budgets"] = checks
        score = sum(c["met"] for c in checks.values()) / len(checks) if checks else None
        return score, result


def _budget(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise InvalidInputError(f"{what} must be a number > 0, got {value!r}")
    return float(value)
