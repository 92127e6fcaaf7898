"""ChromaDb beyond the conformance suite: Chroma's default embedding model is never run or
downloaded, the record layout and filter translation, whole-term keyword matching, the
keyword candidate bound, BM25 scores equal to the reference store's through the keyword
statistics collection, placeholders for chunks without embeddings, and the same store
through an HttpClient against a `chroma run` server the test starts on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES, _scratch_dir

CHROMA = next(s for s in STORES if s.name == "chroma")


@pytest.fixture
def folder():
    require(CHROMA)
    path = _scratch_dir("agentkeep-chroma-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stores(folder):
    from agentkeep.vector_db.chroma import ChromaDb

    made = []

    def make(**options):
        store = ChromaDb(f"t_{uuid.uuid4().hex[:12]}", path=folder, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        try:
            store.drop()
        finally:
            store.close()


def raw(store, ids):
    """The records as Chroma holds them."""
    return store._client.get_collection(store.collection, embedding_function=None).get(
        ids=ids, include=["documents", "metadatas", "embeddings"])


def test_the_default_embedding_model_is_never_run_or_downloaded(stores, monkeypatch):
    from chromadb.utils import embedding_functions
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    def refuse(*args, **kwargs):
        raise AssertionError("Chroma's default embedding model was used")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", refuse)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download_model_if_not_exists", refuse)
    monkeypatch.setattr(embedding_functions.DefaultEmbeddingFunction, "__call__", refuse)
    store = stores(search_type="hybrid")
    store.create(2)
    store.upsert([Chunk(id="a", content="alpha words", embedding=[1, 0]), Chunk(id="t", content="text only")])
    store.replace("c", [Chunk(id="c1", content="gamma words", embedding=[0, 1])])
    assert {h.id for h in store.search("words", embedding=[1, 0])} == {"a", "c1"}
    assert [h.id for h in store.search("text", search_type="keyword")] == ["t"]
    assert store.get(["t"])[0].embedding is None and store.count() == 3
    assert store.delete(ids=["a"]) == 1
    reopened = store._client.get_collection(store.collection, embedding_function=None)
    assert reopened.configuration_json["embedding_function"] in (None, {"type": "legacy"})


def test_record_layout(stores):
    store = stores()
    store.create(2)
    meta = {"team": "ops", "n": 3, "x": 1.5, "ok": True, "tags": ["a"], "obj": {"b": 1}, "none": None,
            "$odd.key": "v", "big": 2**64}
    store.upsert([Chunk(id="a", content="Rotating the API keys!", embedding=[3, 4], metadata=meta, content_id="c",
                        position=2),
                  Chunk(id="t", content="the", metadata={})])
    got = raw(store, ["a", "t"])
    records = {i: (d, m, e) for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])}
    document, stored, embedding = records["a"]
    assert document == " rotat api key "
    assert list(embedding) == [3, 4]  # Chroma keeps the vector as given, even for cosine
    assert stored == {
        "_content": "Rotating the API keys!", "_cid": "c", "_pos": 2, "_v": True,
        "_meta": stored["_meta"], "s:team": "ops", "i:n": 3, "n:x": 1.5, "b:ok": True, "s:$odd.key": "v",
        "n:big": float(2**64),
    }
    assert store.get(["a"])[0].metadata == meta  # from `_meta`, as written
    assert records["t"][0] == "  " and records["t"][1]["_v"] is False  # no terms; a placeholder vector


def test_filter_translation():
    require(CHROMA)
    from agentkeep.vector_db.chroma import document_clause, where_clause
    from agentkeep.vector_db.text import analyzer

    assert where_clause({}) is None
    assert where_clause({"team": "ops"}) == {"s:team": {"$eq": "ops"}}
    assert where_clause({"ok": False, "n": 1, "x": 1.5, "huge": 2**70, "odd": 2**62 + 1}, {"_v": {"$eq": True}}) == {
        "$and": [{"_v": {"$eq": True}}, {"b:ok": {"$eq": False}},
                 {"$or": [{"n:n": {"$eq": 1.0}}, {"i:n": {"$eq": 1}}]}, {"n:x": {"$eq": 1.5}},
                 {"n:huge": {"$eq": float(2**70)}}, {"i:odd": {"$eq": 2**62 + 1}}]}
    query = analyzer().query
    assert document_clause(query("keys"), ["key"]) == {"$contains": " key "}
    assert document_clause(query("disk quota"), ["disk", "quota"]) == {
        "$or": [{"$contains": " disk "}, {"$contains": " quota "}]}
    assert document_clause(query('+disk -quota "resize the volume" -"full disk"')) == {"$and": [
        {"$contains": " disk "}, {"$contains": " resiz volum "}, {"$not_contains": " quota "},
        {"$not_contains": " full disk "}]}


def test_numbers_match_by_value_and_types_stay_apart(stores):
    store = stores()
    store.create(2)
    store.upsert([
        Chunk(id="int", content="x", embedding=[1, 0], metadata={"n": 2**62}),
        Chunk(id="next", content="x", embedding=[1, 0], metadata={"n": 2**62 + 1}),
        Chunk(id="float", content="x", embedding=[1, 0], metadata={"n": float(2**62)}),
        Chunk(id="bool", content="x", embedding=[1, 0], metadata={"n": True}),
        Chunk(id="str", content="x", embedding=[1, 0], metadata={"n": "1"}),
        Chunk(id="one", content="x", embedding=[1, 0], metadata={"n": 1.0}),
    ])
    assert store.count(filters={"n": 2**62}) == 2
    assert store.count(filters={"n": 2**62 + 1}) == 1
    assert store.count(filters={"n": 1}) == 1 and store.count(filters={"n": True}) == 1
    assert store.count(filters={"n": "1"}) == 1


def test_keyword_terms_match_whole(stores):
    store = stores()
    store.create(2)
    store.upsert([Chunk(id="monkey", content="monkey business", embedding=[1, 0]),
                  Chunk(id="keys", content="the keys", embedding=[1, 0]),
                  Chunk(id="keyring", content="a keyring", embedding=[1, 0])])
    assert [h.id for h in store.search("key", search_type="keyword")] == ["keys"]
    assert [h.id for h in store.search("monkey -business", search_type="keyword")] == []


def test_keyword_candidates_bound_the_ranked_set(stores):
    store = stores(keyword_candidates=3)
    store.create(2)
    store.upsert([Chunk(id=f"d{i}", content="disk " * (i + 1), embedding=[1, 0]) for i in range(6)])
    store.upsert([Chunk(id="rare", content="disk quota", embedding=[1, 0])])
    hits = store.search("disk", search_type="keyword", limit=10)
    assert len(hits) == 3 and all(h.score > 0 for h in hits)
    # past the bound, each term is read on its own, the rarest first: its chunks are all ranked
    assert store.search("disk quota", search_type="keyword", limit=1)[0].id == "rare"


KEYWORD_DOCS = {
    "a": "Restore a database from a snapshot in the backups tab.",
    "b": "Nightly database snapshots are kept for thirty days.",
    "c": "Slow database queries: add an index and check the query plan, database, database.",
    "d": "Invoices are emailed on the first day of each month.",
    "e": "The of and",
}
KEYWORD_QUERIES = ["database", "database snapshot", "database -snapshot", "month", "how do I restore my database?",
                   "+snapshot database", '"database snapshots"', 'database -"database snapshots"', "zebra",
                   "snapshot zebra"]


def test_keyword_scores_are_the_reference_bm25_after_updates_and_deletes(stores):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    store, reference = stores(), InMemoryVectorDb()
    for s in (store, reference):
        s.create(2)
        s.upsert([Chunk(id=i, content=t, embedding=[1, 0], content_id="x" if i in "ab" else None)
                  for i, t in KEYWORD_DOCS.items()])
        s.upsert([Chunk(id="c", content="Database database snapshot", embedding=[1, 0])])
        s.replace("x", [Chunk(id="b2", content="Snapshots of the database, daily", embedding=[1, 0])])
        s.delete(ids=["d"])
    for query in KEYWORD_QUERIES:
        got = [(h.id, h.score) for h in store.search(query, search_type="keyword", limit=10)]
        want = [(h.id, h.score) for h in reference.search(query, search_type="keyword", limit=10)]
        assert [i for i, _ in got] == [i for i, _ in want], query
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9), query


def test_keyword_statistics_collection(stores, folder):
    from agentkeep.vector_db.chroma import ChromaDb, shard_of, stats_name

    store = stores()
    store.create(2)
    store.upsert([Chunk(id="a", content="keys and keys", embedding=[1, 0]), Chunk(id="b", content="disk keys")])
    stats = store._client.get_collection(stats_name(store.collection), embedding_function=None)

    def held():
        got = stats.get(include=["metadatas"])
        return dict(zip(got["ids"], got["metadatas"]))

    assert held() == {" totals": {"chunks": 2, "length": 4}, shard_of("key"): {"df": '{"key":2}'},
                      shard_of("disk"): {"df": '{"disk":1}'}}
    assert store._statistics(["key", "disk", "zebra"]) == (2, 2.0, {"key": 2, "disk": 1, "zebra": 0})
    assert store.delete(ids=["b"]) == 1
    assert held() == {" totals": {"chunks": 1, "length": 2}, shard_of("key"): {"df": '{"key":1}'},
                      shard_of("disk"): {"df": "{}"}}
    # a collection whose statistics are missing (made by an older agentkeep) is counted once
    store._client.delete_collection(stats_name(store.collection))
    again = ChromaDb(store.collection, path=folder)
    assert [h.id for h in again.search("keys", search_type="keyword")] == ["a"]
    again.rebuild_keyword_statistics()
    assert again.search("keys", search_type="keyword")[0].score == store.search("keys", search_type="keyword")[0].score
    store.drop()
    assert stats_name(store.collection) not in [c.name for c in store._client.list_collections()]
    assert stats_name("x" * 512).endswith("-bm25") and len(stats_name("x" * 512)) <= 512


def test_chunks_without_embedding_never_surface_in_vector_search(stores):
    store = stores()
    store.create(2)
    # the placeholder vector is [1, 0]: the exact query below would find it first
    store.upsert([Chunk(id="t", content="text"), Chunk(id="v", content="vector", embedding=[0, 1])])
    assert [h.id for h in store.search(embedding=[1, 0], search_type="vector", limit=10)] == ["v"]


def test_an_existing_collection_must_agree(stores, folder):
    from agentkeep.vector_db.chroma import ChromaDb

    store = stores(distance="l2")
    store.create(3)
    with pytest.raises(InvalidInputError, match="'l2'"):
        ChromaDb(store.collection, path=folder, distance="cosine").count()
    with pytest.raises(InvalidInputError, match="3"):
        ChromaDb(store.collection, path=folder, distance="l2").create(4)
    store._client.create_collection("t_foreign", embedding_function=None)
    with pytest.raises(InvalidInputError, match="agentkeep"):
        ChromaDb("t_foreign", path=folder).count()


def test_a_drop_or_re_create_by_another_store(stores, folder):
    from agentkeep.vector_db.chroma import ChromaDb

    store = stores()
    store.create(2)
    other = ChromaDb(store.collection, path=folder)
    assert other.count() == 0
    store.drop()
    with pytest.raises(NotFoundError, match="create"):
        other.upsert([Chunk(id="a", content="x", embedding=[1, 0])])
    store.create(2)  # made again: a new Chroma collection id under the same name
    other.upsert([Chunk(id="a", content="x", embedding=[1, 0])])
    assert store.count() == 1


@pytest.mark.parametrize("kwargs, message", [
    ({}, "path= .* or client="),
    ({"path": "/tmp/x", "client": object()}, "path= .* or client="),
    ({"path": "/tmp/x", "distance": "dot"}, "distance"),
    ({"path": "/tmp/x", "keyword_candidates": 0}, "keyword_candidates"),
    ({"path": "/tmp/x", "hnsw": "fast"}, "hnsw"),
])
def test_constructor_refuses(kwargs, message):
    require(CHROMA)
    from agentkeep.vector_db.chroma import ChromaDb

    with pytest.raises(InvalidInputError, match=message):
        ChromaDb("kb_1", **kwargs)


@pytest.mark.parametrize("name", ["ab", "-ab", "a b c", "x" * 513, None])
def test_bad_collection_names_are_refused(name):
    require(CHROMA)
    from agentkeep.vector_db.chroma import ChromaDb

    with pytest.raises(InvalidInputError, match="collection"):
        ChromaDb(name, path="/tmp/unused")


# -- the same store through an HttpClient -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_client():
    require(CHROMA)
    exe = shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not on PATH")
    import chromadb
    from chromadb.config import Settings

    path, port = _scratch_dir("agentkeep-chroma-http-"), _free_port()
    server = subprocess.Popen([exe, "run", "--path", path, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=port,
                                             settings=Settings(anonymized_telemetry=False))
                client.heartbeat()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("chroma run did not start within 30 s")
                time.sleep(0.2)
        yield client
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(path, ignore_errors=True)


def test_through_an_http_client(http_client):
    from agentkeep.vector_db.chroma import ChromaDb

    store = ChromaDb(f"t_{uuid.uuid4().hex[:12]}", client=http_client, search_type="hybrid", distance="l2")
    try:
        store.create(2)
        store.upsert([
            Chunk(id="a", content="Rotate the API keys", embedding=[1, 0], metadata={"team": "sec", "n": 1}),
            Chunk(id="b", content="Disk quota exceeded", embedding=[0, 1], metadata={"team": "ops", "n": 1.0}),
            Chunk(id="t", content="keys without a vector", content_id="c"),
        ])
        assert [h.id for h in store.search(embedding=[1, 0.1], search_type="vector", limit=5)] == ["a", "b"]
        assert sorted(h.id for h in store.search("keys", search_type="keyword")) == ["a", "t"]
        assert store.search("keys", embedding=[1, 0], filters={"team": "sec"})[0].id == "a"
        assert store.count(filters={"n": 1}) == 2 and store.count(content_id="c") == 1
        assert store.replace("c", []) == 0 and store.delete(filters={"team": "ops"}) == 1
        assert [c.id for c in store.get(["b", "a", "t"])] == ["a"]
        store.drop()
        with pytest.raises(NotFoundError, match="create"):
            store.count()
    finally:
        store.drop()
        store.close()
    http_client.heartbeat()  # a client passed in stays open
