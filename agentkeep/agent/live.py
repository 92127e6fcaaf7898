"""The runs in progress in this process, whose leases it renews. A sweep for dead runs
(`fail_expired_runs(alive=...)`) leaves them alone even when a stalled event loop or a busy
machine made a renewal late."""

LIVE_RUNS: set[str] = set()
