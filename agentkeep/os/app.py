"""`AgentOS`: a FastAPI app that serves agents and their records.

    agent_os = AgentOS(agents=[agent], db=db)     # trace_db=..., eval_db=... optional
    app = agent_os.get_app()
    agent_os.serve(app="main:app", port=7777)

On boot (the app's lifespan) every distinct db it was given or found on its agents gets its
tables and pending additive migrations, under the db's schema lock, so replicas booting at
once are safe; a db that cannot be reached fails the boot. While it serves, every
`sweep_seconds` it marks `error` the runs whose process died (a run in progress holds a lease
its process renews; see `Agent(run_lease_seconds=)`), so with several replicas on one db
nothing stays `running` forever; a worker does the durable jobs (agentkeep/os/jobs.py), a
scheduler fires the schedules (agentkeep/os/scheduler.py; `scheduler=False` for none), and
every `metrics_seconds` a metrics refresh is queued for the worker. Every
`approvals_sweep_seconds` the pending approvals past their expiry are expired and their runs
ended (routes/approvals.py); with a `webhook_url`, approvals and failed scheduled runs are
POSTed there (webhooks.py). On shutdown the spans still in
the exporter are written and every db is closed."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from agentkeep.agent import Agent
from agentkeep.agent._async.util import ThreadedDb
from agentkeep.agent.live import LIVE_RUNS
from agentkeep.db.errors import (
    ConflictError,
    ConnectionFailedError,
    DbError,
    InvalidInputError,
    NotFoundError,
    OwnershipError,
)
from agentkeep.knowledge.fetch import networks
from agentkeep.os.auth import Auth, Forbidden, JWTAuth, Unauthorized, authenticate
from agentkeep.os.jobs import Worker
from agentkeep.os.scheduler import Scheduler
from agentkeep.os.webhooks import webhook_settings

log = logging.getLogger("agentkeep.os")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # a knowledge upload travels in its job's record (a db record is at most 4 MiB)


class Problem(BaseModel):
    """An error answer: a message, or (422 on a request that does not fit its schema) a list
    of `{field, reason}`."""

    detail: str | list[dict]


# documented on every route: what the error handlers below answer
ERROR_RESPONSES: dict = {status: {"model": Problem, "description": text} for status, text in (
    (400, "the body cannot be read (not UTF-8, not JSON, a broken form)"),
    (401, "no credential, or one the server does not accept"), (403, "the caller may not do this"),
    (404, "no such record (or another user's)"), (409, "a conflict: the record changed, exists or moved on"),
    (413, "the request body is over the server's limit"), (422, "the request does not fit: which field, and why"),
    (503, "a db the server needs cannot be reached"))}


class BootError(RuntimeError):
    """A db the server needs could not be brought up: the server does not start."""


class AgentOS:
    def __init__(self, agents: Sequence[Agent] = (), db: Any = None, *, trace_db: Any = None, eval_db: Any = None,
                 name: str = "agentkeep", security_key: str | None = None, jwt: JWTAuth | None = None,
                 allow_remote_without_auth: bool = False, cors_origins: Sequence[str] = (),
                 max_body_bytes: int = MAX_BODY_BYTES, sweep_seconds: float | None = 10,
                 tenant_db: Callable[[Request], Any] | None = None, knowledge: Sequence[Any] = (),
                 url_allow_networks: Sequence[str] = (), max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 jobs: bool = True, metrics_seconds: float | None = 300, scheduler: bool = True,
                 schedule_poll_seconds: float = 1.0, misfire_grace_seconds: float = 60,
                 job_lease_seconds: float = 60, job_concurrency: int = 2,
                 approvals_sweep_seconds: float | None = 30,
                 webhook_url: str | None = None, webhook_secret: str | None = None) -> None:
        agents = list(agents)
        if not all(isinstance(a, Agent) for a in agents):
            raise InvalidInputError("agents must be agentkeep Agents")
        ids = [a.id for a in agents]
        if len(set(ids)) != len(ids):
            raise InvalidInputError(f"two agents share an id: {sorted(i for i in ids if ids.count(i) > 1)}")
        if tenant_db is not None and not callable(tenant_db):
            raise InvalidInputError("tenant_db must be a callable from a request to a db")
        if db is None and tenant_db is None and not any(a.db is not None for a in agents):
            raise InvalidInputError("AgentOS needs a db (or agents that have one)")
        for agent in agents:  # an agent without a db (or trace db) of its own keeps its records in the OS's
            agent.keep_in(db=db, trace_db=trace_db)
        self.agents = {a.id: a for a in agents}
        self.db = db if db is not None else next((a.db for a in agents if a.db is not None), None)
        self.tenant_db = tenant_db
        self._tenants: dict[int, Any] = {}  # the tenant dbs seen (and brought up) so far
        self._tenant_agents: dict[tuple[str, int], Agent] = {}
        self._tenant_lock = asyncio.Lock()
        self.trace_db = trace_db
        self.eval_db = eval_db
        self.name = name
        self.auth = Auth(security_key, jwt, allow_remote_without_auth)
        self.cors_origins = list(cors_origins)
        self.max_body_bytes = max_body_bytes
        self.sweep_seconds = _seconds(sweep_seconds, "sweep_seconds")
        self.metrics_seconds = _seconds(metrics_seconds, "metrics_seconds")
        self.approvals_sweep_seconds = _seconds(approvals_sweep_seconds, "approvals_sweep_seconds")
        self.webhook_url, self.webhook_secret = webhook_settings(webhook_url, webhook_secret)  # or $AGENTKEEP_WEBHOOK_*
        self.knowledge = _knowledge_bases([*knowledge, *(a.knowledge for a in agents if a.knowledge is not None)])
        self.url_networks = networks(url_allow_networks)
        if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
            raise InvalidInputError(f"max_upload_bytes must be a positive int, got {max_upload_bytes!r}")
        self.max_upload_bytes = max_upload_bytes
        if isinstance(job_concurrency, bool) or not isinstance(job_concurrency, int) or not 1 <= job_concurrency <= 256:
            raise InvalidInputError(f"job_concurrency must be an int in 1..256, got {job_concurrency!r}")
        self.worker = Worker(self, lease_seconds=_seconds(job_lease_seconds, "job_lease_seconds", False),
                             concurrency=job_concurrency) if jobs else None
        self.scheduler = Scheduler(self, poll_seconds=_seconds(schedule_poll_seconds, "schedule_poll_seconds", False),
                                   misfire_grace_seconds=_seconds(misfire_grace_seconds, "misfire_grace_seconds",
                                                                  False)) if scheduler else None
        self._app: FastAPI | None = None

    # -- the dbs ------------------------------------------------------------------------------

    def dbs(self) -> list[Any]:
        """Every distinct db: the OS's, each agent's (and trace db), the trace and eval dbs."""
        found: dict[int, Any] = {}
        for db in [self.db, self.trace_db, self.eval_db, *(a.db for a in self.agents.values()),
                   *(a.trace_db for a in self.agents.values())]:
            if db is not None:
                found.setdefault(id(db), db)
        return list(found.values())

    async def tenant_for(self, request: Request) -> Any:
        """The request's tenant db (`tenant_db`), brought up on first sight; None without a
        resolver."""
        if self.tenant_db is None:
            return None
        db = self.tenant_db(request)
        if inspect.isawaitable(db):
            db = await db
        if not hasattr(db, "append_run"):
            raise InvalidInputError("the tenant resolver did not give a db")
        if id(db) not in self._tenants:
            async with self._tenant_lock:
                if id(db) not in self._tenants:
                    await as_async(db).migrate()
                    self._tenants[id(db)] = db
        return db

    def agent_in(self, agent: Agent, tenant: Any) -> Agent:
        """`agent` keeping its records in the tenant's db (one copy per agent and tenant); the
        agent itself when `tenant` is not a tenant's db."""
        if id(tenant) not in self._tenants:
            return agent
        key = (agent.id, id(tenant))
        if key not in self._tenant_agents:
            self._tenant_agents[key] = agent.bound_to(tenant)
        return self._tenant_agents[key]

    def job_dbs(self) -> list[Any]:
        """The dbs that keep jobs: the OS's and the tenants' seen so far."""
        return [db for db in [self.db, *self._tenants.values()] if db is not None]

    async def enqueue(self, db: Any, job: Any) -> Any:
        """Queue a durable job in `db` (an awaitable db) and wake this replica's worker."""
        queued = await db.enqueue_job(job)
        if self.worker is not None:
            self.worker.wake()
        return queued

    def run_dbs(self) -> list[Any]:
        """The dbs that keep runs: the OS's, each agent's, and the tenants' seen so far."""
        found: dict[int, Any] = {}
        for db in [self.db, *(a.db for a in self.agents.values()), *self._tenants.values()]:
            if db is not None:
                found.setdefault(id(db), db)
        return list(found.values())

    async def sweep(self) -> int:
        """Mark `error` the runs whose process died (their lease ended), in every db that
        keeps runs; any replica may do it, each run is failed once."""
        failed = 0
        for db in self.run_dbs():
            try:
                while batch := await as_async(db).fail_expired_runs(alive=list(LIVE_RUNS)):
                    failed += len(batch)
                    log.warning("%r: %d runs whose process stopped are now 'error': %s", db, len(batch),
                                ", ".join(r.run_id for r in batch))
            except DbError as exc:  # the next sweep tries again
                log.warning("%r: could not look for runs whose process stopped: %s", db, exc)
        return failed

    async def sweep_approvals(self) -> int:
        """Expire the pending approvals past their `expires_at` in every db that keeps runs
        and end their runs; announce new ones to the webhook (routes/approvals.py)."""
        from agentkeep.os.routes.approvals import sweep_approvals

        return await sweep_approvals(self)

    async def refresh_metrics_soon(self) -> None:
        """Queue a metrics refresh in every db that keeps jobs (single-flight: one queued or
        running is that one); the worker rolls up only the days that changed."""
        from agentkeep.db.models import Job

        for db in self.job_dbs():
            try:
                await self.enqueue(as_async(db), Job(id="metrics.refresh", kind="metrics.refresh"))
            except DbError as exc:  # the next round tries again
                log.warning("%r: could not queue a metrics refresh: %s", db, exc)

    async def _every(self, seconds: float, work: Callable[[], Any], what: str) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s failed", what)
            await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        for db in self.dbs():
            try:
                steps = await as_async(db).migrate()
            except ConnectionFailedError as exc:
                raise BootError(f"cannot reach {db!r}: {exc}") from exc
            except DbError as exc:
                raise BootError(f"cannot bring up the tables of {db!r}: {exc}") from exc
            if steps:
                log.info("%r: applied %d schema steps", db, len(steps))
        for agent in self.agents.values():  # the first run should not stall the event loop on imports
            await asyncio.to_thread(_prepare, agent)
        loop = asyncio.get_running_loop()
        periodic = [loop.create_task(self._every(self.sweep_seconds, self.sweep, "the sweep for dead runs"))
                    if self.sweep_seconds else None]
        if self.metrics_seconds and self.worker is not None:  # the metrics roll up by themselves
            periodic.append(loop.create_task(self._every(self.metrics_seconds, self.refresh_metrics_soon,
                                                         "queueing a metrics refresh")))
        if self.approvals_sweep_seconds:  # approvals past their expiry end, on every replica (once each)
            periodic.append(loop.create_task(self._every(self.approvals_sweep_seconds, self.sweep_approvals,
                                                         "the sweep for expired approvals")))
        worker = loop.create_task(self.worker.serve()) if self.worker is not None else None
        if self.scheduler is not None:  # its ticks become jobs: fired by the worker here or another replica's
            periodic.append(loop.create_task(self.scheduler.serve()))
        try:
            yield
        finally:
            from agentkeep.agent import tracing

            for task in periodic:
                if task is not None:
                    task.cancel()
            if worker is not None:
                worker.cancel()
                await self.worker.stop()  # their jobs go back to the queue for another replica

            await asyncio.to_thread(tracing.flush)
            for db in [*self.dbs(), *self._tenants.values()]:
                with contextlib.suppress(Exception):
                    await as_async(db).close()

    # -- the app ------------------------------------------------------------------------------

    def get_app(self) -> FastAPI:
        if self._app is not None:
            return self._app
        from agentkeep.os.routes import (
            agents,
            approvals,
            evals,
            health,
            jobs,
            knowledge,
            memories,
            schedules,
            sessions,
            traces,
        )

        app = FastAPI(title=self.name, lifespan=self.lifespan, responses=ERROR_RESPONSES)
        app.state.os = self
        if self.cors_origins:
            app.add_middleware(CORSMiddleware, allow_origins=self.cors_origins, allow_methods=["*"],
                               allow_headers=["*"], allow_credentials=True)
        app.add_middleware(BodyLimit, limit=self.max_body_bytes)
        _add_error_handlers(app)
        app.include_router(health.public)
        for module in (health, agents, sessions, memories, traces, approvals, schedules, evals, knowledge, jobs):
            app.include_router(module.router, dependencies=[Depends(authenticate)])
        self._app = app
        return app

    def serve(self, app: Any = None, *, host: str = "127.0.0.1", port: int = 7777, reload: bool = False,
              **options: Any) -> None:
        """Run the app with uvicorn (`app`: the app, or "module:attribute" for `reload`)."""
        import uvicorn

        uvicorn.run(app if app is not None else self.get_app(), host=host, port=port, reload=reload, **options)


def _seconds(value: Any, what: str, none: bool = True) -> float | None:
    if (value is None and not none) or (value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0)):
        raise InvalidInputError(f"{what} must be a number of seconds > 0{', or None' if none else ''}, got {value!r}")
    return value


def _knowledge_bases(found: list[Any]) -> dict[str, Any]:
    """The knowledge bases by id (their `name`, "default" without one); the same object once."""
    from agentkeep.knowledge import Knowledge

    out: dict[str, Any] = {}
    for kb in found:
        if not isinstance(kb, Knowledge):
            raise InvalidInputError(f"knowledge must be Knowledge objects, got {type(kb).__name__}")
        key = kb.name or "default"
        if out.get(key, kb) is not kb:
            raise InvalidInputError(f"two knowledge bases are named {key!r}: give each its own name")
        out[key] = kb
    return out


def _prepare(agent: Agent) -> None:
    prepare = getattr(agent.model, "prepare", None)
    if prepare is not None:
        prepare()
    agent.tracing  # noqa: B018 - sets up its exporter (imports the OpenTelemetry SDK)


def as_async(db: Any) -> Any:
    """A db whose methods are awaited: async dbs as they are, sync ones in worker threads."""
    if db is None or inspect.iscoroutinefunction(getattr(db, "append_run", None)):
        return db
    return ThreadedDb(db)


class PayloadTooLarge(Exception):
    """A request body over the server's `max_body_bytes` (answered 413)."""


class BodyLimit:
    """Refuse request bodies over `limit` bytes: at once when Content-Length says so, else
    (a chunked body) as soon as the bytes read pass it. A plain ASGI middleware: Starlette's
    `BaseHTTPMiddleware` costs a task group and two memory streams per request."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request body is over {limit} bytes"}, status_code=413)


STATUS = ((InvalidInputError, 422), (NotFoundError, 404), (OwnershipError, 404), (ConflictError, 409),
          (ConnectionFailedError, 503))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DbError)
    async def db_error(request: Request, exc: DbError) -> JSONResponse:
        for kind, status in STATUS:
            if isinstance(exc, kind):
                # another user's record is as missing as one that does not exist
                detail = "not found" if isinstance(exc, OwnershipError) else str(exc)
                return JSONResponse({"detail": detail}, status_code=status)
        log.error("db error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the db failed; see the server's log"}, status_code=500)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(PayloadTooLarge)
    async def too_large(request: Request, exc: PayloadTooLarge) -> JSONResponse:
        return _too_large(exc.args[0])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "reason": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server's log"}, status_code=500)
