"""Traces over HTTP: an ordinary OpenTelemetry program (the SDK with the OTLP/HTTP exporter, in
its own process) sends its traces to AgentOS, and they come back through the traces routes,
with the agents' own traces beside them; OTLP/JSON, gzip, partial success and limits."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

from agentkeep.agent import tracing
from agentkeep.os import AgentOS

from tests.agent.conftest import Reply, make_agent

PROGRAM = textwrap.dedent('''
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint from the environment
    tracer = provider.get_tracer("billing.jobs")
    owner = {"session.id": "otel-s1", "user.id": "ops"}
    with tracer.start_as_current_span("nightly invoices", attributes=owner) as root:
        with tracer.start_as_current_span("charge card", attributes={"amount": 49.5, "tags": ["eu", "card"]}):
            pass
        try:
            with tracer.start_as_current_span("send email"):
                raise TimeoutError("smtp timed out")
        except TimeoutError:
            pass
        print(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()  # flushes the batch
''')


def test_an_opentelemetry_program_sends_its_traces_here(scripted, db, serve, tmp_path):
    http = serve(AgentOS(agents=[make_agent(scripted([Reply("traced")]), db)], db=db).get_app())
    http.post("/agents/helper/runs", json={"message": "hi", "session_id": "s1", "user_id": "alice"})
    tracing.flush()  # the agent's spans are written behind a batch processor
    (tmp_path / "program.py").write_text(PROGRAM)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{str(http.base_url).rstrip('/')}/v1/traces",
           "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    done = subprocess.run([sys.executable, "program.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    trace_id = done.stdout.strip()
    assert "Failed to export" not in done.stderr, done.stderr

    listed = http.get("/traces", params={"session_id": "otel-s1"}).json()
    assert [t["trace_id"] for t in listed["data"]] == [trace_id] and listed["meta"]["total_count"] == 1
    summary = listed["data"][0]
    assert (summary["name"], summary["status"], summary["user_id"]) == ("nightly invoices", "error", "ops")
    assert (summary["total_spans"], summary["error_count"]) == (3, 1)
    one = http.get(f"/traces/{trace_id}").json()
    [root] = one["tree"]
    assert root["name"] == "nightly invoices" and [c["name"] for c in root["spans"]] == ["charge card", "send email"]
    charge, email = root["spans"]
    assert charge["attributes"]["amount"] == 49.5 and charge["attributes"]["tags"] == ["eu", "card"]
    assert (charge["attributes"]["service.name"], charge["attributes"]["otel.scope.name"]) == ("billing", "billing.jobs")
    assert email["status"] == "ERROR" and "smtp timed out" in email["error"]
    assert email["events"][0]["name"] == "exception"

    # the agent's own run traced itself into the same db, beside the program's trace
    runs = http.get("/traces", params={"session_id": "s1"}).json()["data"]
    assert len(runs) == 1 and runs[0]["agent_id"] == "helper" and runs[0]["user_id"] == "alice"
    stats = {s["session_id"]: s for s in http.get("/trace_session_stats").json()["data"]}
    assert stats["otel-s1"]["total_traces"] == 1 and stats["otel-s1"]["errors"] == 1 and "s1" in stats
    assert http.get("/traces/0123456789abcdef0123456789abcdef").status_code == 404


def _json_export(spans: list[dict]) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cli"}}]},
                               "scopeSpans": [{"scope": {"name": "manual"}, "spans": spans}]}]}


def test_otlp_json_with_hex_ids_gzip_and_partial_success(db, serve):
    http = serve(AgentOS(agents=[], db=db).get_app())
    trace_id, good, bad = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b1"
    export = _json_export([
        {"traceId": trace_id, "spanId": good, "name": "GET /", "kind": 2, "startTimeUnixNano": "1765000000000000000",
         "endTimeUnixNano": "1765000000250000000", "status": {"code": 1},
         "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}]},
        {"traceId": trace_id, "spanId": bad, "name": "too short an id", "startTimeUnixNano": "1765000000000000000"},
    ])
    sent = http.post("/v1/traces", content=gzip.compress(json.dumps(export).encode()),
                     headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert sent.status_code == 200 and sent.json() == {"partialSuccess": {
        "rejectedSpans": "1", "errorMessage": "spans without a valid trace id or span id were not stored"}}
    [span] = db.get_spans(trace_id)
    assert (span.span_id, span.kind, span.status_code, span.duration_ms) == (good, "SERVER", "OK", 250.0)
    assert span.attributes == {"service.name": "cli", "http.status_code": 200, "otel.scope.name": "manual"}
    assert span.start_time.isoformat() == "2025-12-06T05:46:40+00:00"

    before = db.get_trace(trace_id).model_dump()
    for body, headers, status in (
        (b"not protobuf", {"content-type": "application/x-protobuf"}, 422),
        (b"{}", {"content-type": "text/plain"}, 422),
        (json.dumps(_json_export([{"traceId": "zz", "spanId": good}])).encode(), {"content-type": "application/json"},
         422),
        (b"x", {"content-type": "application/json", "content-encoding": "br"}, 422),
        (gzip.compress(b"0" * (11 << 20)), {"content-type": "application/json", "content-encoding": "gzip"}, 413),
    ):
        refused = http.post("/v1/traces", content=body, headers=headers)
        assert refused.status_code == status, (refused.status_code, refused.text)
    assert db.get_trace(trace_id).model_dump() == before


def test_the_reference_client_reads_traces(scripted, db, serve):
    import asyncio

    from agno.client.os import AgentOSClient

    http = serve(AgentOS(agents=[make_agent(scripted([Reply("traced")]), db)], db=db).get_app())
    run = http.post("/agents/helper/runs", json={"message": "hi", "session_id": "s9", "user_id": "bob"}).json()
    tracing.flush()
    client = AgentOSClient(base_url=str(http.base_url))

    async def calls():
        traces = await client.get_traces(session_id="s9")
        detail = await client.get_trace(traces.data[0].trace_id)
        stats = await client.get_trace_session_stats()
        return traces, detail, stats

    traces, detail, stats = asyncio.new_event_loop().run_until_complete(calls())
    assert [t.run_id for t in traces.data] == [run["run_id"]] and traces.data[0].total_spans >= 2
    assert detail.tree[0].name.startswith("invoke_agent") and detail.tree[0].spans
    assert [s.session_id for s in stats.data] == ["s9"] and stats.data[0].total_traces == 1


def _kv(key: str, value: object) -> dict:
    if isinstance(value, str):
        return {"key": key, "value": {"stringValue": value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"intValue": str(value)}}


def _otlp_span(trace_id: str, span_id: str, ms: int, parent: str | None = None, **attrs: object) -> dict:
    start = 1765000000000000000
    out = {"traceId": trace_id, "spanId": span_id, "name": span_id, "startTimeUnixNano": str(start),
           "endTimeUnixNano": str(start + ms * 1_000_000), "status": {"code": 1},
           "attributes": [_kv(k, v) for k, v in attrs.items()]}
    if parent:
        out["parentSpanId"] = parent
    return out


def test_traces_carry_usage_and_filter_by_model_tool_and_duration(scripted, db, serve):
    from agentkeep.agent import tool

    @tool
    def lookup(order: str) -> str:
        """Look an order up."""
        return f"order {order}: shipped"

    server = scripted([Reply(tool_calls=[("lookup", {"order": "A1"})], usage=(40, 7)), Reply("shipped", usage=(90, 12))])
    http = serve(AgentOS(agents=[make_agent(server, db, tools=[lookup])], db=db).get_app())
    run = http.post("/agents/helper/runs", json={"message": "where is A1?", "session_id": "s1", "user_id": "alice"})
    assert run.status_code == 200, run.text
    tracing.flush()
    # the same usage as the run's: the agent span's totals are not added to its calls'
    metrics = db.get_run(run.json()["run_id"]).metrics
    [agent_trace] = http.get("/traces", params={"session_id": "s1"}).json()["data"]
    assert (agent_trace["input_tokens"], agent_trace["output_tokens"], agent_trace["total_tokens"]) == (
        metrics.input_tokens, metrics.output_tokens, metrics.input_tokens + metrics.output_tokens) == (130, 19, 149)
    assert (agent_trace["models"], agent_trace["tools"], agent_trace["cost"]) == (["scripted"], ["lookup"], 0.0)

    # an OpenInference program's traces, by OTLP/JSON
    t1, t2 = "5b8efff798038103d269b633813fc600", "5b8efff798038103d269b633813fc601"
    export = _json_export([
        _otlp_span(t1, "a000000000000001", 4000, **{"openinference.span.kind": "AGENT", "user.id": "bob",
                                                   "llm.token_count.prompt": 500}),
        _otlp_span(t1, "a000000000000002", 3000, "a000000000000001", **{
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 500,
            "llm.token_count.completion": 20, "llm.cost.total": 0.0035}),
        _otlp_span(t1, "a000000000000003", 100, "a000000000000001", **{"openinference.span.kind": "TOOL",
                                                                      "tool.name": "web_search"}),
        _otlp_span(t2, "b000000000000001", 250, **{"gen_ai.operation.name": "chat", "user.id": "bob",
                                                  "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 8,
                                                  "gen_ai.usage.output_tokens": 2}),
    ])
    assert http.post("/v1/traces", json=export).status_code == 200
    slow = http.get(f"/traces/{t1}").json()
    assert (slow["input_tokens"], slow["output_tokens"], slow["total_tokens"], slow["models"], slow["tools"]) == (
        500, 20, 520, ["gpt-4o"], ["web_search"])
    assert abs(slow["cost"] - 0.0035) < 1e-12 and slow["duration_ms"] == 4000.0

    def found(**params):
        page = http.get("/traces", params=params)
        assert page.status_code == 200, page.text
        return sorted(t["trace_id"] for t in page.json()["data"])

    assert found(model="gpt-4o") == [t1, t2] and found(model="scripted") == [agent_trace["trace_id"]]
    assert found(tool="web_search") == [t1] and found(tool="lookup", user_id="alice") == [agent_trace["trace_id"]]
    assert found(tool="lookup", user_id="bob") == [] and found(model="gpt-4o", user_id="bob") == [t1, t2]
    assert found(min_duration_ms=3999) == [t1] and found(min_duration_ms=1000, user_id="bob") == [t1]
    assert found(model="gpt-4o", max_duration_ms=250) == [t2]
    assert found(min_duration_ms=250, max_duration_ms=4000, model="gpt-4o", status="ok") == [t1, t2]
    page = http.get("/traces", params={"model": "gpt-4o", "limit": 1}).json()
    assert [t["trace_id"] for t in page["data"]] == [t2] and page["meta"]["total_count"] == 2
    following = http.get("/traces", params={"model": "gpt-4o", "limit": 1, "page": 2}).json()
    assert [t["trace_id"] for t in following["data"]] == [t1]
    for params in ({"min_duration_ms": -1}, {"max_duration_ms": "soon"}, {"model": "x" * 256}):
        assert http.get("/traces", params=params).status_code == 422, params
