"""Webhooks over real HTTP: the server POSTs its events to a real receiver, signed as
Standard Webhooks sign theirs and checked there with `verify_webhook`; each delivery is a
durable job (retried after a 500, failed for good after a 400, seen in /jobs)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import time

import pytest

from agentkeep.agent import tool
from agentkeep.db import InMemoryDb
from agentkeep.db.errors import InvalidInputError
from agentkeep.os import AgentOS
from agentkeep.os.webhooks import (
    SECRET_ENV,
    URL_ENV,
    WebhookVerificationError,
    notify,
    sign,
    signed_headers,
    verify_webhook,
)
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import Handler, finished_job, http_server, wait_until

SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()


@tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


class Receiver:
    """A webhook endpoint: keeps each delivery (headers, raw body) and answers `statuses` in
    order, then 204."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.deliveries: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()

    def handler(self) -> type:
        receiver = self

        class Hook(Handler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.deliveries.append((dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.reply(status)

        return Hook

    def of(self, event_type: str) -> list[tuple[dict, bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.deliveries if json.loads(b)["type"] == event_type]


def url_of(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/hooks/agentkeep"


def _paused_run(http) -> tuple[str, str]:
    paused = http.post("/agents/helper/runs", json={"message": "refund A1", "user_id": "alice", "session_id": "s1"})
    assert paused.json()["status"] == "paused"
    return paused.json()["run_id"], paused.json()["tools"][0]["approval_id"]


def test_signatures_follow_standard_webhooks():
    # the test vector of the Standard Webhooks libraries
    assert sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    body = b'{"id":"evt_1","type":"approval.created","created_at":"2026-01-01T00:00:00+00:00","data":{}}'
    headers = signed_headers(SECRET, "evt_1", body)
    assert verify_webhook(SECRET, headers, body)["type"] == "approval.created"
    assert verify_webhook(SECRET, {k.upper(): v for k, v in headers.items()}, body.decode())["id"] == "evt_1"
    several = {**headers, "webhook-signature": f"v1,bm90IGl0 {headers['webhook-signature']}"}  # one of them matches
    assert verify_webhook(SECRET, several, body)["id"] == "evt_1"
    plain = signed_headers("a plain secret", "evt_1", body)  # not "whsec_": its UTF-8 bytes are the key
    assert verify_webhook("a plain secret", plain, body)["id"] == "evt_1"
    refused = [
        ("whsec_" + base64.b64encode(b"another secret").decode(), headers, body),
        (SECRET, headers, body.replace(b"evt_1", b"evt_2")),
        (SECRET, {**headers, "webhook-id": "evt_2"}, body),
        (SECRET, signed_headers(SECRET, "evt_1", body, timestamp=int(time.time()) - 301), body),
        (SECRET, signed_headers(SECRET, "evt_1", body, timestamp=int(time.time()) + 301), body),
        (SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, body),
        (SECRET, {**headers, "webhook-timestamp": "yesterday"}, body),
    ]
    for secret, h, b in refused:
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, h, b)
    old = signed_headers(SECRET, "evt_1", body, timestamp=int(time.time()) - 301)
    assert verify_webhook(SECRET, old, body, tolerance_seconds=3600)["id"] == "evt_1"


def test_the_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(URL_ENV, "https://hooks.example.com/agentkeep")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    agent_os = AgentOS(db=InMemoryDb())
    assert (agent_os.webhook_url, agent_os.webhook_secret) == ("https://hooks.example.com/agentkeep", SECRET)
    assert AgentOS(db=InMemoryDb(), webhook_url="http://127.0.0.1:9/h").webhook_url == "http://127.0.0.1:9/h"
    for bad in ({"webhook_url": "ftp://example.com/h"}, {"webhook_url": "hooks.example.com"},
                {"webhook_secret": "whsec_not base64!"}):
        with pytest.raises(InvalidInputError):
            AgentOS(db=InMemoryDb(), **bad)
    monkeypatch.delenv(URL_ENV)
    monkeypatch.delenv(SECRET_ENV)
    assert (AgentOS(db=InMemoryDb()).webhook_url, AgentOS(db=InMemoryDb()).webhook_secret) == (None, None)
    assert asyncio.run(notify(AgentOS(db=InMemoryDb()), InMemoryDb(), "schedule_run.failed", {})) is None


def test_approval_events_are_delivered_signed(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})]), Reply("refund done")])
    receiver = Receiver()
    with http_server(receiver.handler()) as httpd:
        agent_os = AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db, webhook_url=url_of(httpd),
                           webhook_secret=SECRET, approvals_sweep_seconds=0.2)
        http = serve(agent_os.get_app())
        run_id, approval_id = _paused_run(http)
        wait_until(lambda: receiver.of("approval.created"))  # the sweep saw the new approval
        resolved = http.post(f"/approvals/{approval_id}/resolve", json={"status": "approved", "resolved_by": "ops"})
        assert resolved.status_code == 200 and resolved.json()["resumed"] is True
        wait_until(lambda: receiver.of("approval.resolved"))
        wait_until(lambda: db.get_run(run_id).status == "completed")

        [(headers, body)] = receiver.of("approval.created")
        created = verify_webhook(SECRET, headers, body)
        assert headers["webhook-id"] == created["id"] == f"approval.created-{approval_id}"
        assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"
        assert set(created) == {"id", "type", "created_at", "data"}
        data = created["data"]
        assert (data["id"], data["status"], data["run_id"], data["user_id"], data["agent_id"]) == (
            approval_id, "pending", run_id, "alice", "helper")
        assert (data["tool_name"], data["tool_args"], data["resolved_by"]) == ("refund", {"order": "A1"}, None)
        assert dt.datetime.fromisoformat(created["created_at"]) == dt.datetime.fromisoformat(data["created_at"])
        assert data["expires_at"] is not None  # the agent's default expiry

        [(headers, body)] = receiver.of("approval.resolved")
        event = verify_webhook(SECRET, headers, body)
        assert (event["id"], event["type"]) == (f"approval.resolved-{approval_id}", "approval.resolved")
        assert (event["data"]["id"], event["data"]["status"], event["data"]["resolved_by"]) == (
            approval_id, "approved", "ops")
        with pytest.raises(WebhookVerificationError):
            verify_webhook("whsec_" + base64.b64encode(b"not the server's").decode(), headers, body)

        # each delivery is a job in the db, seen through /jobs
        jobs = http.get("/jobs", params={"kind": "webhook.deliver"}).json()
        assert sorted(j["id"] for j in jobs["data"]) == [f"approval.created-{approval_id}",
                                                         f"approval.resolved-{approval_id}"]
        job = finished_job(http, f"approval.resolved-{approval_id}")
        assert (job["status"], job["attempts"], job["result"], job["error"]) == (
            "completed", 1, {"status_code": 204}, None)
        assert len(receiver.deliveries) == 2  # the sweeps after the first announced nothing again


def test_a_failed_delivery_is_retried_until_it_is_delivered(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})])])
    receiver = Receiver(statuses=(500,))
    with http_server(receiver.handler()) as httpd:
        http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db, webhook_url=url_of(httpd),
                             webhook_secret=SECRET, approvals_sweep_seconds=0.2).get_app())
        _, approval_id = _paused_run(http)
        wait_until(lambda: http.get(f"/jobs/approval.created-{approval_id}").status_code == 200)  # the sweep queued it
        job = finished_job(http, f"approval.created-{approval_id}", seconds=60)
        assert (job["status"], job["attempts"], job["result"]) == ("completed", 2, {"status_code": 204})
        first, second = receiver.of("approval.created")
        assert first[1] == second[1]  # the same event, the same id, signed again for each attempt
        assert first[0]["webhook-id"] == second[0]["webhook-id"] == f"approval.created-{approval_id}"
        assert [verify_webhook(SECRET, h, b)["data"]["id"] for h, b in (first, second)] == [approval_id] * 2


def test_a_refused_delivery_fails_at_once(scripted, db, serve):
    server = scripted([Reply(tool_calls=[("refund", {"order": "A1"})])])
    receiver = Receiver(statuses=(400, 400, 400))
    with http_server(receiver.handler()) as httpd:
        http = serve(AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db, webhook_url=url_of(httpd),
                             webhook_secret=SECRET, approvals_sweep_seconds=0.2).get_app())
        _, approval_id = _paused_run(http)
        wait_until(lambda: http.get(f"/jobs/approval.created-{approval_id}").status_code == 200)  # the sweep queued it
        job = finished_job(http, f"approval.created-{approval_id}", seconds=60)
        assert (job["status"], job["attempts"]) == ("failed", 1)
        assert "HTTP 400" in job["error"] and "not retried" in job["error"]
        failed = http.get("/jobs", params={"kind": "webhook.deliver", "status": "failed"}).json()["data"]
        assert [j["id"] for j in failed] == [f"approval.created-{approval_id}"]
        assert len(receiver.of("approval.created")) == 1


def test_notify_queues_a_delivery_that_another_replica_sends(db, serve):
    receiver = Receiver()
    with http_server(receiver.handler()) as httpd:
        settings = {"webhook_url": url_of(httpd), "webhook_secret": SECRET}
        queue_only = AgentOS(db=db, jobs=False, **settings)  # a replica without a worker
        http = serve(AgentOS(db=db, **settings).get_app())
        failed_at = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone.utc)
        job = asyncio.run(notify(queue_only, db, "schedule_run.failed",
                                 {"schedule_id": "nightly", "error": "boom", "failed_at": failed_at}))
        assert (job.kind, job.status, job.user_id) == ("webhook.deliver", "queued", None)
        assert finished_job(http, job.id)["status"] == "completed"
        [(headers, body)] = receiver.of("schedule_run.failed")
        event = verify_webhook(SECRET, headers, body)
        assert event["id"] == job.id and event["id"].startswith("evt_")
        assert event["data"] == {"schedule_id": "nightly", "error": "boom", "failed_at": "2026-03-01T09:30:00Z"}
        with pytest.raises(InvalidInputError):
            asyncio.run(notify(queue_only, db, "Schedule Failed", {}))
