"""Searching as a user: shared contents and the user's own, never another user's, on every
store and for every search type, with `limit` hits even when most chunks are someone else's;
the owner each chunk carries, and chunks written before they carried one."""

from __future__ import annotations

import asyncio

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge import OWNER_KEY, Knowledge

SEARCH_TYPES = ["vector", "keyword", "hybrid"]


@pytest.fixture
def kb(vector_store, contents_db, embedder):
    return Knowledge(vector_store, contents_db=contents_db, embedder=embedder, name="kb")


@pytest.fixture
def owned(kb):
    """Two shared contents, two of alice's, two of bob's, all about rotating keys."""
    rows = {}
    for who in (None, "alice", "bob"):
        for i in range(2):
            name = f"{who or 'shared'}-{i}"
            rows[name] = kb.add_content(text=f"Rotate the API keys: note {i} by {who or 'everyone'}.", name=name,
                                        user_id=who)
    return rows


def owners(hits, rows):
    by_id = {r.id: r.user_id for r in rows.values()}
    return sorted({by_id[h.content_id] or "" for h in hits})


@pytest.mark.parametrize("search_type", SEARCH_TYPES)
def test_a_user_sees_shared_contents_and_their_own_only(kb, owned, search_type):
    def search(**kwargs):
        return kb.search("rotate api keys", search_type=search_type, limit=20, **kwargs)

    assert owners(search(user_id="alice"), owned) == ["", "alice"] and len(search(user_id="alice")) == 4
    assert owners(search(user_id="bob"), owned) == ["", "bob"]
    assert owners(search(user_id="carol"), owned) == [""]
    assert owners(search(), owned) == ["", "alice", "bob"]  # no user: everything, as before
    assert search(user_id="alice", filters={"missing": 1}) == []
    assert all(OWNER_KEY not in h.metadata for h in search(user_id="alice"))  # hits keep the metadata given


@pytest.mark.parametrize("search_type", SEARCH_TYPES)
def test_the_scope_does_not_cut_the_hits_short(kb, search_type):
    # bob's chunks are most of the store and match the query best: a scope applied to the
    # store's top hits afterwards would leave fewer than `limit`
    for i in range(45):
        kb.add_content(text=f"rotate api keys {i}", name=f"bob-{i}", user_id="bob")
    visible = [kb.add_content(text=f"How to rotate the API keys of project {name}, step {i}, with care.",
                              name=f"{name}-{i}", user_id=user)
               for i in range(3) for name, user in (("shared", None), ("alice", "alice"))]
    hits = kb.search("rotate api keys", search_type=search_type, limit=5, user_id="alice")
    assert len(hits) == 5 and {h.content_id for h in hits} <= {r.id for r in visible}
    unscoped = kb.search("rotate api keys", search_type=search_type, limit=5)
    assert len(unscoped) == 5
    if search_type == "vector":  # bob's chunks are the nearest (keyword scores differ by store)
        assert not {h.content_id for h in unscoped} & {r.id for r in visible}


def test_chunks_carry_their_owner(kb, owned, vector_store):
    for name, row in owned.items():
        assert vector_store.count(content_id=row.id, filters={OWNER_KEY: row.user_id or ""}) == 1, name
    # re-added, forced or changed, a content's chunks keep its owner
    forced = kb.add_content(text="Rotate the API keys: note 1 by alice.", name="alice-1", user_id="alice", force=True)
    changed = kb.add_content(text="Keys are rotated for you now.", name="bob-0", user_id="bob")
    shared = kb.add_content(text="Keys are rotated for everyone now.", name="shared-1")
    assert (forced.id, changed.id, shared.id) == (owned["alice-1"].id, owned["bob-0"].id, owned["shared-1"].id)
    for row, owner in ((forced, "alice"), (changed, "bob"), (shared, "")):
        assert vector_store.count(content_id=row.id, filters={OWNER_KEY: owner}) == vector_store.count(
            content_id=row.id) == 1


def test_the_owner_key_is_reserved(kb, vector_store, contents_db):
    kb.add_content(text="seed")
    count = vector_store.count()
    with pytest.raises(InvalidInputError, match="'_owner' is reserved"):
        kb.add_content(text="mine", metadata={OWNER_KEY: "bob"})
    with pytest.raises(InvalidInputError, match="'_owner' is set by user_id"):
        kb.search("seed", user_id="alice", filters={OWNER_KEY: "bob"})
    for bad in ("", 5, "a\nb"):
        with pytest.raises(InvalidInputError, match="user_id"):
            kb.search("seed", user_id=bad)
        with pytest.raises(InvalidInputError, match="user_id"):
            kb.add_content(text="theirs", user_id=bad)
    with pytest.raises(InvalidInputError, match="filters"):
        kb.search("seed", user_id="alice", filters=["team"])
    assert vector_store.count() == count and len(kb.list_contents(limit=100).items) == 1
    # without a user, the owner is a filter like any other: shared contents only
    assert [h.content for h in kb.search("seed", search_type="keyword", filters={OWNER_KEY: ""})] == ["seed"]


def test_scopes_combine_with_filters_and_the_async_twin(kb, owned):
    kb.add_content(text="Rotate the API keys in the ops runbook.", name="ops", user_id="alice",
                   metadata={"team": "ops"})
    hits = asyncio.run(kb.asearch("rotate keys", search_type="keyword", limit=20, user_id="alice",
                                  filters={"team": "ops"}))
    assert [h.metadata for h in hits] == [{"team": "ops"}]


def unmark(store, rows):
    """Rewrite the rows' chunks as they were written before chunks carried an owner."""
    chunks = store.get([f"{r.id}:0" for r in rows])
    store.upsert([c.model_copy(update={"metadata": {k: v for k, v in c.metadata.items() if k != OWNER_KEY}})
                  for c in chunks])


def test_chunks_without_an_owner_are_marked_without_embedding_again(kb, owned, vector_store, embedder):
    unmark(vector_store, owned.values())
    assert kb.search("rotate api keys", search_type="keyword", limit=20, user_id="alice") == []
    assert len(kb.search("rotate api keys", search_type="keyword", limit=20)) == 6  # unscoped: as before
    texts = embedder.texts
    assert kb.mark_owners() == 6 and kb.mark_owners() == 0
    assert embedder.texts == texts
    assert owners(kb.search("rotate api keys", search_type="keyword", limit=20, user_id="alice"), owned) == [
        "", "alice"]
    assert vector_store.get([f"{owned['bob-0'].id}:0"])[0].embedding is not None


def test_adding_unchanged_content_marks_its_chunks(kb, owned, vector_store, embedder):
    unmark(vector_store, [owned["alice-0"]])
    texts = embedder.texts
    again = kb.add_content(text="Rotate the API keys: note 0 by alice.", name="alice-0", user_id="alice")
    assert again.updated_at == owned["alice-0"].updated_at and embedder.texts == texts  # unchanged
    assert vector_store.count(content_id=again.id, filters={OWNER_KEY: "alice"}) == 1
    assert asyncio.run(kb.amark_owners()) == 0
