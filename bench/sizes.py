"""Benchmark sizes: the full defaults, the --quick ones, and --sizes overrides.

Override syntax (``--sizes``): comma-separated ``[backend:]bench.key=value``; a value with
``/`` is a list of ints (``append_run.checkpoints=10/1000/5000``). Examples::

    --sizes list_memories.memories=20000
    --sizes json:export_import.sessions=20000,json:list_memories.memories=20000
"""

from __future__ import annotations

import copy

BENCHMARKS = [
    "first_boot",
    "new_session",
    "append_run",
    "get_session",
    "list_sessions",
    "list_memories",
    "spans",
    "export_import",
    "async_append",
    "first_calls",
]

FULL: dict[str, dict] = {
    "first_boot": {"reps": 5},
    "new_session": {"n": 3000},
    "append_run": {"checkpoints": [10, 1000, 10000], "window": 50},
    "get_session": {"runs": 1000, "last": 10, "calls": 300},
    "list_sessions": {"sessions": 10000, "users": 100, "limit": 20, "calls": 300, "pages": 5, "walk_users": 20},
    "list_memories": {"memories": 100000, "users": 100, "batch": 500, "calls": 300},
    "spans": {"batches": 200, "batch": 100, "traces_per_batch": 10},
    "export_import": {"sessions": 100000},
    "async_append": {"tasks": 50, "runs": 100},
    "first_calls": {"callers": 50, "warm_reps": 5},
}

QUICK: dict[str, dict] = {
    "first_boot": {"reps": 5},
    "new_session": {"n": 300},
    "append_run": {"checkpoints": [10, 100, 1000], "window": 50},
    "get_session": {"runs": 200, "last": 10, "calls": 100},
    "list_sessions": {"sessions": 1000, "users": 10, "limit": 20, "calls": 100, "pages": 5, "walk_users": 10},
    "list_memories": {"memories": 10000, "users": 100, "batch": 500, "calls": 100},
    "spans": {"batches": 20, "batch": 100, "traces_per_batch": 10},
    "export_import": {"sessions": 5000},
    "async_append": {"tasks": 50, "runs": 10},
    "first_calls": {"callers": 50, "warm_reps": 3},
}


def _parse_value(raw: str):
    raw = raw.strip().replace("_", "")
    if "/" in raw:
        return [int(x) for x in raw.split("/") if x]
    try:
        return int(raw)
    except ValueError:
        return float(raw)


def parse_overrides(spec: str | None) -> list[tuple[str | None, str, str, object]]:
    """'[backend:]bench.key=value,...' -> [(backend|None, bench, key, value)]."""
    out = []
    if not spec:
        return out
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise SystemExit(f"--sizes: expected [backend:]bench.key=value, got {item!r}")
        lhs, value = item.split("=", 1)
        backend = None
        if ":" in lhs:
            backend, lhs = lhs.split(":", 1)
        bench, key = lhs.split(".", 1)
        if bench not in FULL:
            raise SystemExit(f"--sizes: unknown benchmark {bench!r}; one of {', '.join(BENCHMARKS)}")
        if key not in FULL[bench]:
            raise SystemExit(f"--sizes: unknown key {key!r} for {bench}; one of {', '.join(FULL[bench])}")
        out.append((backend, bench, key, _parse_value(value)))
    return out


def sizes_for(quick: bool, overrides, backend: str | None = None) -> dict[str, dict]:
    """The sizes for one backend (None: the global ones, used for row labels)."""
    sizes = copy.deepcopy(QUICK if quick else FULL)
    for b, bench, key, value in overrides:
        if b is None or b == backend:
            sizes[bench][key] = value
    return sizes


def overridden(quick: bool, overrides, backend: str, bench: str) -> dict:
    """The keys of `bench` whose value for `backend` differs from the global default."""
    base = sizes_for(quick, overrides, None)[bench]
    mine = sizes_for(quick, overrides, backend)[bench]
    return {k: v for k, v in mine.items() if base.get(k) != v}
