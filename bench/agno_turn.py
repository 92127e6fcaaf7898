"""The reference framework's side of `python -m bench.agent`: the same turn, agno's Agent.

Runs in a venv of its own (`pip install agno==3.1.10 openai sqlalchemy greenlet aiosqlite
'psycopg[binary]'`), so it imports nothing of agentkeep. Prints one JSON line."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("AGNO_TELEMETRY", "false")


def lookup(key: str) -> dict:
    """Look up an account setting."""
    return {"key": key, "value": "team plan", "seats": 12}


def main(base_url: str, backend: str, pg_url: str, turns: int, warmup: int) -> None:
    from agno.agent import Agent
    from agno.db.schemas.memory import UserMemory
    from agno.models.openai.like import OpenAILike

    if backend == "sqlite":
        from agno.db.sqlite import SqliteDb

        db = SqliteDb(db_file=os.path.join(tempfile.mkdtemp(), "agno.db"))
    else:
        from agno.db.postgres import PostgresDb

        db = PostgresDb(db_url=pg_url, db_schema=f"agno_bench_{os.getpid()}")
    for i in range(3):
        db.upsert_user_memory(UserMemory(memory=f"The user prefers short answers ({i}).", user_id="alice"))
    agent = Agent(
        model=OpenAILike(id="scripted", base_url=base_url, api_key="unused"), db=db, tools=[lookup],
        instructions="Answer questions about the account.", add_history_to_context=True, num_history_runs=10,
        add_memories_to_context=True, telemetry=False,
    )
    for i in range(warmup):
        agent.run(f"question {i}", user_id="alice", session_id="s1")
    times = []
    began = time.perf_counter()
    for i in range(turns):
        t = time.perf_counter()
        out = agent.run(f"question {warmup + i}", user_id="alice", session_id="s1")
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - began
    assert out.content, "no answer"
    print(json.dumps({
        "turns_per_s": turns / total, "p50_ms": statistics.median(times) * 1000,
        "p95_ms": sorted(times)[int(len(times) * 0.95) - 1] * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tool_calls": len(out.tools or []),
    }))
    if backend != "sqlite":
        from sqlalchemy import text

        with db.db_engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA agno_bench_{os.getpid()} CASCADE"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
