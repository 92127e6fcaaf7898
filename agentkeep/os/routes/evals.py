"""`/metrics` (daily rollups, refresh) and `/eval-runs` (list, read, rename, delete). Metrics
and evals live in the eval db (`AgentOS(eval_db=)`) for evals, the OS's db for metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import EvalRun, Job, MetricsDay
from agentkeep.os.auth import caller_of
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, the_os
from agentkeep.os.routes.jobs import job_json

router = APIRouter()


def eval_db(request: Request) -> Any:
    return db_for(request, domain="evals")


@router.get("/metrics", tags=["metrics"], response_model=list[MetricsDay])
async def get_metrics(request: Request, user_id: Owner, starting_date: dt.date | None = None,
                      ending_date: dt.date | None = None) -> Any:
    """Daily rows from `starting_date` to `ending_date` (inclusive): one user's, or (no
    `user_id`, an admin) the all-users rows."""
    rows = await db_for(request).get_metrics(start_date=starting_date, end_date=ending_date,
                                             user_id=user_id if user_id is not None else "")
    return json_response([r.model_dump() for r in rows])


@router.post("/metrics/refresh", tags=["metrics"], status_code=202, response_model=Job)
async def refresh_metrics(request: Request) -> Any:
    """Roll up the days whose runs or sessions changed since the last refresh (admin), as a
    job: one at a time (a refresh asked for while one is queued or running is that one)."""
    caller_of(request).require_admin("refreshing the metrics")
    job = await the_os(request).enqueue(db_for(request), Job(id="metrics.refresh", kind="metrics.refresh"))
    return json_response(job_json(job), status_code=202)


class Rename(BaseModel):
    name: str


class EvalRunIds(BaseModel):
    eval_run_ids: list[str]
    user_id: str | None = None


@router.get("/eval-runs", tags=["evals"], response_model=ListPage[EvalRun])
async def list_eval_runs(request: Request, user_id: Owner, agent_id: str | None = None,
                         eval_type: Literal["accuracy", "performance", "reliability", "agent_as_judge"] | None = None,
                         limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1),
                         cursor: str | None = None, with_total: bool = True) -> Any:
    result = await eval_db(request).list_eval_runs(
        user_id=user_id, agent_id=agent_id, eval_type=eval_type, limit=limit, cursor=cursor,
        offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([e.model_dump() for e in result.items], limit, page, result.next_cursor, result.total)


@router.get("/eval-runs/{eval_run_id}", tags=["evals"], response_model=EvalRun)
async def get_eval_run(eval_run_id: str, request: Request, user_id: Owner) -> Any:
    found = await eval_db(request).get_eval_run(eval_run_id, user_id=user_id)
    if found is None:
        raise NotFoundError(f"eval run {eval_run_id!r} not found")
    return json_response(found.model_dump())


@router.patch("/eval-runs/{eval_run_id}", tags=["evals"], response_model=EvalRun)
async def rename_eval_run(eval_run_id: str, body: Rename, request: Request, user_id: Owner) -> Any:
    return json_response((await eval_db(request).rename_eval_run(eval_run_id, body.name, user_id=user_id)).model_dump())


@router.delete("/eval-runs", tags=["evals"])
async def delete_eval_runs(body: EvalRunIds, request: Request) -> dict:
    user_id = caller_of(request).owner(body.user_id)
    return {"deleted": await eval_db(request).delete_eval_runs(body.eval_run_ids, user_id=user_id)}
