"""`arun` / `acontinue_run` on AsyncPostgresDb (and a sync db, called from worker threads)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from agentkeep.agent import tool, tracing
from agentkeep.db import InvalidInputError

from tests.conformance.backends import BY_NAME, postgres_url
from tests.conftest import require_backend

from .conftest import Reply, make_agent


@pytest.fixture
def schema():
    require_backend(BY_NAME["postgres_async"])
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    tracing.flush()  # the runs' spans still in the exporter would write into the schema being dropped
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def open_async(schema: str):
    from agentkeep.db.postgres import AsyncPostgresDb

    return AsyncPostgresDb(db_url=postgres_url(), db_schema=schema)


async def atimes(a: int, b: int) -> int:
    """Multiply (an async tool)."""
    await asyncio.sleep(0)
    return a * b


@tool(requires_approval=True)
async def delete_account(name: str) -> str:
    """Delete an account."""
    return f"deleted {name}"


@pytest.mark.server
def test_arun_streams_calls_async_tools_and_stores_everything(scripted, schema):
    server = scripted([Reply(tool_calls=[("atimes", {"a": 6, "b": 7})]), Reply("It is 42."), Reply("Again 42.")])

    async def main():
        async with open_async(schema) as db:
            agent = make_agent(server, db, tools=[atimes])
            events = [e async for e in agent.arun("6*7?", user_id="alice", session_id="s1", stream=True)]
            run = await agent.arun("again", user_id="alice", session_id="s1")
            stored = await db.get_session("s1", user_id="alice", runs=10)
            await asyncio.to_thread(tracing.flush)
            traces = (await db.list_traces()).items
            return events, run, stored, traces

    events, run, stored, traces = asyncio.run(main())
    assert [e.event for e in events][0] == "RunStarted" and events[-1].event == "RunCompleted"
    assert events[-1].run.tools[0]["result"] == "42"
    assert run.content == "Again 42." and run.seq == 2
    assert [r.content for r in stored.runs] == ["It is 42.", "Again 42."]
    sent = server.requests[2]["messages"][:4]  # the first run is the second's history
    assert [(m["role"], m.get("tool_call_id")) for m in sent] == [
        (m["role"], m.get("tool_call_id")) for m in stored.runs[0].messages]
    assert {t.run_id for t in traces} == {r.run_id for r in stored.runs}


@pytest.mark.server
def test_acontinue_run_resumes_once(scripted, schema):
    server = scripted([Reply(tool_calls=[("delete_account", {"name": "old"})]), Reply("Deleted.")])

    async def main():
        async with open_async(schema) as db:
            agent = make_agent(server, db, tools=[delete_account])
            paused = await agent.arun("delete old", user_id="alice", session_id="s1")
            approval = (await db.list_approvals(run_id=paused.run_id)).items[0]
            await db.resolve_approval(approval.id, status="approved", resolved_by="admin")
            results = await asyncio.gather(*(agent.acontinue_run(paused.run_id, user_id="alice") for _ in range(3)),
                                           return_exceptions=True)
            await asyncio.to_thread(tracing.flush)  # the spans are written on this loop, before the db closes
            return paused, results

    paused, results = asyncio.run(main())
    assert paused.status == "paused"
    done = [r for r in results if not isinstance(r, Exception)]
    assert len(done) == 1 and done[0].content == "Deleted." and done[0].tools[0]["result"] == "deleted old"
    assert sorted(type(r).__name__ for r in results if isinstance(r, Exception)) == ["ConflictError", "ConflictError"]
    assert len(server.requests) == 2


@pytest.mark.server
def test_arun_with_a_sync_db_and_run_with_an_async_db(scripted, schema):
    server = scripted([Reply("from a thread")])
    from agentkeep.db.postgres import PostgresDb

    db = PostgresDb(db_url=postgres_url(), db_schema=schema)
    run = asyncio.run(make_agent(server, db).arun("hi", user_id="alice", session_id="s1"))
    assert run.content == "from a thread" and db.get_run(run.run_id).status == "completed"
    db.close()

    async def sync_run_on_async_db():
        async with open_async(schema) as adb:
            make_agent(server, adb).run("hi")

    with pytest.raises(InvalidInputError, match="use arun"):
        asyncio.run(sync_run_on_async_db())


def test_one_agent_serves_several_event_loops(scripted):
    """A script may call asyncio.run more than once: each loop gets its own model client."""
    server = scripted([Reply("again")], cycle=True)
    agent = make_agent(server, None)
    assert [asyncio.run(agent.arun("hi")).content for _ in range(3)] == ["again"] * 3
