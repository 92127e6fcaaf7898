"""`/metrics` (daily rollups, refresh) and `/eval-runs` (list, read, rename, delete). Metrics
and evals live in the eval db (`AgentOS(eval_db=)`) for evals, the OS's db for metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import EvalRun, MetricsDay
from agentkeep.os.app import as_async
from agentkeep.os.routes.common import ListPage, db_for, json_response, offset_of, page_of, the_os

router = APIRouter()


def eval_db(request: Request) -> Any:
    agent_os = the_os(request)
    return as_async(agent_os.eval_db if agent_os.eval_db is not None else agent_os.db)


@router.get("/metrics", tags=["metrics"], response_model=list[MetricsDay])
async def get_metrics(request: Request, starting_date: Optional[dt.date] = None, ending_date: Optional[dt.date] = None,
                      user_id: Optional[str] = Query(None, description="one user's rows; all users' when absent")) -> Any:
    """Daily rows from `starting_date` to `ending_date` (inclusive)."""
    rows = await db_for(request).get_metrics(start_date=starting_date, end_date=ending_date,
                                             user_id=user_id if user_id is not None else "")
    return json_response([r.model_dump() for r in rows])


@router.post("/metrics/refresh", tags=["metrics"])
async def refresh_metrics(request: Request) -> dict:
    """Roll up the days whose runs or sessions changed since the last refresh."""
    return {"rows_written": await db_for(request).refresh_metrics()}


class Rename(BaseModel):
    name: str


class EvalRunIds(BaseModel):
    eval_run_ids: list[str]
    user_id: Optional[str] = None


@router.get("/eval-runs", tags=["evals"], response_model=ListPage[EvalRun])
async def list_eval_runs(request: Request, user_id: Optional[str] = None, agent_id: Optional[str] = None,
                         eval_type: Optional[Literal["accuracy", "performance", "reliability", "agent_as_judge"]] = None,
                         limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1),
                         cursor: Optional[str] = None, with_total: bool = True) -> Any:
    result = await eval_db(request).list_eval_runs(
        user_id=user_id, agent_id=agent_id, eval_type=eval_type, limit=limit, cursor=cursor,
        offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([e.model_dump() for e in result.items], limit, page, result.next_cursor, result.total)


@router.get("/eval-runs/{eval_run_id}", tags=["evals"], response_model=EvalRun)
async def get_eval_run(eval_run_id: str, request: Request, user_id: Optional[str] = None) -> Any:
    found = await eval_db(request).get_eval_run(eval_run_id, user_id=user_id)
    if found is None:
        raise NotFoundError(f"eval run {eval_run_id!r} not found")
    return json_response(found.model_dump())


@router.patch("/eval-runs/{eval_run_id}", tags=["evals"], response_model=EvalRun)
async def rename_eval_run(eval_run_id: str, body: Rename, request: Request, user_id: Optional[str] = None) -> Any:
    return json_response((await eval_db(request).rename_eval_run(eval_run_id, body.name, user_id=user_id)).model_dump())


@router.delete("/eval-runs", tags=["evals"])
async def delete_eval_runs(body: EvalRunIds, request: Request) -> dict:
    return {"deleted": await eval_db(request).delete_eval_runs(body.eval_run_ids, user_id=body.user_id)}
