"""The tools the runtime runs itself: user memories (always scoped to the run's user) and
knowledge search.

This is the async source; `agentkeep/agent/_sync/builtins.py` is generated from it by
`scripts/unasync.py` (never edit the generated file).
"""

# unasync: asearch -> search
# unasync: AsyncBuiltins -> Builtins

from __future__ import annotations

from typing import Any

from agentkeep.agent.builtin_tools import MEMORY_TOOLS
from agentkeep.agent.tools import reference
from agentkeep.db import models as m
from agentkeep.db.errors import NotFoundError


class AsyncBuiltins:
    def __init__(self, agent: Any, db: Any) -> None:
        self.agent = agent
        self.db = db

    async def call(self, name: str, args: dict, turn: Any) -> Any:
        if name in MEMORY_TOOLS and turn.run.user_id is None:
            raise PermissionError("memories are kept per user: this run has no user_id")
        return await getattr(self, name)(turn, **args)

    async def remember(self, turn: Any, memory: str, topics: list[str] | None = None) -> str:
        run = turn.run
        kept = await self.db.upsert_memory(m.UserMemory(
            user_id=run.user_id, memory=memory, topics=topics or [], agent_id=run.agent_id, input=_text(run.input)))
        return f"Remembered (id {kept.memory_id})."

    async def update_memory(self, turn: Any, memory_id: str, memory: str, topics: list[str] | None = None) -> str:
        user_id = turn.run.user_id
        cur = await self.db.get_memory(memory_id, user_id=user_id)
        if cur is None or cur.user_id != user_id:
            raise NotFoundError(f"no memory {memory_id!r} for this user")
        update = {"memory": memory} if topics is None else {"memory": memory, "topics": topics}
        await self.db.upsert_memory(cur.model_copy(update=update))
        return "Updated."

    async def forget(self, turn: Any, memory_id: str) -> str:
        if not await self.db.delete_memory(memory_id, user_id=turn.run.user_id):
            raise NotFoundError(f"no memory {memory_id!r} for this user")
        return "Forgotten."

    async def search_knowledge(self, turn: Any, query: str) -> list[dict]:
        a = self.agent
        # a run's user finds the shared contents and their own, never another user's
        hits = await a.knowledge.asearch(query, limit=a.knowledge_limit, filters=a.knowledge_filters,
                                         user_id=turn.run.user_id)
        found = [reference(h) for h in hits]
        turn.references.extend(found)
        return [{"content": f["content"], "metadata": f["metadata"], "score": f["score"]} for f in found]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
