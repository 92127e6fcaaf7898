"""The wire shapes the reference server's clients parse (agno's `AgentOSClient` and its
response models), beside agentkeep's own fields: a run's `input` as `{"input_content": ...}`
with `run_input` as text, a session's `session_name` / `session_state` /
`agent_session_id`, the config's `os_id` and `databases`, memory stats' `total_memories`."""

from __future__ import annotations

from typing import Any

from agentkeep.db.models import MemoryStats, Run, Session


def run_json(run: Run) -> dict:
    out = run.model_dump(mode="json")
    text = run.input if isinstance(run.input, str) else None
    out["input"] = {"input_content": run.input}
    out["run_input"] = text or ""
    out["content_type"] = "str" if isinstance(run.content, str) or run.content is None else "dict"
    return out


def session_json(session: Session) -> dict:
    out = session.model_dump(mode="json", exclude={"runs"})
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
