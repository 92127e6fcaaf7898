"""Daily metrics, computed from runs and sessions (pure functions)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Iterable

UTC = dt.timezone.utc


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + dt.timedelta(days=1)


def run_days(rows: Iterable[dict]) -> set[dt.date]:
    return {r["created_at"].date() for r in rows if r.get("created_at") is not None}


def _kind(run: dict) -> str:
    # A workflow's runs count as workflow runs, a team's as team runs, the rest as agent runs.
    if run.get("workflow_id"):
        return "workflow_runs"
    if run.get("team_id"):
        return "team_runs"
    return "agent_runs"


def _blank(day: dt.date, user_id: str, now: dt.datetime) -> dict:
    return {
        "date": day, "user_id": user_id, "agent_runs": 0, "team_runs": 0, "workflow_runs": 0,
        "sessions": 0, "users": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
        "cost": 0.0, "errors": 0, "by_model": {}, "by_agent": {}, "updated_at": now,
    }


def percentile(ordered: list[float], q: int) -> float | None:
    """The nearest-rank percentile `q` of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, -(-q * len(ordered) // 100) - 1))]


def metrics_rows(day: dt.date, runs: list[dict], sessions: list[dict], now: dt.datetime) -> list[dict]:
    """One row for all users (user_id "") and one per user active that day."""
    rows: dict[str, dict] = defaultdict(lambda: None)  # type: ignore[arg-type]
    users: dict[str, set] = defaultdict(set)
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)  # (user key, agent) -> run durations

    def row(user: str) -> dict:
        if rows[user] is None:
            rows[user] = _blank(day, user, now)
        return rows[user]

    for run in runs:
        metrics = run.get("metrics") or {}
        for key in ("", run.get("user_id")):
            if key is None:
                continue
            r = row(key)
            r[_kind(run)] += 1
            for f in ("input_tokens", "output_tokens", "total_tokens"):
                r[f] += int(metrics.get(f) or 0)
            r["cost"] += float(metrics.get("cost") or 0.0)
            model = metrics.get("model") or "unknown"
            per = r["by_model"].setdefault(model, {"runs": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cost": 0.0})
            per["runs"] += 1
            for f in ("input_tokens", "output_tokens", "total_tokens"):
                per[f] += int(metrics.get(f) or 0)
            per["cost"] += float(metrics.get("cost") or 0.0)
            failed = run.get("status") == "error"
            r["errors"] += failed
            agent = run.get("agent_id") or run.get("team_id") or run.get("workflow_id") or "unknown"
            by = r["by_agent"].setdefault(agent, {"runs": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                                                  "total_tokens": 0})
            by["runs"] += 1
            by["errors"] += failed
            for f in ("input_tokens", "output_tokens", "total_tokens"):
                by[f] += int(metrics.get(f) or 0)
            if metrics.get("duration_ms") is not None:
                latencies[(key, agent)].append(float(metrics["duration_ms"]))
            if run.get("user_id") is not None:
                users[key].add(run["user_id"])
    for session in sessions:
        for key in ("", session.get("user_id")):
            if key is not None:
                row(key)["sessions"] += 1
    out = []
    for key, r in rows.items():
        r["users"] = len(users[key])
        for agent, by in r["by_agent"].items():
            ordered = sorted(latencies[(key, agent)])
            by.update({f"p{q}_ms": percentile(ordered, q) for q in (50, 95, 99)})
        out.append(r)
    return sorted(out, key=lambda r: r["user_id"])
