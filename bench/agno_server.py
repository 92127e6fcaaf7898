"""The reference server's side of `python -m bench.server`: agno 3.1.10's AgentOS on uvicorn,
with the same agent, the same scripted model server and the same number of sessions.

Runs in agno's own venv (bench/README.md). argv: model base URL, sqlite file, port, sessions,
runs per session (each a question and its answer, kept as agno keeps runs: in the session)."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("AGNO_TELEMETRY", "false")


def main(base_url: str, db_file: str, port: int, sessions: int, runs: int) -> None:
    import uvicorn
    from agno.agent import Agent
    from agno.db.sqlite import SqliteDb
    from agno.models.openai.like import OpenAILike
    from agno.os import AgentOS
    from agno.models.message import Message
    from agno.run.agent import RunOutput
    from agno.run.base import RunStatus
    from agno.session import AgentSession

    db = SqliteDb(db_file=db_file)
    now = int(time.time())
    def turns(sid: str) -> list:
        return [RunOutput(run_id=f"{sid}-r{j}", agent_id="bench", session_id=sid, content=f"answer {j} " * 20,
                          status=RunStatus.completed, messages=[Message(role="user", content=f"question {j}"),
                                                                Message(role="assistant", content=f"answer {j} " * 20)])
                for j in range(runs)]

    batch = [AgentSession(session_id=f"s{i:05d}", agent_id="bench", user_id=f"u{i % 100}",
                          session_data={"session_name": f"session {i}"}, created_at=now - i, updated_at=now - i,
                          runs=turns(f"s{i:05d}"))
             for i in range(sessions)]
    for start in range(0, len(batch), 1000):
        db.upsert_sessions(batch[start:start + 1000])
    agent = Agent(id="bench", name="bench", model=OpenAILike(id="scripted", base_url=base_url, api_key="unused"),
                  db=db, add_history_to_context=True, num_history_runs=10, telemetry=False)
    agent_os = AgentOS(agents=[agent], db=db, telemetry=False)
    print("ready", flush=True)
    uvicorn.run(agent_os.get_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
