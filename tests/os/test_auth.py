"""Identity and isolation over real HTTP: the security key, JWTs (HS256, and RS256 from a
JWKS served over HTTP), and the route x user matrix: every route of the app, called by a
user on another user's records, by that user, by an admin and by no one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentkeep.agent import tool, tracing
from agentkeep.db.models import EvalRun, ScheduleRun
from agentkeep.knowledge import HashingEmbedder, Knowledge
from agentkeep.os import AgentOS
from agentkeep.os.auth import JWTAuth
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import Handler, Served, finished_job, http_server

SECRET = "a-shared-secret-of-at-least-32-bytes!"
KEY = "the-operators-security-key"


@tool(requires_approval=True)
def refund(amount: int) -> str:
    """Refund an amount."""
    return f"refunded {amount}"


def token(sub: Optional[str], *, scope: str = "", secret: str = SECRET, expires_in: float = 600, **claims: Any) -> str:
    body = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        body["sub"] = sub
    if scope:
        body["scope"] = scope
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


@dataclass
class World:
    """Alice's and Bob's records, made through the API."""

    http: httpx.Client
    db: Any
    ids: dict = field(default_factory=dict)

    def as_(self, who: Optional[str]) -> dict:
        return {"alice": bearer(token("alice")), "bob": bearer(token("bob")), "admin": bearer(token("ops", scope="admin")),
                "key": bearer(KEY), None: {}}[who]


def _otlp(trace_id: bytes, span_id: bytes, attributes: dict) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, span_id, "outside"
    span.start_time_unix_nano = time.time_ns() - 1_000_000
    span.end_time_unix_nano = time.time_ns()
    span.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items())
    return request.SerializeToString()


def build(scripted: Callable, db: Any, serve: Callable) -> World:
    server = scripted([Reply("hi"), Reply(tool_calls=[("refund", {"amount": 5})])], cycle=True)
    kb = Knowledge(vector_db=InMemoryVectorDb("kb"), contents_db=db, embedder=HashingEmbedder(dimensions=64))
    agent_os = AgentOS(agents=[make_agent(server, db, tools=[refund])], db=db, security_key=KEY,
                       jwt=JWTAuth(secret=SECRET), knowledge=[kb])
    world = World(serve(agent_os.get_app()), db)
    for user in ("alice", "bob"):
        headers, ids = world.as_(user), world.ids.setdefault(user, {})
        run = world.http.post("/agents/helper/runs", headers=headers, json={"message": "hello", "session_id": f"s-{user}"})
        assert run.status_code == 200 and run.json()["user_id"] == user, run.text
        ids["session"], ids["run"] = f"s-{user}", run.json()["run_id"]
        paused = world.http.post("/agents/helper/runs", headers=headers,
                                 json={"message": "refund", "session_id": f"p-{user}"}).json()
        assert paused["status"] == "paused"
        ids["paused"] = paused["run_id"]
        [approval] = world.http.get("/approvals", headers=headers).json()["data"]
        ids["approval"] = approval["id"]
        memory = world.http.post("/memories", headers=headers, json={"memory": f"{user} likes tea", "topics": ["tea"]})
        assert memory.status_code == 201 and memory.json()["user_id"] == user
        ids["memory"] = memory.json()["memory_id"]
        schedule = world.http.post("/schedules", headers=headers, json={
            "name": "daily", "cron": "0 9 * * *", "target": {"type": "agent", "id": "helper", "payload": {"message": "hi"}}})
        assert schedule.status_code == 201 and schedule.json()["user_id"] == user
        ids["schedule"] = schedule.json()["id"]
        ids["schedule_run"] = db.record_schedule_run(ScheduleRun(schedule_id=ids["schedule"], status="success")).id
        ids["eval"] = db.save_eval_run(EvalRun(name="e", eval_type="accuracy", user_id=user, score=1.0)).id
        added = world.http.post("/knowledge/content", headers=headers, json={"text": f"{user}'s notes on keys"})
        assert added.status_code == 202
        ids["content"], ids["job"] = added.json()["id"], added.json()["job_id"]
    for user in ("alice", "bob"):
        assert finished_job(world.http, world.ids[user]["job"], world.as_(user))["status"] == "completed"
    tracing.flush()
    for user in ("alice", "bob"):
        [trace] = [t for t in world.http.get("/traces", headers=world.as_(user)).json()["data"]
                   if t["run_id"] == world.ids[user]["run"]]
        world.ids[user]["trace"] = trace["trace_id"]
    return world


@dataclass
class Route:
    """How to call one route on Bob's records, and what Alice (another user) must get."""

    method: str
    path: str  # the route's template
    call: Callable[[World], tuple]  # -> (url, options)
    alice: int  # Alice on Bob's record (404), for another user (403), or a route she may not use (403)
    unchanged: Optional[Callable[[World], bool]] = None  # Bob's record is as it was after Alice's call


def _bob(world: World, name: str) -> str:
    return world.ids["bob"][name]


ROUTES = [
    # server and agents: any authenticated caller
    Route("GET", "/info", lambda w: ("/info", {}), 200),
    Route("GET", "/config", lambda w: ("/config", {}), 200),
    Route("GET", "/agents", lambda w: ("/agents", {}), 200),
    Route("GET", "/agents/{agent_id}", lambda w: ("/agents/helper", {}), 200),
    Route("POST", "/agents/{agent_id}/runs", lambda w: (
        "/agents/helper/runs", {"json": {"message": "x", "session_id": "s-bob"}}), 404,
        lambda w: len(w.db.get_session("s-bob", runs=-1).runs) == 1),  # Bob's session: as missing
    Route("POST", "/agents/{agent_id}/runs/{run_id}/continue", lambda w: (
        f"/agents/helper/runs/{_bob(w, 'paused')}/continue",
        {"json": {"tools": [{"tool_call_id": "x", "confirmed": True}]}}), 404,
        lambda w: w.db.get_run(_bob(w, "paused")).status == "paused"),
    Route("POST", "/agents/{agent_id}/runs/{run_id}/cancel", lambda w: (
        f"/agents/helper/runs/{_bob(w, 'paused')}/cancel", {}), 404,
        lambda w: w.db.get_run(_bob(w, "paused")).status == "paused"),
    # sessions
    Route("GET", "/sessions", lambda w: ("/sessions", {"params": {"user_id": "bob"}}), 403),
    Route("POST", "/sessions", lambda w: ("/sessions", {"json": {"session_id": "new", "user_id": "bob"}}), 403,
          lambda w: w.db.get_session("new") is None),
    Route("DELETE", "/sessions", lambda w: ("/sessions", {"json": {"session_ids": ["s-bob"], "user_id": "bob"}}), 403,
          lambda w: w.db.get_session("s-bob") is not None),
    Route("GET", "/sessions/{session_id}", lambda w: ("/sessions/s-bob", {}), 404),
    Route("DELETE", "/sessions/{session_id}", lambda w: ("/sessions/s-bob", {}), 404,
          lambda w: w.db.get_session("s-bob") is not None),
    Route("GET", "/sessions/{session_id}/runs", lambda w: ("/sessions/s-bob/runs", {}), 404),
    Route("GET", "/sessions/{session_id}/runs/{run_id}", lambda w: (f"/sessions/s-bob/runs/{_bob(w, 'run')}", {}), 404),
    Route("POST", "/sessions/{session_id}/rename", lambda w: ("/sessions/s-bob/rename", {"json": {"session_name": "x"}}),
          404, lambda w: w.db.get_session("s-bob").name != "x"),
    # memories
    Route("GET", "/memories", lambda w: ("/memories", {"params": {"user_id": "bob"}}), 403),
    Route("POST", "/memories", lambda w: ("/memories", {"json": {"memory": "x", "user_id": "bob"}}), 403,
          lambda w: w.db.list_memories(user_id="bob").items.__len__() == 1),
    Route("DELETE", "/memories", lambda w: ("/memories", {"json": {"memory_ids": [_bob(w, "memory")], "user_id": "bob"}}),
          403, lambda w: w.db.get_memory(_bob(w, "memory")) is not None),
    Route("GET", "/memories/{memory_id}", lambda w: (f"/memories/{_bob(w, 'memory')}", {}), 404),
    Route("PATCH", "/memories/{memory_id}", lambda w: (f"/memories/{_bob(w, 'memory')}", {"json": {"memory": "x"}}), 404,
          lambda w: w.db.get_memory(_bob(w, "memory")).memory == "bob likes tea"),
    Route("DELETE", "/memories/{memory_id}", lambda w: (f"/memories/{_bob(w, 'memory')}", {}), 404,
          lambda w: w.db.get_memory(_bob(w, "memory")) is not None),
    Route("GET", "/memory_topics", lambda w: ("/memory_topics", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/user_memory_stats", lambda w: ("/user_memory_stats", {"params": {"user_id": "bob"}}), 403),
    # traces
    Route("GET", "/traces", lambda w: ("/traces", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/traces/{trace_id}", lambda w: (f"/traces/{_bob(w, 'trace')}", {}), 404),
    Route("GET", "/trace_session_stats", lambda w: ("/trace_session_stats", {"params": {"user_id": "bob"}}), 403),
    # approvals
    Route("GET", "/approvals", lambda w: ("/approvals", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/approvals/count", lambda w: ("/approvals/count", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/approvals/{approval_id}", lambda w: (f"/approvals/{_bob(w, 'approval')}", {}), 404),
    Route("GET", "/approvals/{approval_id}/status", lambda w: (f"/approvals/{_bob(w, 'approval')}/status", {}), 404),
    Route("POST", "/approvals/{approval_id}/resolve", lambda w: (
        f"/approvals/{_bob(w, 'approval')}/resolve", {"json": {"status": "approved"}}), 404,
        lambda w: w.db.get_approval(_bob(w, "approval")).status == "pending"),
    Route("DELETE", "/approvals/{approval_id}", lambda w: (f"/approvals/{_bob(w, 'approval')}", {}), 404,
          lambda w: w.db.get_approval(_bob(w, "approval")) is not None),
    # schedules
    Route("POST", "/schedules", lambda w: ("/schedules", {"json": {
        "cron": "0 9 * * *", "target": {"type": "agent", "id": "helper"}, "user_id": "bob"}}), 403,
        lambda w: len(w.db.list_schedules(user_id="bob").items) == 1),
    Route("GET", "/schedules", lambda w: ("/schedules", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/schedules/{schedule_id}", lambda w: (f"/schedules/{_bob(w, 'schedule')}", {}), 404),
    Route("PATCH", "/schedules/{schedule_id}", lambda w: (f"/schedules/{_bob(w, 'schedule')}", {"json": {"name": "x"}}),
          404, lambda w: w.db.get_schedule(_bob(w, "schedule")).name == "daily"),
    Route("DELETE", "/schedules/{schedule_id}", lambda w: (f"/schedules/{_bob(w, 'schedule')}", {}), 404,
          lambda w: w.db.get_schedule(_bob(w, "schedule")) is not None),
    Route("POST", "/schedules/{schedule_id}/enable", lambda w: (f"/schedules/{_bob(w, 'schedule')}/enable", {}), 404),
    Route("POST", "/schedules/{schedule_id}/disable", lambda w: (f"/schedules/{_bob(w, 'schedule')}/disable", {}), 404,
          lambda w: w.db.get_schedule(_bob(w, "schedule")).enabled),
    Route("GET", "/schedules/{schedule_id}/runs", lambda w: (f"/schedules/{_bob(w, 'schedule')}/runs", {}), 404),
    Route("GET", "/schedules/{schedule_id}/runs/{schedule_run_id}", lambda w: (
        f"/schedules/{_bob(w, 'schedule')}/runs/{_bob(w, 'schedule_run')}", {}), 404),
    Route("POST", "/schedules/{schedule_id}/trigger", lambda w: (f"/schedules/{_bob(w, 'schedule')}/trigger", {}), 404,
          lambda w: w.db.list_jobs(kind="schedule.fire").items == []),
    # metrics and evals
    Route("GET", "/metrics", lambda w: ("/metrics", {"params": {"user_id": "bob"}}), 403),
    Route("POST", "/metrics/refresh", lambda w: ("/metrics/refresh", {}), 403),
    Route("GET", "/eval-runs", lambda w: ("/eval-runs", {"params": {"user_id": "bob"}}), 403),
    Route("DELETE", "/eval-runs", lambda w: ("/eval-runs", {"json": {"eval_run_ids": [_bob(w, "eval")]}}), 200,
          lambda w: w.db.get_eval_run(_bob(w, "eval")) is not None),  # {"deleted": 0}: not Alice's
    Route("GET", "/eval-runs/{eval_run_id}", lambda w: (f"/eval-runs/{_bob(w, 'eval')}", {}), 404),
    Route("PATCH", "/eval-runs/{eval_run_id}", lambda w: (f"/eval-runs/{_bob(w, 'eval')}", {"json": {"name": "x"}}), 404,
          lambda w: w.db.get_eval_run(_bob(w, "eval")).name == "e"),
    Route("POST", "/eval-runs", lambda w: ("/eval-runs", {"json": {"agent_id": "helper", "eval_type": "accuracy",
          "input": "x", "expected_output": "y", "user_id": "bob"}}), 403,
          lambda w: len(w.db.list_eval_runs(user_id="bob").items) == 1),
    # knowledge and jobs
    Route("POST", "/knowledge/content", lambda w: ("/knowledge/content", {"json": {"text": "x", "user_id": "bob"}}),
          403),
    Route("GET", "/knowledge/content", lambda w: ("/knowledge/content", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/knowledge/content/{content_id}", lambda w: (f"/knowledge/content/{_bob(w, 'content')}", {}), 404),
    Route("GET", "/knowledge/content/{content_id}/status", lambda w: (
        f"/knowledge/content/{_bob(w, 'content')}/status", {}), 404),
    Route("DELETE", "/knowledge/content/{content_id}", lambda w: (f"/knowledge/content/{_bob(w, 'content')}", {}),
          404, lambda w: w.db.get_knowledge(_bob(w, "content")) is not None),
    Route("POST", "/knowledge/search", lambda w: ("/knowledge/search", {"json": {"query": "keys", "user_id": "bob"}}),
          403),
    Route("GET", "/jobs", lambda w: ("/jobs", {"params": {"user_id": "bob"}}), 403),
    Route("GET", "/jobs/{job_id}", lambda w: (f"/jobs/{_bob(w, 'job')}", {}), 404),
    Route("POST", "/jobs/{job_id}/cancel", lambda w: (f"/jobs/{_bob(w, 'job')}/cancel", {}), 404,
          lambda w: w.db.get_job(_bob(w, "job")).status == "completed"),
    # OTLP ingest: a user's spans are theirs (tested on its own below)
    Route("POST", "/v1/traces", lambda w: ("/v1/traces", {
        "content": _otlp(bytes(16), bytes(8), {}), "headers": {"Content-Type": "application/x-protobuf"}}), 200),
]
PUBLIC = {(method, path) for method in ("GET", "HEAD")  # the health check and the API's documentation
          for path in ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")}


def _app_routes(app: Any) -> set[tuple[str, str]]:
    return {(method, route.path) for route in app.routes for method in getattr(route, "methods", ()) or ()}


def test_the_matrix_covers_every_route(scripted, db):
    agent_os = AgentOS(agents=[make_agent(scripted([Reply("hi")]), db)], db=db, security_key=KEY)
    listed = {(r.method, r.path) for r in ROUTES}
    assert len(listed) == len(ROUTES)
    missing = _app_routes(agent_os.get_app()) - listed - PUBLIC
    assert not missing, f"routes without a row in the isolation matrix: {sorted(missing)}"


def test_route_by_user_matrix(scripted, db, serve):
    world = build(scripted, db, serve)
    http = world.http
    calls = 0
    for route in ROUTES:
        url, options = route.call(world)
        headers = {**options.pop("headers", {})}
        # no credential, or one the server does not know: 401, nothing changes
        for credential in ({}, bearer("not-the-key-at-all"), bearer(token("alice", secret="another-secret-of-32-bytes-or-more"))):
            r = http.request(route.method, url, headers={**headers, **credential}, **options)
            assert r.status_code == 401, (route.path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            calls += 1
        # Alice on Bob's records: as missing, or forbidden; Bob's records unchanged
        r = http.request(route.method, url, headers={**headers, **world.as_("alice")}, **options)
        assert r.status_code == route.alice, (route.method, route.path, r.status_code, r.text)
        calls += 1
        if route.unchanged is not None:
            assert route.unchanged(world), (route.method, route.path, "changed Bob's record")
    # the same reads as Bob and as an admin succeed: the 404s above are isolation, not absence
    for route in ROUTES:
        if route.method != "GET":
            continue
        url, options = route.call(world)
        for who in ("bob", "admin", "key"):
            r = http.get(url, headers=world.as_(who), **options)
            assert r.status_code == 200, (who, route.path, r.status_code, r.text)
            calls += 1
    print(f"\nroute x user matrix: {len(ROUTES)} routes, {calls} calls")


def test_lists_without_a_user_are_the_callers_own(scripted, db, serve):
    world = build(scripted, db, serve)
    http, alice = world.http, world.as_("alice")
    for path, key in (("/sessions", "user_id"), ("/memories", "user_id"), ("/traces", "user_id"),
                      ("/approvals", "user_id"), ("/schedules", "user_id"), ("/eval-runs", "user_id"),
                      ("/knowledge/content", "user_id"), ("/jobs", "user_id")):
        rows = http.get(path, headers=alice).json()["data"]
        assert rows and {row[key] for row in rows} == {"alice"}, path
    assert [s["user_id"] for s in http.get("/user_memory_stats", headers=alice).json()["data"]] == ["alice"]
    assert http.get("/approvals/count", headers=alice).json() == {"count": 1}
    # an admin sees everyone, or names one user
    admin = world.as_("admin")
    assert {s["user_id"] for s in http.get("/sessions", headers=admin).json()["data"]} == {"alice", "bob"}
    assert {s["user_id"] for s in http.get("/sessions", headers=admin, params={"user_id": "bob"}).json()["data"]} == {"bob"}
    # a bulk delete of Bob's ids by Alice deletes nothing
    r = http.request("DELETE", "/sessions", headers=alice, json={"session_ids": ["s-bob", "p-bob"]})
    assert r.json() == {"deleted": 0} and world.db.get_session("s-bob") is not None
    # the resolver of an approval is the caller, whatever the body says
    resolved = http.post(f"/approvals/{world.ids['alice']['approval']}/resolve", headers=alice,
                         json={"status": "rejected", "resolved_by": "bob"})
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "alice"
    # a run for another user is refused; without a user it is the caller's
    r = http.post("/agents/helper/runs", headers=alice, json={"message": "x", "user_id": "bob"})
    assert r.status_code == 403


def test_otlp_spans_belong_to_the_caller(scripted, db, serve):
    world = build(scripted, db, serve)
    http, alice = world.http, world.as_("alice")
    protobuf = {"Content-Type": "application/x-protobuf"}
    # spans that claim to be Bob's are Alice's
    claimed = _otlp(b"\x01" * 16, b"\x02" * 8, {"enduser.id": "bob", "user_id": "bob"})
    assert http.post("/v1/traces", headers={**protobuf, **alice}, content=claimed).status_code == 200
    trace = world.db.get_trace("01" * 16)
    assert trace.user_id == "alice"
    assert "01" * 16 not in {t["trace_id"] for t in http.get("/traces", headers=world.as_("bob")).json()["data"]}
    # spans that would join Bob's trace are refused, and counted as rejected
    bobs = bytes.fromhex(world.ids["bob"]["trace"])
    before = world.db.get_trace(world.ids["bob"]["trace"]).span_count
    r = http.post("/v1/traces", headers={**protobuf, **alice, "Accept": "application/json"},
                  content=_otlp(bobs, b"\x03" * 8, {}))
    assert r.status_code == 200
    assert world.db.get_trace(world.ids["bob"]["trace"]).span_count == before
    # an admin's spans keep the user their attributes name
    admin_spans = _otlp(b"\x04" * 16, b"\x05" * 8, {"enduser.id": "bob"})
    assert http.post("/v1/traces", headers={**protobuf, **world.as_("key")}, content=admin_spans).status_code == 200
    assert world.db.get_trace("04" * 16).user_id == "bob"


def test_tokens_that_are_refused(scripted, db, serve):
    agent_os = AgentOS(agents=[make_agent(scripted([Reply("hi")]), db)], db=db, jwt=JWTAuth(secret=SECRET, audience="api"))
    http = serve(agent_os.get_app())
    ok = token("alice", aud="api")
    assert http.get("/sessions", headers=bearer(ok)).status_code == 200
    refused = {
        "expired": token("alice", aud="api", expires_in=-120),
        "another audience": token("alice", aud="other"),
        "no audience": token("alice"),
        "no subject": token(None, aud="api"),
        "no expiry": jwt.encode({"sub": "alice", "aud": "api"}, SECRET, algorithm="HS256"),
        "unsigned": jwt.encode({"sub": "alice", "aud": "api", "exp": int(time.time()) + 60}, None, algorithm="none"),
        "a security key on a server without one": KEY,
    }
    for why, credential in refused.items():
        r = http.get("/sessions", headers=bearer(credential))
        assert r.status_code == 401, (why, r.status_code, r.text)
    assert http.get("/health").status_code == 200  # for load balancers, without a credential
    assert http.get("/info", headers=bearer(ok)).json()["auth"] == "jwt"


class _Keys(Handler):
    jwks: dict = {}
    fetched = 0

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).fetched += 1
        self.reply(200, json.dumps(self.jwks).encode(), "application/json")


@pytest.fixture
def jwks_server():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    _Keys.jwks = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    _Keys.fetched = 0
    with http_server(_Keys) as httpd:
        yield private, f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"


def test_rs256_tokens_from_a_jwks(scripted, db, serve, jwks_server):
    private, url = jwks_server
    agent_os = AgentOS(agents=[make_agent(scripted([Reply("hi")], cycle=True), db)], db=db,
                       jwt=JWTAuth(jwks_url=url, issuer="https://id.example"))
    http = serve(agent_os.get_app())
    claims = {"sub": "carol", "iss": "https://id.example", "exp": int(time.time()) + 600}
    good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    r = http.post("/agents/helper/runs", headers=bearer(good), json={"message": "hi"})
    assert r.status_code == 200 and r.json()["user_id"] == "carol"
    for _ in range(3):
        assert http.get("/sessions", headers=bearer(good)).status_code == 200
    assert _Keys.fetched == 1  # the keys are cached
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "unknown key id": jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k2"}),
        "signed by another key": jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"}),
        "HS256 with the public key as secret": _hs256_by_hand(claims, json.dumps(_Keys.jwks["keys"][0]).encode()),
        "another issuer": jwt.encode({**claims, "iss": "https://evil.example"}, private, algorithm="RS256",
                                     headers={"kid": "k1"}),
    }
    for why, credential in refused.items():
        assert http.get("/sessions", headers=bearer(credential)).status_code == 401, why


def _hs256_by_hand(claims: dict, secret: bytes) -> str:
    """A token signed with HMAC over a public key (PyJWT refuses to make one)."""
    def part(value: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signed = part({"alg": "HS256", "typ": "JWT", "kid": "k1"}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).rstrip(b"=")
    return (signed + b"." + signature).decode()


def _outward_address() -> Optional[str]:
    """An address of this machine that is not loopback (a route to the outside picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_without_auth_only_loopback_clients_are_answered(scripted, db):
    address = _outward_address()
    assert address, "this machine has no non-loopback address to test from"
    agent_os = AgentOS(agents=[make_agent(scripted([Reply("hi")]), db)], db=db)
    served = Served(agent_os.get_app(), host="0.0.0.0").start()
    try:
        assert httpx.get(f"http://127.0.0.1:{served.port}/sessions").status_code == 200
        r = httpx.get(f"http://{address}:{served.port}/sessions")
        assert r.status_code == 403 and "no authentication" in r.json()["detail"]
        assert httpx.get(f"http://{address}:{served.port}/health").status_code == 200
    finally:
        served.stop()


def test_auth_settings_refused(monkeypatch):
    from agentkeep.db.errors import InvalidInputError

    for bad in (dict(secret="short"), dict(secret=SECRET, public_key="k"), dict(),
                dict(secret=SECRET, algorithms=["RS256"]), dict(jwks_url="http://x", algorithms=["HS256"])):
        with pytest.raises(InvalidInputError):
            JWTAuth(**bad)
    with pytest.raises(InvalidInputError):
        AgentOS(db=object(), security_key="short")
    monkeypatch.setenv("AGENTKEEP_SECURITY_KEY", KEY)
    from agentkeep.db.in_memory import InMemoryDb

    assert AgentOS(db=InMemoryDb()).auth.mode == "security_key"

