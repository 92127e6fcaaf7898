"""`/metrics` (daily rollups, refresh) and `/eval-runs` (run an eval as a durable job, list,
read, rename, delete). Metrics and evals live in the eval db (`AgentOS(eval_db=)`) for evals,
the OS's db for metrics."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field, ValidationError

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.db.models import EvalRun, Job, MetricsDay
from agentkeep.eval.cases import CASE, AccuracyCase, JudgeCase, PerformanceCase, ReliabilityCase, validation_message
from agentkeep.os.app import as_async
from agentkeep.os.auth import caller_of
from agentkeep.os.jobs import Permanent, handles
from agentkeep.os.routes.common import (
    ListPage,
    Owner,
    db_for,
    json_response,
    offset_of,
    page_of,
    served_agent,
    the_os,
)
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


# -- running an eval ----------------------------------------------------------------------------

class _Target(BaseModel):
    agent_id: str = Field(min_length=1, max_length=200, description="the served agent to evaluate")
    user_id: Optional[str] = None
    judge_agent_id: Optional[str] = Field(
        None, min_length=1, max_length=200,
        description="the served agent whose model grades (judged evals); by default the evaluated agent's own")


class AccuracyRequest(AccuracyCase, _Target):
    # a scoring function would be code named by the caller: over HTTP, the match or a judge only
    scoring: Literal["match", "judge"] = "match"


class JudgeRequest(JudgeCase, _Target):
    pass


class ReliabilityRequest(ReliabilityCase, _Target):
    pass


class PerformanceRequest(PerformanceCase, _Target):
    pass


NewEvalRun = Annotated[Union[AccuracyRequest, JudgeRequest, ReliabilityRequest, PerformanceRequest],
                       Body(discriminator="eval_type")]
TARGET_FIELDS = {"agent_id", "user_id", "judge_agent_id"}


class QueuedEvalRun(EvalRun):
    job_id: str


def _judge_for(case: Any, agent: Any, judge_agent: Any) -> Any:
    """The model that grades, when the case is judged: the judge agent's, else the agent's own."""
    judged = case.eval_type == "agent_as_judge" or getattr(case, "scoring", None) == "judge"
    return (judge_agent or agent).model if judged else None


@router.post("/eval-runs", tags=["evals"], status_code=202, response_model=QueuedEvalRun)
async def create_eval_run(body: NewEvalRun, request: Request) -> Any:
    """Run an eval of a served agent as a durable job: 202 at once with the eval run (status
    `queued`, then `running`, then `completed` with its score and result, or `failed` with
    its error) and its job's id."""
    user_id = caller_of(request).owner(body.user_id)
    agent = served_agent(request, body.agent_id)
    if agent is None:
        raise InvalidInputError(f"agent_id: no agent {body.agent_id!r} is served here")
    judge_agent = None
    if body.judge_agent_id is not None:
        judge_agent = served_agent(request, body.judge_agent_id)
        if judge_agent is None:
            raise InvalidInputError(f"judge_agent_id: no agent {body.judge_agent_id!r} is served here")
    case = CASE.validate_python(body.model_dump(exclude=TARGET_FIELDS))
    case.to_eval(agent, judge=_judge_for(case, agent, judge_agent))  # every check, before anything is written
    row = EvalRun(name=body.name, eval_type=body.eval_type, status="queued", agent_id=agent.id, model=agent.model.id,
                  input=body.input, user_id=user_id)
    db = eval_db(request)
    row = await db.save_eval_run(row)
    payload = {"eval_run_id": row.id, "agent_id": agent.id, "judge_agent_id": body.judge_agent_id,
               "case": case.model_dump()}
    try:
        job = await the_os(request).enqueue(db_for(request), Job(id=f"eval-{row.id}", kind="eval.run",
                                                                 user_id=user_id, payload=payload))
    except Exception as exc:  # never left queued with no job to run it
        row.status, row.error = "failed", f"could not queue the eval: {type(exc).__name__}"
        await db.save_eval_run(row)
        raise
    return json_response({**row.model_dump(), "job_id": job.id}, status_code=202)


def _eval_db_of(agent_os: Any, job_db: Any) -> Any:
    """Where a job's eval run lives: a tenant keeps every domain in its db (its jobs too)."""
    if job_db is not agent_os.db:
        return job_db
    return agent_os.eval_db if agent_os.eval_db is not None else agent_os.db


@handles("eval.run")
async def run_eval(agent_os: Any, db: Any, job: Job) -> dict:
    p = job.payload
    evals = as_async(_eval_db_of(agent_os, db))
    row = await evals.get_eval_run(p["eval_run_id"])
    if row is None:
        raise Permanent(f"eval run {p['eval_run_id']} was deleted before it ran")
    if row.status in ("completed", "failed"):  # an earlier attempt ended it; its process stopped after
        return {"eval_run_id": row.id, "status": row.status, "score": row.score}
    try:
        agent = agent_os.agents.get(p["agent_id"])
        judge_agent = agent_os.agents.get(p["judge_agent_id"]) if p["judge_agent_id"] else None
        if agent is None or (p["judge_agent_id"] and judge_agent is None):
            raise InvalidInputError(f"agent {p['agent_id']!r} (or its judge) is not served here")
        agent = agent_os.agent_in(agent, db)  # a tenant's job: the agent in the tenant's db
        case = CASE.validate_python(p["case"])
        made = case.to_eval(agent, judge=_judge_for(case, agent, judge_agent), db=evals, name=row.name)
    except (InvalidInputError, ValidationError) as exc:
        message = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        row.status, row.error = "failed", message
        await evals.save_eval_run(row)
        raise Permanent(message) from None
    # a second attempt (the first one's process stopped) runs the eval again from the start
    result = await made.arun(user_id=row.user_id, eval_run_id=row.id)
    if result.status == "failed":
        raise Permanent(result.error or "the eval failed")
    return {"eval_run_id": row.id, "status": result.status, "score": result.score, "passed": result.passed}
