"""Agent runtime overhead: one turn (10 runs of history, one tool call, a memory read) against
a scripted OpenAI-protocol server that answers at once, so the model's time is near zero.

    python -m bench.agent                                  # sqlite and postgres, 300 turns each
    python -m bench.agent --turns 100 --backends sqlite
    python -m bench.agent --agno /tmp/agno-venv/bin/python # side by side with agno 3.1.10
    python -m bench.agent --only history                   # turn time at run 10, 1,000, 10,000

Every case runs in its own process (its peak RSS is its own); the scripted server runs in
another. The reference framework runs `bench/agno_turn.py` in its own venv (see there)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "The account is on the team plan with 12 seats; it grew fastest last month. " * 3


def lookup(key: str) -> dict:
    """Look up an account setting."""
    return {"key": key, "value": "team plan", "seats": 12}


def reply(body: dict):
    from agentkeep.models.scripted import Reply

    if body["messages"][-1]["role"] == "tool":
        return Reply(ANSWER, usage=(400, 60))
    return Reply(tool_calls=[("lookup", {"key": "plan"})], usage=(380, 12))


def serve() -> None:
    from agentkeep.models.scripted import ScriptedServer

    server = ScriptedServer(reply).start()
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin


def _db(backend: str, pg_url: str):
    if backend == "sqlite":
        from agentkeep.db.sqlite import SqliteDb

        return SqliteDb(db_file=os.path.join(tempfile.mkdtemp(), "agentkeep.db")), None
    from agentkeep.db.postgres import PostgresDb

    schema = f"ak_bench_{uuid.uuid4().hex[:8]}"
    return PostgresDb(db_url=pg_url, db_schema=schema), schema


def _drop(pg_url: str, schema: str | None) -> None:
    if schema:
        import psycopg

        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _agent(base_url: str, db, tracing: bool):
    from agentkeep.agent import Agent
    from agentkeep.models import OpenAIChat

    return Agent(OpenAIChat("scripted", base_url=base_url), name="bench", db=db, tools=[lookup],
                 instructions="Answer questions about the account.", num_history_runs=10,
                 enable_user_memories=True, tracing=tracing)


def _seed_memories(db) -> None:
    from agentkeep.db import UserMemory

    db.upsert_memories([UserMemory(user_id="alice", memory=f"The user prefers short answers ({i}).") for i in range(3)])


def child_turns(base_url: str, backend: str, pg_url: str, turns: int, warmup: int, tracing: bool) -> dict:
    db, schema = _db(backend, pg_url)
    _seed_memories(db)
    agent = _agent(base_url, db, tracing)
    for i in range(warmup):
        agent.run(f"question {i}", user_id="alice", session_id="s1")
    times = []
    began = time.perf_counter()
    for i in range(turns):
        t = time.perf_counter()
        out = agent.run(f"question {warmup + i}", user_id="alice", session_id="s1")
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - began
    assert out.status == "completed" and len(out.tools) == 1
    if tracing:
        from agentkeep.agent import tracing as t

        t.flush()
    db.close()
    _drop(pg_url, schema)
    return {"turns_per_s": turns / total, "p50_ms": statistics.median(times) * 1000,
            "p95_ms": sorted(times)[int(len(times) * 0.95) - 1] * 1000,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tool_calls": len(out.tools)}


def child_history(base_url: str, backend: str, pg_url: str, points: list[int], per_point: int) -> dict:
    """The turn time when the session already holds N runs (seeded with append_run)."""
    from agentkeep.db import Run, Session

    db, schema = _db(backend, pg_url)
    _seed_memories(db)
    agent = _agent(base_url, db, tracing=False)
    db.upsert_session(Session(session_id="s1", user_id="alice", agent_id=agent.id))
    messages = [{"role": "user", "content": "question"}, {"role": "assistant", "content": ANSWER}]
    have, out = 0, {}
    for point in points:
        while have < point:
            db.append_run(Run(session_id="s1", user_id="alice", agent_id=agent.id, input="q", content=ANSWER,
                              messages=messages))
            have += 1
        times = []
        for _ in range(per_point):
            t = time.perf_counter()
            agent.run("question", user_id="alice", session_id="s1")
            times.append(time.perf_counter() - t)
        have += per_point
        out[str(point)] = statistics.median(times) * 1000
    db.close()
    _drop(pg_url, schema)
    return out


def _run_child(command: list[str], env: dict | None = None) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]}... failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--agno", help="a python that has agno==3.1.10 (its own venv)")
    parser.add_argument("--only", choices=("turns", "history"))
    parser.add_argument("--points", default="10,1000,10000")
    parser.add_argument("--pg-url", default=os.environ.get("AGENTKEEP_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.child:
        spec = json.loads(args.child)
        result = child_history(**spec) if "points" in spec else child_turns(**spec)
        print(json.dumps(result))
        return

    server = subprocess.Popen([sys.executable, "-m", "bench.agent", "--serve"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    rows = []
    try:
        for backend in args.backends.split(","):
            if args.only in (None, "turns"):
                common = {"base_url": base_url, "backend": backend, "pg_url": args.pg_url, "turns": args.turns,
                          "warmup": args.warmup}
                for label, tracing in (("agentkeep", True), ("agentkeep, tracing off", False)):
                    spec = json.dumps({**common, "tracing": tracing})
                    rows.append((backend, label, _run_child([sys.executable, "-m", "bench.agent", "--child", spec])))
                if args.agno:
                    pg = args.pg_url if "+psycopg" in args.pg_url else args.pg_url.replace("postgresql://", "postgresql+psycopg://")
                    env = {**os.environ, "AGNO_TELEMETRY": "false", "PYTHONPATH": ""}
                    cmd = [args.agno, str(ROOT / "bench/agno_turn.py"), base_url, backend, pg, str(args.turns), str(args.warmup)]
                    rows.append((backend, "agno 3.1.10", _run_child(cmd, env)))
            if args.only in (None, "history"):
                points = [int(p) for p in args.points.split(",")]
                spec = json.dumps({"base_url": base_url, "backend": backend, "pg_url": args.pg_url, "points": points,
                                   "per_point": 101})
                rows.append((backend, "history", _run_child([sys.executable, "-m", "bench.agent", "--child", spec])))
    finally:
        server.stdin.close()
        server.wait(10)
    _print(rows)


def _print(rows: list) -> None:
    print(f"{'backend':<10} {'case':<24} {'turns/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'peak RSS MB':>12}")
    for backend, label, r in rows:
        if label == "history":
            cells = ", ".join(f"run {k}: {v:.2f} ms" for k, v in r.items())
            print(f"{backend:<10} {'turn p50 at':<24} {cells}")
            continue
        print(f"{backend:<10} {label:<24} {r['turns_per_s']:>9.1f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
              f"{r['peak_rss_mb']:>12.0f}")
    by = {(b, label): r for b, label, r in rows if label != "history"}
    for backend in dict.fromkeys(b for b, _, _ in rows):
        ours, ref = by.get((backend, "agentkeep")), by.get((backend, "agno 3.1.10"))
        if ours and ref:
            print(f"{backend}: agentkeep does {ours['turns_per_s'] / ref['turns_per_s']:.1f}x the turns/s of agno "
                  f"(target >= 3x), peak RSS {ours['peak_rss_mb']:.0f} vs {ref['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
