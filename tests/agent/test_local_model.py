"""The local SmolLM2 model over llama.cpp's OpenAI-compatible server: a real model, offline.
It is too small for sensible answers, so these tests check structure and persistence."""

from __future__ import annotations

import pytest

from agentkeep.agent import Agent, tool, tracing
from agentkeep.models import OpenAIChat

from tests.conftest import require

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def local_model():
    from agentkeep.db.errors import ConnectionFailedError
    from agentkeep.models.local import LocalModelServer

    try:
        server = LocalModelServer().start()
    except ConnectionFailedError as exc:
        require(f"local model: {exc}")
    yield server
    server.stop()


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the city's name
    """
    return f"It is sunny in {city}."


def test_a_forced_tool_call_is_parsed_executed_and_stored(local_model, db):
    agent = Agent(OpenAIChat(local_model.model_id, base_url=local_model.base_url, max_tokens=48), name="Weather",
                  db=db, tools=[get_weather], tool_choice="get_weather", instructions="You report the weather.")
    run = agent.run("What is the weather in Paris?", user_id="alice", session_id="s1")
    assert run.status == "completed"
    call = run.tools[0]
    assert call["tool_name"] == "get_weather" and call["status"] == "completed"
    assert isinstance(call["tool_args"]["city"], str) and call["result"].startswith("It is sunny in")
    assert [m["role"] for m in run.messages][:3] == ["user", "assistant", "tool"]
    assert run.metrics.input_tokens > 0 and run.metrics.output_tokens > 0
    stored = db.get_run(run.run_id)
    assert stored.tools == run.tools and stored.metrics.total_tokens == run.metrics.total_tokens
    tracing.flush()
    trace = next(t for t in db.list_traces().items if t.run_id == run.run_id)
    names = sorted(s.name for s in db.get_spans(trace.trace_id))
    assert names[-2:] == ["execute_tool get_weather", "invoke_agent Weather"] and names.count(f"chat {local_model.model_id}") == 2


def test_a_stream_arrives_in_order_and_is_stored(local_model, db):
    agent = Agent(OpenAIChat(local_model.model_id, base_url=local_model.base_url, max_tokens=24), name="Chat", db=db,
                  tools=[get_weather])
    events = list(agent.run("Say hello in one sentence.", user_id="alice", session_id="s2", stream=True))
    names = [e.event for e in events]
    assert names[0] == "RunStarted" and names[-1] in ("RunCompleted", "RunError")
    final = events[-1]
    assert final.event == "RunCompleted", getattr(final, "error", "")
    pieces = [e.content for e in events if e.event == "RunContent"]
    stored = db.get_run(final.run_id)
    if final.run.tools:  # the model chose a tool: its answer came after the tool's result
        assert final.run.tools[0]["tool_name"] == "get_weather"
    assert "".join(pieces).endswith(stored.content or "")
    assert stored.metrics.output_tokens > 0
