"""MongoAtlasVectorDb without Atlas: the request documents it builds (index definitions,
stored documents, MQL filters, $vectorSearch and $search pipelines, score conversion), its
argument checks, and its non-search operations against the repository's MongoDB wire-protocol
emulator (which runs no $vectorSearch or $search). Not verified against a live Atlas cluster."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeep.db.errors import InvalidInputError, NotFoundError, UnsupportedError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import check_filters, filter_alternatives, matches
from agentkeep.vector_db.mongodb_atlas import (
    AtlasRequests,
    MongoAtlasVectorDb,
    filter_term,
    filter_terms,
    tagged_value,
)
from agentkeep.vector_db.text import analyzer

kq = analyzer().query  # a keyword query as the store parses it


def store(**options) -> MongoAtlasVectorDb:
    options.setdefault("db_url", "mongodb://127.0.0.1:1")  # never contacted by these tests
    options.setdefault("dimensions", 4)
    return MongoAtlasVectorDb("kb", **options)


# -- filter terms: the filter semantics as string equality --------------------------------------


def test_tagged_values_meet_exactly_when_the_filter_semantics_say_so():
    assert tagged_value(1) == tagged_value(1.0) == "n:1"
    assert tagged_value(-0.0) == tagged_value(0) == "n:0"
    assert tagged_value(0.1) == "n:0.1" and tagged_value(1e16) == tagged_value(10**16) == "n:10000000000000000"
    assert tagged_value(2**62) == "n:4611686018427387904" != tagged_value(2**62 + 1)
    assert tagged_value(True) == "b:true" != tagged_value(1)
    assert tagged_value(False) == "b:false" != tagged_value(0)
    assert tagged_value("1") == "s:1" != tagged_value(1)
    assert tagged_value("") == "s:"
    long = tagged_value("x" * 300)
    assert long.startswith("h:") and len(long) == 66 and long != tagged_value("x" * 301)
    with pytest.raises(TypeError):
        tagged_value([1])


def test_filter_terms_cannot_run_a_key_into_its_value():
    assert filter_term("team", "sec") == "4:team=s:sec"
    assert filter_term("a=s:b", "c") != filter_term("a", "b=s:c")
    assert filter_term("$where", "sleep(1)") == "6:$where=s:sleep(1)"
    assert filter_term("k" * 600, "v").startswith("#")


def test_only_top_level_scalars_become_filter_terms():
    meta = {"s": "1", "i": 1, "t": True, "l": [1], "o": {"k": 1}, "n": None, "$key.with.dots": "x"}
    assert filter_terms(meta) == ["1:s=s:1", "1:i=n:1", "1:t=b:true", "14:$key.with.dots=s:x"]


scalars = st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, -1.0, 2.5, 1e16]),
                    st.sampled_from(["", "1", "a", "A", "a b"]))
values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=2),
                   st.dictionaries(st.just("k"), scalars, max_size=1))
keys = st.sampled_from(["k", "K", "k.k", "$k", "a=s:b"])


@settings(max_examples=300, deadline=None)
@given(meta=st.dictionaries(keys, values, max_size=4), filters=st.dictionaries(keys, scalars, max_size=3))
def test_filter_terms_match_exactly_as_the_reference_semantics(meta, filters):
    stored = set(filter_terms(meta))
    assert all(filter_term(k, v) in stored for k, v in filters.items()) == matches(meta, filters)


@settings(max_examples=300, deadline=None)
@given(meta=st.dictionaries(keys, values, max_size=4),
       lists=st.dictionaries(keys, st.lists(scalars, min_size=1, max_size=3), max_size=3))
def test_any_of_filter_terms_match_exactly_as_the_reference_semantics(meta, lists):
    stored = set(filter_terms(meta))
    filters = check_filters({k: {"$in": vs} for k, vs in lists.items()})
    wanted = all(any(filter_term(k, v) in stored for v in vs) for k, vs in filter_alternatives(filters))
    assert wanted == matches(meta, filters)


def test_the_store_reads_the_query_with_its_analyzer():
    assert store().search_plan("rotating keys -quota", search_type="keyword")["keyword"] == (
        AtlasRequests().keyword_pipeline(kq("rotating keys -quota"), 5, {}))
    german = store(language="german")
    assert german.requests.analyzer.language == "german"
    assert german.requests.document(Chunk(id="g", content="Die Schlüssel"))["keywords"] == "schlussel"
    should = german.search_plan("die Schlüssel", search_type="keyword")["keyword"][0]["$search"]["compound"]["should"]
    assert should == [{"text": {"query": "schlussel", "path": "keywords"}}]


# -- index definitions and documents -----------------------------------------------------------


@pytest.mark.parametrize("distance, similarity", [("cosine", "cosine"), ("l2", "euclidean"),
                                                  ("inner_product", "dotProduct")])
def test_vector_index_definition(distance, similarity):
    assert AtlasRequests(distance=distance).vector_index(1536) == {
        "name": "agentkeep_vector",
        "type": "vectorSearch",
        "definition": {"fields": [
            {"type": "vector", "path": "embedding", "numDimensions": 1536, "similarity": similarity},
            {"type": "filter", "path": "content_id"},
            {"type": "filter", "path": "filter_terms"},
        ]},
    }


def test_search_index_definition():
    assert AtlasRequests(search_index_name="kb_text").search_index() == {
        "name": "kb_text",
        "type": "search",
        "definition": {"mappings": {"dynamic": False, "fields": {
            "keywords": {"type": "string", "analyzer": "lucene.whitespace", "searchAnalyzer": "lucene.whitespace"},
            "filter_terms": {"type": "token"},
        }}},
    }


def test_index_definitions_are_valid_search_index_models():
    pytest.importorskip("pymongo")
    from pymongo.operations import SearchIndexModel

    for spec in (AtlasRequests().vector_index(4), AtlasRequests().search_index()):
        doc = SearchIndexModel(**spec).document
        assert (doc["name"], doc["type"], doc["definition"]) == (spec["name"], spec["type"], spec["definition"])


def test_document_layout():
    chunk = Chunk(id="c1:0", content="Rotate the API keys", content_id="c1", embedding=[0.5, 0, 0, 1],
                  metadata={"team": "sec", "n": 2, "tags": ["a"]}, position=3)
    assert AtlasRequests().document(chunk) == {
        "_id": "c1:0", "content_id": "c1", "content": "Rotate the API keys", "embedding": [0.5, 0, 0, 1],
        "metadata_json": '{"team": "sec", "n": 2, "tags": ["a"]}', "position": 3,
        "keywords": "rotat api key", "filter_terms": ["4:team=s:sec", "1:n=n:2"],
    }
    no_vector = AtlasRequests().document(Chunk(id="t", content="plain words"))
    assert "embedding" not in no_vector and no_vector["content_id"] is None
    assert AtlasRequests.chunk(AtlasRequests().document(chunk)) == chunk


# -- MQL for find / count / delete -------------------------------------------------------------


def test_match_documents():
    assert AtlasRequests.match() == {}
    assert AtlasRequests.match(ids=["a", "b"]) == {"_id": {"$in": ["a", "b"]}}
    assert AtlasRequests.match(content_id="c1", filters={"team": "s", "n": 1.0}) == {
        "content_id": {"$eq": "c1"}, "filter_terms": {"$all": ["4:team=s:s", "1:n=n:1"]}}
    assert AtlasRequests.match(["a"], "c", {"k": True}) == {
        "_id": {"$in": ["a"]}, "content_id": {"$eq": "c"}, "filter_terms": {"$all": ["1:k=b:true"]}}


def test_any_of_filters_in_every_request():
    scope = {"owner": {"$in": ["", "alice"]}, "team": "sec"}
    terms = ["5:owner=s:", "5:owner=s:alice"]
    assert AtlasRequests.match(content_id="c1", filters=scope) == {
        "content_id": {"$eq": "c1"}, "filter_terms": {"$all": ["4:team=s:sec"]},
        "$and": [{"filter_terms": {"$in": terms}}]}
    assert AtlasRequests.match(filters={"owner": {"$in": ["", "alice"]}}) == {"$and": [{"filter_terms": {"$in": terms}}]}
    assert AtlasRequests().vector_pipeline([1.0], 5, scope)[0]["$vectorSearch"]["filter"] == {
        "$and": [{"filter_terms": {"$in": terms}}, {"filter_terms": {"$eq": "4:team=s:sec"}}]}
    assert AtlasRequests().keyword_pipeline(kq("keys"), 5, scope)[0]["$search"]["compound"]["filter"] == [
        {"in": {"path": "filter_terms", "value": terms}}, {"equals": {"path": "filter_terms", "value": "4:team=s:sec"}}]


def test_operators_in_ids_keys_and_values_stay_data():
    where = AtlasRequests.match(ids=["$where", "{'$gt': ''}"], content_id="$ne",
                                filters={"$or": "x", "a.b": "$exists"})
    assert where == {"_id": {"$in": ["$where", "{'$gt': ''}"]}, "content_id": {"$eq": "$ne"},
                     "filter_terms": {"$all": ["3:$or=s:x", "3:a.b=s:$exists"]}}


# -- search pipelines --------------------------------------------------------------------------

PROJECT_VECTOR = {"$project": {"_id": 1, "content_id": 1, "content": 1, "metadata_json": 1, "position": 1,
                               "score": {"$meta": "vectorSearchScore"}}}


def test_vector_pipeline():
    assert AtlasRequests().vector_pipeline([0.1, 0.2], 5, {}) == [
        {"$vectorSearch": {"index": "agentkeep_vector", "path": "embedding", "queryVector": [0.1, 0.2],
                           "limit": 5, "numCandidates": 100}},
        PROJECT_VECTOR,
    ]


def test_vector_pipeline_prefilters_on_filter_terms():
    one = AtlasRequests().vector_pipeline([1.0], 5, {"team": "sec"})[0]["$vectorSearch"]["filter"]
    assert one == {"filter_terms": {"$eq": "4:team=s:sec"}}
    two = AtlasRequests().vector_pipeline([1.0], 5, {"team": "sec", "year": 2024})[0]["$vectorSearch"]["filter"]
    assert two == {"$and": [{"filter_terms": {"$eq": "4:team=s:sec"}}, {"filter_terms": {"$eq": "4:year=n:2024"}}]}


def test_num_candidates_and_exact_search():
    r = AtlasRequests(num_candidates_factor=20, min_num_candidates=50)
    assert [r.num_candidates(n) for n in (1, 5, 400, 1000)] == [50, 100, 8000, 10000]
    stage = AtlasRequests(exact=True).vector_pipeline([1.0], 7, {})[0]["$vectorSearch"]
    assert stage["exact"] is True and "numCandidates" not in stage and stage["limit"] == 7


def text(term):
    return {"text": {"query": term, "path": "keywords"}}


def test_keyword_pipeline_any_term_ranked_by_bm25():
    assert AtlasRequests().keyword_pipeline(kq("Rotating the keys -quota"), 3, {"team": "sec"}) == [
        {"$search": {"index": "agentkeep_text", "compound": {
            "should": [text("rotat"), text("key")], "minimumShouldMatch": 1,
            "mustNot": [text("quota")],
            "filter": [{"equals": {"path": "filter_terms", "value": "4:team=s:sec"}}],
        }}},
        {"$limit": 3},
        {"$project": {"_id": 1, "content_id": 1, "content": 1, "metadata_json": 1, "position": 1,
                      "score": {"$meta": "searchScore"}}},
    ]
    plain = AtlasRequests().keyword_pipeline(kq("keys"), 3, {})[0]["$search"]["compound"]
    assert plain == {"should": [text("key")], "minimumShouldMatch": 1}


def test_required_terms_and_phrases():
    compound = AtlasRequests().keyword_pipeline(kq('rotate +disk "api keys" -"old key" -quota'), 3, {"team": "sec"})[0]
    assert compound["$search"]["compound"] == {
        "must": [text("disk"), text("api"), text("key")],  # scored
        "should": [text("rotat")],  # optional once a term is required: it only adds to the score
        "mustNot": [text("quota"), {"phrase": {"query": "old key", "path": "keywords"}}],
        "filter": [{"phrase": {"query": "api key", "path": "keywords"}},  # matched, not scored again
                   {"equals": {"path": "filter_terms", "value": "4:team=s:sec"}}],
    }
    only_required = AtlasRequests().keyword_pipeline(kq("+disk"), 3, {})[0]["$search"]["compound"]
    assert only_required == {"must": [text("disk")]}


def test_a_query_that_cannot_match_builds_no_pipeline():
    assert AtlasRequests().keyword_pipeline(kq("the of and"), 5, {}) is None
    assert AtlasRequests().keyword_pipeline(kq("-quota"), 5, {}) is None


def test_query_text_never_becomes_an_operator():
    compound = AtlasRequests().keyword_pipeline(kq('{"$gt": ""} $regex'), 5, {})[0]["$search"]["compound"]
    assert compound == {"should": [text("gt"), text("regex")], "minimumShouldMatch": 1}


@pytest.mark.parametrize("distance, raw, expected", [
    ("cosine", 1.0, 1.0), ("cosine", (1 + 0.5 ** 0.5) / 2, 0.5 ** 0.5), ("cosine", 0.5, 0.0),
    ("inner_product", 1.5, 2.0), ("inner_product", 0.75, 0.5), ("inner_product", 0.5, 0.0),
    ("l2", 0.5, 0.5),
])
def test_vector_scores_mean_what_they_mean_on_every_store(distance, raw, expected):
    assert AtlasRequests(distance=distance).vector_score(raw) == pytest.approx(expected)


# -- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"distance": "manhattan"}, "distance"),
    ({"vector_index_name": "bad name"}, "vector_index_name"),
    ({"search_index_name": ""}, "search_index_name"),
    ({"vector_index_name": "same", "search_index_name": "same"}, "differ"),
    ({"num_candidates_factor": 0}, "num_candidates_factor"),
    ({"min_num_candidates": 10_001}, "min_num_candidates"),
    ({"exact": 1}, "exact"),
    ({"dimensions": 0}, "dimensions"),
    ({"dimensions": 8193}, "dimensions"),
    ({"database": "a.b"}, "database"),
    ({"database": "a b"}, "database"),
    ({"search_type": "semantic"}, "search_type"),
    ({"vector_weight": 0, "keyword_weight": 0}, "both"),
    ({"rrf_k": -1}, "rrf_k"),
    ({"hybrid_candidates": 0}, "hybrid_candidates"),
    ({"db_url": None}, "db_url"),
    ({"client": object()}, "either"),
    ({"db_url": 5}, "db_url"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(InvalidInputError, match=message):
        store(**options)


@pytest.mark.parametrize("name", ["", "a$b", "system.views", "a\x00b", ".a", "x" * 121])
def test_bad_collection_names_are_refused(name):
    with pytest.raises(InvalidInputError, match="collection_name"):
        MongoAtlasVectorDb(name, db_url="mongodb://h")


@pytest.mark.parametrize("kwargs, message", [
    ({"search_type": "vector"}, "embedding"),
    ({"search_type": "keyword"}, "query"),
    ({"search_type": "hybrid", "embedding": [1, 0, 0, 0]}, "query"),
    ({"search_type": "vector", "embedding": [1, 0, 0]}, "dimensions"),
    ({"search_type": "vector", "embedding": [1, 0, 0, float("nan")]}, "finite"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "limit": 0}, "limit"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "filters": {"k": [1]}}, "filter"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "filters": {"k": {"$ne": 1}}}, "filter"),
    ({"search_type": "keyword", "query": "nul \x00"}, "NUL"),
])
def test_search_arguments_are_checked_before_any_request(kwargs, message):
    kwargs = dict(kwargs)
    query = kwargs.pop("query", None)
    with pytest.raises(InvalidInputError, match=message):
        store().search_plan(query, **kwargs)


def test_search_plans():
    s = store(hybrid_candidates=30)
    assert s.search_plan(embedding=[1, 0, 0, 0], limit=3)["vector"] == AtlasRequests().vector_pipeline(
        [1.0, 0.0, 0.0, 0.0], 3, {})
    hybrid = s.search_plan("disk error", embedding=[1, 0, 0, 0], limit=5, filters={"team": "ops"},
                           search_type="hybrid")
    assert hybrid["kind"] == "hybrid" and hybrid["limit"] == 5
    assert hybrid["vector"][0]["$vectorSearch"]["limit"] == 30 and hybrid["keyword"][1] == {"$limit": 30}
    assert hybrid["vector"][0]["$vectorSearch"]["filter"] == {"filter_terms": {"$eq": "4:team=s:ops"}}


def test_hybrid_is_the_base_fusion_of_the_two_pipelines():
    def rows(*scored):
        return [{"_id": i, "content": i, "metadata_json": "{}", "score": score} for i, score in scored]

    answers = {"$vectorSearch": rows(("a", 0.95), ("b", 0.9), ("c", 0.55)),  # cosine 0.9, 0.8, 0.1
               "$search": rows(("c", 7.0), ("b", 6.95), ("d", 1.0))}
    for fusion, expected in (("rrf", ["c", "b", "a"]), ("relative_score", ["b", "a", "c"])):
        s = store(search_type="hybrid", fusion=fusion)
        s._known, s._aggregate = True, lambda pipeline: answers[next(iter(pipeline[0]))]  # what Atlas would answer
        assert [h.id for h in s.search("disk", embedding=[1, 0, 0, 0], limit=3)] == expected


def test_importing_and_planning_needs_no_driver():
    code = ("import sys\nfrom agentkeep.vector_db.mongodb_atlas import MongoAtlasVectorDb\n"
            "s = MongoAtlasVectorDb('kb', db_url='mongodb://h', dimensions=2)\n"
            "s.search_plan('x', embedding=[1, 0], search_type='hybrid')\n"
            "assert 'pymongo' not in sys.modules, 'pymongo imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- non-search operations on the wire-protocol emulator ----------------------------------------


@pytest.fixture
def emulated():
    pytest.importorskip("pymongo")
    from tests.services.mongo import new_database, reachable, server_url

    reason = reachable()
    if reason is not None:
        pytest.skip(reason)
    name, drop = new_database()
    made = []

    def make(**options):
        s = MongoAtlasVectorDb(f"kb_{uuid.uuid4().hex[:8]}", db_url=server_url(), database=name,
                               manage_search_indexes=False, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
    drop()


def c(id_, content="text", emb=(1.0, 0.0, 0.0, 0.0), content_id=None, metadata=None):
    return Chunk(id=id_, content=content, embedding=list(emb), content_id=content_id, metadata=metadata or {})


def test_writes_reads_and_filters_on_the_emulator(emulated):
    s = emulated(dimensions=4)
    with pytest.raises(NotFoundError, match="create"):
        s.upsert([c("a")])
    s.create(4)
    meta = {"unicode": "Grüße 🚀", "nested": {"a": [1, {"b": None}]}, "big": 2**62, "float": 0.1,
            "huge_float": 1e16, "$key.with.dots": True, "list": ["x", 1], "beyond_int64": 2**70}
    s.upsert([c("m", metadata=meta), c("s", metadata={"k": "1"}), c("i", metadata={"k": 1}),
              c("f", metadata={"k": 1.0}), c("t", metadata={"k": True}), c("l", metadata={"k": [1, "1", True]}),
              c("o", metadata={"k": {"k": 1}}), c("n", metadata={"k": None}), c("two", metadata={"k": 1, "team": "s"})])
    [got] = s.get(["m"])
    assert got.metadata == meta and type(got.metadata["big"]) is int and got.embedding == [1.0, 0.0, 0.0, 0.0]
    assert [x.id for x in s.get(["two", "zz", "s"])] == ["two", "s"]
    assert s.count() == 9
    assert s.count(filters={"k": 1}) == 3 and s.count(filters={"k": 1.0}) == 3
    assert s.count(filters={"k": "1"}) == 1 and s.count(filters={"k": True}) == 1 and s.count(filters={"k": False}) == 0
    assert s.count(filters={"k": 1, "team": "s"}) == 1 and s.count(filters={"$key.with.dots": True}) == 1
    assert s.count(filters={"k": {"$in": [1, "1", False]}}) == 4
    assert s.count(filters={"k": {"$in": [1, True]}, "team": {"$in": ["s", "x"]}}) == 1
    assert s.delete(filters={"k": {"$in": ["1", True]}}) == 2 and s.count() == 7


def test_replace_and_delete_on_the_emulator(emulated):
    s = emulated()
    s.create(4)
    s.upsert([c("c1:0", content_id="c1"), c("c1:1", content_id="c1"), c("c2:0", content_id="c2", metadata={"n": 2})])
    assert s.replace("c1", [c("c1:0", "new zero"), c("c1:9", content_id="other")]) == 2
    assert s.count(content_id="c1") == 2 and {x.content_id for x in s.get(["c1:0", "c1:9"])} == {"c1"}
    assert s.delete(ids=["c1:0", "zz"], content_id="c2") == 0
    assert s.delete(content_id="c2", filters={"n": 2}) == 1
    assert s.delete(ids=["c1:0", "c1:9"]) == 2 and s.count() == 0
    with pytest.raises(InvalidInputError, match="drop"):
        s.delete(filters={})


def test_a_dropped_store_is_reported_and_search_needs_atlas(emulated):
    s = emulated()
    s.create(4)
    s.upsert([c("a", "hello world")])
    with pytest.raises(UnsupportedError, match="vectorSearch"):
        s.search(embedding=[1, 0, 0, 0])
    s.drop()
    assert not s.exists()
    for call in (lambda: s.count(), lambda: s.get(["a"]), lambda: s.delete(ids=["a"]),
                 lambda: s.search(embedding=[1, 0, 0, 0])):
        with pytest.raises(NotFoundError, match="create"):
            call()
