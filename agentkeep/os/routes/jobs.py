"""`/jobs`: where long work stands (knowledge ingestion, metrics refresh): list, read,
cancel one still queued. A user sees their own jobs; an admin everyone's."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import Job
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of

router = APIRouter(tags=["jobs"])


def job_json(job: Job) -> dict:
    return job.model_dump(exclude={"payload", "locked_by", "revision"})  # the payload may hold a whole file


@router.get("/jobs", response_model=ListPage[Job])
async def list_jobs(request: Request, user_id: Owner, kind: str | None = None,
                    status: Literal["queued", "running", "completed", "failed", "cancelled"] | None = None,
                    limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1), cursor: str | None = None,
                    with_total: bool = True) -> Any:
    """Newest first."""
    result = await db_for(request).list_jobs(user_id=user_id, kind=kind, status=status, limit=limit, cursor=cursor,
                                             offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([job_json(j) for j in result.items], limit, page, result.next_cursor, result.total)


@router.get("/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, request: Request, user_id: Owner) -> Any:
    job = await db_for(request).get_job(job_id, user_id=user_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return json_response(job_json(job))


@router.post("/jobs/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: str, request: Request, user_id: Owner) -> Any:
    """Cancel a job that has not started (409 once it runs or has ended)."""
    return json_response(job_json(await db_for(request).cancel_job(job_id, user_id=user_id)))
