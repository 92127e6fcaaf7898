"""AgentOS over HTTP: boot, agents, runs (JSON, form fields, SSE), sessions, errors."""

from __future__ import annotations

import json

import pytest

from agentkeep.agent import tool
from agentkeep.db import Session
from agentkeep.os import AgentOS, BootError

from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import finished_job


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(requires_approval=True)
def refund(amount: int) -> str:
    """Refund an amount."""
    return f"refunded {amount}"


def sse(text: str) -> list[tuple[str, dict]]:
    frames = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        frames.append((lines["event"], json.loads(lines["data"])))
    return frames


def test_boot_health_agents_and_a_run(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("add", {"a": 2, "b": 3})]), Reply("5")])
    agent = make_agent(server, db, tools=[add])
    http = serve(AgentOS(agents=[agent], db=db).get_app())
    assert http.get("/health").json() == {"status": "ok"}
    config = http.get("/config").json()
    assert [(a["id"], a["name"], a["model"]["id"]) for a in config["agents"]] == [("helper", "Helper", "scripted")]
    assert config["agents"][0]["db_id"] == config["os_database"] and config["databases"] == [config["os_database"]]
    listed = http.get("/agents").json()
    assert [a["id"] for a in listed] == ["helper"] and listed[0]["tools"][0]["name"] == "add"
    r = http.post("/agents/helper/runs", json={"message": "2+3?", "user_id": "alice", "session_id": "s1"})
    assert r.status_code == 200
    run = r.json()
    assert (run["status"], run["content"], run["tools"][0]["result"]) == ("completed", "5", "5")
    assert db.get_run(run["run_id"]).content == "5"
    document = http.get("/openapi.json").json()
    paths = document["paths"]
    assert {"/agents/{agent_id}/runs", "/sessions", "/sessions/{session_id}/runs"} <= set(paths)
    for path in ("/sessions", "/sessions/{session_id}", "/memories", "/memories/{memory_id}"):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[-1]  # a named schema with its fields, not a bare object
        assert document["components"]["schemas"][name]["properties"], path


def test_a_streamed_run_over_sse_with_form_fields(scripted, db, serve):
    server = scripted([Reply("Hello there, streamed.")])
    http = serve(AgentOS(agents=[make_agent(server, db)], db=db).get_app())
    with http.stream("POST", "/agents/helper/runs",
                     data={"message": "hi", "stream": "true", "user_id": "alice", "session_id": "s1"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames = sse(r.read().decode())
    names = [name for name, _ in frames]
    assert names[0] == "RunStarted" and names[-1] == "RunCompleted" and "RunContent" in names
    assert "".join(d["content"] for n, d in frames if n == "RunContent") == "Hello there, streamed."
    assert frames[-1][1]["run"]["status"] == "completed"


def test_sessions_list_get_runs_rename_delete(scripted, db, serve):
    server = scripted([Reply(f"answer {i}") for i in range(3)])
    http = serve(AgentOS(agents=[make_agent(server, db)], db=db).get_app())
    for i, sid in enumerate(("s1", "s1", "s2")):
        http.post("/agents/helper/runs", json={"message": f"q{i}", "user_id": "alice", "session_id": sid})
    page = http.get("/sessions", params={"user_id": "alice", "limit": 1}).json()
    assert [s["session_id"] for s in page["data"]] == ["s2"] and "runs" not in page["data"][0]
    assert page["meta"]["total_count"] == 2 and page["meta"]["total_pages"] == 2 and page["meta"]["next_cursor"]
    second = http.get("/sessions", params={"user_id": "alice", "limit": 1, "page": 2}).json()
    by_cursor = http.get("/sessions", params={"user_id": "alice", "limit": 1, "cursor": page["meta"]["next_cursor"]}).json()
    assert [s["session_id"] for s in second["data"]] == [s["session_id"] for s in by_cursor["data"]] == ["s1"]
    past = http.get("/sessions", params={"user_id": "alice", "limit": 1, "page": 3}).json()
    assert past["data"] == [] and past["meta"]["next_cursor"] is None and past["meta"]["page"] == 3
    runs = http.get("/sessions/s1/runs", params={"user_id": "alice"}).json()
    assert [r["content"] for r in runs] == ["answer 0", "answer 1"]
    first = http.get("/sessions/s1/runs", params={"user_id": "alice", "limit": 1})
    assert [r["content"] for r in first.json()] == ["answer 0"]
    following = first.headers["link"].split(">")[0].lstrip("<")
    assert [r["content"] for r in http.get(following).json()] == ["answer 1"]
    one = http.get(f"/sessions/s1/runs/{runs[0]['run_id']}", params={"user_id": "alice"}).json()
    assert one["input"] == {"input_content": "q0"} and one["run_input"] == "q0"
    renamed = http.post("/sessions/s1/rename", params={"user_id": "alice"}, json={"session_name": "Plans"})
    assert renamed.json()["name"] == "Plans"
    assert http.delete("/sessions/s2", params={"user_id": "alice"}).status_code == 204
    assert http.get("/sessions/s2", params={"user_id": "alice"}).status_code == 404


def test_errors_are_4xx_with_a_reason(scripted, db, serve):
    db.upsert_session(Session(session_id="bobs", user_id="bob"))
    server = scripted([Reply("never")])
    os = AgentOS(agents=[make_agent(server, db)], db=db, max_body_bytes=1000)
    http = serve(os.get_app())
    assert http.post("/agents/nobody/runs", json={"message": "hi"}).status_code == 404
    bad = http.post("/agents/helper/runs", json={"stream": True})
    assert bad.status_code == 422 and "message" in bad.json()["detail"]
    assert http.post("/agents/helper/runs", json={"message": ""}).status_code == 422
    # another user's session is as missing as one that does not exist
    theirs = http.post("/agents/helper/runs", json={"message": "hi", "user_id": "alice", "session_id": "bobs"})
    assert theirs.status_code == 404 and theirs.json() == {"detail": "not found"}
    assert http.get("/sessions/bobs", params={"user_id": "alice"}).status_code == 404
    assert http.post("/agents/helper/runs", json={"message": "x" * 2000}).status_code == 413

    def chunked():  # no Content-Length: the limit holds on the bytes read
        yield b'{"message": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    not_utf8 = http.post("/agents/helper/runs", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert not_utf8.status_code == 422 and "not JSON" in not_utf8.text
    refused = http.post("/agents/helper/runs", content=chunked(), headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "over 1000 bytes" in refused.json()["detail"]
    assert http.get("/sessions", params={"limit": 0}).status_code == 422
    assert server.requests == [] and db.list_runs("bobs").items == []


def test_approvals_continue_and_cancel_over_http(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"amount": 9})]), Reply("Refunded.")])
    http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db).get_app())
    paused = http.post("/agents/helper/runs", json={"message": "refund", "user_id": "alice", "session_id": "s1"}).json()
    assert paused["status"] == "paused"
    approval = db.list_approvals(run_id=paused["run_id"]).items[0]
    early = http.post(f"/agents/helper/runs/{paused['run_id']}/continue", json={"user_id": "alice"})
    assert early.status_code == 409
    db.resolve_approval(approval.id, status="approved", resolved_by="manager")
    done = http.post(f"/agents/helper/runs/{paused['run_id']}/continue", json={"user_id": "alice"}).json()
    assert done["status"] == "completed" and done["tools"][0]["result"] == "refunded 9"
    again = http.post(f"/agents/helper/runs/{paused['run_id']}/continue", json={"user_id": "alice"})
    assert again.status_code == 409
    assert http.post(f"/agents/helper/runs/{paused['run_id']}/cancel").json()["status"] == "completed"


def test_a_db_that_cannot_be_reached_fails_the_boot(scripted):
    from agentkeep.db.postgres import PostgresDb

    down = PostgresDb(db_url="postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=1)
    os = AgentOS(agents=[make_agent(scripted([Reply("x")]), down, tracing=False)], db=down)

    async def boot():
        async with os.lifespan(os.get_app()):
            pass

    import asyncio

    with pytest.raises(BootError, match="cannot reach"):
        asyncio.run(boot())


def test_a_background_run_answers_202_and_is_polled(scripted, db, serve):
    server = scripted([Reply("slow answer", delay=0.3)])
    http = serve(AgentOS(agents=[make_agent(server, db)], db=db).get_app())
    r = http.post("/agents/helper/runs", json={"message": "hi", "user_id": "alice", "session_id": "s1",
                                               "background": True})
    assert r.status_code == 202 and r.json()["status"] == "pending" and r.json()["job_id"] == f"run-{r.json()['run_id']}"
    run_id = r.json()["run_id"]
    assert http.get(f"/sessions/s1/runs/{run_id}", params={"user_id": "alice"}).json()["status"] in ("pending", "running")
    import time

    deadline = time.monotonic() + 10
    while (status := http.get(f"/sessions/s1/runs/{run_id}").json()["status"]) in ("pending", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == "completed" and db.get_run(run_id).content == "slow answer"
    assert finished_job(http, f"run-{run_id}")["result"] == {"run_id": run_id, "status": "completed"}
    both = http.post("/agents/helper/runs", json={"message": "x", "background": True, "stream": True})
    assert both.status_code == 422


def test_a_queued_background_run_is_pending_then_cancelled(scripted, db, serve):
    queue_only = serve(AgentOS(agents=[make_agent(scripted([Reply("never")]), db)], db=db, jobs=False).get_app())
    r = queue_only.post("/agents/helper/runs", json={"message": "hi", "user_id": "alice", "session_id": "s1",
                                                     "background": True}).json()
    run = queue_only.get(f"/sessions/s1/runs/{r['run_id']}", params={"user_id": "alice"})
    assert run.status_code == 200 and (run.json()["status"], run.json()["input"]) == ("pending", {"input_content": "hi"})
    assert queue_only.get(f"/sessions/s1/runs/{r['run_id']}", params={"user_id": "bob"}).status_code == 404
    cancelled = queue_only.post(f"/agents/helper/runs/{r['run_id']}/cancel", params={"user_id": "alice"})
    assert cancelled.json() == {"run_id": r["run_id"], "status": "cancelled"}
    assert queue_only.get(f"/sessions/s1/runs/{r['run_id']}").json()["status"] == "cancelled"
    assert db.get_run(r["run_id"]) is None  # it never started


def test_files_with_a_run_reach_the_model_and_bad_ones_are_refused(scripted, db, serve):
    import base64

    seen = []

    def answer(body):
        seen.append(body["messages"][-1]["content"])
        return Reply("read them")

    http = serve(AgentOS(agents=[make_agent(scripted(answer), db)], db=db).get_app())
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    sent = http.post("/agents/helper/runs", data={"message": "what is in these?", "session_id": "f1"},
                     files=[("files", ("notes.md", b"# Plans\nteam grew 40%", "text/markdown")),
                            ("files", ("chart.png", png, "image/png"))])
    assert sent.status_code == 200, sent.text
    text, note, image = seen[0]
    assert text == {"type": "text", "text": "what is in these?"}
    assert note["text"] == '<file name="notes.md">\n# Plans\nteam grew 40%\n</file>'
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    run = db.get_run(sent.json()["run_id"])
    assert run.input == "what is in these?" and run.messages[0]["content"][1] == note
    assert run.metadata["files"] == [{"name": "notes.md", "content_type": "text/markdown", "size": 21},
                                     {"name": "chart.png", "content_type": "image/png", "size": len(png)}]

    as_json = http.post("/agents/helper/runs", json={"message": "and this?", "session_id": "f1", "files": [
        {"name": "a.csv", "content_type": "text/csv", "content_base64": base64.b64encode(b"x,y\n1,2").decode()}]})
    assert as_json.status_code == 200 and seen[-1][1]["text"] == '<file name="a.csv">\nx,y\n1,2\n</file>'

    runs_before = len(db.list_runs("f1").items)
    for files, reason in (([("files", ("a.pdf", b"%PDF-1.7", "application/pdf"))], "application/pdf"),
                          ([("files", ("a.txt", b"\xff\xfe\x00bad", "text/plain"))], "not UTF-8")):
        refused = http.post("/agents/helper/runs", data={"message": "read", "session_id": "f1"}, files=files)
        assert refused.status_code == 422 and reason in refused.text, refused.text
    bad64 = http.post("/agents/helper/runs", json={"message": "read", "session_id": "f1",
                                                   "files": [{"name": "x", "content_base64": "%%%"}]})
    assert bad64.status_code == 422 and "not base64" in bad64.text
    assert len(db.list_runs("f1").items) == runs_before and len(seen) == 2  # nothing written, no model call
