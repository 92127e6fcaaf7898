"""`/health` (open to all), `/info`, `/config`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request

from agentkeep.os.compat import db_ids
from agentkeep.os.routes.common import the_os

public = APIRouter(tags=["server"])  # without authentication: for load balancers
router = APIRouter(tags=["server"])


def _version() -> str:
    try:
        return version("agentkeep")
    except PackageNotFoundError:
        return "unknown"


@public.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/info")
async def info(request: Request) -> dict:
    os = the_os(request)
    return {"name": os.name, "version": _version(), "agents": len(os.agents), "auth": os.auth.mode}


@router.get("/config")
async def config(request: Request) -> dict:
    os = the_os(request)
    ids = db_ids(os.dbs())
    if os.tenant_db is not None:  # every domain of a request lives in its tenant's db
        ids[id(os.db)] = ids[id(os.trace_db)] = ids[id(os.eval_db)] = "tenant"
    return {
        "os_id": os.name, "name": os.name, "os_database": ids[id(os.db)],
        "databases": list(ids.values()),
        "agents": [{"id": a.id, "name": a.name, "db_id": ids.get(id(a.db)),
                    "model": {"id": a.model.id, "provider": a.model.provider}} for a in os.agents.values()],
        "teams": [], "workflows": [], "interfaces": [],
        # which db keeps each domain (an agent's own db keeps its sessions, runs and approvals)
        "domains": {**{d: ids[id(os.db)] for d in ("sessions", "runs", "memories", "approvals", "knowledge",
                                                     "schedules", "metrics")},
                    "traces": ids[id(os.trace_db if os.trace_db is not None else os.db)],
                    "evals": ids[id(os.eval_db if os.eval_db is not None else os.db)]},
    }
