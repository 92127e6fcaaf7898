"""Knowledge contents: own rows, shared rows (user_id None), filters, deletes."""

from __future__ import annotations

import pytest

from agentkeep.db import KnowledgeContent, OwnershipError

from ._helpers import T0, all_items, dump, ids, later_write


def _kc(db, user="alice", **kw):
    return db.upsert_knowledge(KnowledgeContent(user_id=user, **kw))


def test_upsert_and_get_round_trip(db):
    k = KnowledgeContent(name="doc.pdf", description="a doc", metadata={"pages": 3, "tags": ["x"]}, type="pdf",
                         size=1234, linked_to="kb1", status="completed", status_message="ok",
                         external_id="ext-1", user_id="alice", created_at=T0)
    stored = db.upsert_knowledge(k)
    assert stored.created_at == T0 and stored.updated_at is not None
    got = db.get_knowledge(k.id)
    assert dump(got) == dump(stored)
    expected = dump(k, {"updated_at"})
    assert {key: v for key, v in dump(got).items() if key in expected} == expected


def test_update_keeps_created_at(db):
    first = _kc(db, name="v1")
    again = later_write(lambda: db.upsert_knowledge(KnowledgeContent(id=first.id, user_id="alice", name="v2",
                                                                   status="failed")), first.updated_at)
    assert again.created_at == first.created_at
    got = db.get_knowledge(first.id)
    assert got.name == "v2" and got.status == "failed"


def test_shared_rows_are_visible_to_every_user(db):
    shared = _kc(db, user=None, name="shared")
    own = _kc(db, name="own")
    foreign = _kc(db, user="bob", name="foreign")
    assert db.get_knowledge(shared.id, user_id="alice").id == shared.id
    assert db.get_knowledge(own.id, user_id="alice").id == own.id
    assert db.get_knowledge(foreign.id, user_id="alice") is None
    assert db.get_knowledge(foreign.id).id == foreign.id
    assert db.get_knowledge("missing") is None
    assert ids(all_items(db.list_knowledge, user_id="alice"), "id") == {shared.id, own.id}
    assert ids(all_items(db.list_knowledge, user_id="bob"), "id") == {shared.id, foreign.id}
    assert ids(all_items(db.list_knowledge), "id") == {shared.id, own.id, foreign.id}
    assert db.list_knowledge(user_id="alice", with_total=True).total == 2


def test_scoped_delete_removes_only_own_rows(db):
    shared = _kc(db, user=None)
    own = _kc(db)
    foreign = _kc(db, user="bob")
    assert db.delete_knowledge(shared.id, user_id="alice") is False
    assert db.delete_knowledge(foreign.id, user_id="alice") is False
    assert db.get_knowledge(shared.id) is not None and db.get_knowledge(foreign.id) is not None
    assert db.delete_knowledge(own.id, user_id="alice") is True
    assert db.get_knowledge(own.id) is None
    assert db.delete_knowledge(own.id) is False
    assert db.delete_knowledge(shared.id) is True
    assert db.get_knowledge(shared.id) is None


@pytest.mark.parametrize(
    "owner,intruder", [("alice", "bob"), ("alice", None), (None, "alice")], ids=["user-user", "user-none", "none-user"]
)
def test_upsert_over_another_owner_raises_and_changes_nothing(db, owner, intruder):
    k = _kc(db, user=owner, name="original", metadata={"a": 1})
    before = dump(db.get_knowledge(k.id))
    with pytest.raises(OwnershipError):
        db.upsert_knowledge(KnowledgeContent(id=k.id, user_id=intruder, name="stolen"))
    assert dump(db.get_knowledge(k.id)) == before


def test_list_knowledge_filters(db):
    a = _kc(db, linked_to="kb1", status="completed")
    b = _kc(db, linked_to="kb1", status="processing")
    c = _kc(db, linked_to="kb2", status="completed")

    def found(**kw):
        return ids(all_items(db.list_knowledge, **kw), "id")

    assert found(linked_to="kb1") == {a.id, b.id}
    assert found(status="completed") == {a.id, c.id}
    assert found(linked_to="kb1", status="completed") == {a.id}
    assert found(linked_to="kb3") == set()
    assert found(linked_to="kb1", user_id="bob") == set()


def test_list_knowledge_orders(db):
    k1 = _kc(db, id="k1")
    k2 = later_write(lambda: _kc(db, id="k2"), k1.updated_at)
    later_write(lambda: _kc(db, id="k3"), k2.updated_at)
    assert [k.id for k in db.list_knowledge().items] == ["k3", "k2", "k1"]
    assert [k.id for k in db.list_knowledge(order="updated_asc").items] == ["k1", "k2", "k3"]
    assert [k.id for k in db.list_knowledge(order="updated_desc").items] == ["k3", "k2", "k1"]
