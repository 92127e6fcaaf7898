"""A tenant resolver routes each request, its runs and their traces to the tenant's own db:
three SQLite files, and nothing of one tenant in another's."""

from __future__ import annotations

import time

import jwt

from agentkeep.agent import tracing
from agentkeep.db.sqlite import SqliteDb
from agentkeep.os import AgentOS, Forbidden, JWTAuth
from tests.agent.conftest import Reply, make_agent

SECRET = "a-shared-secret-of-at-least-32-bytes!"
TENANTS = ("acme", "globex", "initech")


def _token(user: str, tenant: str, scope: str = "") -> dict:
    claims = {"sub": user, "tenant": tenant, "exp": int(time.time()) + 600, "scope": scope}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def test_three_tenants_three_files(scripted, serve, tmp_path):
    dbs = {name: SqliteDb(db_file=str(tmp_path / f"{name}.db")) for name in TENANTS}

    def resolve(request):
        tenant = request.state.caller.claims.get("tenant")
        if tenant not in dbs:
            raise Forbidden(f"no tenant {tenant!r}")
        return dbs[tenant]

    server = scripted([Reply("hello")], cycle=True)
    agent = make_agent(server, None)
    http = serve(AgentOS(agents=[agent], tenant_db=resolve, jwt=JWTAuth(secret=SECRET)).get_app())
    for tenant in TENANTS:
        for user in ("ann", "bo"):  # the same user names in every tenant
            headers = _token(user, tenant)
            r = http.post("/agents/helper/runs", headers=headers, json={"message": "hi", "session_id": f"s-{user}"})
            assert r.status_code == 200, r.text
            assert http.post("/memories", headers=headers, json={"memory": f"{user} at {tenant}"}).status_code == 201
    tracing.flush()
    for tenant, db in dbs.items():
        # each file holds its tenant's records only: one session per user, its memories, its traces
        assert sorted(s.user_id for s in db.list_sessions(limit=100).items) == ["ann", "bo"]
        assert sorted(m.memory for m in db.list_memories(limit=100).items) == [f"ann at {tenant}", f"bo at {tenant}"]
        assert sorted(t.user_id for t in db.list_traces(limit=100).items) == ["ann", "bo"]
        # an admin of one tenant sees that tenant's users only
        admin = _token("ops", tenant, scope="admin")
        listed = http.get("/memories", headers=admin).json()["data"]
        assert sorted(m["memory"] for m in listed) == [f"ann at {tenant}", f"bo at {tenant}"]
    # "s-ann" is a session in each tenant's file: each tenant reads its own
    for tenant in TENANTS:
        runs = http.get("/sessions/s-ann/runs", headers=_token("ann", tenant)).json()
        assert [r["run_id"] for r in runs] == [r.run_id for r in dbs[tenant].list_runs("s-ann").items]
    assert http.get("/sessions", headers=_token("ann", "nowhere")).status_code == 403
    assert set(http.get("/config", headers=_token("ann", "acme")).json()["domains"].values()) == {"tenant"}
    assert agent.db is None  # the served agent itself keeps no db: each tenant's copy has its own
