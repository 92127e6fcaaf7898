"""Start processes at the same instant (a shared barrier) and require each to succeed."""

import multiprocessing as mp


def run_together(target, args, n: int, timeout: float = 120) -> None:
    """Run `target(*args, barrier)` in `n` spawned processes released together."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=target, args=(*args, barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0
