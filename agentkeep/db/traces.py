"""Trace rows derived from their spans, and trace statistics (pure functions)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

# where a trace's session, user, agent... come from: agentkeep's own attributes, the plain
# names, the OpenTelemetry and GenAI semantic conventions' names
_CONVENTIONS = {
    "session_id": ("gen_ai.conversation.id",), "user_id": ("enduser.id",), "agent_id": ("gen_ai.agent.id",),
}
ATTRIBUTE_KEYS = {
    field: (f"agentkeep.{field}", field, f"{field[:-3]}.id", *_CONVENTIONS.get(field, ()))
    for field in ("run_id", "session_id", "user_id", "agent_id", "team_id", "workflow_id")
}


def _attr(spans: list[dict], field: str) -> Any:
    for span in spans:
        attrs = span.get("attributes") or {}
        for key in ATTRIBUTE_KEYS[field]:
            value = attrs.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def merge_trace(cur: dict | None, trace_id: str, spans: list[dict], new_spans: int, new_errors: int = 0) -> dict:
    """Fold a batch of one trace's spans into its trace row (`new_spans` of them, with
    `new_errors` errors, not stored before)."""
    t = dict(cur) if cur else {
        "trace_id": trace_id, "name": None, "status": "unset", "start_time": None, "end_time": None,
        "duration_ms": None, "run_id": None, "session_id": None, "user_id": None, "agent_id": None,
        "team_id": None, "workflow_id": None, "span_count": 0, "error_count": 0,
    }
    t.pop("revision", None)
    starts = [s["start_time"] for s in spans] + ([t["start_time"]] if t["start_time"] else [])
    ends = [s["end_time"] for s in spans if s.get("end_time")] + ([t["end_time"]] if t["end_time"] else [])
    t["start_time"] = min(starts)
    t["end_time"] = max(ends) if ends else None
    t["duration_ms"] = (t["end_time"] - t["start_time"]).total_seconds() * 1000 if t["end_time"] else None
    codes = {s.get("status_code") for s in spans}
    if "ERROR" in codes or t["status"] == "error":
        t["status"] = "error"
    elif "OK" in codes or t["status"] == "ok":
        t["status"] = "ok"
    root = next((s for s in spans if not s.get("parent_span_id")), None)
    if root is not None:
        t["name"] = root.get("name")
    elif t["name"] is None:
        t["name"] = spans[0].get("name")
    for field in ATTRIBUTE_KEYS:
        if t[field] is None:
            t[field] = _attr(spans, field)
    t["span_count"] += new_spans
    t["error_count"] = (t.get("error_count") or 0) + new_errors
    return t


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]


def trace_stats(rows: Iterable[tuple[Any, str, float | None, Any]]) -> list[dict]:
    """rows: (group key, status, duration_ms, start_time) -> one stats dict per key, by key."""
    groups: dict[Any, list] = defaultdict(lambda: [0, 0, [], None, None])
    for key, status, duration, start in rows:
        g = groups[key]
        g[0] += 1
        g[1] += status == "error"
        if duration is not None:
            g[2].append(duration)
        if start is not None:
            g[3] = start if g[3] is None else min(g[3], start)
            g[4] = start if g[4] is None else max(g[4], start)
    out = []
    for key in sorted(groups, key=lambda k: (k is not None, k or "")):
        n, errors, durations, first, last = groups[key]
        out.append({
            "key": key, "traces": n, "errors": errors,
            "avg_ms": sum(durations) / len(durations) if durations else None,
            "p95_ms": _p95(durations), "max_ms": max(durations) if durations else None,
            "first_start": first, "last_start": last,
        })
    return out
