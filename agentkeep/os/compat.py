"""The wire shapes the reference server's clients parse (agno's `AgentOSClient` and its
response models), beside agentkeep's own fields: a run's `input` as `{"input_content": ...}`
with `run_input` as text, paused tool calls marked `requires_confirmation`, a session's
`session_name` / `session_state` / `agent_session_id`, the config's `os_id` and
`databases`, memory stats' `total_memories`."""

from __future__ import annotations

from typing import Any

from agentkeep.db.models import MemoryStats, Run, Session


def run_json(run: Run) -> dict:
    out = run.model_dump()
    text = run.input if isinstance(run.input, str) else None
    out["input"] = {"input_content": run.input}
    out["run_input"] = text or ""
    out["content_type"] = "str" if isinstance(run.content, str) or run.content is None else "dict"
    for tool in out["tools"]:  # a call waiting for its approval, as the reference marks it
        if tool.get("status") == "paused":
            tool["requires_confirmation"] = True
    return out


class SessionOut(Session):
    """A session as the routes answer it (documents them): the reference's names beside ours."""

    session_name: str = ""
    session_state: dict = {}
    agent_session_id: str = ""


def session_json(session: Session) -> dict:
    out = session.model_dump(exclude={"runs"})
    out.update(session_name=session.name or "", session_state=session.state, agent_session_id=session.session_id)
    return out


def memory_stats_json(stats: MemoryStats) -> dict:
    out = stats.model_dump(mode="json")
    out.update(total_memories=stats.memories, last_memory_updated_at=out["last_updated"])
    return out


def db_ids(dbs: list[Any]) -> dict[int, str]:
    """A name for each db, stable for one server: its class, numbered when repeated."""
    names: dict[int, str] = {}
    for i, db in enumerate(dbs):
        names[id(db)] = f"{type(db).__name__.lower()}-{i}"
    return names
