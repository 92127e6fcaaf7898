"""Knowledge over HTTP: text, files and URLs added as durable jobs, their status, search kept
to the caller's and the shared contents, deletes, the address guard on URLs, size limits;
and a job queued by a replica without a worker done by another."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest

from agentkeep.knowledge import HashingEmbedder, Knowledge
from agentkeep.os import AgentOS, JWTAuth
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import Handler, finished_job, http_server

SECRET = "a-shared-secret-of-at-least-32-bytes!"
POLICY = "# Keys\n\nRotating API keys every 90 days is required for every team."


def bearer(user: str, scope: str = "") -> dict:
    # made when the module is collected: valid for as long as a whole test run may take
    claims = {"sub": user, "exp": int(time.time()) + 24 * 3600, "scope": scope}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


ALICE, BOB, ADMIN = bearer("alice"), bearer("bob"), bearer("ops", "admin")


def _os(scripted, db, **options: Any) -> AgentOS:
    kb = Knowledge(vector_db=InMemoryVectorDb("kb"), contents_db=db, embedder=HashingEmbedder(dimensions=64),
                   name="docs")
    return AgentOS(agents=[make_agent(scripted([Reply("hi")]), db)], db=db, knowledge=[kb],
                   jwt=JWTAuth(secret=SECRET), **options)


def _done(http, content_id: str, headers: dict, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        status = http.get(f"/knowledge/content/{content_id}/status", headers=headers).json()
        if status["status"] != "processing":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_add_search_and_delete_with_owners(scripted, db, serve):
    http = serve(_os(scripted, db).get_app())
    added = http.post("/knowledge/content", headers=ALICE, json={"text": POLICY, "name": "keys"})
    assert added.status_code == 202 and added.json()["status"] == "processing"
    mine = added.json()["id"]
    assert _done(http, mine, ALICE) == {"id": mine, "status": "completed", "status_message": None}
    job = finished_job(http, added.json()["job_id"], ALICE)
    assert (job["status"], job["kind"], job["result"]["chunks"]) == ("completed", "knowledge.add", 1)
    assert "payload" not in job
    shared = http.post("/knowledge/content", headers=ADMIN, json={"text": "Refunds take 5 business days.",
                                                                  "name": "refunds"}).json()["id"]
    assert _done(http, shared, ADMIN)["status"] == "completed"
    upload = http.post("/knowledge/content", headers=BOB, data={"metadata": '{"team": "ops"}'},
                       files={"file": ("bob.md", b"# Bob\n\nBob's private runbook for API keys.", "text/markdown")})
    assert upload.status_code == 202
    bobs = upload.json()["id"]
    assert _done(http, bobs, BOB)["status"] == "completed"

    def found(headers: dict, search_type: str) -> set:
        r = http.post("/knowledge/search", headers=headers,
                      json={"query": "rotate API keys", "search_type": search_type, "limit": 10})
        assert r.status_code == 200, r.text
        return {hit["content_id"] for hit in r.json()["data"]}

    for search_type in ("vector", "keyword", "hybrid"):
        assert bobs not in found(ALICE, search_type) and mine not in found(BOB, search_type)
    assert mine in found(ALICE, "vector") and bobs in found(BOB, "vector")
    assert {mine, shared, bobs} <= found(ADMIN, "vector")
    assert {c["id"] for c in http.get("/knowledge/content", headers=ALICE).json()["data"]} == {mine, shared}
    assert http.get(f"/knowledge/content/{bobs}", headers=ALICE).status_code == 404
    assert http.delete(f"/knowledge/content/{bobs}", headers=ALICE).status_code == 404
    assert http.delete(f"/knowledge/content/{shared}", headers=ALICE).status_code == 403
    assert http.delete(f"/knowledge/content/{mine}", headers=ALICE).status_code == 204
    assert mine not in found(ADMIN, "vector") and db.get_knowledge(mine) is None
    assert http.delete(f"/knowledge/content/{shared}", headers=ADMIN).status_code == 204


def test_uploads_and_text_over_the_limits(scripted, db, serve):
    http = serve(_os(scripted, db, max_upload_bytes=1000, max_body_bytes=100_000).get_app())
    big = base64.b64encode(b"x" * 1001).decode()
    r = http.post("/knowledge/content", headers=ALICE, json={"file": {"name": "a.txt", "content_base64": big}})
    assert r.status_code == 422 and "upload limit" in r.text
    assert http.post("/knowledge/content", headers=ALICE, files={"file": ("a.txt", b"y" * 1001)}).status_code == 422
    assert http.post("/knowledge/content", headers=ALICE, json={"text": "z" * 1001}).status_code == 422
    assert http.post("/knowledge/content", headers=ALICE, json={"text": "z" * 200_000}).status_code == 413
    for bad in ({}, {"text": "a", "url": "https://example.com"}, {"url": "ftp://example.com/x"},
                {"file": {"name": "a", "content_base64": "%%%"}}, {"text": "a", "knowledge_id": "nope"}):
        assert http.post("/knowledge/content", headers=ALICE, json=bad).status_code in (404, 422), bad
    assert db.list_knowledge().items == []  # nothing was written


class _Pages(Handler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.startswith("/redirect"):
            self.reply(302, Location=self.server.target)
        else:
            self.reply(200, POLICY.encode(), "text/markdown")


@pytest.fixture
def pages():
    """Pages on 127.0.0.1 and on 127.0.0.2 (both loopback: one is allowed in the tests)."""
    with http_server(_Pages, "127.0.0.1") as inside, http_server(_Pages, "127.0.0.2") as allowed:
        urls = [f"http://{s.server_address[0]}:{s.server_address[1]}" for s in (inside, allowed)]
        allowed.target = f"{urls[0]}/policy.md"  # the allowed host redirects to the refused one
        yield urls


def test_urls_on_the_servers_own_network_are_refused(scripted, db, serve, pages):
    inside, allowed = pages
    http = serve(_os(scripted, db, url_allow_networks=["127.0.0.2/32"]).get_app())
    for url in (f"{inside}/policy.md", "http://localhost:1/x", "http://[::1]:1/x", "http://169.254.169.254/latest"):
        r = http.post("/knowledge/content", headers=ALICE, json={"url": url})
        assert r.status_code == 422 and "does not fetch" in r.text, (url, r.text)
    ok = http.post("/knowledge/content", headers=ALICE, json={"url": f"{allowed}/policy.md"}).json()
    assert _done(http, ok["id"], ALICE)["status"] == "completed"
    assert db.get_knowledge(ok["id"]).type == "markdown"
    # a redirect to a refused address fails the content, with the reason
    hop = http.post("/knowledge/content", headers=ALICE, json={"url": f"{allowed}/redirect"}).json()
    failed = _done(http, hop["id"], ALICE)
    assert failed["status"] == "failed" and "127.0.0.1" in failed["status_message"]
    assert finished_job(http, hop["job_id"], ALICE)["status"] == "failed"


def test_a_job_queued_without_a_worker_is_done_by_another_replica(scripted, db, serve):
    queue_only = serve(_os(scripted, db, jobs=False).get_app())
    added = queue_only.post("/knowledge/content", headers=ALICE, json={"text": POLICY}).json()
    refresh = queue_only.post("/metrics/refresh", headers=ADMIN)
    assert refresh.status_code == 202 and refresh.json()["id"] == "metrics.refresh"
    time.sleep(0.5)
    assert queue_only.get(f"/jobs/{added['job_id']}", headers=ALICE).json()["status"] == "queued"
    worker = serve(_os(scripted, db).get_app())  # a second replica on the same db, with its worker
    assert _done(worker, added["id"], ALICE)["status"] == "completed"
    job = finished_job(worker, "metrics.refresh", ADMIN)
    assert job["status"] == "completed" and job["result"]["rows_written"] >= 0 and job["attempts"] == 1
    assert worker.get("/jobs/metrics.refresh", headers=ALICE).status_code == 404  # not hers
    assert worker.post("/metrics/refresh", headers=ALICE).status_code == 403
