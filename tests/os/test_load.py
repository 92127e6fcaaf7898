"""200 concurrent clients against one AgentOS over real HTTP (uvicorn in its own process), on
SQLite and PostgreSQL: runs (half of them streamed), session lists, memory writes and OTLP
span exports at once for a few seconds (bench/load.py's clients, each with its own user and
session), then every record a client was told was written is looked up in the db and over
the API. Nothing may fail, be lost or appear from nowhere; latencies are printed, not
checked."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx

from bench.load import (
    AGENT,
    SPANS_PER_TRACE,
    Client,
    Server,
    answer,
    every,
    expected_content,
    message_text,
    new_clients,
    run_load,
    table,
)

CLIENTS = 200
SECONDS = 4


def db_url(store: Any) -> str:
    if store.url is not None:
        return store.url
    keywords = store.opener.keywords  # PostgresDb(db_url=..., db_schema=...)
    return f"{keywords['db_url']}?db_schema={keywords['db_schema']}"


def test_200_concurrent_clients_lose_nothing(store: Any, scripted: Any) -> None:
    mixed: list[list[str]] = []

    def model(body: dict) -> Any:
        # every message the model reads, history included, comes from the run's own client
        said = [message_text(m) for m in body["messages"] if m["role"] in ("user", "assistant")]
        tag = said[-1].split()[0]
        if not all(text.startswith((f"{tag} ", expected_content(f"{tag} "))) for text in said):
            mixed.append(said)
        return answer(body)

    model_server = scripted(model)
    clients = new_clients(CLIENTS)
    server = Server(db_url(store), model_server.base_url)
    try:
        outcome = run_load(server.url, clients, SECONDS)
        print(f"\n{CLIENTS} clients, {outcome.seconds:.1f} s\n{table(outcome)}")
        seen = asyncio.run(read_back(server.url, clients))
    finally:
        status = server.stop()  # SIGTERM: the spans of the agent's runs are written first
    log = server.log()

    assert not outcome.errors, f"{len(outcome.errors)} requests failed, the first:\n" + "\n".join(
        e for _, e in outcome.errors[:20]) + f"\nserver log:\n{log[-5000:]}"
    # uvicorn exits by the signal it was stopped with once it has shut down
    assert status in (0, -signal.SIGTERM) and not log.strip(), f"exit status {status}, server log:\n{log[-5000:]}"
    assert not mixed, f"{len(mixed)} model calls read another client's messages: {mixed[:3]}"
    assert all(outcome.latencies.values())  # every kind of request was made
    # one model call per acknowledged run: no retried calls, no runs nobody was told of
    assert len(model_server.requests) == sum(len(c.runs) for c in clients)
    assert seen == [], "over the API:\n" + "\n".join(seen[:20])
    check_db(store.db, clients)


def check_db(db: Any, clients: list[Client]) -> None:
    """Every acknowledged run, memory and span is in the db as acknowledged, and nothing else."""
    ran = [c for c in clients if c.runs]
    sessions = {s.session_id: s for s in every(db.list_sessions)}
    assert sorted(sessions) == sorted(c.session_id for c in ran)
    for c in ran:
        assert (sessions[c.session_id].user_id, sessions[c.session_id].agent_id) == (c.user_id, AGENT)
        stored = every(db.list_runs, session_id=c.session_id)
        # the client's runs, in the order it made them (one after the other), each completed
        assert [r.run_id for r in stored] == list(c.runs), c.session_id
        assert [r.seq for r in stored] == sorted({r.seq for r in stored})
        for r in stored:
            assert (r.status, r.user_id, r.input, r.content) == (
                "completed", c.user_id, c.runs[r.run_id], expected_content(c.runs[r.run_id])), r.run_id

    memories = every(db.list_memories)
    assert sorted(m.memory_id for m in memories) == sorted(i for c in clients for i in c.memories)
    texts = {i: (c.user_id, text) for c in clients for i, text in c.memories.items()}
    assert all((m.user_id, m.memory) == texts[m.memory_id] for m in memories)

    exported = {trace_id: (c, ids) for c in clients for trace_id, ids in c.traces.items()}
    runs = {run_id: c for c in clients for run_id in c.runs}
    traces = every(db.list_traces)
    # the clients' exported traces, and one trace per run of the agent's own spans: no more
    assert sorted(t.trace_id for t in traces if t.run_id is None) == sorted(exported)
    assert sorted(t.run_id for t in traces if t.run_id is not None) == sorted(runs)
    for t in traces:
        spans = db.get_spans(t.trace_id)
        if t.run_id is None:
            c, ids = exported[t.trace_id]
            assert {s.span_id for s in spans} == ids and len(spans) == t.span_count == SPANS_PER_TRACE
            assert (t.session_id, t.user_id) == (c.otlp_session, c.user_id)
        else:
            c = runs[t.run_id]
            assert (t.session_id, t.user_id, t.status) == (c.session_id, c.user_id, "ok"), t.trace_id
            names = sorted(s.name.split()[0] for s in spans)
            assert names == ["chat", "invoke_agent"] and t.span_count == 2, (t.trace_id, names)


async def read_back(url: str, clients: list[Client]) -> list[str]:
    """What the API answers for each client's records; the differences from what the client
    was told, as text."""
    problems: list[str] = []
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(c: Client) -> None:
            async with gate:
                owner = {"user_id": c.user_id}
                listed = (await http.get("/sessions", params=owner)).json()["data"]
                if [s["session_id"] for s in listed] != ([c.session_id] if c.runs else []):
                    problems.append(f"{c.user_id}: GET /sessions lists {[s['session_id'] for s in listed]}")
                if c.runs:
                    runs = (await http.get(f"/sessions/{c.session_id}/runs", params=owner)).json()
                    got = [(r["run_id"], r["status"]) for r in runs]
                    if got != [(i, "completed") for i in c.runs]:
                        problems.append(f"{c.session_id}: runs {got}, acknowledged {list(c.runs)}")
                memories = (await http.get("/memories", params={**owner, "limit": 100})).json()
                ids = {m["memory_id"] for m in memories["data"]}
                if ids != set(c.memories) or memories["meta"]["total_count"] != len(c.memories):
                    problems.append(f"{c.user_id}: memories {sorted(ids)}, acknowledged {sorted(c.memories)}")
                traces = (await http.get("/traces", params={"session_id": c.otlp_session, "limit": 100})).json()
                if {t["trace_id"]: t["total_spans"] for t in traces["data"]} != {t: SPANS_PER_TRACE for t in c.traces}:
                    problems.append(f"{c.otlp_session}: traces {traces['data']}, acknowledged {sorted(c.traces)}")
                for trace_id, span_ids in c.traces.items():
                    spans = (await http.get(f"/traces/{trace_id}")).json()["spans"]
                    if {s["span_id"] for s in spans} != span_ids:
                        problems.append(f"trace {trace_id}: spans {[s['span_id'] for s in spans]}, sent {span_ids}")

        await asyncio.gather(*(one(c) for c in clients))
    return problems
