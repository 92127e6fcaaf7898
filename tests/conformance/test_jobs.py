"""Jobs: single-flight enqueue, claims under a lease (order, run_after, kinds), lease expiry
and takeover, attempts, renew/finish by the holder only, retry with backoff, cancel,
ownership, listing, and workers racing over one pool of jobs."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import (
    ConflictError,
    InvalidInputError,
    Job,
    NotFoundError,
    OwnershipError,
    Session,
)
from agentkeep.db import tables as tables_module

from . import _workers
from ._helpers import UTC, all_items, at, by_kind, dump, ids, snapshot
from .test_concurrency import _in_threads, _need_processes, _run_processes

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def _s(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def _job(db, user="alice", **kw):
    kw.setdefault("kind", "knowledge.add")
    kw.setdefault("run_after", _s(-60))
    return db.enqueue_job(Job(user_id=user, **kw))


def _claim(db, worker="w1", now=NOW, **kw):
    return db.claim_jobs(worker_id=worker, now=now, **kw)


# -- enqueue ----------------------------------------------------------------------------------


def test_enqueue_round_trip(db):
    j = Job(kind="knowledge.add", user_id="alice", payload={"url": "https://x/y", "n": [1, 2.5, None, {"a": True}]},
            max_attempts=5, run_after=NOW, created_at=at(1))
    stored = db.enqueue_job(j)
    assert (stored.status, stored.attempts, stored.revision) == ("queued", 0, 1)
    assert stored.locked_by is None and stored.locked_until is None and stored.finished_at is None
    assert stored.result is None and stored.error is None and stored.updated_at is not None
    assert dump(db.get_job(j.id)) == dump(stored)
    expected = dump(j, {"revision", "updated_at"})
    assert {k: v for k, v in dump(stored).items() if k in expected} == expected


def test_enqueue_defaults_run_after_to_now_and_resets_what_the_db_keeps(db):
    j = db.enqueue_job(Job(kind="eval.run", status="completed", attempts=2, result={"x": 1}, error="old",
                           locked_by="w9", locked_until=NOW, finished_at=NOW, revision=7))
    assert (j.status, j.attempts, j.result, j.error, j.locked_by, j.locked_until, j.finished_at, j.revision) == (
        "queued", 0, None, None, None, None, None, 1)
    assert j.run_after == j.created_at == j.updated_at
    assert dump(db.get_job(j.id)) == dump(j)


def test_enqueue_is_single_flight_while_queued_or_running(db):
    first = _job(db, id="ingest-doc-1", payload={"v": 1})
    again = db.enqueue_job(Job(id="ingest-doc-1", user_id="alice", kind="knowledge.add", payload={"v": 2}))
    assert dump(again) == dump(first)
    claimed = _claim(db)[0]
    while_running = db.enqueue_job(Job(id="ingest-doc-1", user_id="alice", kind="knowledge.add", payload={"v": 3}))
    assert dump(while_running) == dump(claimed) == dump(db.get_job("ingest-doc-1"))
    assert [x.id for x in all_items(db.list_jobs)] == ["ingest-doc-1"]


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
def test_enqueue_replaces_a_finished_job(db, end):
    first = _job(db, id="refresh", payload={"v": 1})
    if end == "cancelled":
        db.cancel_job(first.id)
    else:
        _claim(db)
        db.finish_job(first.id, worker_id="w1", status=end, result={"r": 1}, error="e")
    done = db.get_job(first.id)
    again = db.enqueue_job(Job(id="refresh", user_id="alice", kind="metrics.refresh", payload={"v": 2},
                               run_after=NOW))
    assert (again.status, again.kind, again.payload, again.attempts, again.revision) == (
        "queued", "metrics.refresh", {"v": 2}, 0, done.revision + 1)
    assert again.result is None and again.error is None and again.finished_at is None
    assert dump(db.get_job("refresh")) == dump(again)
    assert [x.id for x in _claim(db, "w2")] == ["refresh"]


@pytest.mark.parametrize("owner,intruder", [("alice", "bob"), ("alice", None), (None, "alice")],
                         ids=["user-user", "user-none", "none-user"])
@pytest.mark.parametrize("finished", [False, True], ids=["queued", "finished"])
def test_enqueue_over_another_owner(db, owner, intruder, finished):
    j = _job(db, user=owner)
    if finished:
        db.cancel_job(j.id)
    before = dump(db.get_job(j.id))
    with pytest.raises(OwnershipError):
        db.enqueue_job(Job(id=j.id, user_id=intruder, kind="stolen"))
    assert dump(db.get_job(j.id)) == before


# -- claims -----------------------------------------------------------------------------------


def test_claim_takes_the_lease(db):
    j = _job(db)
    got = _claim(db, lease_seconds=90)
    assert [x.id for x in got] == [j.id]
    c = got[0]
    assert (c.status, c.locked_by, c.locked_until, c.attempts, c.revision) == ("running", "w1", _s(90), 1, 2)
    assert dump(db.get_job(j.id)) == dump(c)
    assert _claim(db, "w2") == [] and _claim(db, "w1") == []


def test_claim_order_limit_and_run_after(db):
    late = _job(db, run_after=_s(-60))
    early = _job(db, run_after=_s(-180))
    mid = _job(db, run_after=_s(-120))
    future = _job(db, run_after=_s(300))
    assert [x.id for x in _claim(db, limit=2, lease_seconds=3600)] == [early.id, mid.id]
    assert [x.id for x in _claim(db, limit=10, lease_seconds=3600)] == [late.id]
    assert _claim(db, now=_s(299), limit=10) == []
    assert [x.id for x in _claim(db, now=_s(300), limit=10)] == [future.id]


def test_claim_ties_on_run_after_go_by_id(db):
    made = [_job(db, id=f"j{i}", run_after=NOW).id for i in (3, 1, 2)]
    assert [x.id for x in _claim(db, limit=5)] == sorted(made)


def test_claim_by_kinds(db):
    a = _job(db, kind="a", run_after=_s(-30))
    b = _job(db, kind="b", run_after=_s(-20))
    c = _job(db, kind="c", run_after=_s(-10))
    assert [x.id for x in _claim(db, kinds=["b"], limit=5)] == [b.id]
    assert [x.id for x in _claim(db, kinds=["c", "a", "zzz"], limit=5)] == [a.id, c.id]
    assert _claim(db, limit=5) == []


def test_claim_skips_what_is_not_queued(db):
    cancelled = _job(db)
    db.cancel_job(cancelled.id)
    done = _job(db)
    _claim(db)
    db.finish_job(done.id, worker_id="w1", status="completed")
    running = _job(db)
    assert [x.id for x in _claim(db)] == [running.id]
    assert _claim(db, now=_s(30), limit=10) == []


def test_an_expired_lease_is_taken_over(db):
    j = _job(db)
    _claim(db, "w1", lease_seconds=60)
    assert _claim(db, "w2", now=_s(59)) == []
    again = _claim(db, "w2", now=_s(60), lease_seconds=60)
    assert [x.id for x in again] == [j.id]
    assert (again[0].locked_by, again[0].locked_until, again[0].attempts) == ("w2", _s(120), 2)
    with pytest.raises(ConflictError):  # the stopped worker comes back: it holds nothing now
        db.finish_job(j.id, worker_id="w1", status="completed")
    with pytest.raises(ConflictError):
        db.renew_job(j.id, worker_id="w1")
    assert dump(db.get_job(j.id)) == dump(again[0])
    done = db.finish_job(j.id, worker_id="w2", status="completed", result={"ok": True})
    assert (done.status, done.result, done.attempts) == ("completed", {"ok": True}, 2)


def test_expired_leases_are_claimed_before_queued_jobs(db):
    stuck = _job(db, run_after=_s(-60))
    _claim(db, "w1", lease_seconds=10)
    fresh = _job(db, run_after=_s(-600))
    assert [x.id for x in _claim(db, "w2", now=_s(10), limit=5)] == [stuck.id, fresh.id]


def test_no_attempt_left_when_the_lease_expires_fails_the_job(db):
    j = _job(db, max_attempts=2)
    assert _claim(db, "w1", lease_seconds=10)[0].attempts == 1
    assert _claim(db, "w2", now=_s(10), lease_seconds=10)[0].attempts == 2
    other = _job(db, run_after=_s(15))
    assert [x.id for x in _claim(db, "w3", now=_s(20), limit=5)] == [other.id]
    failed = db.get_job(j.id)
    assert (failed.status, failed.attempts, failed.locked_by, failed.locked_until) == ("failed", 2, None, None)
    assert "w2" in failed.error and "stopped" in failed.error
    assert failed.finished_at is not None
    assert [x.id for x in _claim(db, "w4", now=_s(3600), limit=5)] == [other.id]  # its lease ran out
    assert db.get_job(j.id).status == "failed"


def test_max_attempts_one_runs_once(db):
    j = _job(db, max_attempts=1)
    _claim(db, "w1", lease_seconds=5)
    assert _claim(db, "w2", now=_s(5)) == []
    assert db.get_job(j.id).status == "failed"


# -- renew and finish -------------------------------------------------------------------------


def test_renew_extends_the_lease(db):
    j = _job(db)
    claimed = _claim(db, "w1", lease_seconds=60)[0]
    renewed = db.renew_job(j.id, worker_id="w1", lease_seconds=60, now=_s(50))
    assert (renewed.locked_until, renewed.revision, renewed.status) == (_s(110), claimed.revision + 1, "running")
    assert dump(db.get_job(j.id)) == dump(renewed)
    assert _claim(db, "w2", now=_s(100)) == []
    assert [x.id for x in _claim(db, "w2", now=_s(110))] == [j.id]


def test_renew_without_now_counts_from_the_db_clock(db):
    j = _job(db)
    _claim(db, "w1")
    before = dt.datetime.now(UTC)
    renewed = db.renew_job(j.id, worker_id="w1", lease_seconds=120)
    after = dt.datetime.now(UTC)
    assert before + dt.timedelta(seconds=119) <= renewed.locked_until <= after + dt.timedelta(seconds=121)


def test_renew_and_finish_by_a_non_holder_conflict(db):
    j = _job(db)
    _claim(db, "w1")
    before = dump(db.get_job(j.id))
    with pytest.raises(ConflictError):
        db.renew_job(j.id, worker_id="w2")
    for status in ("completed", "failed"):
        with pytest.raises(ConflictError):
            db.finish_job(j.id, worker_id="w2", status=status, result={"stolen": 1})
    assert dump(db.get_job(j.id)) == before


def test_renew_and_finish_of_an_unclaimed_or_missing_job(db):
    j = _job(db)
    with pytest.raises(ConflictError):
        db.renew_job(j.id, worker_id="w1")
    with pytest.raises(ConflictError):
        db.finish_job(j.id, worker_id="w1", status="completed")
    assert db.get_job(j.id).status == "queued"
    with pytest.raises(NotFoundError):
        db.renew_job("missing", worker_id="w1")
    with pytest.raises(NotFoundError):
        db.finish_job("missing", worker_id="w1", status="failed")


def test_finish_completed_and_failed(db):
    ok = _job(db, run_after=_s(-20))
    bad = _job(db, run_after=_s(-10))
    _claim(db, limit=2)
    done = db.finish_job(ok.id, worker_id="w1", status="completed", result={"chunks": 12, "ids": ["a", "b"]})
    assert (done.status, done.result, done.error, done.locked_by, done.locked_until) == (
        "completed", {"chunks": 12, "ids": ["a", "b"]}, None, None, None)
    assert done.finished_at is not None and done.updated_at >= done.created_at
    assert dump(db.get_job(ok.id)) == dump(done)
    failed = db.finish_job(bad.id, worker_id="w1", status="failed", error="Traceback...\n" + "x" * 10_000)
    assert (failed.status, failed.attempts, failed.locked_by) == ("failed", 1, None)
    assert failed.error.endswith("x" * 10_000) and failed.finished_at is not None
    assert dump(db.get_job(bad.id)) == dump(failed)
    with pytest.raises(ConflictError):  # finished once
        db.finish_job(ok.id, worker_id="w1", status="completed")
    assert _claim(db, now=_s(3600), limit=5) == []


def test_retry_with_backoff(db):
    j = _job(db, max_attempts=2)
    _claim(db, "w1")
    retry = db.finish_job(j.id, worker_id="w1", status="failed", error="timeout", retry_at=_s(600))
    assert (retry.status, retry.run_after, retry.attempts, retry.error) == ("queued", _s(600), 1, "timeout")
    assert retry.locked_by is None and retry.locked_until is None and retry.finished_at is None
    assert dump(db.get_job(j.id)) == dump(retry)
    assert _claim(db, "w2", now=_s(599)) == []
    second = _claim(db, "w2", now=_s(600))
    assert [(x.id, x.attempts, x.locked_by) for x in second] == [(j.id, 2, "w2")]
    # no attempt left: a retry fails the job for good
    final = db.finish_job(j.id, worker_id="w2", status="failed", error="timeout again", retry_at=_s(1200))
    assert (final.status, final.error, final.attempts) == ("failed", "timeout again", 2)
    assert final.finished_at is not None
    assert _claim(db, "w3", now=_s(7200)) == []


def test_retry_at_goes_with_failed_only(db):
    j = _job(db)
    _claim(db)
    before = dump(db.get_job(j.id))
    with pytest.raises(InvalidInputError):
        db.finish_job(j.id, worker_id="w1", status="completed", retry_at=_s(60))
    assert dump(db.get_job(j.id)) == before


# -- cancel, ownership, listing, deleting -----------------------------------------------------


def test_cancel(db):
    j = _job(db)
    with pytest.raises(NotFoundError):
        db.cancel_job(j.id, user_id="bob")
    cancelled = db.cancel_job(j.id, user_id="alice")
    assert (cancelled.status, cancelled.revision) == ("cancelled", 2) and cancelled.finished_at is not None
    assert dump(db.get_job(j.id)) == dump(cancelled)
    assert _claim(db, limit=5) == []
    with pytest.raises(ConflictError):
        db.cancel_job(j.id)
    running = _job(db)
    _claim(db)
    with pytest.raises(ConflictError):
        db.cancel_job(running.id)
    assert db.get_job(running.id).status == "running"
    db.finish_job(running.id, worker_id="w1", status="completed")
    with pytest.raises(ConflictError):
        db.cancel_job(running.id)
    with pytest.raises(NotFoundError):
        db.cancel_job("missing")


def test_get_list_delete_scoping(db):
    a1 = _job(db, user="alice", kind="x")
    a2 = _job(db, user="alice", kind="y")
    b = _job(db, user="bob", kind="x")
    shared = _job(db, user=None, kind="x")
    assert db.get_job(a1.id, user_id="alice").id == a1.id
    assert db.get_job(a1.id, user_id="bob") is None
    assert db.get_job(shared.id, user_id="alice") is None
    assert db.get_job("missing") is None
    assert ids(all_items(db.list_jobs, user_id="alice"), "id") == {a1.id, a2.id}
    assert ids(all_items(db.list_jobs), "id") == {a1.id, a2.id, b.id, shared.id}
    assert ids(all_items(db.list_jobs, kind="x"), "id") == {a1.id, b.id, shared.id}
    assert ids(all_items(db.list_jobs, kind="x", user_id="alice"), "id") == {a1.id}
    assert db.list_jobs(user_id="alice", with_total=True, limit=1).total == 2
    assert db.delete_jobs([a1.id, b.id, "missing"], user_id="alice") == 1
    assert db.get_job(b.id) is not None and db.get_job(a1.id) is None
    assert db.delete_jobs([a2.id, b.id, shared.id]) == 3
    assert all_items(db.list_jobs) == []


def test_list_jobs_by_status(db):
    q = _job(db, run_after=_s(-30))
    r = _job(db, run_after=_s(-20))
    c = _job(db, run_after=_s(10))
    _claim(db)
    db.cancel_job(c.id)
    assert [x.id for x in all_items(db.list_jobs, status="queued")] == [r.id]
    assert [x.id for x in all_items(db.list_jobs, status="running")] == [q.id]
    assert [x.id for x in all_items(db.list_jobs, status="cancelled", user_id="alice")] == [c.id]
    assert all_items(db.list_jobs, status="cancelled", user_id="bob") == []
    assert db.list_jobs(status="running", with_total=True).total == 1


def test_list_jobs_orders_and_pages(db):
    made = [_job(db, id=f"j{i}", created_at=at(i % 3)).id for i in range(7)]
    by_created = sorted(made, key=lambda i: (int(i[1:]) % 3, i))
    assert [x.id for x in all_items(db.list_jobs, order="created_asc", limit=2)] == by_created
    assert [x.id for x in all_items(db.list_jobs, order="created_desc", limit=3)] == by_created[::-1]
    assert [x.id for x in db.list_jobs(order="created_asc", limit=2, offset=3).items] == by_created[3:5]
    page = db.list_jobs(order="created_asc", limit=2, with_total=True)
    assert page.total == 7 and page.next_cursor is not None


def test_a_job_goes_with_its_user(db):
    mine = _job(db, user="alice")
    kept = _job(db, user="bob")
    assert by_kind(db.delete_user("alice")) == {"jobs": 1}
    assert db.get_job(mine.id) is None and db.get_job(kept.id) is not None


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda db: db.enqueue_job(Job(kind="")),
    lambda db: db.enqueue_job(Job(kind="a\nb")),
    lambda db: db.enqueue_job(Job(kind="x" * 256)),
    lambda db: db.enqueue_job(Job(kind="k", max_attempts=0)),
    lambda db: db.enqueue_job({"kind": "k", "run_after": dt.datetime(2030, 1, 1)}),
    lambda db: db.enqueue_job({"kind": "k", "status": "paused"}),
    lambda db: db.enqueue_job({"kind": "k", "max_attempts": 2**63}),
    lambda db: db.enqueue_job({"kind": "k", "payload": {"x": object()}}),
    lambda db: db.claim_jobs(worker_id="w", lease_seconds=-1),
    lambda db: db.claim_jobs(worker_id="w", lease_seconds=0),
    lambda db: db.claim_jobs(worker_id="w", kinds=[]),
    lambda db: db.claim_jobs(worker_id="w", kinds="knowledge.add"),
    lambda db: db.claim_jobs(worker_id="w", kinds=[""]),
    lambda db: db.claim_jobs(worker_id="", now=NOW),
    lambda db: db.claim_jobs(worker_id="w", limit=0),
    lambda db: db.claim_jobs(worker_id="w", now=dt.datetime(2030, 1, 1)),
    lambda db: db.claim_jobs(worker_id="w", now=dt.datetime.max.replace(tzinfo=UTC)),
    lambda db: db.renew_job("j", worker_id="w", lease_seconds=float("nan")),
    lambda db: db.finish_job("j", worker_id="w", status="queued"),
    lambda db: db.finish_job("j", worker_id="w", status="completed", result=[1]),
    lambda db: db.finish_job("j", worker_id="w", status="failed", error=3),
    lambda db: db.finish_job("j", worker_id="w", status="failed", retry_at=dt.datetime(2030, 1, 1)),
    lambda db: db.list_jobs(status="done"),
    lambda db: db.list_jobs(order="run_after"),
    lambda db: db.list_jobs(kind=""),
    lambda db: db.delete_jobs(["ok", "bad\x00id"]),
    lambda db: db.cancel_job(""),
])
def test_bad_input_is_invalid_and_writes_nothing(db, call):
    _job(db, id="j")
    _claim(db, "w")
    before = snapshot(db)
    with pytest.raises(InvalidInputError):
        call(db)
    assert snapshot(db) == before


def test_a_result_that_overflows_the_record_is_invalid(db):
    j = _job(db, payload={"blob": "x" * 3_000_000})
    _claim(db)
    with pytest.raises(InvalidInputError):
        db.finish_job(j.id, worker_id="w1", status="completed", result={"blob": "y" * 2_000_000})
    assert db.get_job(j.id).status == "running"


# -- racing workers -----------------------------------------------------------------------------


def _pool(db, n: int) -> set[str]:
    return {_job(db, user=f"u{i % 3}", kind=("a", "b")[i % 2], run_after=_s(-i)).id for i in range(n)}


def _claimed_once(claims: list[list[str]], pool: set[str]) -> None:
    flat = [j for c in claims for j in c]
    assert len(flat) == len(set(flat)), f"a job was claimed twice: {sorted(flat)}"
    assert set(flat) == pool


def test_threads_claim_every_job_exactly_once(db):
    pool = _pool(db, 24)

    def work(i: int) -> list[str]:
        got: list[str] = []
        while batch := db.claim_jobs(worker_id=f"w{i}", now=NOW, lease_seconds=600, limit=1 + i % 3):
            got += [x.id for x in batch]
        return got

    claims = _in_threads(6, work)  # batches of 1, 2 and 3
    _claimed_once(claims, pool)
    for i, got in enumerate(claims):
        assert all(db.get_job(x).locked_by == f"w{i}" and db.get_job(x).attempts == 1 for x in got)
    assert _claim(db, "late", limit=100) == []


def test_threads_taking_over_expired_leases_claim_each_once(db):
    pool = _pool(db, 12)
    assert len(_claim(db, "dead", lease_seconds=10, limit=100)) == 12
    claims = _in_threads(4, lambda i: [x.id for x in db.claim_jobs(worker_id=f"w{i}", now=_s(10), limit=100)])
    _claimed_once(claims, pool)
    assert all(db.get_job(x).attempts == 2 for x in pool)


@pytest.mark.parametrize("finished", [False, True], ids=["new", "finished"])
def test_racing_enqueues_of_one_id_make_one_job(db, finished):
    revision = 0
    if finished:
        revision = db.cancel_job(_job(db, id="once").id).revision
    results = _in_threads(6, lambda i: db.enqueue_job(Job(id="once", user_id="alice", kind="k", payload={"i": i})))
    assert len({dump(r)["payload"]["i"] for r in results}) == 1, results
    got = db.get_job("once")
    assert dump(got) == dump(results[0]) and (got.status, got.revision) == ("queued", revision + 1)
    assert [j.id for j in all_items(db.list_jobs)] == ["once"]


def _drain(db, worker: str) -> list[str]:
    got: list[str] = []
    while batch := db.claim_jobs(worker_id=worker, now=NOW, lease_seconds=600, limit=1):
        got += [x.id for x in batch]
    return got


def test_processes_and_threads_claim_every_job_exactly_once(db, db_opener):
    _need_processes(db)
    pool = _pool(db, 30)
    claims, local = _run_processes(
        _workers.claim_jobs, lambda i, barrier, out: (db_opener, f"proc{i}", NOW, barrier, out), 3,
        also=lambda: _in_threads(2, lambda i: _drain(db, f"thread{i}")))
    _claimed_once(claims + local, pool)
    assert all(db.get_job(x).attempts == 1 for x in pool)


# -- an existing db ---------------------------------------------------------------------------


def test_a_db_made_before_jobs_gets_the_table_on_first_use(make_db, monkeypatch):
    current = tables_module.default_specs
    monkeypatch.setattr(tables_module, "default_specs", lambda: {k: v for k, v in current().items() if k != "jobs"})
    handle = make_db()
    if not handle.reusable:
        handle.db.close()
        pytest.skip("this backend's data lives only as long as the db object")
    handle.db.upsert_session(Session(session_id="before", user_id="alice"))
    assert "jobs" not in handle.db.schema_status()
    handle.db.close()
    monkeypatch.setattr(tables_module, "default_specs", current)
    db = handle.reopen()
    try:
        j = db.enqueue_job(Job(kind="k", user_id="alice"))  # the first call brings the schema up
        assert [x.id for x in db.claim_jobs(worker_id="w")] == [j.id]
        assert db.schema_status()["jobs"] == {"version": 1, "expected": 1, "up_to_date": True}
        assert all(info["up_to_date"] for info in db.schema_status().values())
        assert db.get_session("before", user_id="alice") is not None
    finally:
        db.close()
