"""OTLP/HTTP trace ingest into AgentOS, spans per second:

    python -m bench.otlp [--batches 40] [--spans 512]

AgentOS on uvicorn in its own process, on SQLite and on PostgreSQL (the local server, a
schema of its own); the bench process posts protobuf ExportTraceServiceRequests of `--spans`
spans one after the other over HTTP. Each trace is an agent run of 8 spans with the GenAI
semantic conventions' attributes: the agent span (with the run's token totals), 4 chat calls
(model, input and output tokens) and 3 tool calls, so each batch's trace rows roll up tokens,
models and tools. Baseline, in the same run: the same spans written by `db.write_spans` in
this process (no HTTP, no decoding), so the table shows what the route adds; and the same over
HTTP with JWT auth on, posted by a user (the spans are stamped with the caller, and checked
against traces of other users). Last column: the time per batch that folding its spans into
their trace rows takes (`merge_trace`, in this process, the db's writes left out)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("AGENTKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


MODEL = "gpt-4o-mini"
TOOLS = ("search", "lookup", "calculator")
INPUT_TOKENS, OUTPUT_TOKENS = 420, 35


def _attributes(i: int, batch: int) -> list[tuple[str, str | int]]:
    """The GenAI attributes of span `i % 8` of its trace: the agent, 4 chat calls, 3 tool calls."""
    n = i % 8
    owner = [("session.id", f"s{batch % 50}"), ("user.id", f"u{batch % 10}")]
    if n == 0:
        return [("gen_ai.operation.name", "invoke_agent"), ("gen_ai.request.model", MODEL), *owner,
                ("gen_ai.usage.input_tokens", 4 * INPUT_TOKENS), ("gen_ai.usage.output_tokens", 4 * OUTPUT_TOKENS)]
    if n <= 4:
        return [("gen_ai.operation.name", "chat"), ("gen_ai.request.model", MODEL),
                ("gen_ai.response.model", f"{MODEL}-2024-07-18"), *owner,
                ("gen_ai.usage.input_tokens", INPUT_TOKENS), ("gen_ai.usage.output_tokens", OUTPUT_TOKENS)]
    return [("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", TOOLS[n - 5]), *owner]


def request(batch: int, spans: int) -> bytes:
    """One export request: `spans` spans in traces of 8, ids unique to the batch."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    start = time.time_ns()
    for i in range(spans):
        trace = uuid.UUID(int=(batch << 32) + i // 8).bytes
        span = ss.spans.add()
        span.trace_id = trace
        span.span_id = ((batch << 24) + i + 1).to_bytes(8, "big")
        if i % 8:
            span.parent_span_id = ((batch << 24) + (i - i % 8) + 1).to_bytes(8, "big")
        n = i % 8
        span.name = ("invoke_agent support" if n == 0 else f"chat {MODEL}" if n <= 4
                     else f"execute_tool {TOOLS[n - 5]}")
        span.kind = 3 if 0 < n <= 4 else 1
        span.start_time_unix_nano = start + i * 1000
        span.end_time_unix_nano = start + i * 1000 + 250_000_000
        span.status.code = 1
        for key, value in _attributes(i, batch):
            any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
            span.attributes.append(KeyValue(key=key, value=any_value))
    return req.SerializeToString()


SECRET = "bench-secret-of-at-least-32-bytes-long"


def serve(db_url: str, port: int, auth: bool) -> None:
    import uvicorn

    from agentkeep.db import connect
    from agentkeep.os import AgentOS, JWTAuth

    jwt = JWTAuth(secret=SECRET) if auth else None
    app = AgentOS(db=connect(db_url), sweep_seconds=None, jwt=jwt).get_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def over_http(db_url: str, batches: list[bytes], spans: int, auth: bool = False) -> float:
    import jwt

    from agentkeep.models.local import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.otlp", "--serve", db_url, "--port", str(port)]
                              + (["--auth"] if auth else []), cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        headers = {"content-type": "application/x-protobuf"}
        if auth:
            token = jwt.encode({"sub": "bench-user", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
            headers["authorization"] = f"Bearer {token}"
        with httpx.Client(base_url=url, timeout=120) as http:
            http.post("/v1/traces", content=batches[0], headers=headers).raise_for_status()  # warm up
            began = time.perf_counter()
            for body in batches[1:]:
                http.post("/v1/traces", content=body, headers=headers).raise_for_status()
            return (len(batches) - 1) * spans / (time.perf_counter() - began)
    finally:
        server.terminate()
        server.wait(30)


def direct(db_url: str, batches: list[bytes], spans: int) -> float:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from agentkeep.db import connect
    from agentkeep.os.otlp import spans_of

    records = []
    for body in batches:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        records.append(spans_of(req)[0])
    db = connect(db_url)
    db.write_spans(records[0])
    began = time.perf_counter()
    for batch in records[1:]:
        db.write_spans(batch)
    rate = (len(records) - 1) * spans / (time.perf_counter() - began)
    db.close()
    return rate


def rollup(batches: list[bytes]) -> float:
    """Microseconds per batch that `merge_trace` takes to fold its spans into new trace rows."""
    from collections import defaultdict

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from agentkeep.db.traces import merge_trace
    from agentkeep.os.otlp import spans_of

    groups = []
    for body in batches:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        by_trace: dict[str, list[dict]] = defaultdict(list)
        for span in spans_of(req)[0]:
            by_trace[span.trace_id].append(span.model_dump())
        groups.append(by_trace)
    began = time.perf_counter()
    for by_trace in groups:
        for trace_id, rows in by_trace.items():
            merge_trace(None, trace_id, rows, rows)
    return (time.perf_counter() - began) / len(groups) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--auth", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.auth)
    work = tempfile.mkdtemp()
    print(f"{'backend':<12} {'over HTTP spans/s':>18} {'as a JWT user':>14} {'db.write_spans':>15} {'ratio':>6} "
          f"{'rollup us/batch':>16}")
    fold = rollup([request(b, args.spans) for b in range(args.batches)])
    for label, make_url in (("SQLite", lambda case: f"sqlite:///{work}/{case}.db"),
                            ("PostgreSQL", lambda case: f"{PG_URL}?db_schema=bench_otlp_{case}_{os.getpid()}")):
        http_rate = over_http(make_url("http"), [request(b, args.spans) for b in range(args.batches)], args.spans)
        auth_rate = over_http(make_url("auth"), [request(b, args.spans) for b in range(args.batches)], args.spans,
                              auth=True)
        direct_rate = direct(make_url("direct"), [request(b, args.spans) for b in range(args.batches)], args.spans)
        print(f"{label:<12} {http_rate:>18,.0f} {auth_rate:>14,.0f} {direct_rate:>15,.0f} "
              f"{http_rate / direct_rate:>6.2f} {fold:>16,.0f}")
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:  # the bench's schemas go
        for case in ("http", "auth", "direct"):
            conn.execute(f"DROP SCHEMA IF EXISTS bench_otlp_{case}_{os.getpid()} CASCADE")


if __name__ == "__main__":
    main()
