"""Approvals that expire: the agent's default expiry (a tool's own wins), the server's sweep
expiring a pending approval and ending its paused run (once, with two servers on one db),
the resolve route on an approval past its expiry, and the count per caller and status."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import httpx
import jwt
import pytest

from agentkeep.agent import tool
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.models import utcnow
from agentkeep.os import AgentOS, JWTAuth
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import Served, finished_job, http_server, wait_until
from tests.os.test_webhooks import Receiver, url_of, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()
JWT_SECRET = "a-shared-secret-of-at-least-32-bytes!"


@tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


def _tool_call_then_answer(request: dict) -> Reply:
    """A refund asked for; once the call's outcome is back, an answer."""
    if request["messages"][-1]["role"] == "tool":
        return Reply("The refund was not approved in time.")
    return Reply(tool_calls=[("refund", {"order": "A1"})])


def test_approvals_expire_after_the_agents_default_unless_the_tool_says(scripted, db):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})])], cycle=True)

    def lifetime(agent) -> dt.timedelta | None:
        run = agent.run("refund A1", user_id="alice")
        [approval] = db.list_approvals(run_id=run.run_id).items
        return None if approval.expires_at is None else approval.expires_at - approval.created_at

    def about(value: dt.timedelta | None, expected: dt.timedelta) -> bool:
        return value is not None and abs(value - expected) < dt.timedelta(minutes=1)

    assert about(lifetime(make_agent(server, db, tools=[refund])), dt.timedelta(hours=24))
    assert lifetime(make_agent(server, db, tools=[refund], approval_expires_in=None)) is None
    assert about(lifetime(make_agent(server, db, tools=[refund], approval_expires_in=dt.timedelta(minutes=5))),
                 dt.timedelta(minutes=5))
    assert about(lifetime(make_agent(server, db, tools=[refund], approval_expires_in=600)), dt.timedelta(minutes=10))
    own = tool(refund.fn, requires_approval=True, approval_expires_in=7200)  # the tool's own wins
    assert about(lifetime(make_agent(server, db, tools=[own], approval_expires_in=None)), dt.timedelta(hours=2))
    never = tool(refund.fn, requires_approval=True, approval_expires_in=0)  # 0 on a tool: none
    assert lifetime(make_agent(server, db, tools=[never])) is None
    for bad in (0, -5, "1h", True, dt.timedelta(0)):
        with pytest.raises(InvalidInputError, match="approval_expires_in"):
            make_agent(server, db, tools=[refund], approval_expires_in=bad)


def test_the_sweep_expires_a_pending_approval_and_ends_its_run(scripted, db, serve):
    server = scripted(_tool_call_then_answer)
    agent = make_agent(server, db, tools=[refund], approval_expires_in=1)
    http = serve(AgentOS(agents=[agent], db=db, approvals_sweep_seconds=0.2).get_app())
    paused = http.post("/agents/helper/runs", json={"message": "refund A1", "user_id": "alice", "session_id": "s1"})
    assert paused.json()["status"] == "paused"
    run_id, approval_id = paused.json()["run_id"], paused.json()["tools"][0]["approval_id"]

    wait_until(lambda: db.get_run(run_id).status != "paused")
    job = finished_job(http, f"continue-{run_id}")  # the sweep resumed the run as a durable job
    assert (job["status"], job["result"]) == ("completed", {"run_id": run_id, "resumed": True})
    run = db.get_run(run_id)
    assert (run.status, run.content) == ("completed", "The refund was not approved in time.")
    assert (run.tools[0]["status"], run.tools[0]["approval_status"]) == ("rejected", "expired")
    assert "(expired)" in server.requests[1]["messages"][-1]["content"]  # the model was told, as continue_run does
    assert len(server.requests) == 2

    approval = http.get(f"/approvals/{approval_id}").json()
    assert (approval["status"], approval["resolved_by"]) == ("expired", "agentkeep")
    assert approval["resolved_at"] >= approval["expires_at"]
    # the count route sees the expiry
    assert http.get("/approvals/count", params={"user_id": "alice"}).json() == {"count": 0}
    assert http.get("/approvals/count", params={"user_id": "alice", "status": "expired"}).json() == {"count": 1}
    assert http.get("/approvals", params={"status": "expired"}).json()["meta"]["total_count"] == 1
    late = http.post(f"/approvals/{approval_id}/resolve", json={"status": "approved"})
    assert late.status_code == 409 and "already expired" in late.json()["detail"]


def test_resolving_an_approval_past_its_expiry_is_409_and_ends_its_run(scripted, db, serve):
    server = scripted(_tool_call_then_answer)
    agent = make_agent(server, db, tools=[refund], approval_expires_in=1)
    http = serve(AgentOS(agents=[agent], db=db, approvals_sweep_seconds=None).get_app())  # no sweep here
    paused = http.post("/agents/helper/runs", json={"message": "refund A1", "user_id": "alice"}).json()
    run_id, approval_id = paused["run_id"], paused["tools"][0]["approval_id"]
    expires_at = db.get_approval(approval_id).expires_at
    wait_until(lambda: utcnow() > expires_at)

    late = http.post(f"/approvals/{approval_id}/resolve", json={"status": "approved", "resolved_by": "ops"})
    assert late.status_code == 409 and "expired at" in late.json()["detail"]
    wait_until(lambda: db.get_run(run_id).status == "completed")
    assert db.get_run(run_id).tools[0]["approval_status"] == "expired"
    approval = db.get_approval(approval_id)
    assert (approval.status, approval.resolved_by) == ("expired", "agentkeep")
    assert len(server.requests) == 2


class Counting(AgentOS):
    """An AgentOS that counts the approvals its own sweeps expired."""

    expired = 0

    async def sweep_approvals(self) -> int:
        n = await super().sweep_approvals()
        self.expired += n
        return n


def test_two_servers_on_one_db_expire_each_approval_once(scripted, store):
    assert store.reusable
    db, other = store.db, store.reopen()
    server = scripted(_tool_call_then_answer)
    receiver = Receiver()
    replicas: list[Served] = []
    with http_server(receiver.handler()) as httpd:
        settings = {"approvals_sweep_seconds": 0.1, "webhook_url": url_of(httpd), "webhook_secret": SECRET}
        first = Counting(agents=[make_agent(server, db, tools=[refund], approval_expires_in=1)], db=db, **settings)
        second = Counting(agents=[make_agent(server, other, tools=[refund], approval_expires_in=1)], db=other,
                          **settings)
        try:
            replicas = [Served(first.get_app()).start(), Served(second.get_app()).start()]
            runs = []
            with httpx.Client(base_url=replicas[0].url, timeout=30) as http:
                for i in range(4):
                    paused = http.post("/agents/helper/runs", json={"message": f"refund {i}", "user_id": "alice"})
                    assert paused.json()["status"] == "paused"
                    runs.append(paused.json()["run_id"])
            approvals = {db.list_approvals(run_id=r).items[0].id for r in runs}
            wait_until(lambda: all(db.get_run(r).status == "completed" for r in runs))
            wait_until(lambda: len(receiver.of("approval.resolved")) == len(runs))
            wait_until(lambda: all(j.status == "completed" for j in db.list_jobs(kind="webhook.deliver").items))
        finally:
            for replica in replicas:
                replica.stop()  # nothing more can happen: what follows is all there is
            other.close()

    assert first.expired + second.expired == len(runs)  # each approval expired by one sweep, once
    resolved = [verify_webhook(SECRET, h, b) for h, b in receiver.of("approval.resolved")]
    assert sorted(e["data"]["id"] for e in resolved) == sorted(approvals)  # one event each, none twice
    assert {e["data"]["status"] for e in resolved} == {"expired"}
    assert {json.loads(b)["data"]["id"] for _, b in receiver.of("approval.created")} == approvals
    assert len(server.requests) == 2 * len(runs)  # each run resumed once: one model call more each
    for r in runs:
        run = db.get_run(r)
        assert (run.status, run.tools[0]["approval_status"]) == ("completed", "expired")


def _token(sub: str, scope: str = "") -> dict:
    claims = {"sub": sub, "exp": int(time.time()) + 600, **({"scope": scope} if scope else {})}
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


def test_the_count_answers_per_caller_and_status(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})])], cycle=True)
    http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db,
                         jwt=JWTAuth(secret=JWT_SECRET)).get_app())
    alice, bob, admin = _token("alice"), _token("bob"), _token("ops", scope="admin")
    for who in (alice, alice, bob):
        assert http.post("/agents/helper/runs", headers=who, json={"message": "refund A1"}).json()["status"] == "paused"

    def count(who: dict, **params: str) -> int:
        answer = http.get("/approvals/count", headers=who, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()["count"]

    assert (count(alice), count(bob), count(admin), count(admin, user_id="bob")) == (2, 1, 3, 1)
    assert http.get("/approvals/count", headers=alice, params={"user_id": "bob"}).status_code == 403
    assert http.get("/approvals/count", headers=alice, params={"status": "maybe"}).status_code == 422
    assert http.get("/approvals/count").status_code == 401
    [first, _] = http.get("/approvals", headers=alice, params={"status": "pending"}).json()["data"]
    rejected = http.post(f"/approvals/{first['id']}/resolve", headers=alice,
                         json={"status": "rejected", "resume": False})  # the run stays paused
    assert rejected.json()["status"] == "rejected"
    assert (count(alice), count(alice, status="rejected"), count(bob, status="rejected")) == (1, 1, 0)
    assert (count(admin), count(admin, status="rejected"), count(admin, status="approved")) == (2, 1, 0)
