"""Schedules: upsert (cron, timezone, revisions, ownership), claim/lease/release, runs."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OwnershipError,
    ScheduleRun,
)

from ._helpers import T0, UTC, all_items, at, dump, ids, schedule, target

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def _due(db, **kw):
    kw.setdefault("next_run_at", NOW - dt.timedelta(minutes=1))
    return db.upsert_schedule(schedule(**kw))


def test_upsert_round_trip_and_revision(db):
    s = schedule(name="nightly", cron="30 2 * * 1-5", timezone="Europe/Paris",
                 target=target(type="http", id=None, endpoint="https://x/y", payload={"a": [1, {"b": None}]}),
                 enabled=False, next_run_at=NOW, max_retries=3, timeout_seconds=12.5)
    stored = db.upsert_schedule(s)
    assert stored.revision == 1 and stored.created_at is not None
    got = db.get_schedule(s.id)
    assert dump(got) == dump(stored)
    expected = dump(s, {"revision", "created_at", "updated_at"})
    assert {k: v for k, v in dump(got).items() if k in expected} == expected
    got.name = "renamed"
    assert db.upsert_schedule(got).revision == 2
    assert db.get_schedule(s.id).name == "renamed"


def test_next_run_at_computed_from_cron(db):
    s = db.upsert_schedule(schedule(cron="*/5 * * * *"))
    n = s.next_run_at
    assert n is not None and n.utcoffset() == dt.timedelta(0)
    assert n.minute % 5 == 0 and n.second == 0 and n.microsecond == 0
    assert s.created_at - dt.timedelta(seconds=1) <= n <= s.created_at + dt.timedelta(minutes=5, seconds=1)


def test_next_run_at_honours_the_timezone(db):
    s = db.upsert_schedule(schedule(cron="0 9 * * *", timezone="Asia/Kolkata"))
    n = s.next_run_at.astimezone(UTC)
    assert (n.hour, n.minute) == (3, 30)


def test_expected_revision(db):
    s = db.upsert_schedule(schedule(), expected_revision=0)
    assert s.revision == 1
    with pytest.raises(ConflictError):
        db.upsert_schedule(schedule(id=s.id, name="dup"), expected_revision=0)
    assert db.upsert_schedule(schedule(id=s.id, name="v2"), expected_revision=1).revision == 2
    with pytest.raises(ConflictError):
        db.upsert_schedule(schedule(id=s.id, name="stale"), expected_revision=1)
    got = db.get_schedule(s.id)
    assert got.name == "v2" and got.revision == 2
    fresh = schedule()
    with pytest.raises(ConflictError):
        db.upsert_schedule(fresh, expected_revision=4)
    assert db.get_schedule(fresh.id) is None


@pytest.mark.parametrize("owner,intruder", [("alice", "bob"), ("alice", None), (None, "alice")],
                         ids=["user-user", "user-none", "none-user"])
def test_upsert_over_another_owner(db, owner, intruder):
    s = db.upsert_schedule(schedule(user_id=owner, name="orig"))
    before = dump(db.get_schedule(s.id))
    with pytest.raises(OwnershipError):
        db.upsert_schedule(schedule(id=s.id, user_id=intruder, name="stolen"))
    assert dump(db.get_schedule(s.id)) == before


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "* * * *", "* * 32 * *", "", "* * * * * * * *"])
def test_bad_cron_is_invalid_and_writes_nothing(db, cron):
    s = schedule(cron=cron)
    with pytest.raises(InvalidInputError):
        db.upsert_schedule(s)
    assert db.get_schedule(s.id) is None
    assert db.list_schedules().items == []


def test_six_field_cron_has_seconds_first(db):
    s = db.upsert_schedule(schedule(cron="*/20 * * * * *"))
    assert s.next_run_at.second % 20 == 0 and s.next_run_at - s.created_at <= dt.timedelta(seconds=21)
    bad = schedule(cron="61 * * * * *")
    with pytest.raises(InvalidInputError):
        db.upsert_schedule(bad)
    assert db.get_schedule(bad.id) is None


def test_misfire_policy_round_trips_and_is_checked(db):
    s = db.upsert_schedule(schedule(misfire="all", misfire_limit=3))
    got = db.get_schedule(s.id)
    assert (got.misfire, got.misfire_limit) == ("all", 3)
    assert db.upsert_schedule(schedule()).misfire == "once"
    for fields in ({"misfire": "sometimes"}, {"misfire_limit": 0}):
        with pytest.raises(InvalidInputError):
            db.upsert_schedule(dump(schedule()) | fields)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "UTC+25", "../etc/passwd"])
def test_bad_timezone_is_invalid_and_writes_nothing(db, tz):
    s = schedule(timezone=tz)
    with pytest.raises(InvalidInputError):
        db.upsert_schedule(s)
    assert db.get_schedule(s.id) is None


def test_get_list_delete_scoping(db):
    a = db.upsert_schedule(schedule(user_id="alice", enabled=True))
    a2 = db.upsert_schedule(schedule(user_id="alice", enabled=False))
    b = db.upsert_schedule(schedule(user_id="bob"))
    assert db.get_schedule(a.id, user_id="alice").id == a.id
    assert db.get_schedule(a.id, user_id="bob") is None
    assert db.get_schedule("missing") is None
    assert ids(all_items(db.list_schedules, user_id="alice"), "id") == {a.id, a2.id}
    assert ids(all_items(db.list_schedules), "id") == {a.id, a2.id, b.id}
    assert ids(all_items(db.list_schedules, enabled=True), "id") == {a.id, b.id}
    assert ids(all_items(db.list_schedules, enabled=False, user_id="alice"), "id") == {a2.id}
    assert db.list_schedules(user_id="alice", with_total=True, limit=1).total == 2
    assert db.delete_schedule(a.id, user_id="bob") is False
    assert db.get_schedule(a.id) is not None
    assert db.delete_schedule(a.id, user_id="alice") is True
    assert db.get_schedule(a.id) is None
    assert db.delete_schedule(a.id) is False


def test_list_schedules_orders(db):
    s1 = db.upsert_schedule(schedule(created_at=at(1), next_run_at=at(30)))
    s2 = db.upsert_schedule(schedule(created_at=at(2), next_run_at=at(10)))
    s3 = db.upsert_schedule(schedule(created_at=at(3), next_run_at=at(20)))

    def order(o):
        return [s.id for s in db.list_schedules(order=o).items]

    assert order("created_desc") == [s3.id, s2.id, s1.id]
    assert order("created_asc") == [s1.id, s2.id, s3.id]
    assert [s.id for s in db.list_schedules().items] == [s3.id, s2.id, s1.id]


def test_claim_due_schedules(db):
    due = _due(db)
    _due(db, enabled=False)
    _due(db, next_run_at=NOW + dt.timedelta(minutes=5))
    claimed = db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60, limit=10)
    assert [s.id for s in claimed] == [due.id]
    c = claimed[0]
    assert c.locked_by == "w1" and c.locked_until == NOW + dt.timedelta(seconds=60)
    assert c.revision == due.revision + 1
    stored = db.get_schedule(due.id)
    assert stored.locked_by == "w1" and stored.locked_until == c.locked_until
    assert db.claim_due_schedules(worker_id="w2", now=NOW, lease_seconds=60, limit=10) == []
    assert db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60, limit=10) == []


def test_claim_respects_limit_and_due_order(db):
    late = _due(db, next_run_at=NOW - dt.timedelta(minutes=1))
    early = _due(db, next_run_at=NOW - dt.timedelta(minutes=3))
    mid = _due(db, next_run_at=NOW - dt.timedelta(minutes=2))
    first = db.claim_due_schedules(worker_id="w", now=NOW, limit=2)
    assert [s.id for s in first] == [early.id, mid.id]
    assert [s.id for s in db.claim_due_schedules(worker_id="w", now=NOW, limit=2)] == [late.id]


def test_expired_lease_can_be_reclaimed(db):
    s = _due(db)
    assert len(db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60)) == 1
    assert db.claim_due_schedules(worker_id="w2", now=NOW + dt.timedelta(seconds=30), lease_seconds=60) == []
    later = NOW + dt.timedelta(seconds=61)
    again = db.claim_due_schedules(worker_id="w2", now=later, lease_seconds=60)
    assert [x.id for x in again] == [s.id]
    assert again[0].locked_by == "w2" and again[0].locked_until == later + dt.timedelta(seconds=60)
    # the crashed worker no longer holds the lease
    with pytest.raises(ConflictError):
        db.release_schedule(s.id, worker_id="w1", next_run_at=NOW + dt.timedelta(hours=1))
    assert db.get_schedule(s.id).locked_by == "w2"


def test_release_schedule(db):
    s = _due(db)
    claimed = db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60)[0]
    nxt = NOW + dt.timedelta(hours=1)
    released = db.release_schedule(s.id, worker_id="w1", next_run_at=nxt)
    assert released.locked_by is None and released.next_run_at == nxt
    assert released.revision == claimed.revision + 1
    got = db.get_schedule(s.id)
    assert got.locked_by is None and got.next_run_at == nxt
    # not due again for the same time
    assert db.claim_due_schedules(worker_id="w2", now=NOW, lease_seconds=60) == []
    assert [x.id for x in db.claim_due_schedules(worker_id="w2", now=nxt, lease_seconds=60)] == [s.id]


def test_release_by_non_holder_conflicts(db):
    s = _due(db)
    db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60)
    with pytest.raises(ConflictError):
        db.release_schedule(s.id, worker_id="w2", next_run_at=NOW + dt.timedelta(hours=1))
    got = db.get_schedule(s.id)
    assert got.locked_by == "w1" and got.next_run_at == NOW - dt.timedelta(minutes=1)


def test_release_unclaimed_conflicts_and_missing_is_not_found(db):
    s = _due(db)
    with pytest.raises(ConflictError):
        db.release_schedule(s.id, worker_id="w1", next_run_at=NOW)
    with pytest.raises(NotFoundError):
        db.release_schedule("missing", worker_id="w1", next_run_at=NOW)


def test_schedule_runs(db):
    s = db.upsert_schedule(schedule())
    other = db.upsert_schedule(schedule())
    r1 = db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=at(1), status="success",
                                            finished_at=at(2), output={"ok": True}, run_id="r", session_id="se"))
    r2 = db.record_schedule_run(ScheduleRun(schedule_id=s.id, attempt=2, started_at=at(3), status="failed",
                                            error="boom"))
    r3 = db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=at(2), status="skipped"))
    db.record_schedule_run(ScheduleRun(schedule_id=other.id, started_at=at(5)))
    page = db.list_schedule_runs(s.id)
    assert [r.id for r in page.items] == [r2.id, r3.id, r1.id]
    assert dump(page.items[2]) == dump(r1)
    assert page.items[2].output == {"ok": True} and page.items[0].error == "boom"
    assert db.list_schedule_runs(s.id, with_total=True, limit=1).total == 3


def test_record_run_of_missing_schedule_is_not_found(db):
    with pytest.raises(NotFoundError):
        db.record_schedule_run(ScheduleRun(schedule_id="missing", started_at=T0))


def test_delete_schedule_deletes_its_runs(db):
    s = db.upsert_schedule(schedule(user_id="alice"))
    kept = db.upsert_schedule(schedule(user_id="alice"))
    for i in range(3):
        db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=at(i)))
    db.record_schedule_run(ScheduleRun(schedule_id=kept.id, started_at=at(9)))
    assert db.delete_schedule(s.id, user_id="alice") is True
    db.upsert_schedule(schedule(id=s.id, user_id="alice"))
    assert db.list_schedule_runs(s.id).items == []
    assert len(db.list_schedule_runs(kept.id).items) == 1


def test_schedule_runs_go_through_the_schedules_owner_only(db):
    s = db.upsert_schedule(schedule(user_id="alice"))
    b = db.upsert_schedule(schedule(user_id="bob"))
    shared = db.upsert_schedule(schedule(user_id=None))
    r = db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=at(1)), user_id="alice")
    db.record_schedule_run(ScheduleRun(schedule_id=shared.id, started_at=at(1)))
    before = [dump(x) for x in all_items(db.list_schedule_runs, s.id)]
    # another user's schedule is missing to bob, as an unknown one is
    with pytest.raises(NotFoundError):
        db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=at(2)), user_id="bob")
    with pytest.raises(NotFoundError):
        db.record_schedule_run(ScheduleRun(id=r.id, schedule_id=s.id, status="failed"), user_id="bob")
    with pytest.raises(NotFoundError):
        db.record_schedule_run(ScheduleRun(schedule_id=shared.id), user_id="bob")
    # alice's run cannot be moved under bob's own schedule either
    with pytest.raises(ConflictError):
        db.record_schedule_run(ScheduleRun(id=r.id, schedule_id=b.id, status="failed"), user_id="bob")
    assert [dump(x) for x in all_items(db.list_schedule_runs, s.id)] == before
    assert all_items(db.list_schedule_runs, b.id) == []
    # reads: bob gets what a missing schedule gives
    for schedule_id in (s.id, shared.id, "missing"):
        page = db.list_schedule_runs(schedule_id, user_id="bob", with_total=True)
        assert (page.items, page.total, page.next_cursor) == ([], 0, None)
    assert [x.id for x in db.list_schedule_runs(s.id, user_id="alice").items] == [r.id]
    assert db.list_schedule_runs(s.id, user_id="alice", with_total=True).total == 1
    with pytest.raises(InvalidInputError):
        db.list_schedule_runs(s.id, user_id="bob", cursor="not-a-cursor")
    # the owner replaces her own run
    done = db.record_schedule_run(ScheduleRun(id=r.id, schedule_id=s.id, started_at=at(1), status="success"),
                                  user_id="alice")
    assert db.list_schedule_runs(s.id, user_id="alice").items == [done]


def test_schedule_run_by_id_with_tick_and_new_statuses(db):
    s = db.upsert_schedule(schedule(user_id="alice"))
    tick = at(7)
    for n, status in enumerate(("failed", "cancelled", "paused", "success"), 1):
        db.record_schedule_run(ScheduleRun(id=f"{s.id}@t#{n}", schedule_id=s.id, tick_at=tick, attempt=n,
                                           status=status, trigger="manual" if n == 4 else "schedule"))
    got = db.get_schedule_run(f"{s.id}@t#3")
    assert (got.status, got.tick_at, got.attempt, got.trigger) == ("paused", tick, 3, "schedule")
    assert db.get_schedule_run(f"{s.id}@t#4", user_id="alice").trigger == "manual"
    assert db.get_schedule_run(f"{s.id}@t#4", user_id="bob") is None
    assert db.get_schedule_run("missing") is None
    assert sorted(r.status for r in all_items(db.list_schedule_runs, s.id)) == ["cancelled", "failed", "paused", "success"]
