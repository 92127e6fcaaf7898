"""OTLP/HTTP trace ingest into AgentOS, spans per second:

    python -m bench.otlp [--batches 40] [--spans 512]

AgentOS on uvicorn in its own process, on SQLite and on PostgreSQL (the local server, a
schema of its own); the bench process posts protobuf ExportTraceServiceRequests of `--spans`
spans (traces of 8 spans, GenAI-style attributes) one after the other over HTTP. Baseline,
in the same run: the same spans written by `db.write_spans` in this process (no HTTP, no
decoding), so the table shows what the route adds; and the same over HTTP with JWT auth on,
posted by a user (the spans are stamped with the caller, and checked against traces of
other users)."""

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
        span.name = "chat gpt-4o-mini" if i % 8 else "invoke_agent support"
        span.kind = 3 if i % 8 else 1
        span.start_time_unix_nano = start + i * 1000
        span.end_time_unix_nano = start + i * 1000 + 250_000_000
        span.status.code = 1
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4o-mini"),
                           ("session.id", f"s{batch % 50}"), ("user.id", f"u{batch % 10}")):
            span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
        span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=420)))
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
    print(f"{'backend':<12} {'over HTTP spans/s':>18} {'as a JWT user':>14} {'db.write_spans':>15} {'ratio':>6}")
    for label, make_url in (("SQLite", lambda case: f"sqlite:///{work}/{case}.db"),
                            ("PostgreSQL", lambda case: f"{PG_URL}?db_schema=bench_otlp_{case}_{os.getpid()}")):
        http_rate = over_http(make_url("http"), [request(b, args.spans) for b in range(args.batches)], args.spans)
        auth_rate = over_http(make_url("auth"), [request(b, args.spans) for b in range(args.batches)], args.spans,
                              auth=True)
        direct_rate = direct(make_url("direct"), [request(b, args.spans) for b in range(args.batches)], args.spans)
        print(f"{label:<12} {http_rate:>18,.0f} {auth_rate:>14,.0f} {direct_rate:>15,.0f} "
              f"{http_rate / direct_rate:>6.2f}")
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:  # the bench's schemas go
        for case in ("http", "auth", "direct"):
            conn.execute(f"DROP SCHEMA IF EXISTS bench_otlp_{case}_{os.getpid()} CASCADE")


if __name__ == "__main__":
    main()
