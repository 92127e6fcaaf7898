"""What the routes share: the OS from the request, the db a record lives in, list pages."""

from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

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


T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    """A list response (documents the routes that answer with `page_of`)."""

    data: list[T]
    meta: Meta


def offset_of(page: int, limit: int, cursor: Optional[str]) -> int:
    """The rows before page `page` (numbered from 1); a cursor says where the page starts."""
    return 0 if cursor is not None else (page - 1) * limit


def page_of(items: list, limit: int, page: int, next_cursor: Optional[str], total: Optional[int]) -> Response:
    """A list response: `{data, meta}` with page fields and the cursor of the next page."""
    pages = 0 if total is None else max(1, -(-total // limit))
    meta = {"page": page, "limit": limit, "total_pages": pages, "total_count": total or 0, "next_cursor": next_cursor}
    return json_response({"data": items, "meta": meta})


def json_response(content: Any, status_code: int = 200, headers: Optional[dict] = None) -> Response:
    """JSON encoded in one pass by pydantic-core (records as dumped by their models): FastAPI's
    own encoding walks every value in Python first, the larger part of a list route's time."""
    return Response(to_json(content), status_code=status_code, headers=headers, media_type="application/json")
