"""`/memories`: a user's memories (list with filters, create, update, delete one and many),
their topics, and per-user counts."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from agentkeep.db.errors import NotFoundError
from agentkeep.db.models import UserMemory
from agentkeep.os.auth import caller_of
from agentkeep.os.compat import memory_stats_json
from agentkeep.os.routes.common import ListPage, Owner, db_for, offset_of, page_of

router = APIRouter(tags=["memories"])


class MemoryBody(BaseModel):
    memory: str
    topics: list[str] = []
    user_id: str | None = None
    agent_id: str | None = None


class MemoryUpdate(BaseModel):
    memory: str | None = None
    topics: list[str] | None = None


class Ids(BaseModel):
    memory_ids: list[str]
    user_id: str | None = None


@router.get("/memories", response_model=ListPage[UserMemory])
async def list_memories(
    request: Request,
    user_id: Owner,
    agent_id: str | None = None,
    topics: list[str] | None = Query(None),
    search_content: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    page: int = Query(1, ge=1),
    cursor: str | None = None,
    sort_order: Literal["asc", "desc"] = "desc",
    with_total: bool = True,
) -> Any:
    result = await db_for(request).list_memories(
        user_id=user_id, agent_id=agent_id, topics=topics, search=search_content, order=f"updated_{sort_order}",
        limit=limit, cursor=cursor, offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([m.model_dump() for m in result.items], limit, page, result.next_cursor, result.total)


@router.post("/memories", status_code=201)
async def create_memory(body: MemoryBody, request: Request) -> UserMemory:
    memory = UserMemory(memory=body.memory, topics=body.topics, user_id=caller_of(request).owner(body.user_id),
                        agent_id=body.agent_id)
    return await db_for(request).upsert_memory(memory)


async def _memory(request: Request, memory_id: str, user_id: str | None) -> UserMemory:
    memory = await db_for(request).get_memory(memory_id, user_id=user_id)
    if memory is None or (user_id is not None and memory.user_id != user_id):
        raise NotFoundError(f"memory {memory_id!r} not found")
    return memory


@router.get("/memories/{memory_id}")
async def get_memory(memory_id: str, request: Request, user_id: Owner) -> UserMemory:
    return await _memory(request, memory_id, user_id)


@router.patch("/memories/{memory_id}")
async def update_memory(memory_id: str, body: MemoryUpdate, request: Request,
                        user_id: Owner) -> UserMemory:
    memory = await _memory(request, memory_id, user_id)
    changes = body.model_dump(exclude_none=True)
    return await db_for(request).upsert_memory(memory.model_copy(update=changes))


@router.delete("/memories/{memory_id}", status_code=204)
async def delete_memory(memory_id: str, request: Request, user_id: Owner) -> None:
    if not await db_for(request).delete_memory(memory_id, user_id=user_id):
        raise NotFoundError(f"memory {memory_id!r} not found")


@router.delete("/memories")
async def delete_memories(body: Ids, request: Request) -> dict:
    user_id = caller_of(request).owner(body.user_id)
    return {"deleted": await db_for(request).delete_memories(body.memory_ids, user_id=user_id)}


@router.get("/memory_topics")
async def memory_topics(request: Request, user_id: Owner) -> list[str]:
    return await db_for(request).memory_topics(user_id=user_id)


@router.get("/user_memory_stats", response_model=ListPage[dict])
async def user_memory_stats(request: Request, user_id: Owner, limit: int = Query(20, ge=1, le=100),
                            cursor: str | None = None) -> Any:
    """Memories per user (a user sees their own row; an admin every user's, or one's)."""
    result = await db_for(request).memory_stats(limit=limit, cursor=cursor, user_id=user_id)
    return page_of([memory_stats_json(s) for s in result.items], limit, 1, result.next_cursor, result.total)
