"""The wire shapes the reference server's clients parse (agno's `AgentOSClient` and its
response models), beside agentkeep's own fields: a run's `input` as `{"input_content": ...}`
with `run_input` as text, paused tool calls marked `requires_confirmation`, a session's
`session_name` / `session_state` / `agent_session_id`, the config's `os_id` and
`databases`, memory stats' `total_memories`, a trace's `duration` as text and its span tree."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from agentkeep.db.models import Approval, MemoryStats, Run, Session, Span, Trace


def run_json(run: Run) -> dict:
    out = run.model_dump()
    text = run.input if isinstance(run.input, str) else None
    out["input"] = {"input_content": run.input}
    out["run_input"] = text or ""
    out["content_type"] = "str" if isinstance(run.content, str) or run.content is None else "dict"
    for tool in out["tools"]:  # a call waiting for its approval, as the reference marks it
        if tool.get("status") == "paused":
            tool["requires_confirmation"] = True
    return out


class RunOut(Run):
    """A run as the routes answer it (documents them): the reference's names beside ours."""

    run_input: str = ""
    content_type: str = "str"


class TraceOut(Trace):
    """A trace as the routes answer it: the reference's summary fields beside ours."""

    duration: str = ""
    total_spans: int = 0
    created_at: Optional[dt.datetime] = None


class ApprovalOut(Approval):
    resolution_data: Optional[dict] = None  # the reference's name for `resolution`


class SessionOut(Session):
    """A session as the routes answer it (documents them): the reference's names beside ours."""

    session_name: str = ""
    session_state: dict = {}
    agent_session_id: str = ""


def session_json(session: Session) -> dict:
    out = session.model_dump(exclude={"runs"})
    out.update(session_name=session.name or "", session_state=session.state, agent_session_id=session.session_id)
    return out


def memory_stats_json(stats: MemoryStats) -> dict:
    out = stats.model_dump(mode="json")
    out.update(total_memories=stats.memories, last_memory_updated_at=out["last_updated"])
    return out


def trace_json(trace: Trace) -> dict:
    """A trace with the reference's summary fields: `duration` as text, `total_spans`,
    `error_count`, `created_at` (its start) and an `end_time` even while it is open."""
    out = trace.model_dump()
    out.update(duration=_duration(trace.duration_ms), total_spans=trace.span_count,
               error_count=trace.error_count or 0, created_at=trace.start_time,
               end_time=trace.end_time or trace.start_time)
    return out


def trace_tree(spans: list[Span]) -> list[dict]:
    """The spans as a tree of nodes, roots first, children by start time; a span whose parent
    is missing (not sent, or not yet) is a root."""
    nodes = {s.span_id: _node(s) for s in sorted(spans, key=lambda s: s.start_time)}
    roots = []
    for span in sorted(spans, key=lambda s: s.start_time):
        parent = nodes.get(span.parent_span_id) if span.parent_span_id else None
        (parent["spans"] if parent is not None else roots).append(nodes[span.span_id])
    return roots


def _node(span: Span) -> dict:
    attributes = span.attributes
    return {
        "id": span.span_id, "span_id": span.span_id, "parent_span_id": span.parent_span_id, "name": span.name,
        "type": attributes.get("gen_ai.operation.name") or span.kind, "kind": span.kind,
        "status": span.status_code, "status_message": span.status_message,
        "error": span.status_message if span.status_code == "ERROR" else None,
        "start_time": span.start_time, "end_time": span.end_time or span.start_time,
        "duration_ms": span.duration_ms, "duration": _duration(span.duration_ms),
        "metadata": attributes, "attributes": attributes, "events": span.events, "spans": [],
    }


def _duration(ms: float | None) -> str:
    return "0ms" if ms is None else f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def db_ids(dbs: list[Any]) -> dict[int, str]:
    """A name for each db, stable for one server: its class, numbered when repeated."""
    names: dict[int, str] = {}
    for i, db in enumerate(dbs):
        names[id(db)] = f"{type(db).__name__.lower()}-{i}"
    return names
