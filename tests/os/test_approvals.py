"""The approvals inbox over HTTP: list, count, read, resolve once (a second resolution is
409), and resolving the last pending approval resumes the paused run."""

from __future__ import annotations

from agentkeep.agent import tool
from agentkeep.os import AgentOS

from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import wait_until


@tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


def test_resolving_in_the_inbox_resumes_the_run(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})]), Reply("refund done"),
                       Reply(tool_calls=[("refund", {"order": "B2"})]), Reply("not refunded")])
    http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db).get_app())
    paused = http.post("/agents/helper/runs", json={"message": "refund A1", "user_id": "alice", "session_id": "s1"})
    assert paused.json()["status"] == "paused"
    assert http.get("/approvals/count", params={"user_id": "alice"}).json() == {"count": 1}
    inbox = http.get("/approvals", params={"status": "pending"}).json()
    [pending] = inbox["data"]
    assert (pending["tool_name"], pending["tool_args"], pending["user_id"]) == ("refund", {"order": "A1"}, "alice")
    assert inbox["meta"]["total_count"] == 1
    assert http.get("/approvals", params={"status": "pending", "user_id": "bob"}).json()["data"] == []

    resolved = http.post(f"/approvals/{pending['id']}/resolve", json={"status": "approved", "resolved_by": "ops"})
    assert resolved.status_code == 200 and resolved.json()["resumed"] is True
    assert (resolved.json()["status"], resolved.json()["resolved_by"]) == ("approved", "ops")
    again = http.post(f"/approvals/{pending['id']}/resolve", json={"status": "rejected"})
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    run_id = paused.json()["run_id"]
    wait_until(lambda: db.get_run(run_id).status == "completed")
    run = db.get_run(run_id)
    assert run.content == "refund done" and run.tools[0]["result"] == "refunded A1"
    status = http.get(f"/approvals/{pending['id']}/status").json()
    assert (status["status"], status["run_id"], status["resolved_by"]) == ("approved", run_id, "ops")

    second = http.post("/agents/helper/runs", json={"message": "refund B2", "user_id": "alice", "session_id": "s1"})
    [waiting] = http.get("/approvals", params={"status": "pending"}).json()["data"]
    rejected = http.post(f"/approvals/{waiting['id']}/resolve",
                         json={"status": "rejected", "resolution_data": {"reason": "over the limit"}})
    assert rejected.json()["resolution_data"] == {"reason": "over the limit"}
    wait_until(lambda: db.get_run(second.json()["run_id"]).status == "completed")
    assert db.get_run(second.json()["run_id"]).tools[0]["status"] == "rejected"

    assert http.post("/approvals/nope/resolve", json={"status": "approved"}).status_code == 404
    assert http.post(f"/approvals/{waiting['id']}/resolve", json={"status": "maybe"}).status_code == 422
    assert http.get(f"/approvals/{waiting['id']}", params={"user_id": "bob"}).status_code == 404
    assert http.delete(f"/approvals/{waiting['id']}").status_code == 204
    assert http.get(f"/approvals/{waiting['id']}").status_code == 404
