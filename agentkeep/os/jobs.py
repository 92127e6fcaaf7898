"""Long work (knowledge ingestion, metrics refresh) as the db's durable jobs: a route queues
a job and answers 202 with its id; a worker in every replica claims jobs under a lease,
renews the lease while the work runs, and records the outcome. A replica that dies leaves
its jobs to the others once their leases run out; a failed attempt is retried with backoff
until the job's attempts are spent. `GET /jobs/{id}` tells where a job is."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from typing import Any, Awaitable, Callable

from agentkeep.db.errors import ConflictError, DbError, InvalidInputError, NotFoundError
from agentkeep.db.models import Job

log = logging.getLogger("agentkeep.os.jobs")
Handler = Callable[[Any, Any, Job], Awaitable[dict]]  # (agent_os, the job's db, job) -> result
HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler
    return register


class Permanent(Exception):
    """A failure that another attempt would repeat: the job fails at once."""


class Worker:
    """Claims and runs jobs from the OS's db (and the tenants' dbs seen so far)."""

    def __init__(self, agent_os: Any, *, lease_seconds: float = 60, poll_seconds: float = 1.0,
                 concurrency: int = 2) -> None:
        self.os = agent_os
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds, self.poll_seconds, self.concurrency = lease_seconds, poll_seconds, concurrency
        self.running: set[asyncio.Task] = set()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was just queued here: look now rather than at the next poll."""
        self._wake.set()

    async def serve(self) -> None:
        while True:
            try:
                await self.claim()
            except Exception:
                log.exception("claiming jobs failed; trying again")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def claim(self) -> None:
        from agentkeep.os.app import as_async

        for raw in self.os.job_dbs():
            free = self.concurrency - len(self.running)
            if free <= 0:
                return
            db = as_async(raw)
            try:
                jobs = await db.claim_jobs(worker_id=self.id, kinds=list(HANDLERS), lease_seconds=self.lease_seconds,
                                           limit=free)
            except DbError as exc:
                log.warning("%r: cannot claim jobs: %s", raw, exc)
                continue
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._run(raw, db, job))
                self.running.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.running.discard(task)
        self._wake.set()  # a slot is free

    async def _run(self, raw: Any, db: Any, job: Job) -> None:
        work = asyncio.get_running_loop().create_task(HANDLERS[job.kind](self.os, raw, job))
        beat = asyncio.get_running_loop().create_task(self._heartbeat(db, job, work))
        try:
            result = await work
        except asyncio.CancelledError:
            if beat.done():  # the heartbeat lost the lease and stopped the work: another worker has it
                return
            # the server is stopping: queue it again at once for another replica
            with contextlib.suppress(DbError):
                await db.finish_job(job.id, worker_id=self.id, status="failed", error="the server stopped",
                                    retry_at=_now())
            raise
        except Exception as exc:
            await self._failed(db, job, exc)
        else:
            with contextlib.suppress(ConflictError, NotFoundError):
                await db.finish_job(job.id, worker_id=self.id, status="completed", result=result)
        finally:
            beat.cancel()

    async def _failed(self, db: Any, job: Job, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"[:2000]
        final = isinstance(exc, (Permanent, InvalidInputError)) or job.attempts >= job.max_attempts
        retry = None if final else _now() + dt.timedelta(seconds=min(60.0, 2.0 ** job.attempts))
        if not isinstance(exc, (Permanent, InvalidInputError)):
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, message)
        with contextlib.suppress(ConflictError, NotFoundError):
            await db.finish_job(job.id, worker_id=self.id, status="failed", error=message, retry_at=retry)

    async def _heartbeat(self, db: Any, job: Job, work: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await db.renew_job(job.id, worker_id=self.id, lease_seconds=self.lease_seconds)
            except (ConflictError, NotFoundError):
                log.warning("job %s: the lease was lost; stopping the work here", job.id)
                work.cancel()
                return
            except DbError as exc:  # the db is away: the lease may still hold until it is back
                log.warning("job %s: cannot renew the lease: %s", job.id, exc)

    async def stop(self) -> None:
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.wait(set(self.running), timeout=10)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@handles("metrics.refresh")
async def refresh_metrics(agent_os: Any, db: Any, job: Job) -> dict:
    from agentkeep.os.app import as_async

    return {"rows_written": await as_async(db).refresh_metrics()}
