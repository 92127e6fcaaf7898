"""Eval runs: save, get, list, rename, delete."""

from __future__ import annotations

import pytest

from agentkeep.db import EvalRun, NotFoundError, OwnershipError

from ._helpers import T0, all_items, at, dump, ids, later_write


def _ev(db, user="alice", **kw):
    kw.setdefault("eval_type", "accuracy")
    return db.save_eval_run(EvalRun(user_id=user, **kw))


def test_save_and_get_round_trip(db):
    e = EvalRun(name="acc", eval_type="reliability", agent_id="ag", team_id="tm", workflow_id="wf", model="m",
                input={"q": "2+2"}, result={"answers": [4], "ok": True}, score=0.75, user_id="alice", created_at=T0)
    stored = db.save_eval_run(e)
    assert stored.created_at == T0 and stored.updated_at is not None
    got = db.get_eval_run(e.id)
    assert dump(got) == dump(stored)
    expected = dump(e, {"updated_at"})
    assert {k: v for k, v in dump(got).items() if k in expected} == expected


def test_save_again_keeps_created_at(db):
    e = _ev(db, name="v1", score=None)
    again = later_write(lambda: db.save_eval_run(EvalRun(id=e.id, user_id="alice", eval_type="accuracy",
                                                         name="v2", score=1.0)), e.updated_at)
    assert again.created_at == e.created_at
    got = db.get_eval_run(e.id)
    assert got.name == "v2" and got.score == 1.0


@pytest.mark.parametrize("intruder", ["bob", None])
def test_save_over_another_owner(db, intruder):
    e = _ev(db, name="mine")
    before = dump(db.get_eval_run(e.id))
    with pytest.raises(OwnershipError):
        db.save_eval_run(EvalRun(id=e.id, user_id=intruder, eval_type="accuracy", name="stolen"))
    assert dump(db.get_eval_run(e.id)) == before


def test_get_scoping(db):
    e = _ev(db)
    assert db.get_eval_run(e.id, user_id="alice").id == e.id
    assert db.get_eval_run(e.id, user_id="bob") is None
    assert db.get_eval_run("missing") is None


def test_list_eval_runs_filters_and_orders(db):
    a = _ev(db, agent_id="ag1", created_at=at(1))
    b = _ev(db, team_id="tm1", eval_type="performance", created_at=at(2))
    c = _ev(db, user="bob", workflow_id="wf1", agent_id="ag1", eval_type="agent_as_judge", created_at=at(3))

    def found(**kw):
        return [e.id for e in all_items(db.list_eval_runs, **kw)]

    assert found() == [c.id, b.id, a.id]
    assert found(order="created_desc") == [c.id, b.id, a.id]
    assert found(order="created_asc") == [a.id, b.id, c.id]
    assert found(user_id="alice") == [b.id, a.id]
    assert found(user_id="carol") == []
    assert found(agent_id="ag1") == [c.id, a.id]
    assert found(agent_id="ag1", user_id="alice") == [a.id]
    assert found(team_id="tm1") == [b.id]
    assert found(workflow_id="wf1") == [c.id]
    assert found(eval_type="performance") == [b.id]
    assert found(eval_type="reliability") == []
    assert db.list_eval_runs(user_id="alice", with_total=True, limit=1).total == 2


def test_rename_eval_run(db):
    e = _ev(db, name="old")
    renamed = db.rename_eval_run(e.id, "new", user_id="alice")
    assert renamed.name == "new" and renamed.id == e.id
    assert db.get_eval_run(e.id).name == "new"
    with pytest.raises(NotFoundError):
        db.rename_eval_run(e.id, "hijack", user_id="bob")
    with pytest.raises(NotFoundError):
        db.rename_eval_run("missing", "x")
    assert db.get_eval_run(e.id).name == "new"
    assert db.get_eval_run("missing") is None


def test_delete_eval_runs_counts_only_own(db):
    a1, a2 = _ev(db), _ev(db)
    b1 = _ev(db, user="bob")
    assert db.delete_eval_runs([a1.id, a2.id, b1.id, "missing"], user_id="alice") == 2
    assert db.get_eval_run(a1.id) is None and db.get_eval_run(a2.id) is None
    assert db.get_eval_run(b1.id) is not None
    assert db.delete_eval_runs([a1.id, b1.id]) == 1
    assert ids(all_items(db.list_eval_runs), "id") == set()
