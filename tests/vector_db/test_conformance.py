"""One suite, every vector store: the definition of "the same semantics"."""

from __future__ import annotations

import asyncio
import math

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk, SearchHit
from agentkeep.vector_db.base import relative_score_fuse, rrf_fuse

DIM = 4


def c(id_, content="text", emb=(1.0, 0.0, 0.0, 0.0), content_id=None, metadata=None, position=0):
    return Chunk(id=id_, content=content, embedding=list(emb), content_id=content_id,
                 metadata=metadata or {}, position=position)


def unit(*xs):
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


# -- lifecycle ---------------------------------------------------------------------------------


def test_create_is_idempotent_and_checks_dimensions(store):
    assert not store.exists()
    with pytest.raises(InvalidInputError, match="dimensions"):
        store.create()  # nothing says how many dimensions yet
    store.create(DIM)
    store.upsert([c("a")])
    store.create(DIM)
    store.create()
    assert store.exists() and store.count() == 1 and store.dimensions == DIM
    with pytest.raises(InvalidInputError, match="4-dimensional vectors, not 5: use the embedder"):
        store.create(DIM + 1)
    assert store.count() == 1


def test_drop_removes_everything_and_is_idempotent(store):
    store.create(DIM)
    store.upsert([c("a"), c("b")])
    store.drop()
    assert not store.exists()
    store.drop()
    store.create(DIM)
    assert store.count() == 0


def test_a_missing_store_is_reported(store):
    store.create(DIM)
    store.drop()
    for call in (
        lambda: store.upsert([c("a")]),
        lambda: store.count(),
        lambda: store.get(["a"]),
        lambda: store.delete(ids=["a"]),
        lambda: store.search(embedding=[1, 0, 0, 0], search_type="vector"),
    ):
        with pytest.raises((NotFoundError, InvalidInputError), match="create"):
            call()


# -- writes ------------------------------------------------------------------------------------


def test_upsert_replaces_by_id(store):
    store.create(DIM)
    assert store.upsert([c("a", "old words", (1, 0, 0, 0), "c1", {"v": 1, "gone": "x"})]) == 1
    store.upsert([c("a", "fresh words", (0, 1, 0, 0), "c2", {"v": 2}, position=7)])
    assert store.count() == 1
    [got] = store.get(["a"])
    assert (got.content, got.content_id, got.metadata, got.position) == ("fresh words", "c2", {"v": 2}, 7)
    # nothing of the old chunk is left to match: not a metadata key it lost, nor its content id
    assert store.count(filters={"gone": "x"}) == store.count(filters={"v": 1}) == store.count(content_id="c1") == 0
    store.upsert([c("a", "fresh words")])
    assert store.count(content_id="c2") == store.count(filters={"v": 2}) == 0 and store.count() == 1
    assert got.embedding == pytest.approx([0, 1, 0, 0])
    assert [h.id for h in store.search("fresh", search_type="keyword")] == ["a"]
    assert store.search("old", search_type="keyword") == []


def test_a_repeated_id_in_one_batch_keeps_the_last(store):
    store.create(DIM)
    assert store.upsert([c("a", "first"), c("a", "second")]) == 1
    assert [x.content for x in store.get(["a"])] == ["second"]


def test_get_keeps_the_order_asked_and_skips_missing(store):
    store.create(DIM)
    store.upsert([c("a"), c("b"), c("c")])
    assert [x.id for x in store.get(["c", "zz", "a"])] == ["c", "a"]
    assert store.get([]) == []


def test_embeddings_round_trip_at_single_precision(store):
    store.create(DIM)
    emb = [0.123456789, -1e-7, 3.5, 12345.678]
    store.upsert([c("a", emb=emb)])
    [got] = store.get(["a"])
    assert got.embedding == pytest.approx(emb, rel=1e-6, abs=1e-12)


def test_metadata_round_trips(store):
    store.create(DIM)
    meta = {
        "unicode": "Grüße 🚀 日本", "nested": {"a": [1, 2, {"b": None}]}, "big": 2**62, "float": 0.1,
        "huge_float": 1e16, "empty": "", "$key.with.dots": True, "list": ["x", 1, 2.5, False],
    }
    store.upsert([c("a", metadata=meta)])
    [got] = store.get(["a"])
    assert got.metadata == meta
    assert type(got.metadata["huge_float"]) is float and type(got.metadata["big"]) is int


def test_hostile_ids_and_content_are_data(store):
    store.create(DIM)
    ids = ["abc", "ABC", "abc ", "a'b\"c", "x:y/z*$", "ü-日本", "%s", "' OR 1=1 --", "i" * 1000]
    content = "'; DROP TABLE x; -- \\ \" % $1 {}"
    store.upsert([c(i, content + i) for i in ids])
    assert store.count() == len(ids)
    assert [x.id for x in store.get(ids)] == ids
    assert [x.content for x in store.get(["a'b\"c"])] == [content + "a'b\"c"]
    assert store.delete(ids=["abc"]) == 1
    assert {x.id for x in store.get(ids)} == set(ids) - {"abc"}


@pytest.mark.parametrize("bad, message", [
    (lambda: c("a", emb=(1, 0, 0)), "dimensions"),
    (lambda: c("a", emb=(1, 0, 0, float("nan"))), "finite"),
    (lambda: c("a", emb=(1.0, 0.0, 0.0, -1e39)), "single precision"),
    (lambda: c("", "x"), "chunk id"),
    (lambda: c("a\nb", "x"), "control"),
    (lambda: c("i" * 1025, "x"), "chunk id"),
    (lambda: c("a", "nul \x00 inside"), "NUL"),
    (lambda: c("a", metadata={"k": float("inf")}), "finite"),
    (lambda: c("a", metadata={"k": object()}), "JSON"),
    (lambda: c("a", metadata={"k": "nul \x00"}), "NUL"),
    (lambda: c("a", position=-1), "position"),
])
def test_invalid_chunks_are_refused_and_nothing_is_written(store, bad, message):
    store.create(DIM)
    with pytest.raises(InvalidInputError, match=message):
        store.upsert([c("good"), bad()])
    assert store.count() == 0


def test_replace_makes_these_the_only_chunks_of_a_content(store):
    store.create(DIM)
    store.upsert([c("c1:0", content_id="c1"), c("c1:1", content_id="c1"), c("c1:2", content_id="c1"),
                  c("c2:0", content_id="c2")])
    assert store.replace("c1", [c("c1:0", "new zero"), c("c1:9", "new nine", content_id="other")]) == 2
    assert store.count(content_id="c1") == 2 and store.count(content_id="c2") == 1
    assert {x.id: x.content_id for x in store.get(["c1:0", "c1:1", "c1:9"])} == {"c1:0": "c1", "c1:9": "c1"}
    assert store.replace("c1", []) == 0
    assert store.count(content_id="c1") == 0 and store.count() == 1


def test_delete_by_content_id_metadata_and_ids(store):
    store.create(DIM)
    store.upsert([
        c("a", content_id="c1", metadata={"team": "s", "n": 1}),
        c("b", content_id="c1", metadata={"team": "o", "n": 1}),
        c("c", content_id="c2", metadata={"team": "s", "n": 2}),
        c("d", content_id="c2", metadata={"team": "s", "n": 1}),
    ])
    assert store.delete(content_id="c9") == 0
    assert store.delete(content_id="c2", filters={"n": 2}) == 1  # conditions are AND-ed
    assert store.delete(filters={"team": "s"}) == 2
    assert store.delete(ids=["b", "zz"], content_id="c2") == 0
    assert store.delete(ids=["b"]) == 1
    assert store.count() == 0
    with pytest.raises(InvalidInputError):
        store.delete()
    with pytest.raises(InvalidInputError, match="drop"):
        store.delete(filters={})


# -- filters -----------------------------------------------------------------------------------


def test_filter_semantics(store):
    store.create(DIM)
    store.upsert([
        c("s", metadata={"k": "1"}),
        c("i", metadata={"k": 1}),
        c("f", metadata={"k": 1.0}),
        c("t", metadata={"k": True}),
        c("l", metadata={"k": [1, "1", True]}),
        c("o", metadata={"k": {"k": 1}}),
        c("n", metadata={"k": None}),
        c("two", metadata={"k": 1, "team": "s"}),
        c("none", metadata={}),
    ])

    def ids(filters):
        return sorted(x.id for x in store.search(embedding=[1, 0, 0, 0], search_type="vector", limit=100,
                                                 filters=filters))

    assert ids({"k": "1"}) == ["s"]
    assert ids({"k": 1}) == ["f", "i", "two"]  # numbers compare by value
    assert ids({"k": 1.0}) == ["f", "i", "two"]
    assert ids({"k": True}) == ["t"]  # a bool is not a number
    assert ids({"k": False}) == []
    assert ids({"k": 1, "team": "s"}) == ["two"]
    assert ids({"missing": "x"}) == []
    assert ids(None) == ids({}) and len(ids(None)) == 9
    assert store.count(filters={"k": 1}) == 3
    assert store.count(filters={"k": 1}, content_id="x") == 0


@pytest.mark.parametrize("bad", [
    {"k": None}, {"k": [1]}, {"k": {"a": 1}}, {"k": float("nan")}, {1: "x"}, {"": "x"}, "k=1", ["k"],
    {"k": b"x"},
])
def test_unsupported_filters_are_refused(store, bad):
    store.create(DIM)
    with pytest.raises(InvalidInputError):
        store.search(embedding=[1, 0, 0, 0], search_type="vector", filters=bad)
    with pytest.raises(InvalidInputError):
        store.count(filters=bad)
    with pytest.raises(InvalidInputError):
        store.delete(filters=bad)


def test_a_filter_finds_matches_far_from_the_query(make_store):
    # few matching chunks, all far from the query, among many unmatched near ones: a store
    # that filtered after an approximate top-k would come back short
    store = make_store()
    store.create(8)
    near = [Chunk(id=f"n{i}", content="near", embedding=unit(1, 0.01 * (i % 97), 0, 0, 0, 0, 0, 0.001 * i),
                  metadata={"tag": "common"}) for i in range(1500)]
    far = [Chunk(id=f"f{i}", content="far", embedding=unit(0, 0, 0, 0, 0, 1, 0.1 * i, 0),
                 metadata={"tag": "rare"}) for i in range(5)]
    store.upsert(near + far)
    hits = store.search(embedding=unit(1, 0, 0, 0, 0, 0, 0, 0), search_type="vector", limit=5, filters={"tag": "rare"})
    assert sorted(h.id for h in hits) == [f"f{i}" for i in range(5)]


# -- "any of" filters --------------------------------------------------------------------------


def _owners(store):
    store.create(DIM)
    store.upsert([
        c("s1", "shared keys", metadata={"owner": "", "team": "a"}),
        c("s2", "alice keys", metadata={"owner": "alice", "team": "b"}),
        c("s3", "bob keys", metadata={"owner": "bob", "team": "a"}),
        c("n1", metadata={"k": 1}), c("n2", metadata={"k": 2.5}), c("t", metadata={"k": True}),
        c("one", metadata={"k": "1"}), c("l", metadata={"k": [1, "1"]}), c("o", metadata={"k": {"k": 1}}),
        c("none", metadata={}),
    ])


def test_any_of_filters(store):
    _owners(store)

    def ids(filters, **kwargs):
        return sorted(x.id for x in store.search(embedding=[1, 0, 0, 0], search_type="vector", limit=100,
                                                 filters=filters, **kwargs))

    assert ids({"owner": {"$in": ["", "alice"]}}) == ["s1", "s2"]
    assert ids({"owner": {"$in": ("carol", "dave")}}) == []
    assert ids({"owner": {"$in": ["", "alice", "bob"]}, "team": "a"}) == ["s1", "s3"]  # AND-ed with equalities
    assert ids({"owner": {"$in": ["alice", "bob"]}, "team": {"$in": ["a", "z"]}}) == ["s3"]
    assert ids({"owner": {"$in": ["alice"]}}) == ids({"owner": "alice"}) == ["s2"]
    assert ids({"k": {"$in": [1.0, 2.5]}}) == ["n1", "n2"]  # numbers by value
    assert ids({"k": {"$in": [2.5, 1, 1.0, 2.5]}}) == ["n1", "n2"]  # repeats are one value
    assert ids({"k": {"$in": [True, "1"]}}) == ["one", "t"]  # types mixed; a bool is not a number
    assert ids({"k": {"$in": [False, 0, "x"]}}) == []
    assert ids({"missing": {"$in": ["", 0]}}) == []
    assert ids({"owner": {"$in": ["", "alice"] + [f"u{i}" for i in range(98)]}}) == ["s1", "s2"]  # at the cap
    assert store.count(filters={"owner": {"$in": ["", "bob"]}}) == 2
    assert store.count(filters={"owner": {"$in": ["", "bob"]}}, content_id="x") == 0
    keyword = store.search("keys", search_type="keyword", filters={"owner": {"$in": ["", "alice"]}}, limit=10)
    assert sorted(h.id for h in keyword) == ["s1", "s2"]
    hybrid = store.search("keys", embedding=[1, 0, 0, 0], search_type="hybrid", limit=10,
                          filters={"owner": {"$in": ["bob", "alice"]}, "team": "a"})
    assert [h.id for h in hybrid] == ["s3"]
    assert store.delete(filters={"owner": {"$in": ["alice", "bob"]}, "team": {"$in": ["b", "c"]}}) == 1
    assert store.delete(filters={"k": {"$in": [1, True]}}) == 2
    assert sorted(x.id for x in store.get(["s1", "s2", "s3", "n1", "t", "n2"])) == ["n2", "s1", "s3"]


@pytest.mark.parametrize("bad", [
    {"k": {"$in": []}}, {"k": {"$in": [None]}}, {"k": {"$in": [[1]]}}, {"k": {"$in": ["a", {"a": 1}]}},
    {"k": {"$in": [float("nan")]}}, {"k": {"$in": ["a\x00"]}}, {"k": {"$in": list(range(101))}},
    {"k": {"$in": "ab"}}, {"k": {"$in": {"a", "b"}}}, {"k": {"$in": None}}, {"k": {"$in": ["a"], "$eq": "a"}},
    {"k": {"$nin": ["a"]}}, {"k": {"$eq": "a"}}, {"k": {}}, {"k": {"$in": [b"a"]}},
])
def test_unsupported_any_of_filters_are_refused_and_change_nothing(store, bad):
    _owners(store)
    with pytest.raises(InvalidInputError, match="filter 'k'"):
        store.search(embedding=[1, 0, 0, 0], search_type="vector", filters=bad)
    with pytest.raises(InvalidInputError, match="filter 'k'"):
        store.search("keys", search_type="keyword", filters=bad)
    with pytest.raises(InvalidInputError, match="filter 'k'"):
        store.count(filters=bad)
    with pytest.raises(InvalidInputError, match="filter 'k'"):
        store.delete(filters=bad)
    assert store.count() == 10


@pytest.mark.parametrize("search_type", ["vector", "keyword", "hybrid"])
def test_an_any_of_filter_is_applied_inside_each_candidate_list(make_store, search_type):
    # most chunks belong to another owner and rank first: a store that filtered its top hits
    # afterwards would come back short
    store = make_store(hybrid_candidates=10)
    store.create(8)
    others = [Chunk(id=f"x{i:04}", content="rotate api keys now " * 3, metadata={"owner": "bob"},
                    embedding=unit(1, 0.01 * (i % 97), 0, 0, 0, 0, 0, 0.001 * i)) for i in range(1500)]
    mine = [Chunk(id=f"m{i}", content=f"rotate api keys step {i} of the long guide", metadata={"owner": owner},
                  embedding=unit(0.1, 0, 0, 0, 0, 1, 0.1 * i, 0)) for i, owner in enumerate(["", "alice"] * 4)]
    store.upsert(others + mine)
    scope = {"owner": {"$in": ["", "alice"]}}
    hits = store.search("rotate keys", embedding=unit(1, 0, 0, 0, 0, 0, 0, 0), search_type=search_type, limit=5,
                        filters=scope)
    assert len(hits) == 5 and all(h.id.startswith("m") for h in hits)
    everything = store.search("rotate keys", embedding=unit(1, 0, 0, 0, 0, 0, 0, 0), search_type=search_type,
                              limit=100, filters=scope)
    assert sorted(h.id for h in everything) == sorted(c.id for c in mine)
    if search_type != "hybrid":  # the best five are the first five of all the scoped hits
        assert [h.id for h in hits] == [h.id for h in everything[:5]]


# -- search ------------------------------------------------------------------------------------


def _corpus(store):
    store.create(DIM)
    store.upsert([
        c("k1", "Rotate the API keys every ninety days", unit(1, 0.1, 0, 0), metadata={"team": "sec"}),
        c("k2", "API keys are shown once after creation", unit(0.9, 0.3, 0, 0), metadata={"team": "sec"}),
        c("d1", "Disk quota exceeded: error ERR-4471", unit(0, 1, 0.2, 0), metadata={"team": "ops"}),
        c("d2", "Resize the disk volume from the console", unit(0, 0.9, 0.4, 0), metadata={"team": "ops"}),
        c("b1", "Invoices are emailed on the first day of the month", unit(0, 0, 0, 1), metadata={"team": "fin"}),
    ])


def test_vector_search_orders_by_similarity(store):
    _corpus(store)
    hits = store.search(embedding=unit(1, 0.2, 0, 0), search_type="vector", limit=3)
    assert [h.id for h in hits] == ["k1", "k2", "d1"]
    assert all(isinstance(h, SearchHit) and h.embedding is None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(sum(a * b for a, b in zip(unit(1, 0.2, 0, 0), unit(1, 0.1, 0, 0))), abs=1e-5)
    assert hits[0].metadata == {"team": "sec"} and hits[0].content.startswith("Rotate")
    assert len(store.search(embedding=unit(1, 0, 0, 0), search_type="vector", limit=100)) == 5


def test_keyword_search_answers_a_question(store):
    """Any query term may match; the stems meet ("rotate", "rotating"); BM25 ranks."""
    _corpus(store)
    hits = store.search("How often should I be rotating my API keys?", search_type="keyword")
    assert [h.id for h in hits] == ["k1", "k2"]
    assert hits[0].score > hits[1].score > 0
    assert [h.id for h in store.search("ERR-4471", search_type="keyword")] == ["d1"]
    assert store.search("the of and", search_type="keyword") == []  # only stopwords
    assert store.search("zebra", search_type="keyword") == []
    assert {h.id for h in store.search("keys invoices", search_type="keyword", limit=10)} == {"k1", "k2", "b1"}
    hits = store.search("API keys", search_type="keyword", filters={"team": "sec"}, limit=1)
    assert len(hits) == 1 and hits[0].score > 0


def test_keyword_query_syntax(store):
    """+term is required, -term left out, "a phrase" required in order."""
    _corpus(store)

    def ids(q):
        return sorted(h.id for h in store.search(q, search_type="keyword", limit=10))

    assert ids("+keys invoices") == ["k1", "k2"]
    assert ids("disk -quota") == ["d2"]
    assert ids("keys -rotating") == ["k2"]
    assert ids('"API keys"') == ["k1", "k2"]
    assert ids('"keys API"') == []
    assert ids('keys -"ninety days"') == ["k2"]
    assert ids('"resize the disk" volume') == ["d2"]  # a stop word inside a phrase is skipped
    assert ids("-keys") == []  # nothing wanted


# engines whose own BM25 statistics lag behind deletes (each store's page says how)
STALE_STATISTICS = {"redis": "RediSearch 2.10 counts deleted documents until its GC runs and never lowers "
                             "the average length (docs/vector_db/redis.md)"}


def test_keyword_statistics_follow_updates_and_deletes(make_store, store_kind, request):
    """A store that was written, rewritten and pruned ranks as one loaded with the end state."""
    if store_kind.name in STALE_STATISTICS:
        request.applymarker(pytest.mark.xfail(reason=STALE_STATISTICS[store_kind.name], strict=True))
    edited, fresh = make_store(), make_store()
    _corpus(edited)
    edited.upsert([c("k2", "Keys and API keys and more keys", unit(0.9, 0.3, 0, 0), metadata={"team": "sec"}),
                   c("x1", "Spare keys for the disk cabinet", unit(0, 0, 1, 0))])
    edited.delete(ids=["x1", "b1"])
    fresh.create(DIM)
    fresh.upsert([c for c in edited.get(["k1", "k2", "d1", "d2"])])
    for q in ("keys", "disk keys", "API"):
        got = [(h.id, round(h.score, 4)) for h in edited.search(q, search_type="keyword", limit=10)]
        want = [(h.id, round(h.score, 4)) for h in fresh.search(q, search_type="keyword", limit=10)]
        assert got == want, q


def test_hybrid_is_reciprocal_rank_fusion_of_both_lists(make_store):
    store = make_store(search_type="hybrid", rrf_k=60, hybrid_candidates=50)
    _corpus(store)
    q, emb = "disk error", unit(1, 0.5, 0.1, 0)
    vector = [h.id for h in store.search(q, embedding=emb, search_type="vector", limit=50)]
    keyword = [h.id for h in store.search(q, embedding=emb, search_type="keyword", limit=50)]
    expected = rrf_fuse(vector, keyword, vector_weight=1.0, keyword_weight=1.0, k=60)
    hits = store.search(q, embedding=emb, limit=5)
    assert [(h.id, round(h.score, 12)) for h in hits] == [(i, round(s, 12)) for i, s in expected[:5]]
    assert hits[0].id == "d1"  # in both lists


def test_hybrid_relative_score_fusion(make_store):
    store = make_store(search_type="hybrid", fusion="relative_score", vector_weight=0.7, keyword_weight=0.3)
    _corpus(store)
    q, emb = "disk error", unit(1, 0.5, 0.1, 0)
    lists = [[(h.id, h.score) for h in store.search(q, embedding=emb, search_type=kind, limit=store.hybrid_candidates)]
             for kind in ("vector", "keyword")]
    expected = relative_score_fuse(*lists, vector_weight=0.7, keyword_weight=0.3)
    hits = store.search(q, embedding=emb, limit=5)
    assert [(h.id, round(h.score, 6)) for h in hits] == [(i, round(s, 6)) for i, s in expected[:5]]


def test_hybrid_weights(make_store):
    only_vector = make_store(search_type="hybrid", keyword_weight=0.0)
    _corpus(only_vector)
    emb = unit(0, 0, 0, 1)
    vector = [h.id for h in only_vector.search(embedding=emb, search_type="vector", limit=5)]
    assert [h.id for h in only_vector.search("disk quota", embedding=emb, limit=5)] == vector
    only_keyword = make_store(search_type="hybrid", vector_weight=0.0)
    _corpus(only_keyword)
    assert only_keyword.search("disk quota", embedding=emb, limit=5)[0].id == "d1"


def test_hybrid_with_no_keyword_match_is_the_vector_ranking(make_store):
    store = make_store(search_type="hybrid")
    _corpus(store)
    emb = unit(0, 1, 0.3, 0)
    vector = [h.id for h in store.search(embedding=emb, search_type="vector")]
    assert [h.id for h in store.search("zebra", embedding=emb)] == vector


@pytest.mark.parametrize("distance", ["cosine", "l2", "inner_product"])
def test_distances_and_their_scores(make_store, distance):
    store = make_store(distance=distance)
    store.create(3)
    store.upsert([Chunk(id="a", content="a", embedding=[2, 0, 0]), Chunk(id="b", content="b", embedding=[0, 1, 0]),
                  Chunk(id="c", content="c", embedding=[0.5, 0.5, 0])])
    q = [1.0, 0.0, 0.0]
    hits = store.search(embedding=q, search_type="vector", limit=3)
    expected = {
        "cosine": [("a", 1.0), ("c", math.sqrt(0.5)), ("b", 0.0)],
        "l2": [("c", 1 / (1 + math.sqrt(0.5))), ("a", 0.5), ("b", 1 / (1 + math.sqrt(2)))],
        "inner_product": [("a", 2.0), ("c", 0.5), ("b", 0.0)],
    }[distance]
    assert [h.id for h in hits] == [i for i, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"search_type": "vector"}, "embedding"),
    ({"search_type": "keyword"}, "query"),
    ({"search_type": "hybrid", "embedding": [1, 0, 0, 0]}, "query"),
    ({"search_type": "hybrid", "query": "x"}, "embedding"),
    ({"search_type": "semantic", "query": "x"}, "search_type"),
    ({"search_type": "vector", "embedding": [1, 0, 0]}, "has 3 dimensions; this store holds 4: use the embedder"),
    ({"search_type": "vector", "embedding": [1, 0, 0, True]}, "numbers only"),
    ({"search_type": "vector", "embedding": [1, 0, 0, "1"]}, "numbers only"),
    ({"search_type": "vector", "embedding": []}, "empty"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "limit": 0}, "limit"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "limit": 1001}, "limit"),
    ({"search_type": "keyword", "query": "nul \x00"}, "NUL"),
])
def test_search_arguments_are_checked(store, kwargs, message):
    store.create(DIM)
    kwargs = dict(kwargs)
    query = kwargs.pop("query", None)
    with pytest.raises(InvalidInputError, match=message):
        store.search(query, **kwargs)


def test_search_on_an_empty_store_finds_nothing(make_store):
    store = make_store(search_type="hybrid")
    store.create(DIM)
    assert store.search("anything", embedding=[1, 0, 0, 0]) == []


def test_chunks_without_embedding_are_found_by_keyword_only(store):
    store.create(DIM)
    store.upsert([Chunk(id="t", content="plain words only"), c("v", "vector words")])
    assert [h.id for h in store.search(embedding=[1, 0, 0, 0], search_type="vector", limit=10)] == ["v"]
    assert [h.id for h in store.search("plain", search_type="keyword")] == ["t"]


def test_async_twins(store):
    async def main():
        await store.acreate(DIM)
        await store.aupsert([c("a", "hello world")])
        hits = await store.asearch("hello", search_type="keyword")
        return hits, await store.acount(), await store.adelete(ids=["a"])

    hits, count, deleted = asyncio.run(main())
    assert [h.id for h in hits] == ["a"] and count == 1 and deleted == 1
