"""Exactly once across processes: three AgentOS servers on one db (a PostgreSQL schema, or
one SQLite file) fire 50 schedules every few seconds; one is killed (SIGKILL) while runs are
in flight. Every tick in the window ends with exactly one successful schedule run and one
completed agent run keyed by it; the dead server's ticks are taken over after its leases."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

from agentkeep.db.models import Schedule, ScheduleTarget
from agentkeep.db.schedule import next_fire
from agentkeep.models.scripted import Reply
from agentkeep.os.scheduler import TAKEN_OVER, tick_key, tick_name
from tests.os.conftest import schedule_runs
from tests.os.replica import Replica, db_url

UTC = dt.timezone.utc
SCHEDULES = 50
CRON = "*/4 * * * * *"  # every 4 seconds: 12.5 ticks a second over the 50
PHASE_SECONDS = 10  # before the kill, and after it


def test_every_tick_runs_exactly_once_across_three_servers_and_a_kill(store, scripted, replicas):
    db = store.db
    model = scripted([Reply("tick done", delay=0.2)], cycle=True)  # runs are in flight when the kill comes
    start = dt.datetime.now(UTC) + dt.timedelta(seconds=3)
    target = ScheduleTarget(type="agent", id="analyst", payload={"message": "report"})
    schedules = [db.upsert_schedule(Schedule(id=f"s{i:02d}", cron=CRON, target=target, misfire="all",
                                             misfire_limit=100, next_run_at=next_fire(CRON, "UTC", start)))
                 for i in range(SCHEDULES)]
    url = db_url(store)
    replicas.extend(Replica(url, model.base_url, job_concurrency=6) for _ in range(3))
    time.sleep(PHASE_SECONDS)
    in_flight = len(model.requests)
    victim = f":{replicas[0].process.pid}:"
    deadline = time.monotonic() + 30
    while not (in_hand := [j for j in db.list_jobs(kind="schedule.fire", status="running", limit=100).items
                           if victim in (j.locked_by or "")]):
        assert time.monotonic() < deadline, "the first server never had a tick in hand"
        time.sleep(0.02)
    replicas[0].kill()  # with a tick in hand
    killed_at = dt.datetime.now(UTC)
    time.sleep(PHASE_SECONDS)
    end = dt.datetime.now(UTC)  # the window checked: ticks after it go on firing meanwhile

    expected: dict[str, list[dt.datetime]] = {}
    for s in schedules:
        ticks, tick = [], s.next_run_at
        while tick <= end:
            ticks.append(tick)
            tick = next_fire(CRON, "UTC", tick)
        expected[s.id] = ticks
    total = sum(len(t) for t in expected.values())
    assert total >= SCHEDULES * 4 and in_flight > 0

    deadline = time.monotonic() + 120  # the dead server's leases (4 s) run out, then its ticks are redone
    while True:
        done = {s.id: [r for r in schedule_runs(db, s.id) if r.status == "success" and r.tick_at <= end] for s in schedules}
        if sum(len(v) for v in done.values()) >= total or time.monotonic() > deadline:
            break
        time.sleep(1)
    for s in schedules:
        per_tick = Counter(r.tick_at for r in done[s.id])
        assert sorted(per_tick) == expected[s.id], (s.id, sorted(per_tick), expected[s.id])
        assert set(per_tick.values()) == {1}, (s.id, per_tick)  # one success per tick
        for tick in expected[s.id]:
            run = db.get_run(f"schedule-{tick_key(s.id, tick_name(tick))}")
            assert run is not None and run.status == "completed" and run.content == "tick done", (s.id, tick, run)
            # the tick's session holds that run and no other: a redone tick replaced its broken run
            assert [r.run_id for r in db.list_runs(run.session_id).items] == [run.run_id]
    # the ticks the killed server had in hand were taken over once its leases ran out
    for job in in_hand:
        done_job = db.get_job(job.id)  # (or it ended in the instant between the look and the kill)
        assert done_job.status == "completed" and (done_job.attempts >= 2 or done_job.finished_at <= killed_at), done_job
    for record in (r for s in schedules for r in schedule_runs(db, s.id) if r.error == TAKEN_OVER):
        retried = db.get_schedule_run(record.id.rsplit(":", 1)[0] + f":{record.attempt + 1}")
        assert retried is not None and retried.tick_at == record.tick_at
