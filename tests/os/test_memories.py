"""`/memories` and session creation and bulk deletion over HTTP."""

from __future__ import annotations

from agentkeep.os import AgentOS

from tests.agent.conftest import Reply, make_agent


def test_memories_crud_topics_and_stats(scripted, db, serve):
    http = serve(AgentOS(agents=[make_agent(scripted([Reply("x")]), db)], db=db).get_app())
    made = [http.post("/memories", json={"memory": f"fact {i}", "topics": ["work" if i % 2 else "home"],
                                         "user_id": "alice"}) for i in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    bob = http.post("/memories", json={"memory": "bob's", "user_id": "bob"}).json()
    listed = http.get("/memories", params={"user_id": "alice", "topics": ["home"]}).json()
    assert sorted(m["memory"] for m in listed["data"]) == ["fact 0", "fact 2"] and listed["meta"]["total_count"] == 2
    assert http.get("/memories", params={"user_id": "alice", "search_content": "ACT 1"}).json()["data"][0]["memory"] == "fact 1"
    first = made[0].json()["memory_id"]
    patched = http.patch(f"/memories/{first}", params={"user_id": "alice"}, json={"memory": "fact zero"}).json()
    assert patched["memory"] == "fact zero" and patched["topics"] == ["home"]
    assert http.get(f"/memories/{bob['memory_id']}", params={"user_id": "alice"}).status_code == 404
    assert http.patch(f"/memories/{bob['memory_id']}", params={"user_id": "alice"}, json={"memory": "x"}).status_code == 404
    assert http.get("/memory_topics", params={"user_id": "alice"}).json() == ["home", "work"]
    stats = {s["user_id"]: s["memories"] for s in http.get("/user_memory_stats").json()["data"]}
    assert stats == {"alice": 3, "bob": 1}
    assert http.delete(f"/memories/{first}", params={"user_id": "bob"}).status_code == 404
    assert http.delete(f"/memories/{first}", params={"user_id": "alice"}).status_code == 204
    ids = [r.json()["memory_id"] for r in made[1:]] + [bob["memory_id"]]
    assert http.request("DELETE", "/memories", json={"memory_ids": ids, "user_id": "alice"}).json() == {"deleted": 2}
    assert db.get_memory(bob["memory_id"]).memory == "bob's"
    assert http.post("/memories", json={"topics": ["x"]}).status_code == 422


def test_sessions_create_and_delete_many(scripted, db, serve):
    http = serve(AgentOS(agents=[make_agent(scripted([Reply("x")]), db)], db=db).get_app())
    made = http.post("/sessions", json={"session_id": "s1", "session_name": "Plans", "user_id": "alice",
                                        "agent_id": "helper", "session_state": {"k": 1}})
    assert made.status_code == 201 and made.json()["state"] == {"k": 1}
    assert http.post("/sessions", json={"session_id": "s1", "user_id": "alice"}).status_code == 409
    assert http.post("/sessions", json={"session_id": "s1", "user_id": "bob"}).status_code == 404
    http.post("/sessions", json={"session_id": "s2", "user_id": "alice"})
    http.post("/sessions", json={"session_id": "b1", "user_id": "bob"})
    gone = http.request("DELETE", "/sessions", json={"session_ids": ["s1", "s2", "b1"], "user_id": "alice"})
    assert gone.json() == {"deleted": 2}
    assert [s.session_id for s in db.list_sessions().items] == ["b1"]
