"""AgentOS over HTTP, side by side with the reference server (agno 3.1.10's AgentOS):

    python -m bench.server --agno /tmp/agno-venv/bin/python

Both servers run on uvicorn in their own process, on SQLite, with 10,000 sessions (each with
`--runs-per-session` runs already in it, 2 by default), one agent
(10 runs of history) and the same scripted model server (its own process, answering at
once). Figures, measured with httpx from this process: `GET /sessions` page latency (p50 /
p95, 20 a page), runs per second through `POST /agents/{id}/runs` (non-streamed, sequential),
and the time from a streamed run's request to its first content event."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "The account is on the team plan with 12 seats; it grew fastest last month. " * 3


def serve_agentkeep(base_url: str, db_file: str, port: int, sessions: int, runs: int) -> None:
    import uvicorn

    from agentkeep.agent import Agent
    from agentkeep.db import Run, Session
    from agentkeep.db.sqlite import SqliteDb
    from agentkeep.models import OpenAIChat
    from agentkeep.os import AgentOS

    db = SqliteDb(db_file=db_file)
    for i in range(sessions):
        session = db.upsert_session(Session(session_id=f"s{i:05d}", agent_id="bench", user_id=f"u{i % 100}",
                                            name=f"session {i}"))
        for j in range(runs):
            db.append_run(Run(session_id=session.session_id, agent_id="bench", input=f"question {j}",
                              content=f"answer {j} " * 20,
                              messages=[{"role": "user", "content": f"question {j}"},
                                        {"role": "assistant", "content": f"answer {j} " * 20}]))
    agent = Agent(OpenAIChat("scripted", base_url=base_url), name="bench", db=db, num_history_runs=10)
    print("ready", flush=True)
    uvicorn.run(AgentOS(agents=[agent], db=db).get_app(), host="127.0.0.1", port=port, log_level="warning")


def serve_model() -> None:
    from agentkeep.models.scripted import Reply, ScriptedServer

    server = ScriptedServer([Reply(ANSWER, usage=(400, 60), chunk_chars=16)], cycle=True).start()
    print(server.base_url, flush=True)
    sys.stdin.read()


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000


def measure(url: str, pages: int, runs: int, streams: int) -> dict:
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(20):  # warm up
            http.get("/sessions", params={"limit": 20, "type": "agent"})
        lists = []
        for i in range(pages):
            t = time.perf_counter()
            r = http.get("/sessions", params={"limit": 20, "page": 1 + i % 5, "type": "agent"})
            lists.append(time.perf_counter() - t)
            assert r.status_code == 200 and len(r.json()["data"]) == 20, r.text[:300]
        http.post("/agents/bench/runs", data={"message": "warm up", "stream": "false", "session_id": "bench-0"})
        began = time.perf_counter()
        for i in range(runs):
            r = http.post("/agents/bench/runs", data={"message": f"question {i}", "stream": "false",
                                                      "session_id": "bench-1", "user_id": "alice"})
            assert r.status_code == 200, r.text[:300]
        run_rate = runs / (time.perf_counter() - began)
        first = []
        for i in range(streams):
            t = time.perf_counter()
            with http.stream("POST", "/agents/bench/runs", data={"message": f"stream {i}", "stream": "true",
                                                                "session_id": "bench-2", "user_id": "alice"}) as r:
                seen = False
                for line in r.iter_lines():  # read to the end; note the first content event
                    if not seen and (line.startswith("event: RunContent") or '"event": "RunContent"' in line
                                     or '"event":"RunContent"' in line):
                        first.append(time.perf_counter() - t)
                        seen = True
    p50, p95 = _ms(lists)
    f50, f95 = _ms(first)
    return {"list_p50": p50, "list_p95": p95, "runs_per_s": run_rate, "first_p50": f50, "first_p95": f95}


def _start(command: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The process, and the first line it printed (when it is ready)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{command[:3]} did not start")
    return proc, line.strip()


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--agno", help="a python that has agno==3.1.10, fastapi and uvicorn")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs-per-session", type=int, default=2,
                        help="runs already in each session (agno keeps them inside the session row)")
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "model":
        return serve_model()
    if args.serve:
        base_url, db_file, port = args.serve.split(",")
        return serve_agentkeep(base_url, db_file, int(port), args.sessions, args.runs_per_session)

    from agentkeep.models.local import free_port

    model, base_url = _start([sys.executable, "-m", "bench.server", "--serve", "model"])
    results = {}
    try:
        work = tempfile.mkdtemp()
        cases = [("agentkeep", lambda port: [sys.executable, "-m", "bench.server", "--sessions", str(args.sessions),
                                             "--runs-per-session", str(args.runs_per_session),
                                             "--serve", f"{base_url},{work}/agentkeep.db,{port}"], None)]
        if args.agno:
            env = {**os.environ, "AGNO_TELEMETRY": "false", "PYTHONPATH": ""}
            cases.append(("agno 3.1.10", lambda port: [args.agno, str(ROOT / "bench/agno_server.py"), base_url,
                                                       f"{work}/agno.db", str(port), str(args.sessions),
                                                       str(args.runs_per_session)], env))
        for label, command, env in cases:
            port = free_port()
            server, _ = _start(command(port), env)
            try:
                _wait(f"http://127.0.0.1:{port}")
                results[label] = measure(f"http://127.0.0.1:{port}", args.pages, args.runs, args.streams)
            finally:
                server.terminate()
                server.wait(30)
    finally:
        model.stdin.close()
        model.wait(10)
    _print(results)


def _print(results: dict) -> None:
    print(f"{'server':<14} {'GET /sessions p50 / p95 ms':>28} {'runs/s':>8} {'first content p50 / p95 ms':>28}")
    for label, r in results.items():
        print(f"{label:<14} {r['list_p50']:>16.2f} / {r['list_p95']:<9.2f} {r['runs_per_s']:>8.1f} "
              f"{r['first_p50']:>16.2f} / {r['first_p95']:<9.2f}")
    ours, ref = results.get("agentkeep"), results.get("agno 3.1.10")
    if ours and ref:
        print(f"GET /sessions p50: {ref['list_p50'] / ours['list_p50']:.1f}x faster (target >= 3x); "
              f"runs/s: {ours['runs_per_s'] / ref['runs_per_s']:.1f}x (target >= 3x); "
              f"first content p50: {ours['first_p50']:.1f} vs {ref['first_p50']:.1f} ms (target: no slower)")


if __name__ == "__main__":
    main()
