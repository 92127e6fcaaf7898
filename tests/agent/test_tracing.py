"""Every run's spans (GenAI semantic conventions) land in the db, through a batch processor
added to the application's own TracerProvider when it has one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from agentkeep.agent import tracing

from .conftest import Reply, make_agent


def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def spans_of(db, run_id):
    tracing.flush()
    trace = next(t for t in db.list_traces(limit=100).items if t.run_id == run_id)
    return trace, db.get_spans(trace.trace_id)


def test_a_run_is_traced_into_the_db(scripted, db):
    server = scripted([Reply(tool_calls=[("add", {"a": 1, "b": 2})], usage=(11, 2)), Reply("3", usage=(20, 1))])
    run = make_agent(server, db, tools=[add]).run("1+2", user_id="alice", session_id="s1")
    trace, spans = spans_of(db, run.run_id)
    assert (trace.session_id, trace.user_id, trace.agent_id, trace.status, trace.span_count) == (
        "s1", "alice", "helper", "ok", 4)
    by_op = {}
    for s in spans:
        by_op.setdefault(s.attributes["gen_ai.operation.name"], []).append(s)
    assert sorted((op, len(v)) for op, v in by_op.items()) == [("chat", 2), ("execute_tool", 1), ("invoke_agent", 1)]
    root = by_op["invoke_agent"][0]
    assert root.parent_span_id is None and root.name == "invoke_agent Helper"
    assert root.attributes["gen_ai.conversation.id"] == "s1" and root.attributes["gen_ai.agent.id"] == "helper"
    assert (root.attributes["gen_ai.usage.input_tokens"], root.attributes["gen_ai.usage.output_tokens"]) == (31, 3)
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    chat = by_op["chat"][0]
    assert chat.kind == "CLIENT" and chat.attributes["gen_ai.request.model"] == "scripted"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 11 and chat.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert by_op["execute_tool"][0].attributes["gen_ai.tool.name"] == "add"
    # no message content unless asked for
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.arg", "gen_ai.tool.call.res"))
                   for s in spans for k in s.attributes)


def test_content_is_recorded_when_asked_for(scripted, db):
    server = scripted([Reply(tool_calls=[("add", {"a": 1, "b": 2})]), Reply("3")])
    run = make_agent(server, db, tools=[add], capture_content=True).run("1+2", user_id="alice")
    _, spans = spans_of(db, run.run_id)
    tool_span = next(s for s in spans if s.name == "execute_tool add")
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"a": 1, "b": 2}'
    assert tool_span.attributes["gen_ai.tool.call.result"] == "3"
    assert '"1+2"' in next(s for s in spans if s.name.startswith("invoke_agent")).attributes["gen_ai.input.messages"]


def test_a_failed_run_has_an_error_trace(scripted, db):
    server = scripted([Reply(status=400)])
    agent = make_agent(server, db)
    try:
        agent.run("hi", user_id="alice")
    except Exception as exc:  # noqa: BLE001
        run_id = exc.run.run_id
    trace, spans = spans_of(db, run_id)
    assert trace.status == "error"
    root = next(s for s in spans if s.parent_span_id is None)
    assert root.status_code == "ERROR" and root.attributes["error.type"] == "ModelError"


def test_a_separate_trace_db_receives_the_spans(scripted, db, tmp_path):
    from agentkeep.db import SqliteDb

    trace_db = SqliteDb(db_file=str(tmp_path / "traces.db"))
    server = scripted([Reply("hi")])
    run = make_agent(server, db, trace_db=trace_db).run("hi", user_id="alice")
    tracing.flush()
    assert [t.run_id for t in trace_db.list_traces().items] == [run.run_id]
    assert db.list_traces().items == []
    trace_db.close()


APP_WITH_ITS_OWN_PROVIDER = textwrap.dedent('''
    import sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentkeep.agent import Agent, tracing
    from agentkeep.db import SqliteDb
    from agentkeep.models import OpenAIChat

    app_spans = InMemorySpanExporter()   # stands for Logfire, Langfuse or Sentry
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(app_spans))
    trace.set_tracer_provider(provider)

    db = SqliteDb(db_file=sys.argv[2])
    agent = Agent(OpenAIChat("scripted", base_url=sys.argv[1]), name="Helper", db=db)
    with trace.get_tracer("app").start_as_current_span("handle request"):
        run = agent.run("hi", user_id="alice")
    tracing.flush()
    stored = db.get_spans(db.list_traces().items[0].trace_id)
    app = app_spans.get_finished_spans()
    print(sorted(s.name for s in stored), sorted(s.name for s in app))
    print(stored[0].trace_id == format(app[0].context.trace_id, "032x"))
''')


def test_spans_go_to_the_applications_provider_and_the_db(scripted, tmp_path):
    """In a process of its own: the global TracerProvider can be set once per process."""
    server = scripted([Reply("hello")])
    out = subprocess.run([sys.executable, "-c", APP_WITH_ITS_OWN_PROVIDER, server.base_url, str(tmp_path / "a.db")],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    # the db keeps agentkeep's spans only; the application's exporter sees everything
    assert out[0] == ("['chat scripted', 'invoke_agent Helper'] "
                      "['chat scripted', 'handle request', 'invoke_agent Helper']")
    assert out[1] == "True"  # one trace: the agent's run sits inside the request's span
