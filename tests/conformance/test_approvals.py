"""Approvals: create, get, list, resolve (once), count, delete."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import Approval, ConflictError, InvalidInputError, NotFoundError, OwnershipError

from ._helpers import T0, UTC, all_items, at, dump, ids


def _ap(db, user="alice", **kw):
    return db.create_approval(Approval(user_id=user, tool_name="rm", tool_args={"path": "/"}, **kw))


def test_create_and_get_round_trip(db):
    a = Approval(user_id="alice", run_id="r1", session_id="s1", agent_id="ag", team_id="tm", workflow_id="wf",
                 tool_name="transfer", tool_args={"amount": 10, "to": "bob"}, context={"why": "asked"},
                 requested_by="agent", created_at=T0)
    stored = db.create_approval(a)
    assert stored.status == "pending" and stored.created_at == T0
    assert stored.resolved_by is None and stored.resolved_at is None
    got = db.get_approval(a.id)
    assert dump(got) == dump(stored)
    assert {k: v for k, v in dump(got).items() if k in dump(a)} == dump(a)


def test_create_on_existing_id_conflicts(db):
    a = _ap(db, context={"v": 1})
    before = dump(db.get_approval(a.id))
    with pytest.raises(ConflictError):
        db.create_approval(Approval(id=a.id, user_id="alice", context={"v": 2}))
    assert dump(db.get_approval(a.id)) == before


@pytest.mark.parametrize("intruder", ["bob", None])
def test_create_over_another_owner_raises_ownership(db, intruder):
    a = _ap(db)
    before = dump(db.get_approval(a.id))
    with pytest.raises(OwnershipError):
        db.create_approval(Approval(id=a.id, user_id=intruder))
    assert dump(db.get_approval(a.id)) == before


def test_get_approval_scoping(db):
    a = _ap(db)
    assert db.get_approval(a.id, user_id="alice").id == a.id
    assert db.get_approval(a.id, user_id="bob") is None
    assert db.get_approval("missing") is None


def test_resolve_once(db):
    a = _ap(db)
    resolved = db.resolve_approval(a.id, status="approved", resolved_by="admin", resolution={"note": "ok"},
                                   user_id="alice")
    assert resolved.status == "approved" and resolved.resolved_by == "admin"
    assert resolved.resolution == {"note": "ok"}
    assert resolved.resolved_at is not None and resolved.resolved_at.utcoffset() == dt.timedelta(0)
    assert dump(db.get_approval(a.id)) == dump(resolved)
    with pytest.raises(ConflictError):
        db.resolve_approval(a.id, status="rejected", resolved_by="other")
    got = db.get_approval(a.id)
    assert got.status == "approved" and got.resolved_by == "admin"


@pytest.mark.parametrize("status", ["rejected", "expired"])
def test_resolve_to_other_final_states(db, status):
    a = _ap(db)
    assert db.resolve_approval(a.id, status=status, resolved_by="admin").status == status
    assert db.get_approval(a.id).status == status
    with pytest.raises(ConflictError):
        db.resolve_approval(a.id, status="approved", resolved_by="admin")


@pytest.mark.parametrize("status", ["pending", "maybe", ""])
def test_resolve_with_bad_status_is_invalid(db, status):
    a = _ap(db)
    with pytest.raises(InvalidInputError):
        db.resolve_approval(a.id, status=status, resolved_by="admin")
    got = db.get_approval(a.id)
    assert got.status == "pending" and got.resolved_by is None


def test_resolve_foreign_or_missing_is_not_found(db):
    a = _ap(db)
    with pytest.raises(NotFoundError):
        db.resolve_approval(a.id, status="approved", resolved_by="bob", user_id="bob")
    with pytest.raises(NotFoundError):
        db.resolve_approval("missing", status="approved", resolved_by="admin")
    got = db.get_approval(a.id)
    assert got.status == "pending" and got.resolved_by is None


def test_resolving_an_expired_approval_conflicts_and_marks_it_expired(db):
    a = _ap(db, expires_at=dt.datetime(2001, 1, 1, tzinfo=UTC))
    with pytest.raises(ConflictError):
        db.resolve_approval(a.id, status="approved", resolved_by="admin")
    got = db.get_approval(a.id)
    assert got.status == "expired"
    assert got.resolved_by != "admin"


def test_list_approvals_filters_and_orders(db):
    a1 = _ap(db, run_id="r1", session_id="s1", agent_id="ag1", created_at=at(1))
    a2 = _ap(db, run_id="r2", session_id="s1", agent_id="ag2", created_at=at(2))
    b1 = _ap(db, user="bob", run_id="r3", session_id="s2", agent_id="ag1", created_at=at(3))
    db.resolve_approval(a2.id, status="rejected", resolved_by="admin")

    def found(**kw):
        return [a.id for a in all_items(db.list_approvals, **kw)]

    assert found() == [b1.id, a2.id, a1.id]
    assert found(order="created_desc") == [b1.id, a2.id, a1.id]
    assert found(order="created_asc") == [a1.id, a2.id, b1.id]
    assert found(user_id="alice") == [a2.id, a1.id]
    assert found(user_id="carol") == []
    assert found(status="pending") == [b1.id, a1.id]
    assert found(status="rejected") == [a2.id]
    assert found(status="pending", user_id="alice") == [a1.id]
    assert found(session_id="s1") == [a2.id, a1.id]
    assert found(run_id="r3") == [b1.id]
    assert found(agent_id="ag1") == [b1.id, a1.id]
    assert found(agent_id="ag1", user_id="bob") == [b1.id]
    assert db.list_approvals(status="pending", with_total=True, limit=1).total == 2


def test_count_pending_approvals(db):
    a1 = _ap(db)
    _ap(db)
    _ap(db, user="bob")
    assert db.count_pending_approvals() == 3
    assert db.count_pending_approvals(user_id="alice") == 2
    assert db.count_pending_approvals(user_id="carol") == 0
    db.resolve_approval(a1.id, status="approved", resolved_by="admin")
    assert db.count_pending_approvals(user_id="alice") == 1
    assert db.count_pending_approvals() == 2


def test_delete_approval_scoping(db):
    a = _ap(db)
    assert db.delete_approval(a.id, user_id="bob") is False
    assert db.get_approval(a.id) is not None
    assert db.delete_approval(a.id, user_id="alice") is True
    assert db.get_approval(a.id) is None
    assert db.delete_approval(a.id) is False
    b = _ap(db, user="bob")
    assert db.delete_approval(b.id) is True
    assert ids(all_items(db.list_approvals), "id") == set()
