"""What the routes share: the OS from the request, the db a record lives in, list pages."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Request
from pydantic import BaseModel

from agentkeep.db.errors import NotFoundError
from agentkeep.os.app import AgentOS, as_async


def the_os(request: Request) -> AgentOS:
    return request.app.state.os


def agent_of(request: Request, agent_id: str) -> Any:
    agent = the_os(request).agents.get(agent_id)
    if agent is None:
        raise NotFoundError(f"agent {agent_id!r} not found")
    return agent


def db_for(request: Request, agent_id: Optional[str] = None) -> Any:
    """The db an agent's records live in (`agent_id`), else the OS's."""
    os = the_os(request)
    if agent_id:
        return as_async(agent_of(request, agent_id).db)
    return as_async(os.db)


class Meta(BaseModel):
    page: int = 1
    limit: int
    total_pages: int = 0  # 0 with total_count 0 when the total was not asked for (with_total=false)
    total_count: int = 0
    next_cursor: Optional[str] = None


def page_of(items: list, limit: int, page: int, next_cursor: Optional[str], total: Optional[int]) -> dict:
    """A list response: `{data, meta}` with page fields and the cursor of the next page."""
    pages = 0 if total is None else max(1, -(-total // limit))
    total = total or 0
    return {"data": items, "meta": Meta(page=page, limit=limit, total_pages=pages, total_count=total,
                                        next_cursor=next_cursor).model_dump()}
