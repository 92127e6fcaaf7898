"""`/traces`: traces with filters, one trace as a span tree, per-session stats; and OTLP/HTTP
ingest at `POST /v1/traces`, so any OpenTelemetry SDK can send its traces here. Traces live
in the trace db (`AgentOS(trace_db=)`), else the OS's db."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response

from agentkeep.db.errors import NotFoundError, OwnershipError
from agentkeep.db.models import Span
from agentkeep.db.traces import ATTRIBUTE_KEYS
from agentkeep.os import otlp
from agentkeep.os.app import PayloadTooLarge
from agentkeep.os.auth import caller_of
from agentkeep.os.compat import TraceOut, trace_json, trace_tree
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, the_os

router = APIRouter(tags=["traces"])
USER_KEYS = frozenset(ATTRIBUTE_KEYS["user_id"])  # every attribute a trace's owner is read from


def trace_db(request: Request) -> Any:
    return db_for(request, domain="traces")


@router.post("/v1/traces", tags=["otlp"])
async def ingest(request: Request) -> Response:
    """OTLP/HTTP trace export: protobuf (`application/x-protobuf`) or OTLP/JSON, plain or gzip."""
    limit = the_os(request).max_body_bytes
    try:
        body = otlp.inflate(await request.body(), request.headers.get("content-encoding"), limit)
    except otlp.TooLarge:
        raise PayloadTooLarge(limit) from None
    content_type = request.headers.get("content-type", "").lower()
    spans, rejected = otlp.spans_of(otlp.parse(body, content_type))
    db = trace_db(request)
    caller = caller_of(request)
    if not caller.admin and spans:  # a user's spans are theirs, whatever their attributes say
        rejected += await _write_owned(db, spans, caller.user_id)
    elif spans:
        await db.write_spans(spans)
    content, media_type = otlp.answer(rejected, content_type)
    return Response(content, media_type=media_type)


async def _write_owned(db: Any, spans: list[Span], user_id: str) -> int:
    """Write the spans as `user_id`'s (their user attributes replaced); spans that would join
    another user's trace are left out. Returns how many were."""
    for span in spans:  # made for this request: changed in place
        for key in USER_KEYS & span.attributes.keys():
            del span.attributes[key]
        span.attributes["agentkeep.user_id"] = user_id
    try:
        await db.write_spans(spans, user_id=user_id)  # one batched ownership check in the db
        return 0
    except OwnershipError:  # some trace is someone else's: find which, write the rest
        traces = await asyncio.gather(*(db.get_trace(t) for t in {s.trace_id for s in spans}))
        others = {t.trace_id for t in traces if t is not None and t.user_id != user_id}
        kept = [s for s in spans if s.trace_id not in others]
        if kept:
            await db.write_spans(kept, user_id=user_id)
        return len(spans) - len(kept)


@router.get("/traces", response_model=ListPage[TraceOut])
async def list_traces(
    request: Request,
    user_id: Owner,
    agent_id: str | None = None,
    session_id: str | None = None,
    run_id: str | None = None,
    team_id: str | None = None,
    workflow_id: str | None = None,
    status: Literal["ok", "error", "unset"] | None = None,
    start_time: dt.datetime | None = Query(None, description="traces that started at or after this time"),
    end_time: dt.datetime | None = Query(None, description="traces that started before this time"),
    model: str | None = Query(None, description="traces with a call to this model (see `models`)"),
    tool: str | None = Query(None, description="traces that ran this tool (see `tools`)"),
    min_duration_ms: float | None = Query(None, ge=0, description="traces that lasted at least this long"),
    max_duration_ms: float | None = Query(None, ge=0, description="traces that lasted at most this long"),
    sort_order: Literal["asc", "desc"] = "desc",
    limit: int = Query(20, ge=1, le=100),
    page: int = Query(1, ge=1),
    cursor: str | None = None,
    with_total: bool = True,
) -> Any:
    """Traces, newest first: a page by `cursor` or by `page` number. Each carries the token
    usage, cost, models and tools rolled up from its spans; a duration filter leaves out the
    traces still open (no end time)."""
    result = await trace_db(request).list_traces(
        user_id=user_id, agent_id=agent_id, session_id=session_id, run_id=run_id, team_id=team_id,
        workflow_id=workflow_id, status=status, started_after=_utc(start_time, -1), started_before=_utc(end_time),
        model=model, tool=tool, min_duration_ms=min_duration_ms, max_duration_ms=max_duration_ms,
        order=f"start_{sort_order}", limit=limit, cursor=cursor, offset=offset_of(page, limit, cursor),
        with_total=with_total)
    return page_of([trace_json(t) for t in result.items], limit, page, result.next_cursor, result.total)


@router.get("/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request, user_id: Owner) -> Any:
    """The trace with its spans as a tree (`tree`), and the spans as stored (`spans`)."""
    db = trace_db(request)
    trace = await db.get_trace(trace_id, user_id=user_id)
    if trace is None:
        raise NotFoundError(f"trace {trace_id!r} not found")
    spans: list[Span] = await db.get_spans(trace_id, user_id=user_id)
    return json_response({**trace_json(trace), "tree": trace_tree(spans), "spans": [s.model_dump() for s in spans]})


@router.get("/trace_session_stats", response_model=ListPage[dict])
async def trace_session_stats(
    request: Request,
    user_id: Owner,
    start_time: dt.datetime | None = None,
    end_time: dt.datetime | None = None,
    limit: int = Query(20, ge=1, le=100),
    page: int = Query(1, ge=1),
) -> Any:
    """Per session: its traces, errors and durations, first and last trace, most recent first."""
    stats = await trace_db(request).trace_stats(group_by="session", started_after=_utc(start_time, -1),
                                                started_before=_utc(end_time), user_id=user_id)
    rows = sorted((s for s in stats if s.key is not None), key=lambda s: s.last_start, reverse=True)
    window = rows[(page - 1) * limit: page * limit]
    data = [{"session_id": s.key, "total_traces": s.traces, "errors": s.errors, "avg_ms": s.avg_ms,
             "p95_ms": s.p95_ms, "first_trace_at": s.first_start, "last_trace_at": s.last_start} for s in window]
    return page_of(data, limit, page, None, len(rows))


def _utc(value: dt.datetime | None, nudge: int = 0) -> dt.datetime | None:
    """A query time as UTC (naive means UTC); `nudge=-1` makes an inclusive lower bound of the
    db's exclusive `started_after`."""
    if value is None:
        return None
    value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    return value + dt.timedelta(microseconds=nudge)
