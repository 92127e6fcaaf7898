"""`/approvals`: the human-in-the-loop inbox. List, count pending, read, resolve (a
compare-and-set: a second resolution is 409), delete. Resolving the last pending approval of
a paused run resumes that run on this server, so an approval given in the inbox (or the
dashboard) needs no second call. Approvals are read where their runs wrote them: an agent's
own db with `component_id`, else the OS's."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from agentkeep.db.errors import ConflictError, NotFoundError
from agentkeep.db.models import Approval, Job
from agentkeep.os.auth import caller_of
from agentkeep.os.compat import ApprovalOut
from agentkeep.os.jobs import Permanent, handles
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, served_agent, the_os

router = APIRouter(tags=["approvals"])
log = logging.getLogger("agentkeep.os")


class Resolve(BaseModel):
    status: Literal["approved", "rejected"]
    resolved_by: str | None = Field(None, max_length=255)
    resolution_data: dict | None = None
    resume: bool = Field(True, description="resume the paused run once none of its approvals is pending")


def _json(approval: Approval) -> dict:
    out = approval.model_dump()
    out["resolution_data"] = approval.resolution  # the reference's name
    return out


@router.get("/approvals", response_model=ListPage[ApprovalOut])
async def list_approvals(
    request: Request,
    user_id: Owner,
    status: Literal["pending", "approved", "rejected", "expired"] | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
    run_id: str | None = None,
    component_id: str | None = Query(None, description="an agent's id: the approvals in its db"),
    limit: int = Query(100, ge=1, le=1000),
    page: int = Query(1, ge=1),
    cursor: str | None = None,
    with_total: bool = True,
) -> Any:
    """Newest first."""
    result = await db_for(request, component_id).list_approvals(
        status=status, user_id=user_id, agent_id=agent_id, session_id=session_id, run_id=run_id, limit=limit,
        cursor=cursor, offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([_json(a) for a in result.items], limit, page, result.next_cursor, result.total)


@router.get("/approvals/count")
async def count_pending(request: Request, user_id: Owner,
                        component_id: str | None = None) -> dict:
    return {"count": await db_for(request, component_id).count_pending_approvals(user_id=user_id)}


async def _approval(request: Request, approval_id: str, user_id: str | None, component_id: str | None) -> Any:
    approval = await db_for(request, component_id).get_approval(approval_id, user_id=user_id)
    if approval is None:
        raise NotFoundError(f"approval {approval_id!r} not found")
    return approval


@router.get("/approvals/{approval_id}", response_model=ApprovalOut)
async def get_approval(approval_id: str, request: Request, user_id: Owner,
                       component_id: str | None = None) -> Any:
    return json_response(_json(await _approval(request, approval_id, user_id, component_id)))


@router.get("/approvals/{approval_id}/status")
async def approval_status(approval_id: str, request: Request, user_id: Owner,
                          component_id: str | None = None) -> Any:
    a = await _approval(request, approval_id, user_id, component_id)
    return json_response({"approval_id": a.id, "status": a.status, "run_id": a.run_id or "",
                          "resolved_at": a.resolved_at, "resolved_by": a.resolved_by})


class Resolved(ApprovalOut):
    resumed: bool = False  # whether resolving resumed the paused run here


@router.post("/approvals/{approval_id}/resolve", response_model=Resolved)
async def resolve(approval_id: str, body: Resolve, request: Request, user_id: Owner,
                  component_id: str | None = None) -> Any:
    db = db_for(request, component_id)
    caller = caller_of(request)
    by = body.resolved_by if caller.via == "none" else caller.name  # with auth: who the caller is
    resolved = await db.resolve_approval(approval_id, status=body.status, resolved_by=by,
                                         resolution=body.resolution_data, user_id=user_id)
    out = _json(resolved)
    out["resumed"] = body.resume and await _resume(request, db, resolved)
    return json_response(out)


async def _resume(request: Request, db: Any, approval: Approval) -> bool:
    """Resume the approval's paused run in this server when nothing of it is pending any more
    (False when the run is not paused, or its agent is not served here)."""
    agent = served_agent(request, approval.agent_id or "")
    if agent is None or approval.run_id is None:
        return False
    if (await db.list_approvals(status="pending", run_id=approval.run_id, limit=1)).items:
        return False
    run = await db.get_run(approval.run_id)
    if run is None or run.status != "paused":
        return False
    # a durable job: the run resumes even if this replica stops now (one job per run)
    job = Job(id=f"continue-{run.run_id}", kind="agent.continue", user_id=run.user_id,
              payload={"agent_id": agent.id, "run_id": run.run_id, "session_id": run.session_id})
    await the_os(request).enqueue(db_for(request), job)
    return True


@handles("agent.continue")
async def resume(agent_os: Any, db: Any, job: Job) -> dict:
    p = job.payload
    agent = agent_os.agents.get(p["agent_id"])
    if agent is None:
        raise Permanent(f"agent {p['agent_id']!r} is not served here")
    agent = agent_os.agent_in(agent, db)
    try:
        async for _ in agent.acontinue_events(p["run_id"], user_id=job.user_id, session_id=p["session_id"]):
            pass
    except ConflictError:  # resumed by another caller first: the run goes on there
        return {"run_id": p["run_id"], "resumed": False}
    return {"run_id": p["run_id"], "resumed": True}


@router.delete("/approvals/{approval_id}", status_code=204)
async def delete_approval(approval_id: str, request: Request, user_id: Owner,
                          component_id: str | None = None) -> None:
    if not await db_for(request, component_id).delete_approval(approval_id, user_id=user_id):
        raise NotFoundError(f"approval {approval_id!r} not found")
