"""A run end to end: model over HTTP, tools, stream, history, session state, persistence."""

from __future__ import annotations

import json
import threading

import pytest
from pydantic import BaseModel

from agentkeep.agent import AgentRunError, RunContext, tool
from agentkeep.db import InvalidInputError, OwnershipError, Session

from .conftest import Reply, make_agent


def add(a: int, b: int, session_state: dict) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number
    """
    session_state["adds"] = session_state.get("adds", 0) + 1
    return a + b


def test_a_run_with_a_tool_call_is_stored(scripted, db):
    server = scripted([Reply(tool_calls=[("add", {"a": 2, "b": 3})], usage=(30, 4)), Reply("It is 5.", usage=(40, 3))])
    agent = make_agent(server, db, tools=[add], instructions="Use the tools.")
    run = agent.run("What is 2+3?", user_id="alice", session_id="s1")

    assert (run.status, run.content, run.seq, run.agent_id, run.user_id) == ("completed", "It is 5.", 1, "helper", "alice")
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool", "assistant"]
    assert run.messages[2]["content"] == "5"
    assert [(t["tool_name"], t["tool_args"], t["status"], t["result"]) for t in run.tools] == [
        ("add", {"a": 2, "b": 3}, "completed", "5")]
    assert (run.metrics.input_tokens, run.metrics.output_tokens, run.metrics.total_tokens) == (70, 7, 77)
    assert run.metrics.model == "scripted" and run.metrics.duration_ms > 0
    stored = db.get_run(run.run_id, user_id="alice")
    assert stored.model_dump() == run.model_dump()
    session = db.get_session("s1", user_id="alice")
    assert (session.agent_id, session.user_id, session.name, session.state) == ("helper", "alice", "What is 2+3?", {"adds": 1})

    first = server.requests[0]
    assert first["messages"][0] == {"role": "system", "content": "Use the tools."}
    schema = first["tools"][0]["function"]
    assert schema["name"] == "add" and schema["description"] == "Add two numbers."
    assert set(schema["parameters"]["properties"]) == {"a", "b"}  # session_state is not shown
    assert schema["parameters"]["properties"]["a"]["description"] == "the first number"
    assert server.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_0", "content": "5"}


def test_a_streamed_run_yields_its_events_in_order(scripted, db):
    server = scripted([Reply("Let me add.", tool_calls=[("add", {"a": 1, "b": 1})]), Reply("The answer is two.")])
    agent = make_agent(server, db, tools=[add])
    events = list(agent.run("1+1?", user_id="alice", session_id="s1", stream=True))
    names = [e.event for e in events]
    assert names[0] == "RunStarted" and names[-1] == "RunCompleted"
    assert names.index("ToolCallStarted") < names.index("ToolCallCompleted")
    before_tool = names[1:names.index("ToolCallStarted")]
    assert before_tool and set(before_tool) == {"RunContent"}
    text = "".join(e.content for e in events if e.event == "RunContent")
    assert text == "Let me add.The answer is two."
    assert all(e.run_id == events[0].run_id and e.session_id == "s1" for e in events)
    final = events[-1]
    assert final.content == "The answer is two." and final.run.status == "completed"
    assert db.get_run(final.run_id).content == "The answer is two."
    assert all(r.get("stream") for r in server.requests)
    assert final.run.metrics.time_to_first_token_ms is not None


def test_history_reads_the_last_runs_only(scripted, db):
    server = scripted([Reply(f"answer {i}") for i in range(6)])
    agent = make_agent(server, db, num_history_runs=2)
    for i in range(6):
        agent.run(f"question {i}", user_id="alice", session_id="s1")
    last = server.requests[-1]["messages"]
    assert [m["content"] for m in last] == ["question 3", "answer 3", "question 4", "answer 4", "question 5"]
    assert [r.seq for r in db.list_runs("s1").items] == [1, 2, 3, 4, 5, 6]


def test_session_state_dependencies_and_run_context_reach_tools(scripted, db):
    seen = {}

    def look(key: str, dependencies: dict, run_context: RunContext, session_state: dict) -> str:
        """Look something up."""
        seen.update(dep=dependencies["catalog"][key], run=run_context.run_id, user=run_context.user_id)
        session_state["looked"] = key
        return dependencies["catalog"][key]

    server = scripted([Reply(tool_calls=[("look", {"key": "k"})]), Reply("found")])
    agent = make_agent(server, db, tools=[look], dependencies={"catalog": {"k": "v"}}, add_dependencies_to_context=True,
                       session_state={"plan": "free"}, add_session_state_to_context=True)
    run = agent.run("look k", user_id="alice", session_id="s1", session_state={"mood": "curious"})
    assert seen == {"dep": "v", "run": run.run_id, "user": "alice"}
    system = server.requests[0]["messages"][0]["content"]
    assert '<dependencies>\n{"catalog": {"k": "v"}}\n</dependencies>' in system
    assert '"plan": "free"' in system and '"mood": "curious"' in system
    assert db.get_session("s1").state == {"plan": "free", "mood": "curious", "looked": "k"}


def test_two_concurrent_turns_keep_both_runs_and_both_state_changes(scripted, db, store):
    barrier = threading.Barrier(2)

    def mark(name: str, session_state: dict) -> str:
        """Mark a name."""
        session_state[name] = True
        barrier.wait(10)  # both turns have read the session before either saves it
        return "ok"

    def reply(body: dict) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "tool" or last["content"] == "first":
            return Reply("done")
        return Reply(tool_calls=[("mark", {"name": last["content"]})])

    server = scripted(reply)
    agent = make_agent(server, db, tools=[mark])
    agent.run("first", user_id="alice", session_id="s1")  # the session exists
    errors = []

    def turn(name: str) -> None:
        try:
            other = make_agent(server, store.reopen(), tools=[mark])
            other.run(name, user_id="alice", session_id="s1")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=turn, args=(n,)) for n in ("red", "blue")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert db.get_session("s1").state == {"red": True, "blue": True}
    assert all(r.tools[0]["result"] == "ok" for r in db.list_runs("s1").items[1:])  # they did overlap
    runs = db.list_runs("s1").items
    assert sorted(r.input for r in runs) == ["blue", "first", "red"] and [r.seq for r in runs] == [1, 2, 3]


class Plan(BaseModel):
    name: str
    seats: int


def test_output_schema_parses_the_answer(scripted, db):
    server = scripted([Reply(json.dumps({"name": "team", "seats": 5})), Reply("not json")])
    agent = make_agent(server, db, output_schema=Plan)
    run = agent.run("which plan?", user_id="alice", session_id="s1")
    assert run.content == Plan(name="team", seats=5)
    assert db.get_run(run.run_id).content == {"name": "team", "seats": 5}
    assert server.requests[0]["response_format"]["json_schema"]["name"] == "Plan"
    with pytest.raises(AgentRunError, match="does not fit Plan"):
        agent.run("again", user_id="alice", session_id="s1")
    failed = db.list_runs("s1").items[-1]
    assert failed.status == "error" and failed.metadata["error"]["type"] == "ModelBehaviorError"


def test_bad_input_writes_nothing(scripted, db):
    server = scripted([Reply("never")])
    agent = make_agent(server, db)
    for bad in ("", "   ", None, 42):
        with pytest.raises(InvalidInputError):
            agent.run(bad, user_id="alice", session_id="s1")
    with pytest.raises(InvalidInputError):
        agent.run("hi", user_id="", session_id="s1")
    with pytest.raises(InvalidInputError):
        agent.run("hi", session_state=["not", "a", "dict"])
    assert db.list_sessions().items == [] and server.requests == []
    for options in ({"tool_call_limit": -1}, {"tool_errors": "ignore"}, {"retries": "3"}, {"output_schema": dict},
                    {"tools": [42]}, {"tool_choice": 3}, {"enable_user_memories": True, "db": None}):
        with pytest.raises(InvalidInputError):
            make_agent(server, options.pop("db", db), **options)


def test_another_users_session_is_refused_and_untouched(scripted, db):
    db.upsert_session(Session(session_id="s1", user_id="bob", state={"k": 1}))
    server = scripted([Reply("never")])
    with pytest.raises(OwnershipError):
        make_agent(server, db).run("hi", user_id="alice", session_id="s1")
    assert db.list_runs("s1").items == [] and server.requests == []
    assert db.get_session("s1").state == {"k": 1}


def test_a_forced_tool_choice_holds_for_the_first_call_only(scripted, db):
    server = scripted([Reply(tool_calls=[("add", {"a": 1, "b": 2})]), Reply("3")])
    run = make_agent(server, db, tools=[add], tool_choice="add").run("sum", user_id="alice")
    assert run.content == "3"
    assert server.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert "tool_choice" not in server.requests[1]


def test_cancelling_a_run_stops_it_at_the_next_step(scripted, db):
    agent = None

    @tool
    def slow(run_context: RunContext) -> str:
        """Take long."""
        agent.cancel_run(run_context.run_id)
        return "partial"

    server = scripted([Reply(tool_calls=[("slow", {})]), Reply("never reached")])
    agent = make_agent(server, db, tools=[slow])
    events = list(agent.run("go", user_id="alice", session_id="s1", stream=True))
    assert events[-1].event == "RunCancelled"
    assert db.get_run(events[-1].run_id).status == "cancelled"
    assert len(server.requests) == 1


def test_files_go_with_the_message_and_stay_in_the_history(scripted, db):
    from agentkeep.agent import File

    bodies = []

    def answer(body):
        bodies.append(body["messages"])
        return Reply("ok")

    agent = make_agent(scripted(answer), db)
    first = agent.run("summarise", session_id="s1", files=[File("plan.txt", b"grow 40%")])
    assert first.messages[0]["content"] == [{"type": "text", "text": "summarise"},
                                            {"type": "text", "text": '<file name="plan.txt">\ngrow 40%\n</file>'}]
    agent.run("and again?", session_id="s1")
    assert bodies[1][-3]["content"] == first.messages[0]["content"]  # the next run's history has the file
    for bad in ([File("a.pdf", b"%PDF", "application/pdf")], ["not a file"], [File("big.txt", b"x" * (3 << 20))]):
        with pytest.raises(InvalidInputError):
            agent.run("read", session_id="s1", files=bad)
    assert len(db.list_runs("s1").items) == 2 and len(bodies) == 2
