"""The messages a model call starts from: the system message (instructions, the user's
memories, dependencies, the session state, references) and the history of earlier runs."""

from __future__ import annotations

import json
from typing import Any, Sequence

from agentkeep.db.models import Run, UserMemory


def system_message(agent: Any, *, memories: Sequence[UserMemory] | None, dependencies: dict, state: dict,
                   references: Sequence[dict]) -> dict | None:
    parts: list[str] = []
    if agent.instructions:
        parts.append(agent.instructions if isinstance(agent.instructions, str) else "\n".join(agent.instructions))
    if agent.output_schema is not None:
        parts.append("Answer with a JSON object that fits this schema:\n"
                     + json.dumps(agent.output_schema.model_json_schema()))
    if memories:
        lines = "\n".join(f"- [{m.memory_id}] {m.memory}" for m in memories)
        parts.append(f"What you remember about the user (ids in brackets, for update_memory and forget):\n{lines}")
    elif memories is not None:  # memories are on for this run (it has a user)
        parts.append("You remember nothing about the user yet.")
    if agent.add_dependencies_to_context and dependencies:
        parts.append(f"<dependencies>\n{_json(dependencies)}\n</dependencies>")
    if agent.add_session_state_to_context and state:
        parts.append(f"<session_state>\n{_json(state)}\n</session_state>")
    if references:
        parts.append(f"<references>\n{_json(list(references))}\n</references>")
    if not parts:
        return None
    return {"role": "system", "content": "\n\n".join(parts)}


def history_messages(runs: Sequence[Run]) -> list[dict]:
    """The messages of earlier completed runs, oldest first (a paused or failed run's
    messages may end in a tool call without its result, which models refuse)."""
    out: list[dict] = []
    for run in runs:
        if run.status == "completed":
            out.extend(run.messages)
    return out


def _json(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False, indent=None)
