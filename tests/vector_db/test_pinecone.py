"""PineconeDb's translation layer: records, dense and sparse vectors, filters and queries.

No Pinecone server or emulator runs here, so PineconeDb is not verified against a live
service. These tests check the request documents, that the pinecone client's own vector
parser accepts the records (and what it puts on the wire), and, by computing the dot products
the dotproduct index computes, that each distance ranks and scores as the suite expects."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import check_filters
from agentkeep.vector_db.text import analyzer, bm25, idf, terms

pytest.importorskip("pinecone")

from agentkeep.vector_db import pinecone as pc  # noqa: E402
from agentkeep.vector_db.pinecone import PineconeDb  # noqa: E402

kq = analyzer().query  # a keyword query as the store parses it


def dot(a, b):
    return math.fsum(x * y for x, y in zip(a, b))


def sparse_dot(a, b):
    weights = dict(zip(a["indices"], a["values"]))
    return math.fsum(weights.get(i, 0.0) * v for i, v in zip(b["indices"], b["values"]))


# -- vectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["cosine", "l2", "inner_product"])
def test_each_distance_scores_as_the_suite_expects(distance):
    # the conformance suite's test_distances_and_their_scores, through the index's dot product
    stored = {"a": [2, 0, 0], "b": [0, 1, 0], "c": [0.5, 0.5, 0]}
    q = [1.0, 0.0, 0.0]
    vq = pc.query_values(q, distance)
    scored = sorted(((pc.score(dot(pc.dense_values(e, distance)[0], vq), distance, q), i) for i, e in stored.items()),
                    reverse=True)
    expected = {
        "cosine": [("a", 1.0), ("c", math.sqrt(0.5)), ("b", 0.0)],
        "l2": [("c", 1 / (1 + math.sqrt(0.5))), ("a", 0.5), ("b", 1 / (1 + math.sqrt(2)))],
        "inner_product": [("a", 2.0), ("c", 0.5), ("b", 0.0)],
    }[distance]
    assert [i for _, i in scored] == [i for i, _ in expected]
    assert [s for s, _ in scored] == pytest.approx([s for _, s in expected], abs=1e-9)


@pytest.mark.parametrize("distance", ["cosine", "l2", "inner_product"])
def test_the_dot_product_ranks_as_the_distance_does(distance):
    r = random.Random(7)
    vectors = [[r.gauss(0, 1) for _ in range(6)] for _ in range(60)]
    q = [r.gauss(0, 1) for _ in range(6)]
    by_index = sorted(range(60), key=lambda i: -dot(pc.dense_values(vectors[i], distance)[0], pc.query_values(q, distance)))

    def true_score(v):
        if distance == "cosine":
            return dot(v, q) / math.sqrt(dot(v, v) * dot(q, q))
        if distance == "l2":
            return -math.dist(v, q)
        return dot(v, q)

    assert by_index == sorted(range(60), key=lambda i: -true_score(vectors[i]))


@pytest.mark.parametrize("distance", ["cosine", "l2", "inner_product"])
def test_embeddings_are_restored(distance):
    emb = [0.123456789, -1e-7, 3.5, 12345.678]
    values, extra = pc.dense_values(emb, distance)
    assert len(values) == 5
    meta = {"has_embedding": True, **extra}
    assert pc.restore_embedding(values, meta, distance) == pytest.approx(emb, rel=1e-12)
    assert pc.restore_embedding(pc.placeholder_values(4), {"has_embedding": False}, distance) is None


def test_zero_vectors_and_placeholders():
    with pytest.raises(InvalidInputError, match="all-zero"):
        pc.dense_values([0.0, 0.0], "cosine")
    placeholder = pc.placeholder_values(3)
    assert placeholder == [0.0, 0.0, 0.0, 1.0]
    for distance in ("cosine", "inner_product"):  # scores 0 even if a filter let it through
        assert dot(placeholder, pc.query_values([1.0, 2.0, 3.0], distance)) == 0.0


def test_vector_ids():
    assert pc.vector_id("abc 'x'") == "abc 'x'"
    for odd in ("ü-日本", "i" * 513, "#abc"):
        vid = pc.vector_id(odd)
        assert vid.startswith("#") and len(vid) == 65 and vid.isascii()
    assert pc.vector_id("ü") != pc.vector_id("u") and pc.vector_id("i" * 512) == "i" * 512


# -- records ------------------------------------------------------------------------------------


def test_record_layout():
    c = Chunk(id="k1", content="Rotate the keys; rotating keys weekly", embedding=[3.0, 4.0], content_id="c1",
              position=2, metadata={"team": "sec", "n": 1, "f": 2.5, "ok": True, "list": ["x"], "o": {"a": None},
                                    "none": None})
    rec = pc.record(c, distance="cosine", dimensions=2)
    assert rec["id"] == "k1" and rec["values"] == pytest.approx([0.6, 0.8, 0.0])
    meta = rec["metadata"]
    assert meta["chunk_id"] == "k1" and meta["content_id"] == "c1" and meta["position"] == 2
    assert meta["has_embedding"] is True and meta["norm"] == 5.0
    assert meta["terms"] == ["rotat", "key", "week"]  # distinct, for the every-term filter
    assert meta["s:team"] == "sec" and meta["n:n"] == 1.0 and meta["n:f"] == 2.5 and meta["b:ok"] is True
    assert not any(k.endswith((":list", ":o", ":none")) for k in meta)
    assert meta["metadata_json"] == '{"team":"sec","n":1,"f":2.5,"ok":true,"list":["x"],"o":{"a":null},"none":null}'
    tf = {"rotat": 2, "key": 2, "week": 1}
    norm = 1.2 * (1 - 0.75 + 0.75 * 5 / 64.0)
    expected = {pc.term_index(t): n * 2.2 / (n + norm) for t, n in tf.items()}
    assert dict(zip(rec["sparse_values"]["indices"], rec["sparse_values"]["values"])) == pytest.approx(expected)
    assert rec["sparse_values"]["indices"] == sorted(rec["sparse_values"]["indices"])
    bare = pc.record(Chunk(id="t", content="the of"), distance="l2", dimensions=2)
    assert bare["values"] == [0.0, 0.0, 1.0] and bare["metadata"]["has_embedding"] is False
    assert "sparse_values" not in bare and "content_id" not in bare["metadata"]
    german = pc.record(Chunk(id="g", content="Die Schlüssel"), distance="l2", dimensions=2, analyzer=analyzer("german"))
    assert german["metadata"]["terms"] == ["schlussel"]


def test_records_pass_the_clients_own_checks():
    from pinecone._internal.data_plane_helpers import _vector_to_dict
    from pinecone._internal.vector_factory import VectorFactory

    c = Chunk(id="ü", content="disk quota", embedding=[1.0, 2.0], metadata={"k": 1, "tags": ["a"]})
    wire = _vector_to_dict(VectorFactory.build(pc.record(c, distance="l2", dimensions=2)))
    assert wire["id"] == pc.vector_id("ü") and wire["values"] == [1.0, 2.0, -2.5]
    assert set(wire["sparseValues"]) == {"indices", "values"} and len(wire["sparseValues"]["indices"]) == 2
    assert wire["metadata"]["n:k"] == 1.0


def test_metadata_over_pinecones_limit_is_refused():
    big = Chunk(id="big", content="x " * 25_000, embedding=[1.0])
    with pytest.raises(InvalidInputError, match="40960"):
        pc.record(big, distance="cosine", dimensions=1)


# -- filters and queries ------------------------------------------------------------------------


def test_filter_language_and_type_rules():
    assert pc.filter_doc(None, None, {}) is None
    assert pc.filter_doc(None, None, {"k": 1}) == {"n:k": {"$eq": 1.0}}
    assert pc.filter_doc(None, None, {"k": 1.0}) == pc.filter_doc(None, None, {"k": 1})
    assert pc.filter_doc(None, None, {"k": True}) == {"b:k": {"$eq": True}}  # a bool is not a number
    assert pc.filter_doc(None, None, {"k": "1"}) == {"s:k": {"$eq": "1"}}
    assert pc.filter_doc(None, None, {"k": 10**400}) is pc.NOTHING
    assert pc.filter_doc(["a", "b"], "c1", {"team": "s", "$odd.key": 2}) == {"$and": [
        {"chunk_id": {"$in": ["a", "b"]}}, {"content_id": {"$eq": "c1"}},
        {"s:team": {"$eq": "s"}}, {"n:$odd.key": {"$eq": 2.0}},
    ]}


def test_any_of_filters():
    def doc(filters):
        return pc.filter_doc(None, None, check_filters(filters))

    assert doc({"owner": {"$in": ["", "alice"]}}) == {"s:owner": {"$in": ["", "alice"]}}
    assert doc({"k": {"$in": [1, 2.5, "1"]}, "team": "s"}) == {"$and": [
        {"$or": [{"s:k": {"$eq": "1"}}, {"n:k": {"$in": [1.0, 2.5]}}]}, {"s:team": {"$eq": "s"}}]}
    assert doc({"k": {"$in": [True, False]}}) == {"$or": [{"b:k": {"$eq": True}}, {"b:k": {"$eq": False}}]}
    assert doc({"k": {"$in": [10**400, "x"]}}) == {"s:k": {"$eq": "x"}}  # a member no record holds drops out
    assert doc({"k": {"$in": [10**400, -10**400]}}) is pc.NOTHING


def test_query_requests():
    [vector] = pc.query_requests("vector", None, [3.0, 4.0], 5, {"team": "s"}, namespace="kb", distance="cosine",
                                 dimensions=2)
    assert vector == {"list": "vector", "namespace": "kb", "top_k": 5, "vector": pytest.approx([0.6, 0.8, 0.0]),
                      "include_metadata": True,
                      "filter": {"$and": [{"s:team": {"$eq": "s"}}, {"has_embedding": {"$eq": True}}]}}
    [keyword] = pc.query_requests("keyword", kq("rotating keys -disks"), None, 3, {}, namespace="kb", distance="l2",
                                  dimensions=2, idfs={"rotat": 2.0, "key": 0.5})
    assert keyword["vector"] == [0.0, 0.0, 0.0] and keyword["top_k"] == 3
    assert keyword["sparse_vector"] == pc.sparse_query(["rotat", "key"], {"rotat": 2.0, "key": 0.5})
    # any term may match; a chunk holding none would score 0, so it is left out
    assert keyword["filter"] == {"$and": [{"terms": {"$in": ["rotat", "key"]}}, {"terms": {"$nin": ["disk"]}}]}
    assert pc.query_requests("keyword", kq("the of"), None, 3, {}, namespace="kb", distance="l2", dimensions=2) == []
    assert pc.query_requests("vector", None, [1.0], 3, {"k": 10**400}, namespace="kb", distance="l2",
                             dimensions=1) == []
    v, k = pc.query_requests("hybrid", kq("disk"), [1.0, 0.0], 5, {}, namespace="kb", distance="cosine", dimensions=2,
                             candidates=5000)
    assert v["top_k"] == k["top_k"] == pc.MAX_TOP_K_WITH_METADATA  # Pinecone's cap with metadata
    assert k["sparse_vector"] == pc.sparse_query(["disk"])  # no statistics: every term weighs 1


def test_required_terms_and_phrases():
    [keyword] = pc.query_requests("keyword", kq('rotate +disk "api keys" -quota'), None, 3, {"team": "s"},
                                  namespace="kb", distance="l2", dimensions=2, phrase_depth=10)
    assert keyword["filter"] == {"$and": [
        {"s:team": {"$eq": "s"}}, {"terms": {"$in": ["disk"]}}, {"terms": {"$in": ["api"]}},
        {"terms": {"$in": ["key"]}}, {"terms": {"$nin": ["quota"]}}]}
    assert keyword["sparse_vector"] == pc.sparse_query(["disk", "api", "key", "rotat"])  # every ranked term scores
    assert keyword["top_k"] == 30  # a phrase: ten times deeper, the words' order checked on the hits


def test_keyword_ranking_is_bm25():
    docs = {"a": "disk disk disk quota", "b": "disk quota", "c": "disk quota resize the volume from the console now",
            "d": "quota"}
    idfs = {"disk": idf(1000, 300), "quota": idf(1000, 20)}
    q = pc.sparse_query(terms("disk quota"), idfs)
    scores = {i: sparse_dot(pc.sparse_document(terms(d), k1=1.2, b=0.75, avg_length=4.0), q) for i, d in docs.items()}
    for i, d in docs.items():  # the dot product is BM25 with the corpus idf
        assert scores[i] == pytest.approx(bm25(Counter(terms(d)), len(terms(d)), 4.0, ["disk", "quota"], idfs))
    assert sorted(docs, key=lambda i: -scores[i]) == ["b", "a", "d", "c"]  # short chunks first, then tf


def test_idf_comes_from_the_namespace_counts():
    s = PineconeDb("kb", api_key="unused", dimensions=2)
    counts = {"disk": 300, "quota": 20}
    s._count = lambda content_id, filters: 1000  # the namespace's record count
    s._matching = lambda doc: counts[doc["terms"]["$in"][0]]  # a dry-run update's matched records
    [keyword] = s._requests("keyword", "disk quota", None, 3, {})
    assert keyword["sparse_vector"] == pc.sparse_query(["disk", "quota"], {"disk": idf(1000, 300),
                                                                           "quota": idf(1000, 20)})
    s.keyword_idf = False
    assert s._requests("keyword", "disk quota", None, 3, {})[0]["sparse_vector"] == pc.sparse_query(["disk", "quota"])


def test_options_are_checked():
    for kwargs in ({"distance": "dot"}, {"bm25_b": 2}, {"keyword_idf": 1}, {"fusion": "ranked"}, {"dimensions": 20_000}, {"rrf_k": 1.5},
                   {"index_name": "Bad_Name"}):
        with pytest.raises(InvalidInputError):
            PineconeDb("kb", api_key="unused", **kwargs)
    for bad in ("", "a b", "-kb", "x" * 101):
        with pytest.raises(InvalidInputError, match="namespace"):
            PineconeDb(bad, api_key="unused")
