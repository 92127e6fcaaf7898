"""`/approvals`: the human-in-the-loop inbox. List, count, read, resolve (a
compare-and-set: a second resolution is 409), delete. Resolving the last pending approval of
a paused run resumes that run on this server, so an approval given in the inbox (or the
dashboard) needs no second call. Approvals are read where their runs wrote them: an agent's
own db with `component_id`, else the OS's.

The sweep (`sweep_approvals`, every `AgentOS(approvals_sweep_seconds=)`) expires the pending
approvals past their `expires_at` in every db that keeps runs and resumes their runs, where
the runtime tells the model the call was not approved (expired); with a webhook it also
announces the approvals it has not announced yet (webhooks.py)."""

from __future__ import annotations

import logging
import weakref
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from agentkeep.agent._async.runner import EXPIRED_BY
from agentkeep.db.errors import ConflictError, DbError, NotFoundError
from agentkeep.db.models import Approval, Job, utcnow
from agentkeep.os import webhooks
from agentkeep.os.app import as_async
from agentkeep.os.auth import caller_of
from agentkeep.os.compat import ApprovalOut
from agentkeep.os.jobs import Permanent, handles
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, the_os

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
async def count_pending(request: Request, user_id: Owner, component_id: str | None = None,
                        status: Literal["pending", "approved", "rejected", "expired"] = "pending") -> dict:
    """The caller's approvals (an admin's: `user_id`'s, or everyone's) in `status`: pending
    by default."""
    db = db_for(request, component_id)
    if status == "pending":
        return {"count": await db.count_pending_approvals(user_id=user_id)}
    return {"count": (await db.list_approvals(status=status, user_id=user_id, limit=1, with_total=True)).total}


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
    agent_os, db = the_os(request), db_for(request, component_id)
    caller = caller_of(request)
    by = body.resolved_by if caller.via == "none" else caller.name  # with auth: who the caller is
    before = await _approval(request, approval_id, user_id, component_id)
    if _past_expiry(before):  # expired now, as the sweep would have: its run ends
        await expire(agent_os, db, before)
        raise ConflictError(f"approval {approval_id!r} expired at {before.expires_at.isoformat()}")
    started = utcnow()
    try:
        resolved = await db.resolve_approval(approval_id, status=body.status, resolved_by=by,
                                             resolution=body.resolution_data, user_id=user_id)
    except ConflictError:
        now = await db.get_approval(approval_id)
        # the db expired it in this call (it passed its expiry a moment ago): what follows an expiry
        if now is not None and now.status == "expired" and now.resolved_at is not None and now.resolved_at >= started:
            await _announce(agent_os, db, before, now)
            await resume_settled(agent_os, db, now)
        raise
    await _announce(agent_os, db, before, resolved)
    out = _json(resolved)
    out["resumed"] = body.resume and await resume_settled(agent_os, db, resolved)
    return json_response(out)


def _past_expiry(approval: Approval) -> bool:
    return approval.status == "pending" and approval.expires_at is not None and approval.expires_at <= utcnow()


async def _announce(agent_os: Any, db: Any, before: Approval, resolved: Approval) -> None:
    """The webhook events of a resolution this caller made: `approval.created` first when no
    sweep had announced it yet, then `approval.resolved`. A db that fails here is logged: the
    resolution stands."""
    try:
        await webhooks.approval_created(agent_os, db, before)
        await webhooks.approval_resolved(agent_os, db, resolved)
    except DbError as exc:
        log.warning("approval %s: could not queue its webhook events: %s", resolved.id, exc)


async def resume_settled(agent_os: Any, db: Any, approval: Approval) -> bool:
    """Resume the approval's paused run in this server when nothing of it is pending any more
    (False when the run is not paused, or its agent is not served here). `db`: where the
    approval is."""
    if approval.run_id is None or approval.agent_id not in agent_os.agents:
        return False
    db = as_async(db)
    if (await db.list_approvals(status="pending", run_id=approval.run_id, limit=1)).items:
        return False
    run = await db.get_run(approval.run_id)
    if run is None or run.status != "paused":
        return False
    # a durable job: the run resumes even if this replica stops now (one job per run)
    job = Job(id=f"continue-{run.run_id}", kind="agent.continue", user_id=run.user_id,
              payload={"agent_id": approval.agent_id, "run_id": run.run_id, "session_id": run.session_id})
    await agent_os.enqueue(webhooks.jobs_db(agent_os, db), job)
    return True


async def expire(agent_os: Any, db: Any, approval: Approval) -> bool:
    """Expire a pending approval past its `expires_at` (a compare-and-set: of several
    callers, one does it), announce it and resume its run, where the runtime tells the model
    the call expired (as `continue_run` does with an approval it finds expired). False when
    another caller resolved or expired it first."""
    try:
        expired = await as_async(db).resolve_approval(approval.id, status="expired", resolved_by=EXPIRED_BY)
    except (ConflictError, NotFoundError):  # resolved, expired or deleted by another caller first
        return False
    await _announce(agent_os, db, approval, expired)
    try:
        await resume_settled(agent_os, db, expired)
    except DbError as exc:  # the run stays paused: a continue call ends it
        log.warning("approval %s expired, but run %s could not be resumed: %s", expired.id, expired.run_id, exc)
    return True


SWEEP_PAGE = 200
# per server and db: the pending approvals whose `approval.created` is known to be queued
_announced: weakref.WeakKeyDictionary[Any, dict[int, set[str]]] = weakref.WeakKeyDictionary()


async def sweep_approvals(agent_os: Any) -> int:
    """Expire the pending approvals past their `expires_at` in every db that keeps runs, and
    end their runs (`expire`); with a webhook, queue `approval.created` for the pending ones
    not announced yet. Safe on any number of replicas: each approval is expired once, each
    event queued under one id. The number expired here."""
    expired = 0
    for raw in agent_os.run_dbs():
        seen = _announced.setdefault(agent_os, {}).setdefault(id(raw), set())
        try:
            expired += await _sweep(agent_os, raw, seen)
        except DbError as exc:  # the next sweep tries again
            log.warning("%r: could not sweep the approvals: %s", raw, exc)
    return expired


async def _sweep(agent_os: Any, raw: Any, seen: set[str]) -> int:
    db, now, expired, pending, cursor = as_async(raw), utcnow(), 0, set(), None
    announce = getattr(agent_os, "webhook_url", None) is not None
    while True:
        page = await db.list_approvals(status="pending", order="created_asc", limit=SWEEP_PAGE, cursor=cursor)
        for approval in page.items:
            if approval.expires_at is not None and approval.expires_at <= now:
                if await expire(agent_os, raw, approval):
                    expired += 1
                    log.info("approval %s (run %s) expired", approval.id, approval.run_id)
                continue
            pending.add(approval.id)
            if announce and approval.id not in seen:
                await webhooks.approval_created(agent_os, raw, approval)
                seen.add(approval.id)
        cursor = page.next_cursor
        if not cursor or not page.items:
            break
    seen.intersection_update(pending)  # resolved ones need no memory
    return expired


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
