"""The scheduler over real HTTP on SQLite and PostgreSQL: ticks fire as agent runs keyed by
their tick, `trigger` answers 202 at once, misfire policies, retries with backoff, a run
paused for an approval, a run cancelled by a shutdown and taken over by the next server, and
an HTTP target called as the schedule's owner."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from agentkeep.agent import tool
from agentkeep.db.models import Schedule, ScheduleTarget
from agentkeep.os import AgentOS
from agentkeep.os.scheduler import tick_key, tick_name
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import Served, finished_job, http_server, schedule_runs, wait_until
from tests.os.test_webhooks import SECRET, Receiver, url_of, verify_webhook

UTC = dt.timezone.utc
YEARLY = "0 0 1 1 *"  # never due while a test runs: only triggers fire it
KEY = "k" * 32


def agent_target(message: str = "daily summary", **payload: Any) -> dict:
    return {"type": "agent", "id": "helper", "payload": {"message": message, **payload}}


def test_each_tick_fires_once_as_an_agent_run_keyed_by_its_tick(scripted, db, serve):
    agent = make_agent(scripted([Reply("done")], cycle=True), db)
    http = serve(AgentOS(agents=[agent], db=db, schedule_poll_seconds=0.2).get_app())
    made = http.post("/schedules", json={"cron": "*/2 * * * * *", "target": agent_target(), "user_id": "alice"})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    wait_until(lambda: sum(r.status == "success" for r in schedule_runs(db, sid)) >= 3, what="three ticks")
    http.post(f"/schedules/{sid}/disable")
    # a tick queued just before may still be running: wait for it to end
    wait_until(lambda: all(r.status != "running" for r in schedule_runs(db, sid)), what="the last tick")
    done = sorted((r for r in schedule_runs(db, sid) if r.status == "success"), key=lambda r: r.tick_at)
    ticks = [r.tick_at for r in done]
    assert len(set(ticks)) == len(ticks) and all(t.second % 2 == 0 and t.microsecond == 0 for t in ticks)
    assert all(b - a == dt.timedelta(seconds=2) for a, b in zip(ticks, ticks[1:])), ticks  # none missed
    for r in done:
        key = tick_key(sid, tick_name(r.tick_at))
        assert (r.id, r.run_id, r.attempt, r.trigger) == (f"{key}:1", f"schedule-{key}", 1, "schedule")
        run = db.get_run(r.run_id)
        assert (run.status, run.user_id, run.content, run.input) == ("completed", "alice", "done", "daily summary")
        assert r.output == "done" and r.finished_at >= r.started_at
    assert all(r.status == "success" for r in schedule_runs(db, sid))


def test_trigger_answers_at_once_and_the_run_follows(scripted, db, serve):
    agent = make_agent(scripted([Reply("slow answer", delay=2)]), db)
    http = serve(AgentOS(agents=[agent], db=db).get_app())
    sid = http.post("/schedules", json={"cron": YEARLY, "target": agent_target(), "user_id": "alice"}).json()["id"]
    started = time.monotonic()
    fired = http.post(f"/schedules/{sid}/trigger", params={"user_id": "alice"})
    assert fired.status_code == 202 and time.monotonic() - started < 2, fired.text  # not waiting for the model
    body = fired.json()
    assert body["status"] in ("queued", "running") and body["schedule_run_id"].endswith(":1")
    assert http.post(f"/schedules/{sid}/trigger", params={"user_id": "bob"}).status_code == 404
    job = finished_job(http, body["job_id"])
    assert job["status"] == "completed", job
    run = http.get(f"/schedules/{sid}/runs/{body['schedule_run_id']}", params={"user_id": "alice"}).json()
    assert (run["status"], run["trigger"], run["output"]) == ("success", "manual", "slow answer")
    assert db.get_run(run["run_id"]).user_id == "alice"
    assert http.get(f"/schedules/{sid}/runs/{body['schedule_run_id']}", params={"user_id": "bob"}).status_code == 404


def test_misfire_policies(db, serve):
    now = dt.datetime.now(UTC)
    if now.second >= 55:  # keep the ticks of this minute out of the picture
        time.sleep(61 - now.second)
    minute = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    target = ScheduleTarget(type="http", endpoint="/health", method="GET")
    ids = {}
    for policy in ("skip", "once", "all"):
        s = db.upsert_schedule(Schedule(cron="* * * * *", target=target, misfire=policy, misfire_limit=3,
                                        next_run_at=minute - dt.timedelta(minutes=10)))
        ids[policy] = s.id
    serve(AgentOS(agents=[], db=db, schedule_poll_seconds=0.2, misfire_grace_seconds=1).get_app())
    wait_until(lambda: sum(r.status == "success" for r in schedule_runs(db, ids["all"])) >= 3, what="three late ticks")
    wait_until(lambda: any(r.status == "success" for r in schedule_runs(db, ids["once"])), what="one late tick")
    wait_until(lambda: any(r.status == "skipped" for r in schedule_runs(db, ids["skip"])), what="the skip record")
    late = {p: [r for r in schedule_runs(db, sid) if r.tick_at is not None and r.tick_at <= minute]
            for p, sid in ids.items()}
    fired = {p: sorted(r.tick_at for r in rs if r.status == "success") for p, rs in late.items()}
    assert fired["skip"] == []
    assert fired["once"] == [minute]  # the latest missed tick
    assert fired["all"] == [minute - dt.timedelta(minutes=n) for n in (2, 1, 0)]
    skipped = {p: [r for r in rs if r.status == "skipped"] for p, rs in late.items()}
    for policy, count in (("skip", 11), ("once", 10), ("all", 8)):
        [record] = skipped[policy]
        assert record.error.startswith(f"{count} ticks from") and record.tick_at == minute - dt.timedelta(minutes=10)
    assert all(r.output["status_code"] == 200 for r in late["all"] if r.status == "success")
    assert all(db.get_schedule(sid).next_run_at > minute for sid in ids.values())


def test_failed_attempts_are_retried_with_backoff_and_the_run_is_made_once(scripted, db, serve):
    calls = []

    def script(request: dict) -> Reply:
        calls.append(request)
        return Reply(status=500, error="overloaded") if len(calls) <= 2 else Reply("third time")

    agent = make_agent(scripted(script), db, retries=0)
    http = serve(AgentOS(agents=[agent], db=db).get_app())
    sid = http.post("/schedules", json={"cron": YEARLY, "target": agent_target(), "max_retries": 2}).json()["id"]
    fired = http.post(f"/schedules/{sid}/trigger").json()
    job = finished_job(http, fired["job_id"], seconds=60)
    assert (job["status"], job["attempts"]) == ("completed", 3), job
    runs = sorted(schedule_runs(db, sid), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "failed"), (3, "success")]
    assert "overloaded" in runs[0].error and runs[1].started_at - runs[0].finished_at >= dt.timedelta(seconds=1)
    assert len({r.run_id for r in runs if r.run_id}) == 1
    run = db.get_run(runs[2].run_id)
    assert (run.status, run.content) == ("completed", "third time")
    assert [r.run_id for r in db.list_runs(run.session_id).items] == [run.run_id]  # the broken ones replaced

    missing = http.post("/schedules", json={"cron": YEARLY, "max_retries": 3,
                                            "target": {"type": "agent", "id": "nobody", "payload": {"message": "x"}}})
    job = finished_job(http, http.post(f"/schedules/{missing.json()['id']}/trigger").json()["job_id"])
    assert (job["status"], job["attempts"]) == ("failed", 1) and "not served" in job["error"]
    [failed] = schedule_runs(db, missing.json()["id"])
    assert failed.status == "failed" and "not served" in failed.error


def test_a_run_that_fails_for_good_sends_a_signed_webhook(db, serve):
    receiver = Receiver()
    with http_server(receiver.handler()) as httpd:
        http = serve(AgentOS(agents=[], db=db, webhook_url=url_of(httpd), webhook_secret=SECRET).get_app())
        target = {"type": "http", "endpoint": "/agents/nobody/runs", "payload": {"message": "x"}}
        sid = http.post("/schedules", json={"cron": YEARLY, "target": target, "max_retries": 1}).json()["id"]
        job = finished_job(http, http.post(f"/schedules/{sid}/trigger").json()["job_id"])
        assert job["status"] == "failed" and "answered 404" in job["error"]
        [(headers, body)] = wait_until(lambda: receiver.of("schedule_run.failed"), what="the webhook")
    event = verify_webhook(SECRET, headers, body)
    assert event["data"]["schedule"]["id"] == sid
    assert event["data"]["schedule_run"]["status"] == "failed" and event["data"]["schedule_run"]["attempt"] == 1


def test_a_run_waiting_for_approval_is_paused(scripted, db, serve):
    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        return f"sent {amount}"

    agent = make_agent(scripted([Reply(tool_calls=[("wire_money", {"amount": 5})])]), db, tools=[wire_money])
    http = serve(AgentOS(agents=[agent], db=db).get_app())
    sid = http.post("/schedules", json={"cron": YEARLY, "target": agent_target(), "user_id": "alice"}).json()["id"]
    job = finished_job(http, http.post(f"/schedules/{sid}/trigger").json()["job_id"])
    assert job["status"] == "completed" and job["result"]["status"] == "paused"
    [record] = schedule_runs(db, sid)
    assert record.status == "paused" and db.get_run(record.run_id).status == "paused"
    assert http.get("/approvals/count", params={"user_id": "alice"}).json()["count"] == 1


def test_a_run_cut_by_a_shutdown_is_cancelled_then_taken_over_once(scripted, db):
    model = scripted([Reply("too slow", delay=4), Reply("second try")])
    agent = make_agent(model, db, retries=0)
    first = Served(AgentOS(agents=[agent], db=db).get_app()).start()
    import httpx

    with httpx.Client(base_url=first.url, timeout=30) as http:
        sid = http.post("/schedules", json={"cron": YEARLY, "target": agent_target(), "max_retries": 2}).json()["id"]
        fired = http.post(f"/schedules/{sid}/trigger").json()
    wait_until(lambda: model.requests, what="the model call")
    first.stop()  # the worker cancels the run and queues the job again
    [cut] = schedule_runs(db, sid)
    assert (cut.status, cut.error) == ("cancelled", "the server stopped")
    second = Served(AgentOS(agents=[agent], db=db).get_app()).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            job = finished_job(http, fired["job_id"], seconds=60)
    finally:
        second.stop()
    assert job["status"] == "completed", job
    runs = sorted(schedule_runs(db, sid), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in runs] == [(1, "cancelled"), (2, "success")]
    run = db.get_run(runs[1].run_id)
    assert (run.status, run.content) == ("completed", "second try")
    assert [r.run_id for r in db.list_runs(run.session_id).items] == [run.run_id]


def test_an_http_target_calls_the_server_as_the_schedules_owner(scripted, db, serve):
    agent = make_agent(scripted([Reply("hello alice")]), db)
    http = serve(AgentOS(agents=[agent], db=db, security_key=KEY).get_app())
    auth = {"Authorization": f"Bearer {KEY}"}
    target = {"type": "http", "endpoint": "/agents/helper/runs", "payload": {"message": "hi", "session_id": "s1"}}
    sid = http.post("/schedules", headers=auth, json={"cron": YEARLY, "target": target, "user_id": "alice"}).json()["id"]
    job = finished_job(http, http.post(f"/schedules/{sid}/trigger", headers=auth).json()["job_id"], auth)
    assert job["status"] == "completed", job
    [record] = schedule_runs(db, sid)
    assert record.status == "success" and record.output["status_code"] == 200
    run = db.get_run(record.run_id)
    assert (run.user_id, run.content, run.session_id) == ("alice", "hello alice", "s1")
    # the in-process credential is gone once the call is over: nothing outside can reuse one
    assert http.get("/schedules", headers={"Authorization": "Bearer not-a-key"}).status_code == 401


def test_scheduler_settings_are_checked(db):
    import pytest

    from agentkeep.db.errors import InvalidInputError

    for bad in ({"schedule_poll_seconds": None}, {"schedule_poll_seconds": 0}, {"misfire_grace_seconds": -1},
                {"misfire_grace_seconds": True}, {"job_lease_seconds": None}, {"job_concurrency": 0},
                {"job_concurrency": 1.5}):
        with pytest.raises(InvalidInputError):
            AgentOS(agents=[], db=db, **bad)
    assert AgentOS(agents=[], db=db, scheduler=False).scheduler is None
    assert AgentOS(agents=[], db=db, job_concurrency=8).worker.concurrency == 8
