"""The scheduler: fires each schedule's cron ticks exactly once, across replicas.

A poller in every replica claims due schedules with the db's lease (`claim_due_schedules`,
a compare-and-set), turns each due tick into a durable job keyed by the schedule and the
tick (`schedule:<schedule>@<tick>`), and releases the schedule with its next fire time. The
lease covers only that decision, so it is short and never held while a target runs.

The job worker (agentkeep/os/jobs.py) runs the tick's target under the job's lease, renewed
while it runs (a run longer than any lease is never taken twice); a replica that dies leaves
the job to another once the lease runs out; a failed attempt is retried with backoff
(`max_retries`) without holding anything. Every attempt is a `ScheduleRun` (`<key>:<n>`);
the target is an agent run whose id is the tick's (`schedule-<key>`), so a retry after a
crash finds what the dead attempt did: a finished run is not made again, a broken one is
replaced. Each tick therefore ends with one successful schedule run and one agent run.

Ticks missed while no scheduler ran (the misfire policy of the schedule): `skip` fires none
of them, `once` fires the latest, `all` each of them (at most `misfire_limit`, the latest);
what is left out is recorded as a `skipped` schedule run. A tick is missed when it is more
than `misfire_grace_seconds` old when a poller sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import uuid
from typing import Any

import httpx

from agentkeep.db.errors import ConflictError, DbError, NotFoundError
from agentkeep.db.models import Job, Schedule, ScheduleRun, new_id
from agentkeep.db.schedule import due_ticks
from agentkeep.os.auth import Caller
from agentkeep.os.jobs import Permanent, handles

log = logging.getLogger("agentkeep.os.scheduler")
UTC = dt.timezone.utc
FIRE = "schedule.fire"
FINISHED_RUN = ("completed", "paused")
TAKEN_OVER = "the worker stopped; taken over"
CRASHES = 5  # attempts cut by a dead worker or a shutdown a tick survives, beyond its retries
ON_TIME_MAX = 1000  # ticks within the grace kept at most (a cron with seconds fires often)  # an agent run a retry keeps as it is


def tick_key(schedule_id: str, tick: str) -> str:
    """The tick's key: `<schedule>@<tick>` (hashed when a long schedule id would not fit an id)."""
    key = f"{schedule_id}@{tick}"
    return key if len(key) <= 200 else f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@{tick}"


def tick_name(tick: dt.datetime) -> str:
    return tick.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class Scheduler:
    """Claims due schedules in the OS's db (and the tenants' seen so far) and queues their ticks."""

    def __init__(self, agent_os: Any, *, poll_seconds: float = 1.0, lease_seconds: float = 30,
                 batch: int = 50, concurrency: int = 8, misfire_grace_seconds: float = 60) -> None:
        self.os = agent_os
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_seconds, self.lease_seconds, self.batch = poll_seconds, lease_seconds, batch
        self.concurrency = concurrency  # claimed schedules queued at once (each a few db round trips)
        self.grace = dt.timedelta(seconds=misfire_grace_seconds)

    async def serve(self) -> None:
        while True:
            busy = False
            try:
                busy = await self.poll()
            except Exception:
                log.exception("polling the schedules failed; trying again")
            if not busy:  # a full batch: more may be due at once
                await asyncio.sleep(self.poll_seconds)

    async def poll(self, now: dt.datetime | None = None) -> bool:
        """Queue the due ticks of up to `batch` schedules per db; True when a batch was full."""
        from agentkeep.os.app import as_async

        full = False
        for raw in self.os.job_dbs():
            db = as_async(raw)
            try:
                claimed = await db.claim_due_schedules(worker_id=self.id, now=now, lease_seconds=self.lease_seconds,
                                                       limit=self.batch)
            except DbError as exc:
                log.warning("%r: cannot claim schedules: %s", raw, exc)
                continue
            full = full or len(claimed) == self.batch
            gate = asyncio.Semaphore(self.concurrency)

            async def queue(schedule: Schedule) -> None:
                async with gate:
                    try:
                        await self.queue_ticks(db, schedule, now or _now())
                    except DbError as exc:  # the lease runs out and a poller tries again
                        log.warning("schedule %s: cannot queue its ticks: %s", schedule.id, exc)

            await asyncio.gather(*(queue(s) for s in claimed))
        if self.os.worker is not None:
            self.os.worker.wake()
        return full

    async def queue_ticks(self, db: Any, schedule: Schedule, now: dt.datetime) -> None:
        # ticks within the grace fire whatever the policy; the policy decides about older ones
        ticks, skipped, following = due_ticks(schedule.cron, schedule.timezone, schedule.next_run_at, now,
                                              keep=schedule.misfire_limit + ON_TIME_MAX)
        missed = [t for t in ticks if now - t > self.grace]
        ticks = ticks[len(missed):]
        allowed = {"skip": 0, "once": 0 if ticks else 1, "all": schedule.misfire_limit}[schedule.misfire]
        fired_late = missed[len(missed) - allowed:] if allowed else []
        skipped += len(missed) - len(fired_late)
        ticks = fired_late + ticks
        for tick in ticks:  # a tick queued still is that job (a poller that stopped before releasing)
            await db.enqueue_job(_fire_job(schedule, tick_key(schedule.id, tick_name(tick)), tick, "schedule"))
        if skipped:
            key = tick_key(schedule.id, tick_name(schedule.next_run_at))
            await db.record_schedule_run(ScheduleRun(
                id=f"{key}:skipped", schedule_id=schedule.id, tick_at=schedule.next_run_at, status="skipped",
                finished_at=now, error=f"{skipped} ticks from {schedule.next_run_at.isoformat()} were missed and not "
                                       f"fired (misfire policy {schedule.misfire!r})"))
        with contextlib.suppress(ConflictError, NotFoundError):  # changed or deleted meanwhile: it is released
            await db.release_schedule(schedule.id, worker_id=self.id, next_run_at=following)


def _fire_job(schedule: Schedule, key: str, tick: dt.datetime, trigger: str) -> Job:
    return Job(id=f"schedule:{key}", kind=FIRE, user_id=schedule.user_id,
               max_attempts=schedule.max_retries + 1 + CRASHES,
               payload={"schedule_id": schedule.id, "key": key, "tick_at": tick.isoformat(), "trigger": trigger})


async def trigger(agent_os: Any, db: Any, schedule: Schedule) -> tuple[str, Job]:
    """Fire `schedule` now, outside its cron: (the first attempt's schedule run id, the job)."""
    now = _now()
    key = tick_key(schedule.id, f"manual-{tick_name(now)}-{new_id()[:8]}")
    job = await agent_os.enqueue(db, _fire_job(schedule, key, now, "manual"))
    return f"{key}:1", job


@handles(FIRE)
async def fire(agent_os: Any, raw: Any, job: Job) -> dict:
    """Run one tick's target: one attempt, recorded as a schedule run."""
    from agentkeep.os.app import as_async

    db = as_async(raw)
    p = job.payload
    schedule = await db.get_schedule(p["schedule_id"])
    if schedule is None:
        raise Permanent(f"schedule {p['schedule_id']!r} was deleted")
    key, tick = p["key"], dt.datetime.fromisoformat(p["tick_at"])
    if p["trigger"] == "schedule" and not schedule.enabled:
        return {"status": "skipped", "reason": "the schedule was disabled after this tick was queued"}
    # what earlier attempts of this tick left: a success (its job ended before it could say so,
    # or the tick was queued again after it ended) is the tick's; an attempt whose worker died
    # is marked so; the failures count against the retries
    failures, n = 0, 1
    while (earlier := await db.get_schedule_run(f"{key}:{n}")) is not None or n < job.attempts:
        if earlier is not None and earlier.status in ("success", "paused"):
            return {"schedule_run_id": earlier.id, "status": earlier.status, "run_id": earlier.run_id}
        if earlier is not None and earlier.status == "running" and n < job.attempts:
            await db.record_schedule_run(earlier.model_copy(update={
                "status": "failed", "finished_at": _now(), "error": TAKEN_OVER}))
        elif earlier is not None and earlier.status == "failed" and earlier.error != TAKEN_OVER:
            failures += 1
        n += 1
    record = ScheduleRun(id=f"{key}:{job.attempts}", schedule_id=schedule.id, tick_at=tick, trigger=p["trigger"],
                         attempt=job.attempts, status="running", started_at=_now())
    await db.record_schedule_run(record)
    try:
        target = _target(agent_os, raw, schedule, key)
        outcome = await (asyncio.wait_for(target, schedule.timeout_seconds) if schedule.timeout_seconds else target)
    except asyncio.CancelledError:
        with contextlib.suppress(DbError):
            await db.record_schedule_run(record.model_copy(update={
                "status": "cancelled", "finished_at": _now(), "error": "the server stopped"}))
        raise
    except Exception as exc:
        error = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"[:2000]
        failed = record.model_copy(update={"status": "failed", "finished_at": _now(), "error": error})
        await db.record_schedule_run(failed)
        if failures >= schedule.max_retries or job.attempts >= job.max_attempts or isinstance(exc, Permanent):
            await _notify_failed(agent_os, raw, schedule, failed)
            raise Permanent(error) from exc  # its retries are spent
        raise
    done = record.model_copy(update={"finished_at": _now(), **outcome})
    await db.record_schedule_run(done)
    return {"schedule_run_id": done.id, "status": done.status, "run_id": done.run_id}


async def _target(agent_os: Any, raw: Any, schedule: Schedule, key: str) -> dict:
    target = schedule.target
    if target.type == "agent":
        return await _agent_target(agent_os, raw, schedule, key)
    if target.type == "http":
        return await _http_target(agent_os, schedule)
    raise Permanent(f"a schedule's target of type {target.type!r} is not served here")


async def _agent_target(agent_os: Any, raw: Any, schedule: Schedule, key: str) -> dict:
    from agentkeep.agent.events import RunCompleted, RunError, RunPaused
    from agentkeep.os.app import as_async

    target = schedule.target
    agent = agent_os.agents.get(target.id or "")
    if agent is None:
        raise Permanent(f"agent {target.id!r} is not served here")
    agent = agent_os.agent_in(agent, raw)
    payload = target.payload
    message = payload.get("message") or payload.get("input")
    if not isinstance(message, str) or not message:
        raise Permanent("the schedule's target payload needs a 'message'")
    run_id = f"schedule-{key}"
    agent_db = as_async(agent.db)
    while (run := await agent_db.get_run(run_id)) is not None:
        if run.status in FINISHED_RUN:  # an earlier attempt finished it before its worker stopped
            return _outcome(run)
        if run.status == "running" and run.lease_until is not None and run.lease_until > _now():
            await asyncio.sleep(min(5.0, (run.lease_until - _now()).total_seconds() + 0.1))
            continue  # its process may still be running it: wait for the lease to end
        await agent_db.delete_run(run_id)  # a broken attempt: this one replaces it
    final = None
    async for event in agent.arun_events(message, user_id=schedule.user_id, run_id=run_id,
                                         session_id=payload.get("session_id") or run_id,
                                         session_state=payload.get("session_state")):
        final = event
    if isinstance(final, RunError):
        raise RuntimeError(final.error)
    if not isinstance(final, (RunCompleted, RunPaused)) or getattr(final, "run", None) is None:
        run = await agent_db.get_run(run_id)
        if run is None or run.status not in FINISHED_RUN:
            raise RuntimeError(f"the run ended {run.status if run else 'unrecorded'}")
        return _outcome(run)
    return _outcome(final.run)


def _outcome(run: Any) -> dict:
    return {"status": "paused" if run.status == "paused" else "success", "run_id": run.run_id,
            "session_id": run.session_id, "output": run.content}


async def _http_target(agent_os: Any, schedule: Schedule) -> dict:
    """Call one of the server's own routes in-process, as the schedule's owner."""
    target = schedule.target
    endpoint = target.endpoint or ""
    if not endpoint.startswith("/"):
        raise Permanent(f"an http target's endpoint is a path on this server, got {endpoint!r}")
    method = str(getattr(target, "method", None) or "POST").upper()
    caller = Caller(user_id=schedule.user_id, admin=schedule.user_id is None, via="schedule")
    with agent_os.auth.issued(caller) as token:
        transport = httpx.ASGITransport(app=agent_os.get_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://agentkeep.internal",
                                     timeout=None) as client:
            response = await client.request(method, endpoint, headers={"Authorization": f"Bearer {token}"},
                                            json=target.payload if method not in ("GET", "DELETE") else None)
    if response.status_code >= 400:
        message = f"{method} {endpoint} answered {response.status_code}: {response.text[:500]}"
        if response.status_code < 500 and response.status_code not in (408, 429):
            raise Permanent(message)
        raise RuntimeError(message)
    try:
        body = response.json()
    except ValueError:
        body = response.text[:10_000]
    run_id = body.get("run_id") if isinstance(body, dict) else None
    return {"status": "success", "run_id": run_id, "output": {"status_code": response.status_code, "body": body}}


async def _notify_failed(agent_os: Any, raw: Any, schedule: Schedule, run: ScheduleRun) -> None:
    try:
        from agentkeep.os.webhooks import notify
    except ImportError:
        return
    with contextlib.suppress(Exception):
        await notify(agent_os, raw, "schedule_run.failed",
                     {"schedule": schedule.model_dump(mode="json"), "schedule_run": run.model_dump(mode="json")})


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)
