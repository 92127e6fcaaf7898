"""Trace rows derived from their spans, and trace statistics (pure functions)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

from agentkeep.db import validate as v
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.metrics import percentile

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


# token usage and cost of one LLM call, first spelling found: the GenAI semantic
# conventions (and their older names), OpenInference, agentkeep's own
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.token_count.total")
COST = ("gen_ai.usage.cost", "agentkeep.cost", "llm.cost.total")
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
TOOL = ("gen_ai.tool.name", "tool.name")
# spans that sum up their children's calls (an agent's run, a workflow, a chain): their usage
# is their children's, counted there
AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})
AGGREGATE_KINDS = frozenset({"AGENT", "CHAIN"})
MAX_NAMES = 20  # models and tools kept on a trace row
MAX_COUNT = 2**63 - 1  # a 64-bit integer column


def _first(attrs: dict, keys: tuple[str, ...], read: Any) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            value = read(value)
            if value is not None:
                return value
    return None


def _count(value: Any) -> int | None:
    """A token count: a non-negative integer (or an integral float, or its digits as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and 0 < len(digits := value.strip()) <= 18 and digits.isascii() and digits.isdigit():
        value = int(digits)
    return value if isinstance(value, int) and 0 <= value < 2**53 else None


def _amount(value: Any) -> float | None:
    """A cost: a finite non-negative number (or its text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _name(value: Any) -> str | None:
    """A model or tool name as a trace row keeps it: one that passes as an id (1..255
    characters, no control characters), since it is looked up as one."""
    if not isinstance(value, str):
        return None
    try:
        return v.check_id(value, "a name")
    except InvalidInputError:
        return None


def is_aggregate(attrs: dict) -> bool:
    """Whether a span sums up other spans' calls (an agent, workflow or chain span)."""
    return (attrs.get("gen_ai.operation.name") in AGGREGATE_OPERATIONS
            or attrs.get("openinference.span.kind") in AGGREGATE_KINDS)


def usage(attrs: dict) -> tuple[int | None, int | None, int | None, float | None]:
    """(input, output, total tokens, cost) one span reports, None where it says nothing; the
    total is the reported one, else input + output."""
    inp = _first(attrs, INPUT_TOKENS, _count)
    out = _first(attrs, OUTPUT_TOKENS, _count)
    total = _first(attrs, TOTAL_TOKENS, _count)
    if total is None and (inp is not None or out is not None):
        total = (inp or 0) + (out or 0)
    return inp, out, total, _first(attrs, COST, _amount)


def _names(current: list[str] | None, new: set[str]) -> list[str]:
    return sorted(set(current or ()) | new)[:MAX_NAMES]


def merge_trace(cur: dict | None, trace_id: str, spans: list[dict], fresh: list[dict]) -> dict:
    """Fold a batch of one trace's spans into its trace row. The times, status, name and ids
    are read from every span of the batch (`spans`); the counts from `fresh`, those of them
    not stored before, so that a span written again counts once: spans, errors, and the token
    usage and cost of LLM calls (spans that are not agent, workflow or chain spans, which
    carry their children's totals). models and tools: the distinct names the fresh spans
    call, added to the row's (sorted, the first 20)."""
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
    t["span_count"] += len(fresh)
    t["error_count"] = (t.get("error_count") or 0) + sum(1 for s in fresh if s.get("status_code") == "ERROR")
    inp = out = total = 0
    cost = 0.0
    models: set[str] = set()
    tools: set[str] = set()
    for span in fresh:
        attrs = span.get("attributes") or {}
        tool = _first(attrs, TOOL, _name)
        if tool is not None:
            tools.add(tool)
        if is_aggregate(attrs):
            continue
        model = _first(attrs, MODEL, _name)
        if model is not None:
            models.add(model)
        i, o, n, c = usage(attrs)
        inp += i or 0
        out += o or 0
        total += n or 0
        cost += c or 0.0
    for field, added in (("input_tokens", inp), ("output_tokens", out), ("total_tokens", total)):
        t[field] = min((t.get(field) or 0) + added, MAX_COUNT)
    summed = (t.get("cost") or 0.0) + cost
    t["cost"] = summed if math.isfinite(summed) else t.get("cost") or 0.0
    t["models"] = _names(t.get("models"), models)
    t["tools"] = _names(t.get("tools"), tools)
    return t


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
            "p95_ms": percentile(sorted(durations), 95), "max_ms": max(durations) if durations else None,
            "first_start": first, "last_start": last,
        })
    return out
