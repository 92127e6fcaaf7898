"""Schedules, metrics and eval runs over HTTP: the records, in the same style as the rest."""

from __future__ import annotations

import time

from agentkeep.db.models import EvalRun, ScheduleRun
from agentkeep.os import AgentOS
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import finished_job

TARGET = {"type": "agent", "id": "helper", "payload": {"message": "daily summary"}}


def test_schedules_crud_enable_disable_and_runs(db, serve):
    http = serve(AgentOS(agents=[], db=db).get_app())
    made = http.post("/schedules", json={"name": "daily", "cron": "0 9 * * *", "timezone": "Europe/Paris",
                                         "target": TARGET, "user_id": "alice"})
    assert made.status_code == 201, made.text
    schedule = made.json()
    assert schedule["next_run_at"] is not None and schedule["revision"] == 1
    assert http.post("/schedules", json={"cron": "not a cron", "target": TARGET}).status_code == 422
    listed = http.get("/schedules", params={"user_id": "alice"}).json()
    assert [s["id"] for s in listed["data"]] == [schedule["id"]] and listed["meta"]["total_count"] == 1
    assert http.get(f"/schedules/{schedule['id']}", params={"user_id": "bob"}).status_code == 404

    off = http.post(f"/schedules/{schedule['id']}/disable", params={"user_id": "alice"}).json()
    assert off["enabled"] is False and off["next_run_at"] is None
    on = http.post(f"/schedules/{schedule['id']}/enable", params={"user_id": "alice"}).json()
    assert on["enabled"] is True and on["next_run_at"] is not None
    changed = http.patch(f"/schedules/{schedule['id']}", params={"user_id": "alice"},
                         json={"cron": "30 8 * * 1-5", "name": "weekdays"}).json()
    assert (changed["cron"], changed["name"], changed["revision"]) == ("30 8 * * 1-5", "weekdays", 4)
    stale = http.patch(f"/schedules/{schedule['id']}", params={"user_id": "alice"},
                       json={"name": "late", "expected_revision": 1})
    assert stale.status_code == 409 and http.get(f"/schedules/{schedule['id']}").json()["name"] == "weekdays"

    for attempt in (1, 2):
        db.record_schedule_run(ScheduleRun(schedule_id=schedule["id"], attempt=attempt, status="success"))
    runs = http.get(f"/schedules/{schedule['id']}/runs", params={"user_id": "alice", "limit": 1}).json()
    assert len(runs["data"]) == 1 and runs["meta"]["total_count"] == 2 and runs["meta"]["next_cursor"]
    assert http.get(f"/schedules/{schedule['id']}/runs", params={"user_id": "bob"}).status_code == 404
    assert http.delete(f"/schedules/{schedule['id']}", params={"user_id": "bob"}).status_code == 404
    assert http.delete(f"/schedules/{schedule['id']}", params={"user_id": "alice"}).status_code == 204
    assert db.list_schedule_runs(schedule["id"]).items == []


def test_metrics_roll_up_runs_and_eval_runs(scripted, db, serve):
    http = serve(AgentOS(agents=[make_agent(scripted([Reply("one"), Reply("two")]), db)], db=db).get_app())
    for i, user in enumerate(("alice", "bob")):
        http.post("/agents/helper/runs", json={"message": f"q{i}", "user_id": user, "session_id": f"s{i}"})
    refresh = http.post("/metrics/refresh")
    assert refresh.status_code == 202 and refresh.json()["kind"] == "metrics.refresh"
    job = finished_job(http, refresh.json()["id"])
    assert job["status"] == "completed" and job["result"]["rows_written"] >= 1
    [day] = http.get("/metrics").json()
    assert (day["agent_runs"], day["sessions"], day["users"]) == (2, 2, 2)
    assert day["input_tokens"] == 24 and day["by_model"]
    [alice] = http.get("/metrics", params={"user_id": "alice", "starting_date": day["date"]}).json()
    assert alice["agent_runs"] == 1
    assert http.get("/metrics", params={"starting_date": "2001-01-01", "ending_date": "2001-01-31"}).json() == []

    saved = db.save_eval_run(EvalRun(eval_type="accuracy", agent_id="helper", score=0.8, user_id="alice"))
    listed = http.get("/eval-runs", params={"eval_type": "accuracy"}).json()
    assert [e["id"] for e in listed["data"]] == [saved.id] and listed["data"][0]["score"] == 0.8
    renamed = http.patch(f"/eval-runs/{saved.id}", json={"name": "baseline"}).json()
    assert renamed["name"] == "baseline" and http.get(f"/eval-runs/{saved.id}").json()["name"] == "baseline"
    assert http.get(f"/eval-runs/{saved.id}", params={"user_id": "bob"}).status_code == 404
    assert http.request("DELETE", "/eval-runs", json={"eval_run_ids": [saved.id]}).json() == {"deleted": 1}
    assert http.get(f"/eval-runs/{saved.id}").status_code == 404


def test_metrics_roll_up_while_the_server_runs(scripted, db, serve):
    agent_os = AgentOS(agents=[make_agent(scripted([Reply("one")], cycle=True), db)], db=db, metrics_seconds=0.2)
    http = serve(agent_os.get_app())
    for user in ("alice", "bob", "alice"):
        http.post("/agents/helper/runs", json={"message": "hi", "user_id": user, "session_id": f"s-{user}"})
    runs = [r for s in db.list_sessions(limit=10).items for r in db.list_runs(s.session_id).items]
    deadline = time.monotonic() + 30
    while not (days := http.get("/metrics").json()) or days[0]["agent_runs"] < len(runs):  # no refresh asked for
        assert time.monotonic() < deadline, days
        time.sleep(0.1)
    assert (days[0]["agent_runs"], days[0]["sessions"], days[0]["users"]) == (3, 2, 2) == (
        len(runs), len({r.session_id for r in runs}), len({r.user_id for r in runs}))
