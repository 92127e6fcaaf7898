"""`/sessions`: list (never loading runs), read, rename, delete; a session's runs. A list
answers `{data, meta}` with the reference's page fields and `meta.next_cursor`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import Run, Session
from agentkeep.os.auth import caller_of
from agentkeep.os.compat import RunOut, SessionOut, run_json, session_json
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of

router = APIRouter(tags=["sessions"])
SORTS = {("updated_at", "desc"): "updated_desc", ("updated_at", "asc"): "updated_asc",
         ("created_at", "desc"): "created_desc", ("created_at", "asc"): "created_asc"}


_json = session_json


@router.get("/sessions", response_model=ListPage[SessionOut])
async def list_sessions(
    request: Request,
    user_id: Owner,
    component_id: str | None = Query(None, description="an agent's id: its sessions, from its db"),
    type: Literal["agent", "team", "workflow"] = "agent",
    session_name: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    page: int = Query(1, ge=1),
    cursor: str | None = None,
    sort_by: Literal["updated_at", "created_at"] = "updated_at",
    sort_order: Literal["asc", "desc"] = "desc",
    with_total: bool = True,
) -> Any:
    """A page of sessions, by `cursor` (where the previous page ended) or by `page` number."""
    result = await db_for(request, component_id).list_sessions(
        user_id=user_id, agent_id=component_id, session_type=type, name_contains=session_name,
        order=SORTS[(sort_by, sort_order)], limit=limit, cursor=cursor, offset=offset_of(page, limit, cursor),
        with_total=with_total)
    return page_of([_json(s) for s in result.items], limit, page, result.next_cursor, result.total)


@router.get("/sessions/{session_id}", response_model=SessionOut)
async def get_session(session_id: str, request: Request, user_id: Owner,
                      component_id: str | None = None) -> Any:
    session = await db_for(request, component_id).get_session(session_id, user_id=user_id)
    if session is None:
        raise NotFoundError(f"session {session_id!r} not found")
    return json_response(_json(session))


@router.get("/sessions/{session_id}/runs", response_model=list[RunOut])
async def list_runs(session_id: str, request: Request, user_id: Owner,
                    component_id: str | None = None, limit: int = Query(100, ge=1, le=1000),
                    cursor: str | None = None) -> Any:
    """The session's runs, oldest first, a page at a time: a list (as the reference's clients
    read it), and the next page's address in the `Link` header (rel="next")."""
    db = db_for(request, component_id)
    if await db.get_session(session_id, user_id=user_id) is None:
        raise NotFoundError(f"session {session_id!r} not found")
    result = await db.list_runs(session_id, user_id=user_id, limit=limit, cursor=cursor)
    headers = None
    if result.next_cursor is not None:
        following = request.url.include_query_params(cursor=result.next_cursor, limit=limit)
        headers = {"Link": f'<{following}>; rel="next"'}
    return json_response([run_json(r) for r in result.items], headers=headers)


@router.get("/sessions/{session_id}/runs/{run_id}", response_model=RunOut)
async def get_run(session_id: str, run_id: str, request: Request, user_id: Owner,
                  component_id: str | None = None) -> Any:
    run = await db_for(request, component_id).get_run(run_id, user_id=user_id)
    if run is None:  # a background run still queued: pending (cancelled or failed if it never started)
        job = await db_for(request).get_job(f"run-{run_id}", user_id=user_id)
        if job is not None:
            status = {"queued": "pending", "running": "pending", "cancelled": "cancelled"}.get(job.status, "error")
            run = Run(run_id=run_id, session_id=job.payload["session_id"], user_id=job.user_id, status=status,
                      agent_id=job.payload["agent_id"], input=job.payload["message"], created_at=job.created_at)
    if run is None or run.session_id != session_id:
        raise NotFoundError(f"run {run_id!r} not found in session {session_id!r}")
    return json_response(run_json(run))


class NewSession(BaseModel):
    session_id: str | None = None
    session_name: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    session_state: dict = {}


@router.post("/sessions", status_code=201, response_model=SessionOut)
async def create_session(body: NewSession, request: Request) -> Any:
    fields = {"name": body.session_name, "user_id": caller_of(request).owner(body.user_id), "agent_id": body.agent_id,
              "state": body.session_state}
    if body.session_id:
        fields["session_id"] = body.session_id
    created = await db_for(request, body.agent_id).upsert_session(Session(**fields), expected_revision=0)
    return json_response(_json(created), status_code=201)


class SessionIds(BaseModel):
    session_ids: list[str]
    user_id: str | None = None


@router.delete("/sessions")
async def delete_sessions(body: SessionIds, request: Request, component_id: str | None = None) -> dict:
    user_id = caller_of(request).owner(body.user_id)
    return {"deleted": await db_for(request, component_id).delete_sessions(body.session_ids, user_id=user_id)}


class Rename(BaseModel):
    session_name: str


@router.post("/sessions/{session_id}/rename", response_model=SessionOut)
async def rename_session(session_id: str, body: Rename, request: Request, user_id: Owner,
                         component_id: str | None = None) -> Any:
    renamed = await db_for(request, component_id).rename_session(session_id, body.session_name, user_id=user_id)
    return json_response(_json(renamed))


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, request: Request, user_id: Owner,
                         component_id: str | None = None) -> None:
    if not await db_for(request, component_id).delete_session(session_id, user_id=user_id):
        raise NotFoundError(f"session {session_id!r} not found")
