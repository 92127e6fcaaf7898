"""QdrantDb beyond the conformance suite, on qdrant-client's local mode: the point id mapping,
the payload layout and filter translation, BM25 through the sparse vector equal to the
reference store's, an older collection given its sparse vector, persistence in a folder,
shared clients, and what the constructor refuses."""

from __future__ import annotations

import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES, _scratch_dir

QDRANT = next(s for s in STORES if s.name == "qdrant")


@pytest.fixture
def folder():
    require(QDRANT)
    import shutil

    path = _scratch_dir("agentkeep-qdrant-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def memory_client():
    require(QDRANT)
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    yield client
    client.close()


def make(client, name="kb", **options):
    from agentkeep.vector_db.qdrant import QdrantDb

    return QdrantDb(name, client=client, **options)


def test_chunk_ids_map_to_uuid5_points_with_the_id_in_the_payload(memory_client):
    from agentkeep.vector_db.qdrant import point_id

    store = make(memory_client)
    store.create(2)
    ids = ["a", "A", "x" * 1024, "ü/'\"*"]
    store.upsert([Chunk(id=i, content="words here", embedding=[1, 0]) for i in ids])
    assert point_id("a") == point_id("a") != point_id("A")
    assert uuid.UUID(point_id("a")).version == 5
    records = memory_client.retrieve("kb", ids=[point_id(i) for i in ids], with_payload=True)
    assert sorted(r.payload["chunk_id"] for r in records) == sorted(ids)
    assert {r.id for r in records} == {point_id(i) for i in ids}


def test_payload_layout(memory_client):
    from agentkeep.vector_db.qdrant import field_name, point_id

    store = make(memory_client)
    store.create(2)
    meta = {"team": "ops", "n": 3, "x": 1.5, "ok": True, "tags": ["a"], "obj": {"b": 1}, "none": None,
            "$odd.key": "v", "h-plain": 1, "big": 2**64}
    store.upsert([Chunk(id="a", content="Rotating the API keys, rotated keys", embedding=[3, 4], metadata=meta,
                        content_id="c", position=2)])
    [record] = memory_client.retrieve("kb", ids=[point_id("a")], with_payload=True, with_vectors=True)
    p = record.payload
    assert p["terms"] == ["rotat", "api", "key"] and p["text"] == "rotat api key rotat key"
    assert p["metadata"] == meta and (p["content_id"], p["position"]) == ("c", 2)
    assert p["f"] == {
        "s": {"team": "ops", field_name("$odd.key"): "v"},
        "i": {"n": 3, field_name("h-plain"): 1},
        "n": {"x": 1.5, "big": float(2**64)},
        "b": {"ok": True},
    }
    assert field_name("$odd.key").startswith("h-") and field_name("h-plain").startswith("h-")
    assert p["norm"] == pytest.approx(5.0)  # cosine: Qdrant keeps the unit vector ...
    assert record.vector["dense"] == pytest.approx([0.6, 0.8])
    assert store.get(["a"])[0].embedding == pytest.approx([3, 4])  # ... and get() gives back the original


def test_filter_translation():
    require(QDRANT)
    from qdrant_client import models

    from agentkeep.vector_db.qdrant import field_name, filter_conditions

    conds = filter_conditions({"team": "ops", "ok": False, "n": 2, "x": 2.5, "a.b": "v"})
    assert conds[0] == models.FieldCondition(key="f.s.team", match=models.MatchValue(value="ops"))
    assert conds[1] == models.FieldCondition(key="f.b.ok", match=models.MatchValue(value=False))
    assert conds[2] == models.Filter(should=[
        models.FieldCondition(key="f.n.n", range=models.Range(gte=2, lte=2)),
        models.FieldCondition(key="f.i.n", match=models.MatchValue(value=2)),
    ])
    assert conds[3] == models.Filter(should=[models.FieldCondition(key="f.n.x", range=models.Range(gte=2.5, lte=2.5))])
    assert conds[4].key == f"f.s.{field_name('a.b')}"


def test_numbers_match_by_exact_value_beyond_double_precision(memory_client):
    store = make(memory_client)
    store.create(2)
    store.upsert([
        Chunk(id="int", content="x", embedding=[1, 0], metadata={"n": 2**62}),
        Chunk(id="next", content="x", embedding=[1, 0], metadata={"n": 2**62 + 1}),
        Chunk(id="float", content="x", embedding=[1, 0], metadata={"n": float(2**62)}),
        Chunk(id="odd key", content="x", embedding=[1, 0], metadata={"$key.with.dots": True, "a\"b": 1}),
        Chunk(id="huge", content="x", embedding=[1, 0], metadata={"n": 2**64 + 1}),
    ])
    assert store.count(filters={"n": 2**64 + 1}) == 1  # past 64 bits, by its float value
    assert store.count(filters={"n": 2**62}) == 2
    assert store.count(filters={"n": 2**62 + 1}) == 1
    assert store.count(filters={"n": float(2**62)}) == 2
    assert store.count(filters={"$key.with.dots": True, "a\"b": 1.0}) == 1
    assert store.count(filters={"$key.with.dots": 1}) == 0


KEYWORD_DOCS = {
    "a": "Restore a database from a snapshot in the backups tab.",
    "b": "Nightly database snapshots are kept for thirty days.",
    "c": "Slow database queries: add an index and check the query plan, database, database.",
    "d": "Invoices are emailed on the first day of each month.",
    "e": "The of and",  # no terms: still one of the chunks BM25 counts
}


def test_keyword_scores_are_the_reference_bm25(memory_client):
    from agentkeep.vector_db.text import terms

    # the sparse weights assume bm25_avg_length: at the corpus' true average they are BM25's
    average = sum(len(terms(t)) for t in KEYWORD_DOCS.values()) / len(KEYWORD_DOCS)
    store, reference = make(memory_client, bm25_avg_length=average), InMemoryVectorDb()
    for s in (store, reference):
        s.create(2)
        s.upsert([Chunk(id=i, content=t, embedding=[1, 0]) for i, t in KEYWORD_DOCS.items()])
    for query in ("database", "database snapshot", "database -snapshot", "month", "how do I restore my database?",
                  "+snapshot database", '"database snapshots"', 'database -"database snapshots"', "zebra"):
        got = [(h.id, h.score) for h in store.search(query, search_type="keyword", limit=10)]
        want = [(h.id, h.score) for h in reference.search(query, search_type="keyword", limit=10)]
        assert [i for i, _ in got] == [i for i, _ in want], query
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5), query


def test_the_bm25_sparse_vector(memory_client):
    from qdrant_client import models

    from agentkeep.vector_db.qdrant import point_id, term_index

    store = make(memory_client)
    store.create(2)
    store.upsert([Chunk(id="a", content="keys and more keys, rotated", embedding=[1, 0])])
    info = memory_client.get_collection("kb")
    assert info.config.params.sparse_vectors["bm25"].modifier == models.Modifier.IDF
    assert info.config.metadata == {"agentkeep_bm25_avg_length": 100.0}
    [record] = memory_client.retrieve("kb", ids=[point_id("a")], with_vectors=True)
    sparse = record.vector["bm25"]
    weights = dict(zip(sparse.indices, sparse.values))
    norm = 1.2 * (1 - 0.75 + 0.75 * 4 / 100)  # 4 terms, the default average length
    once = 2.2 / (1 + norm)
    assert weights == pytest.approx({term_index("key"): 2 * 2.2 / (2 + norm), term_index("more"): once,
                                     term_index("rotat"): once})
    assert term_index("key") == term_index("key") < 2**31
    # the average length is the collection's: another handle uses it, a different one is refused
    assert make(memory_client, bm25_avg_length=100).count() == 1
    with pytest.raises(InvalidInputError, match="bm25_avg_length=100.0"):
        make(memory_client, bm25_avg_length=50).count()


def test_a_collection_without_the_sparse_vector_gets_it_on_create(memory_client):
    from qdrant_client import models

    from agentkeep.vector_db.qdrant import point_id

    # as an older agentkeep left it: the dense vector and the terms, no sparse vector
    memory_client.create_collection("kb", vectors_config={"dense": models.VectorParams(size=2, distance="Cosine")})
    memory_client.upsert("kb", points=[models.PointStruct(id=point_id(i), vector={"dense": [1, 0]}, payload={
        "chunk_id": i, "content": text, "content_id": None, "position": 0, "metadata": {}, "f": {},
        "terms": sorted(set(text.split())), "text": text}) for i, text in (("a", "old key"), ("b", "disk"))])
    store = make(memory_client)
    with pytest.raises(InvalidInputError, match="call create"):
        store.search("key", search_type="keyword")
    store.create()
    assert [h.id for h in store.search("old keys", search_type="keyword")] == ["a"]
    assert [h.id for h in make(memory_client).search("disk", search_type="keyword")] == ["b"]


def test_a_folder_persists_and_reopens(folder):
    from agentkeep.vector_db.qdrant import QdrantDb

    with QdrantDb("kb", path=folder, distance="l2") as store:
        store.create(2)
        store.upsert([Chunk(id="a", content="persisted words", embedding=[0.5, 0.25], metadata={"k": 1})])
    with QdrantDb("kb", path=folder, distance="l2") as again:
        assert again.dimensions is None
        assert again.count(filters={"k": 1}) == 1 and again.dimensions == 2  # learnt from the collection
        assert [h.id for h in again.search("words", search_type="keyword")] == ["a"]  # the sparse vector persisted
        assert again.get(["a"])[0].embedding == [0.5, 0.25]
    with QdrantDb("kb", path=folder, distance="cosine") as wrong, pytest.raises(InvalidInputError, match="l2"):
        wrong.count()


def test_a_shared_client_sees_a_drop_by_another_store_and_stays_open(memory_client):
    first, second = make(memory_client), make(memory_client)
    first.create(2)
    second.upsert([Chunk(id="a", content="x", embedding=[1, 0])])
    first.drop()
    with pytest.raises(NotFoundError, match="create"):
        second.count()
    second.close()
    assert memory_client.get_collections().collections == []  # the client still answers


def test_replace_is_one_batch_request(memory_client, monkeypatch):
    store = make(memory_client)
    store.create(2)
    store.upsert([Chunk(id=f"c:{i}", content="x", embedding=[1, 0], content_id="c") for i in range(3)])
    calls = []
    real = memory_client.batch_update_points
    monkeypatch.setattr(memory_client, "batch_update_points", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert store.replace("c", [Chunk(id="c:1", content="y", embedding=[0, 1])]) == 1
    assert len(calls) == 1 and [type(op).__name__ for op in calls[0]["update_operations"]] == [
        "UpsertOperation", "DeleteOperation"]
    assert [c.id for c in store.get(["c:0", "c:1", "c:2"])] == ["c:1"]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"location": ":memory:", "url": "http://127.0.0.1:1"}, "exactly one"),
    ({"location": ":memory:", "distance": "dot"}, "distance"),
    ({"location": ":memory:", "dimensions": 0}, "dimensions"),
    ({"location": ":memory:", "hybrid_candidates": 0}, "hybrid_candidates"),
    ({"location": ":memory:", "bm25_avg_length": 0}, "bm25_avg_length"),
])
def test_constructor_refuses(kwargs, message):
    require(QDRANT)
    from agentkeep.vector_db.qdrant import QdrantDb

    with pytest.raises(InvalidInputError, match=message):
        QdrantDb("kb", **kwargs)


@pytest.mark.parametrize("name", ["", "a/b", "a b", "x" * 256, None])
def test_bad_collection_names_are_refused(name):
    require(QDRANT)
    from agentkeep.vector_db.qdrant import QdrantDb

    with pytest.raises(InvalidInputError, match="collection"):
        QdrantDb(name, location=":memory:")
