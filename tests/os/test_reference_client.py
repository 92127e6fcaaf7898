"""The reference server's published Python client (agno 3.1.10's AgentOSClient) works against
AgentOS on the routes so far: its requests are accepted (form fields, its query parameters)
and the answers parse with its own response models."""

from __future__ import annotations

import asyncio

import pytest

from agentkeep.os import AgentOS

from tests.agent.conftest import Reply, make_agent

client_module = pytest.importorskip("agno.client.os", reason="needs agno==3.1.10 (the test extra)")
# the client keeps one async HTTP client per process, bound to the event loop it first ran
# on: every test of this module runs its calls on this one loop
LOOP = asyncio.new_event_loop()


def test_the_reference_client_on_agents_sessions_and_memories(scripted, db, serve):
    server = scripted([Reply("first answer"), Reply("second answer")])
    http = serve(AgentOS(agents=[make_agent(server, db)], db=db).get_app())
    client = client_module.AgentOSClient(base_url=str(http.base_url))

    config = client.get_config()
    assert [a.id for a in config.agents] == ["helper"] and config.databases

    async def calls():
        agents = await client.list_agents()
        run = await client.run_agent("helper", "hello", session_id="s1", user_id="alice")
        await client.run_agent("helper", "again", session_id="s1", user_id="alice")
        sessions = await client.get_sessions(user_id="alice")
        detail = await client.get_session("s1", user_id="alice")
        runs = await client.get_session_runs("s1", user_id="alice")
        renamed = await client.rename_session("s1", "Greetings", user_id="alice")
        memory = await client.create_memory(memory="likes tea", user_id="alice", topics=["food"])
        memories = await client.list_memories(user_id="alice")
        topics = await client.get_memory_topics(user_id="alice")
        stats = await client.get_user_memory_stats()
        await client.delete_session("s1", user_id="alice")
        return agents, run, sessions, detail, runs, renamed, memory, memories, topics, stats

    agents, run, sessions, detail, runs, renamed, memory, memories, topics, stats = LOOP.run_until_complete(calls())
    assert [a.id for a in agents] == ["helper"] and agents[0].model.id == "scripted"
    assert (run.content, run.session_id, run.input.input_content) == ("first answer", "s1", "hello")
    assert [s.session_id for s in sessions.data] == ["s1"] and sessions.meta.total_count == 1
    assert (detail.session_id, detail.agent_id, detail.user_id) == ("s1", "helper", "alice")
    assert [r.content for r in runs] == ["first answer", "second answer"]
    assert renamed.session_name == "Greetings"
    assert memory.memory == "likes tea" and [m.memory for m in memories.data] == ["likes tea"]
    assert topics == ["food"] and [(s.user_id, s.total_memories) for s in stats.data] == [("alice", 1)]
    assert db.get_session("s1") is None


def test_the_reference_client_streams_continues_and_cancels(scripted, db, serve):
    from agentkeep.agent import tool

    @tool(requires_approval=True)
    def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    server = scripted([Reply("streamed answer", chunk_chars=4), Reply(tool_calls=[("refund", {"order": "A1"})]),
                       Reply("the refund is done"), Reply(tool_calls=[("refund", {"order": "B2"})])])
    http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db).get_app())
    client = client_module.AgentOSClient(base_url=str(http.base_url))
    ids = {"session_id": "s2", "user_id": "alice"}

    async def calls():
        streamed = [e async for e in client.run_agent_stream("helper", "stream it", **ids)]
        paused = await client.run_agent("helper", "refund A1", **ids)
        for call in paused.tools:
            call.confirmed = True
        resumed = await client.continue_agent_run("helper", paused.run_id, tools=paused.tools, **ids)
        waiting = await client.run_agent("helper", "refund B2", **ids)
        await client.cancel_agent_run("helper", waiting.run_id)
        return streamed, paused, resumed, waiting

    streamed, paused, resumed, waiting = LOOP.run_until_complete(calls())
    names = [type(e).__name__ for e in streamed]
    assert names[0] == "RunStartedEvent" and names[-1] == "RunCompletedEvent", names
    assert "".join(e.content for e in streamed if type(e).__name__ == "RunContentEvent") == "streamed answer"
    assert str(getattr(paused.status, "value", paused.status)).lower() == "paused"
    assert paused.tools[0].requires_confirmation
    assert (paused.tools[0].tool_name, paused.tools[0].tool_args) == ("refund", {"order": "A1"})
    assert resumed.content == "the refund is done" and resumed.tools[0].result == "refunded A1"
    approval = db.get_approval(paused.tools[0].approval_id)
    assert (approval.status, approval.resolved_by) == ("approved", "alice")
    assert db.get_run(waiting.run_id).status == "cancelled"
