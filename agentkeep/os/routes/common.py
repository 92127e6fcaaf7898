"""What the routes share: the OS from the request, the db a record lives in, list pages."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

from agentkeep.db.errors import NotFoundError
from agentkeep.os.app import AgentOS, as_async
from agentkeep.os.auth import caller_of


def the_os(request: Request) -> AgentOS:
    return request.app.state.os


def served_agent(request: Request, agent_id: str) -> Any:
    """The agent served as `agent_id` (in the request's tenant db, with a resolver), or None."""
    agent_os = the_os(request)
    agent = agent_os.agents.get(agent_id)
    tenant = request.state.tenant
    return agent if agent is None or tenant is None else agent_os.agent_in(agent, tenant)


def agent_of(request: Request, agent_id: str) -> Any:
    agent = served_agent(request, agent_id)
    if agent is None:
        raise NotFoundError(f"agent {agent_id!r} not found")
    return agent


def db_for(request: Request, agent_id: str | None = None, domain: str = "records") -> Any:
    """Where the request's records live: the tenant's db (a resolver keeps every domain of a
    tenant in one db); else an agent's db (`agent_id`), the trace or eval db (`domain`
    "traces", "evals"), or the OS's."""
    agent_os = the_os(request)
    if request.state.tenant is not None:
        return as_async(request.state.tenant)
    if agent_id:
        return as_async(agent_of(request, agent_id).db)
    special = {"traces": agent_os.trace_db, "evals": agent_os.eval_db}.get(domain)
    return as_async(special if special is not None else agent_os.db)


async def owner(request: Request, user_id: str | None = Query(
        None, description="whose records: with auth, your own (an admin may name anyone, or no one for all)")
) -> str | None:
    """The user every db call of the route is scoped to (see `Caller.owner`)."""
    return caller_of(request).owner(user_id)


# a route's `user_id`: the query parameter, checked against the caller
Owner = Annotated[str | None, Depends(owner)]


class Meta(BaseModel):
    page: int = 1
    limit: int
    total_pages: int = 0  # 0 with total_count 0 when the total was not asked for (with_total=false)
    total_count: int = 0
    next_cursor: str | None = None


T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    """A list response (documents the routes that answer with `page_of`)."""

    data: list[T]
    meta: Meta


def offset_of(page: int, limit: int, cursor: str | None) -> int:
    """The rows before page `page` (numbered from 1); a cursor says where the page starts."""
    return 0 if cursor is not None else (page - 1) * limit


def page_of(items: list, limit: int, page: int, next_cursor: str | None, total: int | None) -> Response:
    """A list response: `{data, meta}` with page fields and the cursor of the next page."""
    pages = 0 if total is None else max(1, -(-total // limit))
    meta = {"page": page, "limit": limit, "total_pages": pages, "total_count": total or 0, "next_cursor": next_cursor}
    return json_response({"data": items, "meta": meta})


def json_response(content: Any, status_code: int = 200, headers: dict | None = None) -> Response:
    """JSON encoded in one pass by pydantic-core (records as dumped by their models): FastAPI's
    own encoding walks every value in Python first, the larger part of a list route's time."""
    return Response(to_json(content), status_code=status_code, headers=headers, media_type="application/json")
