"""`/schedules`: cron schedules (create, list, read, update, delete, enable, disable, trigger)
and the runs each one made. The scheduler (agentkeep/os/scheduler.py) fires them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import MisfirePolicy, Schedule, ScheduleRun, ScheduleTarget
from agentkeep.os import scheduler
from agentkeep.os.auth import caller_of
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, the_os

router = APIRouter(tags=["schedules"])


class NewSchedule(BaseModel):
    name: str = ""
    cron: str
    timezone: str = "UTC"
    target: ScheduleTarget
    enabled: bool = True
    max_retries: int = Field(0, ge=0, le=100)
    timeout_seconds: float | None = Field(None, gt=0)
    misfire: MisfirePolicy = "once"
    misfire_limit: int = Field(10, ge=1, le=1000)
    user_id: str | None = None


class ScheduleChange(BaseModel):
    name: str | None = None
    cron: str | None = None
    timezone: str | None = None
    target: ScheduleTarget | None = None
    enabled: bool | None = None
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_seconds: float | None = Field(None, gt=0)
    misfire: MisfirePolicy | None = None
    misfire_limit: int | None = Field(None, ge=1, le=1000)
    expected_revision: int | None = None


async def _schedule(request: Request, schedule_id: str, user_id: str | None) -> Schedule:
    schedule = await db_for(request).get_schedule(schedule_id, user_id=user_id)
    if schedule is None:
        raise NotFoundError(f"schedule {schedule_id!r} not found")
    return schedule


@router.post("/schedules", status_code=201, response_model=Schedule)
async def create_schedule(body: NewSchedule, request: Request) -> Any:
    fields = {**body.model_dump(), "user_id": caller_of(request).owner(body.user_id)}
    created = await db_for(request).upsert_schedule(Schedule(**fields), expected_revision=0)
    return json_response(created.model_dump(), status_code=201)


@router.get("/schedules", response_model=ListPage[Schedule])
async def list_schedules(request: Request, user_id: Owner, enabled: bool | None = None,
                         limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1),
                         cursor: str | None = None, with_total: bool = True) -> Any:
    result = await db_for(request).list_schedules(user_id=user_id, enabled=enabled, limit=limit, cursor=cursor,
                                                  offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([s.model_dump() for s in result.items], limit, page, result.next_cursor, result.total)


@router.get("/schedules/{schedule_id}", response_model=Schedule)
async def get_schedule(schedule_id: str, request: Request, user_id: Owner) -> Any:
    return json_response((await _schedule(request, schedule_id, user_id)).model_dump())


async def _change(request: Request, schedule_id: str, user_id: str | None, changes: dict,
                  expected_revision: int | None = None) -> Any:
    current = await _schedule(request, schedule_id, user_id)
    if {"cron", "timezone", "enabled"} & set(changes):
        changes["next_run_at"] = None  # computed again from the new cron, zone or state
    updated = current.model_copy(update=changes)
    saved = await db_for(request).upsert_schedule(
        updated, expected_revision=expected_revision if expected_revision is not None else current.revision)
    return json_response(saved.model_dump())


@router.patch("/schedules/{schedule_id}", response_model=Schedule)
async def update_schedule(schedule_id: str, body: ScheduleChange, request: Request,
                          user_id: Owner) -> Any:
    """Change some fields: a compare-and-set on the revision read (or `expected_revision`)."""
    changes = body.model_dump(exclude_unset=True, exclude={"expected_revision"})
    return await _change(request, schedule_id, user_id, changes, body.expected_revision)


@router.post("/schedules/{schedule_id}/enable", response_model=Schedule)
async def enable(schedule_id: str, request: Request, user_id: Owner) -> Any:
    return await _change(request, schedule_id, user_id, {"enabled": True})


@router.post("/schedules/{schedule_id}/disable", response_model=Schedule)
async def disable(schedule_id: str, request: Request, user_id: Owner) -> Any:
    return await _change(request, schedule_id, user_id, {"enabled": False})


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, request: Request, user_id: Owner) -> None:
    if not await db_for(request).delete_schedule(schedule_id, user_id=user_id):
        raise NotFoundError(f"schedule {schedule_id!r} not found")


@router.get("/schedules/{schedule_id}/runs", response_model=ListPage[ScheduleRun])
async def schedule_runs(schedule_id: str, request: Request, user_id: Owner,
                        limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1),
                        cursor: str | None = None, with_total: bool = True) -> Any:
    """The schedule's runs, newest first (another user's schedule is 404)."""
    await _schedule(request, schedule_id, user_id)
    result = await db_for(request).list_schedule_runs(schedule_id, user_id=user_id, limit=limit, cursor=cursor,
                                                      offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([r.model_dump() for r in result.items], limit, page, result.next_cursor, result.total)


class Triggered(BaseModel):
    schedule_run_id: str  # the first attempt's (`GET /schedules/{id}/runs/{schedule_run_id}`)
    job_id: str
    status: str


@router.post("/schedules/{schedule_id}/trigger", status_code=202, response_model=Triggered)
async def trigger(schedule_id: str, request: Request, user_id: Owner) -> Any:
    """Fire the schedule now, outside its cron: queued at once (202), run by a worker."""
    schedule = await _schedule(request, schedule_id, user_id)
    run_id, job = await scheduler.trigger(the_os(request), db_for(request), schedule)
    return json_response({"schedule_run_id": run_id, "job_id": job.id, "status": job.status}, status_code=202)


@router.get("/schedules/{schedule_id}/runs/{schedule_run_id}", response_model=ScheduleRun)
async def schedule_run(schedule_id: str, schedule_run_id: str, request: Request, user_id: Owner) -> Any:
    run = await db_for(request).get_schedule_run(schedule_run_id, user_id=user_id)
    if run is None or run.schedule_id != schedule_id:
        raise NotFoundError(f"schedule run {schedule_run_id!r} not found")
    return json_response(run.model_dump())
