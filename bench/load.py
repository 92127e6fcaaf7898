"""200 concurrent clients against one AgentOS over HTTP:

    python -m bench.load [--db sqlite|postgres] [--clients 200] [--seconds 20] [--only KIND]

AgentOS on uvicorn in its own process (one agent, tracing on, the default lease and sweep),
on SQLite (a file) or PostgreSQL (`$AGENTKEEP_BENCH_PG`, a schema of its own, dropped
afterwards), with the scripted OpenAI-protocol model server in another process answering at
once. The clients are coroutines in this process, each with its own connection, user and
session; until the time is up, each cycles through a mix: runs (half of them streamed),
`GET /sessions` of its user, `POST /memories` and `POST /v1/traces` (a protobuf request of
one trace of 3 spans, unique ids). It prints requests per second, p50 / p99 and errors per
request type, the server process's CPU time, then what was acknowledged against what the db
holds, and the server's log. `--only run` (or `stream`, `sessions`, `memory`, `spans`) makes
every request of one kind, to see what each costs the server alone.

tests/os/test_load.py drives the same clients for a few seconds and checks every
acknowledged record in the db and over the API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("AGENTKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
AGENT = "support"
SPANS_PER_TRACE = 3
# the order each client goes through (from a point of its own, so every kind is in flight
# at any moment): 4 runs (2 streamed), 2 session lists, 2 memory writes, 2 span exports
MIX = ("run", "sessions", "memory", "stream", "spans", "run", "memory", "sessions", "spans", "stream")
KINDS = {"run": "POST /agents/{id}/runs", "stream": "POST /agents/{id}/runs, streamed",
         "sessions": "GET /sessions?user_id=", "memory": "POST /memories", "spans": "POST /v1/traces (OTLP)"}


# -- the model and the server ----------------------------------------------------------------


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def answer(body: dict) -> Any:
    """The scripted model's reply: it names the question, so each stored run shows it got the
    answer to its own input."""
    from agentkeep.models.scripted import Reply

    return Reply(f"answer to {message_text(body['messages'][-1])}", usage=(40, 8))


def expected_content(text: str) -> str:
    return f"answer to {text}"


def serve(db_url: str, model_url: str, port: int) -> None:
    """AgentOS with one agent on `db_url`, on uvicorn (this process's stderr is its log)."""
    import uvicorn

    from agentkeep.agent import Agent
    from agentkeep.db import connect
    from agentkeep.models import OpenAIChat
    from agentkeep.os import AgentOS

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db = connect(db_url)
    agent = Agent(OpenAIChat("scripted", base_url=model_url), name="Support", id=AGENT, db=db)
    uvicorn.run(AgentOS(agents=[agent], db=db).get_app(), host="127.0.0.1", port=port, log_level="warning")


def serve_model() -> None:
    from agentkeep.models.scripted import ScriptedServer

    server = ScriptedServer(answer).start()
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the bench closes the pipe


class Server:
    """AgentOS in a process of its own (`python -m bench.load --serve`), its log in a file."""

    def __init__(self, db_url: str, model_url: str) -> None:
        from agentkeep.models.local import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: str | None = None
        log, self.log_path = tempfile.mkstemp(prefix="agentos-load-", suffix=".log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "--serve", db_url, "--model", model_url, "--port", str(self.port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        os.close(log)  # the server's copy stays open
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """The CPU time the server process has used (Linux), user and system: on a machine
        shared with other work, the cost per request holds better than the rate."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        if self.output is not None:
            return self.output
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> int:
        """Stop it as an operator would (SIGTERM: in-flight spans are written, dbs closed);
        its exit status. Its log is kept in memory, the file removed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.output is None:
            self.output = self.log()
            Path(self.log_path).unlink(missing_ok=True)
        return self.process.returncode


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Client:
    """One client and what the server told it was written."""

    index: int
    user_id: str
    session_id: str
    runs: dict[str, str] = field(default_factory=dict)  # run id -> its input
    memories: dict[str, str] = field(default_factory=dict)  # memory id -> its text
    traces: dict[str, set[str]] = field(default_factory=dict)  # trace id (hex) -> span ids (hex)

    @property
    def tag(self) -> str:
        return f"c{self.index}"

    @property
    def otlp_session(self) -> str:  # the session the client's exported spans name
        return f"{self.session_id}-otlp"


@dataclass
class Outcome:
    clients: list[Client]
    latencies: dict[str, list[float]]
    errors: list[tuple[str, str]]  # (request kind, what went wrong)
    seconds: float  # from the first request to the end of the last one


def new_clients(count: int, prefix: str = "load") -> list[Client]:
    return [Client(i, f"{prefix}-u{i}", f"{prefix}-s{i}") for i in range(count)]


def _status(r: httpx.Response, expected: int) -> str | None:
    return None if r.status_code == expected else f"{r.status_code} {r.text[:300]}"


async def _run(http: httpx.AsyncClient, c: Client, n: int, stream: bool) -> str | None:
    text = f"{c.tag} q{n}"
    body = {"message": text, "user_id": c.user_id, "session_id": c.session_id}
    if not stream:
        r = await http.post(f"/agents/{AGENT}/runs", json=body)
        if problem := _status(r, 200):
            return problem
        run = r.json()
        c.runs[run["run_id"]] = text
        return _check_run(run, c, text)
    events: list[tuple[str, dict]] = []
    async with http.stream("POST", f"/agents/{AGENT}/runs", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            await r.aread()
            return _status(r, 200)
        name = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if name == "RunStarted":  # the run is stored before this event is sent
                    c.runs[data["run_id"]] = text
                events.append((name, data))
    if not events or events[0][0] != "RunStarted":
        return f"the stream did not start with RunStarted: {[e for e, _ in events]}"
    last, data = events[-1]
    if last != "RunCompleted":
        return f"the stream ended with {last}: {json.dumps(data)[:300]}"
    content = "".join(d["content"] for e, d in events if e == "RunContent")
    if content != expected_content(text):
        return f"streamed content {content!r}, not the answer to {text!r}"
    return _check_run(data["run"], c, text)


def _check_run(run: dict, c: Client, text: str) -> str | None:
    got = (run["status"], run["session_id"], run["user_id"], run["content"])
    if got != ("completed", c.session_id, c.user_id, expected_content(text)):
        return f"run {run['run_id']}: {got}"
    return None


async def _sessions(http: httpx.AsyncClient, c: Client, n: int) -> str | None:
    r = await http.get("/sessions", params={"user_id": c.user_id})
    if problem := _status(r, 200):
        return problem
    listed = [s["session_id"] for s in r.json()["data"]]
    # the client's own earlier runs are visible (read after write), nobody else's session is
    expected = [c.session_id] if c.runs else []
    return None if listed == expected else f"listed {listed}, expected {expected}"


async def _memory(http: httpx.AsyncClient, c: Client, n: int) -> str | None:
    text = f"{c.tag} remembers m{n}"
    r = await http.post("/memories", json={"memory": text, "topics": ["load"], "user_id": c.user_id})
    if problem := _status(r, 201):
        return problem
    memory = r.json()
    c.memories[memory["memory_id"]] = text
    if (memory["memory"], memory["user_id"]) != (text, c.user_id):
        return f"memory {memory['memory_id']}: {memory['memory']!r} of {memory['user_id']!r}"
    return None


def export_request(c: Client) -> tuple[bytes, str, list[str]]:
    """One OTLP protobuf export: a trace of SPANS_PER_TRACE spans (a root and its children),
    with random ids; (the body, the trace id, the span ids) in hex."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="load")))
    ss = rs.scope_spans.add()
    ss.scope.name = "bench.load"
    trace_id = uuid.uuid4().bytes
    ids = [uuid.uuid4().bytes[:8] for _ in range(SPANS_PER_TRACE)]
    start = time.time_ns()
    for i, span_id in enumerate(ids):
        span = ss.spans.add()
        span.trace_id, span.span_id = trace_id, span_id
        if i:
            span.parent_span_id = ids[0]
        span.name = "handle request" if i == 0 else f"step {i}"
        span.kind = 2 if i == 0 else 1
        span.start_time_unix_nano = start + i * 1000
        span.end_time_unix_nano = start + 5_000_000 - i * 1000
        span.status.code = 1
        for key, value in (("session.id", c.otlp_session), ("user.id", c.user_id)):
            span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return req.SerializeToString(), trace_id.hex(), [s.hex() for s in ids]


async def _spans(http: httpx.AsyncClient, c: Client, n: int) -> str | None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    body, trace_id, span_ids = export_request(c)
    r = await http.post("/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
    if problem := _status(r, 200):
        return problem
    rejected = ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans
    if rejected:
        return f"{rejected} spans of trace {trace_id} rejected"
    c.traces[trace_id] = set(span_ids)
    return None


OPERATIONS: dict[str, Callable[[httpx.AsyncClient, Client, int], Awaitable[str | None]]] = {
    "run": lambda http, c, n: _run(http, c, n, stream=False),
    "stream": lambda http, c, n: _run(http, c, n, stream=True),
    "sessions": _sessions,
    "memory": _memory,
    "spans": _spans,
}


async def _client(http: httpx.AsyncClient, c: Client, deadline: float, outcome: Outcome,
                  mix: tuple[str, ...]) -> None:
    n = 0
    while time.monotonic() < deadline:
        kind = mix[(c.index + n) % len(mix)]
        began = time.perf_counter()
        try:
            problem = await OPERATIONS[kind](http, c, n)
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, an answer that does not parse
            problem = f"{type(exc).__name__}: {exc}"
        outcome.latencies[kind].append(time.perf_counter() - began)
        if problem:
            outcome.errors.append((kind, f"client {c.index}, {KINDS[kind]}: {problem}"))
        n += 1


async def drive(url: str, clients: list[Client], seconds: float, mix: tuple[str, ...] = MIX,
                timeout: float = 120) -> Outcome:
    """Every client at once for `seconds` (a request under way when the time is up is
    finished), each with an httpx client of its own holding one connection."""
    outcome = Outcome(clients, {kind: [] for kind in KINDS}, [], 0.0)
    # a pool checks every one of its connections on each request: a shared pool of 200
    # cost this process more CPU than the requests; one shared TLS context (unused over
    # plain HTTP) instead of one built per client
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        https = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout,
                                                                   verify=tls)) for _ in clients]
        began = time.monotonic()
        await asyncio.gather(*(_client(http, c, began + seconds, outcome, mix) for http, c in zip(https, clients)))
        outcome.seconds = time.monotonic() - began
    return outcome


def run_load(url: str, clients: list[Client], seconds: float, mix: tuple[str, ...] = MIX) -> Outcome:
    return asyncio.run(drive(url, clients, seconds, mix))


# -- the figures -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile, in ms."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def table(outcome: Outcome) -> str:
    errors = {kind: sum(k == kind for k, _ in outcome.errors) for kind in KINDS}
    lines = [f"{'request':<34} {'count':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>9} {'errors':>7}"]
    everything: list[float] = []
    for kind, label in KINDS.items():
        values = outcome.latencies[kind]
        everything += values
        lines.append(f"{label:<34} {len(values):>7} {len(values) / outcome.seconds:>8.1f} "
                     f"{percentile(values, 0.5):>8.1f} {percentile(values, 0.99):>9.1f} {errors[kind]:>7}")
    lines.append(f"{'all':<34} {len(everything):>7} {len(everything) / outcome.seconds:>8.1f} "
                 f"{percentile(everything, 0.5):>8.1f} {percentile(everything, 0.99):>9.1f} "
                 f"{len(outcome.errors):>7}")
    return "\n".join(lines)


def every(method: Any, **filters: Any) -> list:
    """All the rows of a db's list method, page after page."""
    rows, cursor = [], None
    while True:
        page = method(**filters, limit=1000, cursor=cursor)
        rows += page.items
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def compare(db: Any, outcome: Outcome) -> str:
    """What the clients were told was written, against what the db holds."""
    runs = memories = spans = lost = 0
    for c in outcome.clients:
        stored_runs = {r.run_id: r for r in every(db.list_runs, session_id=c.session_id)}
        stored_memories = {m.memory_id for m in every(db.list_memories, user_id=c.user_id)}
        runs, memories = runs + len(c.runs), memories + len(c.memories)
        lost += sum(stored_runs.get(i) is None or stored_runs[i].status != "completed" for i in c.runs)
        lost += len(set(c.memories) - stored_memories)
        for trace_id, ids in c.traces.items():
            spans += len(ids)
            lost += len(ids - {s.span_id for s in db.get_spans(trace_id)})
    return f"acknowledged: {runs} runs, {memories} memories, {spans} spans; missing or not completed in the db: {lost}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", choices=KINDS, help="one kind of request instead of the mix (what it costs alone)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "model":
        return serve_model()
    if args.serve:
        return serve(args.serve, args.model, args.port)

    from agentkeep.db import connect

    work = tempfile.mkdtemp()
    schema = f"bench_load_{os.getpid()}"
    db_url = f"sqlite:///{work}/load.db" if args.db == "sqlite" else f"{PG_URL}?db_schema={schema}"
    model = subprocess.Popen([sys.executable, "-m", "bench.load", "--serve", "model"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        model_url = model.stdout.readline().strip()
        server = Server(db_url, model_url)
        try:
            load, cpu = os.getloadavg()[0], server.cpu_seconds()
            outcome = run_load(server.url, new_clients(args.clients), args.seconds,
                               (args.only,) if args.only else MIX)
            cpu = server.cpu_seconds() - cpu
        finally:
            status = server.stop()
        print(f"{args.db}, {args.clients} clients, {outcome.seconds:.1f} s, {os.cpu_count()} cores, "
              f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
        print(table(outcome))
        requests = sum(len(v) for v in outcome.latencies.values())
        print(f"server process CPU: {cpu:.1f} s ({cpu / outcome.seconds:.0%} of a core), "
              f"{cpu / max(requests, 1) * 1000:.2f} ms per request")
        for _, error in outcome.errors[:10]:
            print("  ", error)
        db = connect(db_url)
        try:
            print(compare(db, outcome))
        finally:
            db.close()
        problems = [line for line in server.log().splitlines() if line.strip()]
        print(f"server stopped by SIGTERM (exit status {status}); {len(problems)} lines in its log")
        for line in problems[:20]:
            print("  ", line)
    finally:
        model.stdin.close()
        model.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        if args.db == "postgres":
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
