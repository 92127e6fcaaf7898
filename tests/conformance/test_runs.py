"""Runs: append_run, update_run, get_run, list_runs."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import ConflictError, NotFoundError, OwnershipError, Run, RunMetrics, Session

from ._helpers import T0, all_items, dump


@pytest.fixture
def sid(db):
    return db.upsert_session(Session(session_id="sess", user_id="alice")).session_id


def test_append_assigns_increasing_seq_and_timestamps(db, sid):
    runs = [db.append_run(Run(session_id=sid, user_id="alice", content=i)) for i in range(4)]
    seqs = [r.seq for r in runs]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(set(seqs))
    for r in runs:
        assert r.status == "completed"
        assert r.created_at is not None and r.created_at.utcoffset() == dt.timedelta(0)
        assert r.updated_at is not None
        assert r.user_id == "alice"
    assert [r.seq for r in db.list_runs(sid).items] == seqs


def test_seq_given_by_caller_is_replaced(db, sid):
    first = db.append_run(Run(session_id=sid, seq=1000))
    second = db.append_run(Run(session_id=sid, seq=1))
    assert second.seq > first.seq


def test_run_round_trips_every_field(db, sid):
    r = Run(
        session_id=sid,
        user_id="alice",
        agent_id="ag",
        team_id="tm",
        workflow_id="wf",
        parent_run_id="parent",
        status="paused",
        input={"text": "hi", "files": [1, 2]},
        content=["a", {"b": None}],
        messages=[
            {"role": "user", "content": "hi", "name": "al"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "extra": {"x": 1}},
        ],
        tools=[{"name": "f", "args": {"x": 1}}],
        metrics=RunMetrics(input_tokens=3, output_tokens=4, total_tokens=7, cost=0.5, duration_ms=12.5,
                           model="m", provider="p", cache_tokens=2),
        metadata={"k": "v"},
        created_at=T0,
    )
    stored = db.append_run(r)
    got = db.get_run(r.run_id)
    assert dump(got) == dump(stored)
    expected = dump(r, {"seq", "updated_at"})
    assert {k: v for k, v in dump(got).items() if k in expected} == expected


def test_append_to_missing_session_is_not_found(db):
    r = Run(session_id="missing", user_id="alice")
    with pytest.raises(NotFoundError):
        db.append_run(r)
    assert db.get_run(r.run_id) is None


def test_append_to_another_users_session_is_not_found(db, sid):
    r = Run(session_id=sid, user_id="bob")
    with pytest.raises(NotFoundError):
        db.append_run(r)
    assert db.get_run(r.run_id) is None
    assert db.list_runs(sid).items == []


@pytest.mark.parametrize("user_id", ["alice", None])
def test_appending_a_taken_run_id_is_a_conflict(db, sid, user_id):
    first = db.append_run(Run(session_id=sid, user_id="alice", content="first"))
    with pytest.raises(ConflictError):
        db.append_run(Run(run_id=first.run_id, session_id=sid, user_id=user_id, content="second"))
    assert dump(db.get_run(first.run_id)) == dump(first)
    assert [r.run_id for r in db.list_runs(sid).items] == [first.run_id]
    assert db.append_run(Run(session_id=sid, user_id="alice")).seq > first.seq


@pytest.mark.parametrize("user_id", ["alice", None])
def test_appending_a_run_id_another_user_owns_is_refused(db, sid, user_id):
    bobs = db.upsert_session(Session(user_id="bob")).session_id
    theirs = db.append_run(Run(session_id=bobs, user_id="bob", content="bob's"))
    with pytest.raises(OwnershipError):
        db.append_run(Run(run_id=theirs.run_id, session_id=sid, user_id=user_id))
    assert dump(db.get_run(theirs.run_id)) == dump(theirs)
    assert db.list_runs(sid).items == []


def test_run_without_user_takes_the_session_owner(db, sid):
    r = db.append_run(Run(session_id=sid, user_id=None))
    assert r.user_id == "alice"
    assert db.get_run(r.run_id, user_id="alice").user_id == "alice"
    assert db.get_run(r.run_id, user_id="bob") is None


def test_update_run_keeps_seq_and_created_at(db, sid):
    r1 = db.append_run(Run(session_id=sid, status="running", content="partial"))
    r2 = db.append_run(Run(session_id=sid))
    seq, created_at = r1.seq, r1.created_at
    r1.status = "completed"
    r1.content = "done"
    r1.seq = 999
    updated = db.update_run(r1)
    assert updated.seq == seq
    got = db.get_run(r1.run_id)
    assert got.status == "completed" and got.content == "done"
    assert got.seq == seq and got.created_at == created_at
    assert [r.run_id for r in db.list_runs(sid).items] == [r1.run_id, r2.run_id]
    assert got.seq < db.get_run(r2.run_id).seq
    assert got.updated_at >= got.created_at


def test_update_run_by_another_user_is_not_found(db, sid):
    r = db.append_run(Run(session_id=sid, content="mine"))
    before = dump(db.get_run(r.run_id))
    intruder = Run(run_id=r.run_id, session_id=sid, user_id="bob", content="stolen")
    with pytest.raises(NotFoundError):
        db.update_run(intruder)
    assert dump(db.get_run(r.run_id)) == before


def test_update_missing_run_is_not_found(db, sid):
    r = Run(session_id=sid, content="ghost")
    with pytest.raises(NotFoundError):
        db.update_run(r)
    assert db.get_run(r.run_id) is None


def test_update_run_without_user_acts_for_the_owner(db, sid):
    r = db.append_run(Run(session_id=sid, user_id="alice", content="a"))
    updated = db.update_run(Run(run_id=r.run_id, session_id=sid, user_id=None, content="b"))
    assert updated.user_id == "alice"
    assert db.get_run(r.run_id, user_id="alice").content == "b"


def test_get_run_scoping(db, sid):
    r = db.append_run(Run(session_id=sid))
    assert db.get_run(r.run_id).run_id == r.run_id
    assert db.get_run(r.run_id, user_id="alice").run_id == r.run_id
    assert db.get_run(r.run_id, user_id="bob") is None
    assert db.get_run("missing") is None


def test_list_runs_ascending_and_filters(db, sid):
    statuses = ["completed", "error", "completed", "running", "completed", "error"]
    runs = [db.append_run(Run(session_id=sid, status=s)) for s in statuses]
    seqs = [r.seq for r in runs]
    page = db.list_runs(sid)
    assert [r.run_id for r in page.items] == [r.run_id for r in runs]
    assert page.total is None
    assert [r.seq for r in db.list_runs(sid, after_seq=seqs[2]).items] == seqs[3:]
    assert [r.seq for r in db.list_runs(sid, after_seq=seqs[-1]).items] == []
    assert [r.run_id for r in all_items(db.list_runs, sid, status="error")] == [runs[1].run_id, runs[5].run_id]
    assert db.list_runs(sid, status="paused").items == []
    assert db.list_runs(sid, with_total=True, limit=2).total == 6
    assert db.list_runs(sid, status="completed", with_total=True, limit=1).total == 3


def test_list_runs_last_n(db, sid):
    runs = [db.append_run(Run(session_id=sid)) for _ in range(6)]
    page = db.list_runs(sid, last=3)
    assert [r.run_id for r in page.items] == [r.run_id for r in runs[-3:]]
    assert page.next_cursor is None
    # last ignores limit and cursor
    assert [r.run_id for r in db.list_runs(sid, last=4, limit=1).items] == [r.run_id for r in runs[-4:]]
    assert len(db.list_runs(sid, last=100).items) == 6


def test_list_runs_scoping(db, sid):
    db.append_run(Run(session_id=sid))
    assert len(db.list_runs(sid, user_id="alice").items) == 1
    assert db.list_runs(sid, user_id="bob").items == []
    assert db.list_runs(sid, user_id="bob", last=5).items == []
    assert db.list_runs(sid, user_id="bob", with_total=True).total == 0


def test_runs_of_other_sessions_stay_apart(db, sid):
    other = db.upsert_session(Session(user_id="alice")).session_id
    a = db.append_run(Run(session_id=sid))
    b = db.append_run(Run(session_id=other))
    assert [r.run_id for r in db.list_runs(sid).items] == [a.run_id]
    assert [r.run_id for r in db.list_runs(other).items] == [b.run_id]


def test_update_run_with_expected_status_is_a_compare_and_set(db, sid):
    r = db.append_run(Run(session_id=sid, status="paused", content="waiting"))
    r.status = "running"
    moved = db.update_run(r, expected_status="paused")
    assert moved.status == "running"
    before = dump(db.get_run(r.run_id))
    r.content = "second resumer"
    with pytest.raises(ConflictError):
        db.update_run(r, expected_status="paused")
    assert dump(db.get_run(r.run_id)) == before


def test_update_run_expected_status_is_checked(db, sid):
    from agentkeep.db import InvalidInputError

    r = db.append_run(Run(session_id=sid, status="paused"))
    with pytest.raises(InvalidInputError):
        db.update_run(r, expected_status="sleeping")
    with pytest.raises(NotFoundError):
        db.update_run(Run(session_id=sid), expected_status="paused")


def test_last_runs_of_a_session_with_gaps_in_seq(db, sid, tmp_path):
    """get_session(runs=N) reads the range above last_seq - N, and all of the tail when the
    session's seqs have gaps (here: runs left out of an imported dump)."""
    import json

    for i in range(5):
        db.append_run(Run(session_id=sid, content=i))
    dump = tmp_path / "dump.jsonl"
    db.export_jsonl(str(dump))
    lines = [line for line in dump.read_text().splitlines()
             if json.loads(line).get("record", {}).get("seq") not in (3, 4)]
    db.delete_session(sid)
    dump.write_text("\n".join(lines) + "\n")
    db.import_jsonl(str(dump))
    assert [r.seq for r in db.get_session(sid, runs=2).runs] == [2, 5]
    assert [r.seq for r in db.get_session(sid, runs=3).runs] == [1, 2, 5]
    assert [r.seq for r in db.get_session(sid, runs=10).runs] == [1, 2, 5]
    assert [r.seq for r in db.get_session(sid, runs=1).runs] == [5]


# -- run leases: a run whose process died ends as `error` -------------------------------


def test_expired_running_runs_are_failed_once_and_the_rest_left_alone(db, sid):
    now = dt.datetime.now(dt.timezone.utc)
    dead = db.append_run(Run(session_id=sid, status="running", input="q", lease_until=now - dt.timedelta(seconds=5)))
    alive = db.append_run(Run(session_id=sid, status="running", lease_until=now + dt.timedelta(seconds=60)))
    unowned = db.append_run(Run(session_id=sid, status="running"))
    done = db.append_run(Run(session_id=sid, status="completed", lease_until=now - dt.timedelta(seconds=5)))
    failed = db.fail_expired_runs(now=now)
    assert [r.run_id for r in failed] == [dead.run_id]
    stored = db.get_run(dead.run_id)
    assert stored.status == "error" and stored.input == "q" and stored.seq == dead.seq
    assert stored.metadata["error"]["type"] == "RunLeaseExpired"
    assert dump(failed[0]) == dump(stored)
    for run, status in ((alive, "running"), (unowned, "running"), (done, "completed")):
        assert db.get_run(run.run_id).status == status
    assert db.fail_expired_runs(now=now) == []  # once


def test_runs_the_caller_keeps_alive_are_not_failed(db, sid):
    now = dt.datetime.now(dt.timezone.utc)
    late = db.append_run(Run(session_id=sid, status="running", lease_until=now - dt.timedelta(seconds=5)))
    dead = db.append_run(Run(session_id=sid, status="running", lease_until=now - dt.timedelta(seconds=3)))
    assert [r.run_id for r in db.fail_expired_runs(now=now, alive=[late.run_id])] == [dead.run_id]
    assert db.get_run(late.run_id).status == "running"


def test_a_renewed_lease_keeps_the_run_alive(db, sid):
    now = dt.datetime.now(dt.timezone.utc)
    run = db.append_run(Run(session_id=sid, status="running", lease_until=now - dt.timedelta(seconds=1)))
    assert db.renew_run_lease(run.run_id, lease_seconds=30) is True
    assert db.get_run(run.run_id).lease_until > now + dt.timedelta(seconds=20)
    assert db.fail_expired_runs(now=now) == []
    assert db.get_run(run.run_id).status == "running"
    later = now + dt.timedelta(seconds=60)
    assert [r.run_id for r in db.fail_expired_runs(now=later)] == [run.run_id]
    assert db.renew_run_lease(run.run_id, lease_seconds=30) is False  # too late: it is an error now
    assert db.get_run(run.run_id).status == "error"


def test_run_lease_arguments_are_checked(db, sid):
    from agentkeep.db import InvalidInputError

    run = db.append_run(Run(session_id=sid, status="running"))
    for bad in (0, -1, "10", None):
        with pytest.raises(InvalidInputError):
            db.renew_run_lease(run.run_id, lease_seconds=bad)
    with pytest.raises(InvalidInputError):
        db.fail_expired_runs(limit=0)
    with pytest.raises(InvalidInputError):
        db.fail_expired_runs(now="yesterday")
    assert db.get_run(run.run_id).lease_until is None
    assert db.renew_run_lease("no-such-run", lease_seconds=10) is False


def test_failing_expired_runs_pages_through_many(db, sid):
    now = dt.datetime.now(dt.timezone.utc)
    runs = [db.append_run(Run(session_id=sid, status="running", lease_until=now - dt.timedelta(seconds=i + 1)))
            for i in range(7)]
    first = db.fail_expired_runs(now=now, limit=3)
    assert len(first) == 3
    rest = db.fail_expired_runs(now=now, limit=10)
    assert {r.run_id for r in first + rest} == {r.run_id for r in runs}
    assert {db.get_run(r.run_id).status for r in runs} == {"error"}


def test_delete_run_removes_one_run_only(db, sid):
    runs = [db.append_run(Run(session_id=sid, user_id="alice", content=i)) for i in range(3)]
    assert db.delete_run(runs[1].run_id, user_id="bob") is False
    assert db.get_run(runs[1].run_id) is not None
    assert db.delete_run(runs[1].run_id, user_id="alice") is True
    assert db.get_run(runs[1].run_id) is None
    assert [r.run_id for r in all_items(db.list_runs, sid)] == [runs[0].run_id, runs[2].run_id]
    assert db.delete_run(runs[1].run_id) is False
    # the id is free again: a run of that id can be appended anew, after the others
    again = db.append_run(Run(run_id=runs[1].run_id, session_id=sid, user_id="alice", content="again"))
    assert again.seq > runs[2].seq and db.get_run(again.run_id).content == "again"
