"""User memories (always the run's user) and knowledge search, recorded on the run."""

from __future__ import annotations

import pytest

from agentkeep.agent import AgentRunError
from agentkeep.db import UserMemory
from agentkeep.knowledge import HashingEmbedder, Knowledge
from agentkeep.vector_db.in_memory import InMemoryVectorDb

from .conftest import Reply, make_agent


def test_the_model_keeps_updates_and_forgets_memories_of_the_runs_user(scripted, db):
    server = scripted([Reply(tool_calls=[("remember", {"memory": "Alice prefers email", "topics": ["contact"]})]),
                       Reply("Noted.")])
    agent = make_agent(server, db, enable_user_memories=True)
    agent.run("Please email me from now on.", user_id="alice", session_id="s1")
    kept = db.list_memories(user_id="alice").items
    assert [(m.memory, m.topics, m.agent_id) for m in kept] == [("Alice prefers email", ["contact"], "helper")]
    memory_id = kept[0].memory_id

    server2 = scripted([Reply(tool_calls=[("update_memory", {"memory_id": memory_id, "memory": "Alice prefers phone"})]),
                        Reply("Updated."), Reply(tool_calls=[("forget", {"memory_id": memory_id})]), Reply("Gone.")])
    agent2 = make_agent(server2, db, enable_user_memories=True)
    agent2.run("Call me instead.", user_id="alice", session_id="s1")
    system = server2.requests[0]["messages"][0]["content"]
    assert f"- [{memory_id}] Alice prefers email" in system
    assert db.get_memory(memory_id).memory == "Alice prefers phone"
    agent2.run("Forget how to reach me.", user_id="alice", session_id="s1")
    assert db.list_memories(user_id="alice").items == []


def test_memory_tools_cannot_touch_another_users_memory(scripted, db):
    bobs = db.upsert_memory(UserMemory(user_id="bob", memory="Bob's secret"))
    server = scripted([Reply(tool_calls=[("forget", {"memory_id": bobs.memory_id})]),
                       Reply(tool_calls=[("update_memory", {"memory_id": bobs.memory_id, "memory": "mine"})]),
                       Reply("ok")])
    run = make_agent(server, db, enable_user_memories=True).run("forget it", user_id="alice", session_id="s1")
    assert [t["status"] for t in run.tools] == ["error", "error"]
    assert "no memory" in run.tools[0]["error"]
    assert db.get_memory(bobs.memory_id).memory == "Bob's secret"
    assert "Bob's secret" not in server.requests[0]["messages"][0]["content"]


def test_without_a_user_no_memory_is_read_or_written(scripted, db):
    """The model is offered no memory tools, and a call it makes anyway fails."""
    db.upsert_memory(UserMemory(user_id="bob", memory="Bob's secret"))
    server = scripted([Reply(tool_calls=[("remember", {"memory": "unscoped"})]), Reply("ok")])
    with pytest.raises(AgentRunError, match="unknown tool 'remember'"):
        make_agent(server, db, enable_user_memories=True).run("hi", session_id="s1")
    assert "tools" not in server.requests[0] and "remember" not in server.requests[0]["messages"][0]["content"]
    assert db.list_memories(user_id=None).total is None and [m.memory for m in db.list_memories().items] == ["Bob's secret"]


@pytest.fixture
def knowledge(db):
    kb = Knowledge(vector_db=InMemoryVectorDb("kb"), contents_db=db, embedder=HashingEmbedder(dimensions=64))
    kb.add_content(text="Refunds are paid within 5 days.", name="refunds", metadata={"team": "billing"})
    kb.add_content(text="Passwords rotate every 90 days.", name="security", metadata={"team": "it"})
    return kb


def test_the_model_searches_knowledge_and_the_references_are_recorded(scripted, db, knowledge):
    server = scripted([Reply(tool_calls=[("search_knowledge", {"query": "refunds paid"})]), Reply("Within 5 days.")])
    agent = make_agent(server, db, knowledge=knowledge, knowledge_filters={"team": "billing"})
    run = agent.run("When are refunds paid?", user_id="alice", session_id="s1")
    refs = run.metadata["references"]
    assert [r["content"] for r in refs] == ["Refunds are paid within 5 days."]
    assert db.get_run(run.run_id).metadata["references"] == refs
    assert "Refunds are paid within 5 days." in server.requests[1]["messages"][-1]["content"]


def test_references_can_be_added_to_the_context(scripted, db, knowledge):
    server = scripted([Reply("Every 90 days.")])
    agent = make_agent(server, db, knowledge=knowledge, search_knowledge=False, add_knowledge_to_context=True,
                       knowledge_limit=1)
    run = agent.run("How often do passwords rotate?", user_id="alice", session_id="s1")
    assert "tools" not in server.requests[0]
    assert "Passwords rotate every 90 days." in server.requests[0]["messages"][0]["content"]
    assert len(run.metadata["references"]) == 1


def test_a_run_finds_shared_contents_and_its_users_own_only(scripted, db, knowledge):
    knowledge.add_content(text="Bob's refund override code is 4411.", name="bob-notes", user_id="bob")
    knowledge.add_content(text="Alice's refund checklist: receipt, order, reason.", name="alice-notes", user_id="alice")
    server = scripted([Reply("ok")], cycle=True)
    agent = make_agent(server, db, knowledge=knowledge, search_knowledge=False, add_knowledge_to_context=True,
                       knowledge_limit=10)
    seen = {user: {r["content"] for r in agent.run("refund", user_id=user, session_id=f"s-{user}").metadata["references"]}
            for user in ("alice", "bob")}
    assert "Bob's refund override code is 4411." not in seen["alice"]
    assert "Alice's refund checklist: receipt, order, reason." not in seen["bob"]
    assert "Refunds are paid within 5 days." in seen["alice"] & seen["bob"]  # shared
    assert "Bob's refund override code is 4411." in seen["bob"]
