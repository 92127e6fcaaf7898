"""The tools the runtime runs itself: user memories (always scoped to the run's user) and
knowledge search.

GENERATED from agentkeep/agent/_async/builtins.py by scripts/unasync.py: do not edit.
"""


from __future__ import annotations

from typing import Any

from agentkeep.agent.builtin_tools import MEMORY_TOOLS
from agentkeep.agent.tools import reference
from agentkeep.db import models as m
from agentkeep.db.errors import NotFoundError


class Builtins:
    def __init__(self, agent: Any, db: Any) -> None:
        self.agent = agent
        self.db = db

    def call(self, name: str, args: dict, turn: Any) -> Any:
        if name in MEMORY_TOOLS and turn.run.user_id is None:
            raise PermissionError("memories are kept per user: this run has no user_id")
        return getattr(self, name)(turn, **args)

    def remember(self, turn: Any, memory: str, topics: list[str] | None = None) -> str:
        run = turn.run
        kept = self.db.upsert_memory(m.UserMemory(
            user_id=run.user_id, memory=memory, topics=topics or [], agent_id=run.agent_id, input=_text(run.input)))
        return f"Remembered (id {kept.memory_id})."

    def update_memory(self, turn: Any, memory_id: str, memory: str, topics: list[str] | None = None) -> str:
        user_id = turn.run.user_id
        cur = self.db.get_memory(memory_id, user_id=user_id)
        if cur is None or cur.user_id != user_id:
            raise NotFoundError(f"no memory {memory_id!r} for this user")
        update = {"memory": memory} if topics is None else {"memory": memory, "topics": topics}
        self.db.upsert_memory(cur.model_copy(update=update))
        return "Updated."

    def forget(self, turn: Any, memory_id: str) -> str:
        if not self.db.delete_memory(memory_id, user_id=turn.run.user_id):
            raise NotFoundError(f"no memory {memory_id!r} for this user")
        return "Forgotten."

    def search_knowledge(self, turn: Any, query: str) -> list[dict]:
        a = self.agent
        # a run's user finds the shared contents and their own, never another user's
        hits = a.knowledge.search(query, limit=a.knowledge_limit, filters=a.knowledge_filters,
                                         user_id=turn.run.user_id)
        found = [reference(h) for h in hits]
        turn.references.extend(found)
        return [{"content": f["content"], "metadata": f["metadata"], "score": f["score"]} for f in found]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
