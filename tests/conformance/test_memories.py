"""User memories: upsert, get, list, topics, stats, delete, clear."""

from __future__ import annotations

import pytest

from agentkeep.db import InvalidInputError, OwnershipError, UserMemory

from ._helpers import T0, all_items, dump, ids, later_write


def _mem(db, user="alice", **kw):
    kw.setdefault("memory", "likes tea")
    return db.upsert_memory(UserMemory(user_id=user, **kw))


def test_upsert_and_get_round_trip(db):
    m = UserMemory(user_id="alice", memory="Likes green tea", topics=["drinks", "tea"], input="I like tea",
                   feedback="ok", agent_id="ag", team_id="tm", created_at=T0)
    stored = db.upsert_memory(m)
    assert stored.created_at == T0 and stored.updated_at is not None
    got = db.get_memory(m.memory_id)
    assert dump(got) == dump(stored)
    expected = dump(m, {"updated_at"})
    assert {k: v for k, v in dump(got).items() if k in expected} == expected


def test_update_keeps_created_at_and_replaces_fields(db):
    first = _mem(db, memory="v1", topics=["a"])
    second = later_write(
        lambda: db.upsert_memory(UserMemory(memory_id=first.memory_id, user_id="alice", memory="v2")),
        first.updated_at,
    )
    assert second.created_at == first.created_at
    got = db.get_memory(first.memory_id)
    assert got.memory == "v2" and got.topics == [] and got.updated_at == second.updated_at


@pytest.mark.parametrize("intruder", ["bob", None])
def test_upsert_over_another_owner_raises_and_changes_nothing(db, intruder):
    m = _mem(db, memory="secret")
    before = dump(db.get_memory(m.memory_id))
    with pytest.raises(OwnershipError):
        db.upsert_memory(UserMemory(memory_id=m.memory_id, user_id=intruder, memory="stolen"))
    with pytest.raises(OwnershipError):
        db.upsert_memories([UserMemory(memory_id=m.memory_id, user_id=intruder, memory="stolen")])
    assert dump(db.get_memory(m.memory_id)) == before


def test_batch_with_a_foreign_record_changes_nothing(db):
    foreign = _mem(db, user="bob", memory="bob's")
    fresh = UserMemory(user_id="alice", memory="new")
    with pytest.raises(OwnershipError):
        db.upsert_memories([fresh, UserMemory(memory_id=foreign.memory_id, user_id="alice", memory="stolen")])
    assert db.get_memory(fresh.memory_id) is None
    assert db.get_memory(foreign.memory_id).memory == "bob's"


def test_ownerless_memory_cannot_be_claimed(db):
    m = db.upsert_memory(UserMemory(user_id=None, memory="global"))
    with pytest.raises(OwnershipError):
        db.upsert_memory(UserMemory(memory_id=m.memory_id, user_id="alice", memory="mine"))
    got = db.get_memory(m.memory_id)
    assert got.user_id is None and got.memory == "global"


def test_upsert_memories_batch(db):
    batch = [UserMemory(user_id="alice", memory=f"m{i}") for i in range(5)]
    stored = db.upsert_memories(batch)
    assert [m.memory_id for m in stored] == [m.memory_id for m in batch]
    assert all(m.created_at is not None for m in stored)
    assert ids(all_items(db.list_memories, user_id="alice"), "memory_id") == {m.memory_id for m in batch}
    assert db.upsert_memories([]) == []


def test_get_memory_scoping(db):
    m = _mem(db)
    assert db.get_memory(m.memory_id, user_id="alice").memory_id == m.memory_id
    assert db.get_memory(m.memory_id, user_id="bob") is None
    assert db.get_memory("missing") is None


def test_list_memories_filters(db):
    a = _mem(db, memory="Loves Green TEA", topics=["drinks", "tea"], agent_id="ag1")
    b = _mem(db, memory="hates coffee", topics=["drinks"], team_id="tm1")
    c = _mem(db, user="bob", memory="green tea too", topics=["tea", "drinks"], agent_id="ag1")

    def found(**kw):
        return ids(all_items(db.list_memories, **kw), "memory_id")

    assert found() == {a.memory_id, b.memory_id, c.memory_id}
    assert found(user_id="alice") == {a.memory_id, b.memory_id}
    assert found(user_id="carol") == set()
    assert found(agent_id="ag1") == {a.memory_id, c.memory_id}
    assert found(agent_id="ag1", user_id="alice") == {a.memory_id}
    assert found(team_id="tm1") == {b.memory_id}
    assert found(topics=["drinks"]) == {a.memory_id, b.memory_id, c.memory_id}
    assert found(topics=["drinks", "tea"]) == {a.memory_id, c.memory_id}
    assert found(topics=["tea", "nope"]) == set()
    assert found(search="green tea") == {a.memory_id, c.memory_id}
    assert found(search="GREEN") == {a.memory_id, c.memory_id}
    assert found(search="coffee", user_id="bob") == set()


def test_list_memories_orders(db):
    first = _mem(db, memory_id="m1")
    second = later_write(lambda: _mem(db, memory_id="m2"), first.updated_at)
    later_write(lambda: _mem(db, memory_id="m3"), second.updated_at)
    assert [m.memory_id for m in db.list_memories().items] == ["m3", "m2", "m1"]
    assert [m.memory_id for m in db.list_memories(order="updated_desc").items] == ["m3", "m2", "m1"]
    assert [m.memory_id for m in db.list_memories(order="updated_asc").items] == ["m1", "m2", "m3"]


def test_memory_topics(db):
    _mem(db, topics=["b", "a"])
    _mem(db, topics=["a", "c"])
    _mem(db, user="bob", topics=["z", "a"])
    assert db.memory_topics(user_id="alice") == ["a", "b", "c"]
    assert db.memory_topics(user_id="bob") == ["a", "z"]
    assert db.memory_topics(user_id="carol") == []
    assert db.memory_topics() == ["a", "b", "c", "z"]


def test_memory_stats(db):
    for user, n in (("carol", 2), ("alice", 3), ("bob", 1)):
        for i in range(n):
            _mem(db, user=user, memory=f"{user}{i}")
    page = db.memory_stats()
    assert [(s.user_id, s.memories) for s in page.items] == [("alice", 3), ("bob", 1), ("carol", 2)]
    for stat in page.items:
        newest = max(m.updated_at for m in all_items(db.list_memories, user_id=stat.user_id))
        assert stat.last_updated == newest


def test_delete_memory_scoping(db):
    m = _mem(db)
    assert db.delete_memory(m.memory_id, user_id="bob") is False
    assert db.get_memory(m.memory_id) is not None
    assert db.delete_memory(m.memory_id, user_id="alice") is True
    assert db.get_memory(m.memory_id) is None
    assert db.delete_memory(m.memory_id) is False


def test_delete_memories_counts_only_own(db):
    a1, a2 = _mem(db), _mem(db)
    b1 = _mem(db, user="bob")
    assert db.delete_memories([a1.memory_id, a2.memory_id, b1.memory_id, "missing"], user_id="alice") == 2
    assert db.get_memory(b1.memory_id) is not None
    assert db.get_memory(a1.memory_id) is None
    assert db.delete_memories([a1.memory_id, b1.memory_id]) == 1
    assert db.get_memory(b1.memory_id) is None


def test_clear_memories(db):
    for _ in range(3):
        _mem(db)
    kept = _mem(db, user="bob")
    assert db.clear_memories(user_id="alice") == 3
    assert db.list_memories(user_id="alice").items == []
    assert db.get_memory(kept.memory_id) is not None
    assert db.clear_memories(user_id="alice") == 0


def test_clear_memories_has_no_unscoped_wipe(db):
    m = _mem(db)
    with pytest.raises((InvalidInputError, TypeError)):
        db.clear_memories(user_id=None)
    with pytest.raises((InvalidInputError, TypeError)):
        db.clear_memories()
    assert db.get_memory(m.memory_id) is not None


def test_search_treats_wildcards_and_regex_literally(db):
    texts = ["100% sure", "100 percent", "snake_case", "snakeXcase", "a.*b", "axxb", "[abc]", "a", "back\\slash",
             "back slash"]
    made = {t: _mem(db, memory=t).memory_id for t in texts}

    def found(q):
        return {m.memory for m in all_items(db.list_memories, search=q)}

    assert found("0%") == {"100% sure"}
    assert found("e_c") == {"snake_case"}
    assert found(".*") == {"a.*b"}
    assert found("[abc]") == {"[abc]"}
    assert found("k\\s") == {"back\\slash"}
    assert found("%") == {"100% sure"}
    assert len(made) == len(texts)


def test_memory_stats_orders_user_ids_by_code_point(db):
    users = ["b", "B", "a", "A", "_x", "Z", "\u00e9", "e", "10", "9", "a b", "ab"]
    for u in users:
        _mem(db, user=u)
    got = [s.user_id for s in all_items(db.memory_stats, limit=5)]
    assert got == sorted(users)


def test_memory_stats_of_one_user(db):
    for user, n in (("carol", 2), ("alice", 3), ("bob", 1), ("bo", 1), ("bob2", 2)):
        for i in range(n):
            _mem(db, user=user, memory=f"{user}{i}")
    page = db.memory_stats(user_id="bob")
    assert [(s.user_id, s.memories) for s in page.items] == [("bob", 1)] and page.next_cursor is None
    newest = max(m.updated_at for m in all_items(db.list_memories, user_id="bob"))
    assert page.items[0].last_updated == newest
    assert [(s.user_id, s.memories) for s in db.memory_stats(user_id="alice", limit=1).items] == [("alice", 3)]
    assert db.memory_stats(user_id="dave").items == []
    # a cursor of the unscoped walk: the user's row comes only if it lies past it
    after_alice = db.memory_stats(limit=1).next_cursor
    assert [s.user_id for s in db.memory_stats(user_id="bob", cursor=after_alice).items] == ["bob"]
    assert db.memory_stats(user_id="alice", cursor=after_alice).items == []
