"""Sessions: upsert, get (with runs), list, rename, delete; revisions and ownership."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import ConflictError, NotFoundError, OwnershipError, Run, Session

from ._helpers import T0, UTC, all_items, at, dump, ids, later_write


def _sid(db, **kw):
    kw.setdefault("user_id", "alice")
    return db.upsert_session(Session(**kw)).session_id


def test_upsert_creates_with_revision_1_and_utc_timestamps(db):
    s = db.upsert_session(Session(user_id="alice", agent_id="ag", name="first", state={"k": 1}))
    assert s.revision == 1
    assert s.created_at is not None and s.created_at.utcoffset() == dt.timedelta(0)
    assert s.updated_at is not None and s.updated_at.utcoffset() == dt.timedelta(0)
    assert s.updated_at >= s.created_at
    got = db.get_session(s.session_id)
    assert dump(got, {"runs"}) == dump(s, {"runs"})
    assert got.state == {"k": 1} and got.name == "first" and got.agent_id == "ag"


def test_revision_is_assigned_by_the_db(db):
    s = db.upsert_session(Session(user_id="alice", revision=42))
    assert s.revision == 1
    s.revision = 99
    assert db.upsert_session(s).revision == 2


def test_every_write_adds_exactly_one_to_revision(db):
    s = db.upsert_session(Session(user_id="alice"))
    for expected in range(2, 6):
        s.name = f"name {expected}"
        s = db.upsert_session(s)
        assert s.revision == expected
        assert db.get_session(s.session_id).revision == expected
    renamed = db.rename_session(s.session_id, "renamed")
    assert renamed.revision == 6 and renamed.name == "renamed"
    got = db.get_session(s.session_id)
    assert got.revision == 6 and got.name == "renamed"


def test_created_at_kept_and_updated_at_assigned(db):
    s = db.upsert_session(Session(user_id="alice", created_at=T0))
    assert s.created_at == T0
    old = dt.datetime(2000, 1, 1, tzinfo=UTC)
    again = db.upsert_session(
        Session(session_id=s.session_id, user_id="alice", created_at=at(60 * 24), updated_at=old)
    )
    assert again.created_at == T0
    assert again.updated_at != old and again.updated_at >= s.updated_at
    assert db.get_session(s.session_id).created_at == T0


def test_upsert_replaces_the_sessions_own_fields(db):
    s = db.upsert_session(
        Session(user_id="alice", name="n", state={"a": 1}, metadata={"m": 1}, summary={"s": "x"}, team_id="t")
    )
    db.upsert_session(Session(session_id=s.session_id, user_id="alice", state={"b": 2}, session_type="team"))
    got = db.get_session(s.session_id)
    assert got.state == {"b": 2} and got.metadata == {} and got.summary is None
    assert got.name is None and got.team_id is None and got.session_type == "team"


def test_upsert_ignores_runs_on_the_session(db):
    sid = "with-runs"
    db.upsert_session(Session(session_id=sid, user_id="alice", runs=[Run(session_id=sid, user_id="alice")]))
    assert db.list_runs(sid).items == []
    assert db.get_session(sid, runs=-1).runs == []


def test_expected_revision_compare_and_set(db):
    s = db.upsert_session(Session(user_id="alice", name="v1"), expected_revision=0)
    assert s.revision == 1
    with pytest.raises(ConflictError):
        db.upsert_session(Session(session_id=s.session_id, user_id="alice", name="dup"), expected_revision=0)
    v2 = db.upsert_session(Session(session_id=s.session_id, user_id="alice", name="v2"), expected_revision=1)
    assert v2.revision == 2
    with pytest.raises(ConflictError):
        db.upsert_session(Session(session_id=s.session_id, user_id="alice", name="stale"), expected_revision=1)
    with pytest.raises(ConflictError):
        db.upsert_session(Session(session_id=s.session_id, user_id="alice", name="future"), expected_revision=3)
    got = db.get_session(s.session_id)
    assert got.name == "v2" and got.revision == 2
    assert db.upsert_session(got, expected_revision=2).revision == 3


def test_expected_revision_on_a_missing_session_conflicts(db):
    s = Session(user_id="alice")
    with pytest.raises(ConflictError):
        db.upsert_session(s, expected_revision=1)
    assert db.get_session(s.session_id) is None


@pytest.mark.parametrize("intruder", ["bob", None])
def test_upsert_over_another_owner_raises_and_changes_nothing(db, intruder):
    s = db.upsert_session(Session(user_id="alice", name="mine", state={"a": 1}))
    before = dump(db.get_session(s.session_id), {"runs"})
    with pytest.raises(OwnershipError):
        db.upsert_session(Session(session_id=s.session_id, user_id=intruder, name="stolen", state={}))
    with pytest.raises(OwnershipError):
        db.upsert_session(
            Session(session_id=s.session_id, user_id=intruder, name="stolen"), expected_revision=1
        )
    assert dump(db.get_session(s.session_id), {"runs"}) == before


def test_session_without_owner_cannot_be_claimed_by_a_user(db):
    s = db.upsert_session(Session(user_id=None, name="server"))
    with pytest.raises(OwnershipError):
        db.upsert_session(Session(session_id=s.session_id, user_id="alice", name="mine now"))
    got = db.get_session(s.session_id)
    assert got.user_id is None and got.name == "server" and got.revision == 1


def test_get_session_scoping(db):
    sid = _sid(db)
    assert db.get_session(sid, user_id="alice").session_id == sid
    assert db.get_session(sid).session_id == sid
    assert db.get_session(sid, user_id="bob") is None
    assert db.get_session(sid, user_id="bob", runs=-1) is None
    assert db.get_session("does-not-exist") is None


def test_get_session_runs_none_n_all(db):
    sid = _sid(db)
    appended = [db.append_run(Run(session_id=sid, content=i)) for i in range(5)]
    assert not db.get_session(sid).runs
    last2 = db.get_session(sid, runs=2).runs
    assert [r.run_id for r in last2] == [r.run_id for r in appended[-2:]]
    every = db.get_session(sid, runs=-1).runs
    assert [r.run_id for r in every] == [r.run_id for r in appended]
    assert [r.content for r in every] == [0, 1, 2, 3, 4]
    assert [r.seq for r in every] == sorted(r.seq for r in every)
    assert len(db.get_session(sid, runs=50).runs) == 5


def test_list_sessions_never_loads_runs(db):
    sid = _sid(db)
    db.append_run(Run(session_id=sid))
    items = db.list_sessions().items
    assert [s.session_id for s in items] == [sid]
    assert not items[0].runs


def test_list_sessions_filters(db):
    a = _sid(db, session_type="agent", agent_id="ag1", name="Alpha project")
    b = _sid(db, session_type="team", team_id="tm1", name="beta")
    c = _sid(db, user_id="bob", session_type="workflow", workflow_id="wf1", name="gamma")

    def found(**kw):
        return ids(all_items(db.list_sessions, **kw), "session_id")

    assert found() == {a, b, c}
    assert found(user_id="alice") == {a, b}
    assert found(user_id="bob") == {c}
    assert found(user_id="carol") == set()
    assert found(session_type="team") == {b}
    assert found(agent_id="ag1") == {a}
    assert found(team_id="tm1") == {b}
    assert found(workflow_id="wf1") == {c}
    assert found(workflow_id="wf1", user_id="alice") == set()
    assert found(name_contains="pha pro") == {a}
    assert found(name_contains="amm") == {c}
    assert found(user_id="alice", session_type="agent") == {a}


def test_list_sessions_updated_after_and_before(db):
    s1 = db.upsert_session(Session(session_id="s1", user_id="alice"))
    s2 = later_write(lambda: db.upsert_session(Session(session_id="s2", user_id="alice")), s1.updated_at)
    s3 = later_write(lambda: db.upsert_session(Session(session_id="s3", user_id="alice")), s2.updated_at)

    def found(**kw):
        return ids(all_items(db.list_sessions, **kw), "session_id")

    after = found(updated_after=s2.updated_at)
    assert "s3" in after and "s1" not in after
    before = found(updated_before=s2.updated_at)
    assert "s1" in before and "s3" not in before
    assert found(updated_after=s1.updated_at, updated_before=s3.updated_at) == {"s2"}
    assert found(updated_after=s3.updated_at + dt.timedelta(hours=1)) == set()
    assert found(updated_before=s1.updated_at - dt.timedelta(hours=1)) == set()


def test_rename_session(db):
    sid = _sid(db, name="old")
    renamed = db.rename_session(sid, "new", user_id="alice")
    assert renamed.name == "new" and renamed.session_id == sid and renamed.revision == 2
    assert db.get_session(sid).name == "new"


def test_rename_missing_or_foreign_session_is_not_found(db):
    sid = _sid(db, name="old")
    with pytest.raises(NotFoundError):
        db.rename_session("missing", "x")
    with pytest.raises(NotFoundError):
        db.rename_session(sid, "hijacked", user_id="bob")
    got = db.get_session(sid)
    assert got.name == "old" and got.revision == 1
    assert db.get_session("missing") is None


def test_delete_session_scoping(db):
    sid = _sid(db)
    assert db.delete_session(sid, user_id="bob") is False
    assert db.get_session(sid) is not None
    assert db.delete_session(sid, user_id="alice") is True
    assert db.get_session(sid) is None
    assert db.delete_session(sid) is False
    assert db.delete_session("missing") is False


def test_delete_session_deletes_its_runs(db):
    sid = _sid(db)
    other = _sid(db)
    runs = [db.append_run(Run(session_id=sid)) for _ in range(3)]
    kept = db.append_run(Run(session_id=other))
    assert db.delete_session(sid) is True
    assert all(db.get_run(r.run_id) is None for r in runs)
    assert db.get_run(kept.run_id) is not None
    # a new session under the same id starts without the old runs
    db.upsert_session(Session(session_id=sid, user_id="alice"))
    assert db.list_runs(sid).items == []
    assert db.get_session(sid, runs=-1).runs == []


def test_delete_sessions_counts_only_own(db):
    a1, a2 = _sid(db), _sid(db)
    b1 = _sid(db, user_id="bob")
    run_a1 = db.append_run(Run(session_id=a1))
    run_b1 = db.append_run(Run(session_id=b1))
    assert db.delete_sessions([a1, a2, b1, "missing"], user_id="alice") == 2
    assert db.get_session(a1) is None and db.get_session(a2) is None
    assert db.get_session(b1).user_id == "bob"
    assert db.get_run(run_a1.run_id) is None
    assert db.get_run(run_b1.run_id) is not None
    assert db.delete_sessions([a1, b1]) == 1
    assert db.get_session(b1) is None
    assert db.delete_sessions([]) == 0


def test_append_run_bumps_updated_at_but_not_revision(db):
    s1 = db.upsert_session(Session(session_id="older", user_id="alice"))
    s2 = later_write(lambda: db.upsert_session(Session(session_id="newer", user_id="alice")), s1.updated_at)
    for _ in range(100_000):
        db.append_run(Run(session_id="older"))
        got = db.get_session("older")
        if got.updated_at > s2.updated_at:
            break
    else:
        raise AssertionError("append_run never advanced the session's updated_at")
    assert got.revision == 1
    order = [s.session_id for s in db.list_sessions(order="updated_desc").items]
    assert order == ["older", "newer"]
    assert [s.session_id for s in db.list_sessions().items] == order  # the default order
    assert [s.session_id for s in db.list_sessions(order="updated_asc").items] == ["newer", "older"]
    # a concurrent compare-and-set on the session's own fields is not disturbed by runs
    assert db.upsert_session(Session(session_id="older", user_id="alice"), expected_revision=1).revision == 2


def test_name_contains_treats_wildcards_literally(db):
    for name in ("50% off", "50 off", "a_b", "axb", "x.*y", "xzzy"):
        _sid(db, session_id=name.replace("%", "pct").replace("*", "star"), name=name)

    def found(q):
        return {s.name for s in all_items(db.list_sessions, name_contains=q)}

    assert found("0%") == {"50% off"}
    assert found("a_b") == {"a_b"}
    assert found(".*") == {"x.*y"}


def test_ownerless_session_is_invisible_to_scoped_reads(db):
    sid = _sid(db, user_id=None)
    assert db.get_session(sid, user_id="alice") is None
    assert db.list_sessions(user_id="alice").items == []
    assert db.delete_session(sid, user_id="alice") is False
    with pytest.raises(NotFoundError):
        db.rename_session(sid, "mine", user_id="alice")
    assert db.get_session(sid).session_id == sid
