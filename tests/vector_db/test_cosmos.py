"""CosmosDb without Azure: the container definition, items and parameterized NoSQL queries it
builds, score conversion and argument checks. No Cosmos DB emulator runs here, so none of
this is verified against a live service; the tests need neither azure-cosmos nor a network."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import check_filters
from agentkeep.vector_db.cosmos import CosmosDb, CosmosQueries
from agentkeep.vector_db.text import analyzer

kq = analyzer().query  # a keyword query as the store parses it


def store(**options) -> CosmosDb:
    options.setdefault("url", "https://acct.documents.azure.com:443/")  # never contacted
    options.setdefault("credential", "key")
    options.setdefault("dimensions", 4)
    return CosmosDb("kb", **options)


def q(**options) -> CosmosQueries:
    return CosmosQueries("kb", **options)


def check_parameters(text: str, params: list[dict]) -> None:
    """Every @name in the text is a parameter, every parameter is used, none repeats."""
    names = [p["name"] for p in params]
    assert len(names) == len(set(names))
    assert set(re.findall(r"@\w+", text)) == set(names)


# -- the container -------------------------------------------------------------------------------


@pytest.mark.parametrize("distance, function", [("cosine", "cosine"), ("l2", "euclidean"),
                                                ("inner_product", "dotproduct")])
def test_container_definition(distance, function):
    assert q(distance=distance).container(1536) == {
        "id": "kb",
        "partition_key_path": "/id",
        "indexing_policy": {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}, {"path": "/embedding/*"}, {"path": "/content/?"},
                              {"path": "/metadata_json/?"}],
            "vectorIndexes": [{"path": "/embedding", "type": "quantizedFlat"}],
            "fullTextIndexes": [{"path": "/terms"}],
        },
        "vector_embedding_policy": {"vectorEmbeddings": [
            {"path": "/embedding", "dataType": "float32", "distanceFunction": function, "dimensions": 1536}]},
        "full_text_policy": {"defaultLanguage": "en-US", "fullTextPaths": [{"path": "/terms", "language": "en-US"}]},
    }


def test_index_types_and_their_dimension_limits():
    assert q(index_type="diskANN").container(4096)["indexing_policy"]["vectorIndexes"] == [
        {"path": "/embedding", "type": "diskANN"}]
    assert q(index_type="flat").container(505)["indexing_policy"]["vectorIndexes"][0]["type"] == "flat"
    with pytest.raises(InvalidInputError, match="505"):
        q(index_type="flat").container(506)
    with pytest.raises(InvalidInputError, match="4096"):
        q().container(4097)
    assert q(full_text_language="de-DE").container(4)["full_text_policy"] == {
        "defaultLanguage": "de-DE", "fullTextPaths": [{"path": "/terms", "language": "de-DE"}]}


def test_dimensions_are_read_back_from_the_container_properties():
    props = {"id": "kb", "vectorEmbeddingPolicy": q().container(12)["vector_embedding_policy"]}
    assert CosmosQueries.stored_dimensions(props) == 12
    assert CosmosQueries.stored_dimensions({"id": "kb"}) is None


# -- items ---------------------------------------------------------------------------------------


def test_item_layout_and_round_trip():
    meta = {"team": "sec", "n": 2, "big": 2**62, "beyond": 2**70, "f": 1e16, "tags": ["a"], "$k.d": None}
    chunk = Chunk(id="c1:0", content="Rotate the API keys", content_id="c1", embedding=[0.5, 0.0, 0.0, 1.0],
                  metadata=meta, position=3)
    item = q().item(chunk)
    assert item == {
        "id": "c1:0", "content_id": "c1", "content": "Rotate the API keys", "position": 3,
        "metadata_json": json.dumps(meta, ensure_ascii=False), "has_embedding": True,
        "terms": "rotat api key", "filter_terms": ["4:team=s:sec", "1:n=n:2", "3:big=n:4611686018427387904",
                                                   "6:beyond=n:1180591620717411303424", "1:f=n:10000000000000000"],
        "embedding": [0.5, 0.0, 0.0, 1.0],
    }
    back = CosmosQueries.chunk(json.loads(json.dumps(item)))
    assert back == chunk and type(back.metadata["big"]) is int and type(back.metadata["f"]) is float
    plain = q().item(Chunk(id="t", content="plain words"))
    assert plain["has_embedding"] is False and "embedding" not in plain


def test_the_analyzer_language_sets_the_terms_and_the_full_text_culture():
    german = store(language="german")
    assert german.queries.language == "de-DE" and german.analyzer.language == "german"
    [item] = german.write_plan([Chunk(id="g", content="Die Schlüssel")])
    assert item["terms"] == "schlussel"
    assert store(language="dutch").queries.language == "en-US"  # no Cosmos DB culture: en-US
    assert store(language="german", full_text_language="fr-FR").queries.language == "fr-FR"


def test_read_items_pairs_each_id_with_its_partition_key():
    assert CosmosQueries.read_items(["a", "b"]) == [("a", "a"), ("b", "b")]


# -- queries -------------------------------------------------------------------------------------


def test_conditions():
    assert q().ids_query() == ("SELECT VALUE c.id FROM c", [])
    assert q().ids_query(["a", "b"], "c1", {"team": "s", "n": 1.0}) == (
        "SELECT VALUE c.id FROM c WHERE ARRAY_CONTAINS(@ids, c.id) AND c.content_id = @content_id"
        " AND ARRAY_CONTAINS(c.filter_terms, @f0) AND ARRAY_CONTAINS(c.filter_terms, @f1)",
        [{"name": "@ids", "value": ["a", "b"]}, {"name": "@content_id", "value": "c1"},
         {"name": "@f0", "value": "4:team=s:s"}, {"name": "@f1", "value": "1:n=n:1"}],
    )
    assert q().count_query() == ("SELECT VALUE COUNT(1) FROM c", [])
    assert q().count_query("c1", {"k": True}) == (
        "SELECT VALUE COUNT(1) FROM c WHERE c.content_id = @content_id AND ARRAY_CONTAINS(c.filter_terms, @f0)",
        [{"name": "@content_id", "value": "c1"}, {"name": "@f0", "value": "1:k=b:true"}],
    )


def test_any_of_conditions():
    text, params = q().count_query(None, check_filters({"owner": {"$in": ["", "alice"]}, "team": "s"}))
    assert text == ("SELECT VALUE COUNT(1) FROM c WHERE"
                    " (ARRAY_CONTAINS(c.filter_terms, @f0_0) OR ARRAY_CONTAINS(c.filter_terms, @f0_1))"
                    " AND ARRAY_CONTAINS(c.filter_terms, @f1)")
    assert params == [{"name": "@f0_0", "value": "5:owner=s:"}, {"name": "@f0_1", "value": "5:owner=s:alice"},
                      {"name": "@f1", "value": "4:team=s:s"}]
    text, params = q().keyword_query(kq("keys"), 3, check_filters({"k": {"$in": [1, True]}}))
    assert "(ARRAY_CONTAINS(c.filter_terms, @f0_0) OR ARRAY_CONTAINS(c.filter_terms, @f0_1))" in text
    check_parameters(text, params)


def test_vector_query():
    text, params = q().vector_query([0.1, 0.2], 5, {"team": "sec"})
    assert text == (
        "SELECT TOP @n c.id, c.content_id, c.content, c.metadata_json, c.position,"
        " VectorDistance(c.embedding, @q) AS score FROM c"
        " WHERE c.has_embedding = true AND ARRAY_CONTAINS(c.filter_terms, @f0)"
        " ORDER BY VectorDistance(c.embedding, @q)"
    )
    assert params == [{"name": "@n", "value": 5}, {"name": "@q", "value": [0.1, 0.2]},
                      {"name": "@f0", "value": "4:team=s:sec"}]
    check_parameters(text, params)


def test_keyword_query_any_term_ranked_by_bm25():
    text, params = q().keyword_query(kq("Rotating the keys -quota"), 3, {"team": "sec"})
    assert text == (
        "SELECT TOP @n c.id, c.content_id, c.content, c.metadata_json, c.position FROM c"
        " WHERE FullTextContainsAny(c.terms, @t0, @t1) AND NOT FullTextContainsAny(c.terms, @x0)"
        " AND ARRAY_CONTAINS(c.filter_terms, @f0)"
        " ORDER BY RANK FullTextScore(c.terms, @t0, @t1)"
    )
    assert params == [{"name": "@n", "value": 3}, {"name": "@t0", "value": "rotat"}, {"name": "@t1", "value": "key"},
                      {"name": "@x0", "value": "quota"}, {"name": "@f0", "value": "4:team=s:sec"}]
    check_parameters(text, params)
    text, params = q().keyword_query(kq("ERR-4471"), 10, {})
    assert text.endswith("WHERE FullTextContainsAny(c.terms, @t0, @t1) ORDER BY RANK FullTextScore(c.terms, @t0, @t1)")
    assert [p["value"] for p in params] == [10, "err", "4471"]


def test_required_terms_must_all_match_and_every_ranked_term_scores():
    text, params = q().keyword_query(kq('rotate +disk "api keys"'), 5, {})
    assert text.endswith(" WHERE FullTextContainsAll(c.terms, @t0, @t1, @t2)"
                         " ORDER BY RANK FullTextScore(c.terms, @t0, @t1, @t2, @t3)")
    assert [p["value"] for p in params] == [5, "disk", "api", "key", "rotat"]
    check_parameters(text, params)


def test_a_phrase_asks_for_more_hits_and_keeps_those_holding_it():
    s = store()
    assert s.search_plan('"api keys" rotate', search_type="keyword", limit=3)["keyword"][1][0] == {
        "name": "@n", "value": 3 * s.PHRASE_DEPTH}
    rows = [{"id": i, "content": text, "metadata_json": "{}"} for i, text in
            [("apart", "keys of the API"), ("first", "rotate the API keys"), ("second", "new API keys")]]
    s._known, s._query = True, lambda text, params: rows  # the rows Cosmos DB would rank, best first
    hits = s.search('"api keys"', search_type="keyword", limit=5)
    assert [(h.id, h.score) for h in hits] == [("first", 1.0), ("second", 0.5)]  # 1 / rank among the kept


def test_a_query_that_cannot_match_builds_nothing():
    assert q().keyword_query(kq("the of and"), 5, {}) is None
    assert q().keyword_query(kq("-quota"), 5, {}) is None


HOSTILE = ["' OR 1=1 --", 'a"b', "c.id", "@n", "x) OR (1=1", "\\", "];DROP", "ü-日本"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_never_reach_the_query_text(value):
    benign = [q().ids_query(["a"], "b", {"k": "v"})[0], q().count_query("b", {"k": "v"})[0],
              q().vector_query([1.0], 5, {"k": "v"})[0]]
    hostile = [q().ids_query([value], value, {value: value})[0], q().count_query(value, {value: value})[0],
               q().vector_query([1.0], 5, {value: value})[0]]
    assert hostile == benign
    text, params = q().keyword_query(kq(f"word {value}"), 5, {value: 1})
    check_parameters(text, params)
    words = len([p for p in params if p["name"].startswith("@t")])
    assert text == q().keyword_query(kq(" ".join(f"w{i}" for i in range(words))), 5, {"k": 1})[0]


@pytest.mark.parametrize("distance, raw, expected", [
    ("cosine", 1.0, 1.0), ("cosine", 0.0, 0.0), ("inner_product", 2.0, 2.0), ("inner_product", -0.5, -0.5),
    ("l2", 0.0, 1.0), ("l2", 1.0, 0.5), ("l2", 2 ** 0.5, 1 / (1 + 2 ** 0.5)),
])
def test_vector_scores_mean_what_they_mean_on_every_store(distance, raw, expected):
    assert q(distance=distance).vector_score(raw) == pytest.approx(expected)


# -- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"distance": "hamming"}, "distance"),
    ({"index_type": "hnsw"}, "index_type"),
    ({"full_text_language": "english"}, "full_text_language"),
    ({"language": "klingon"}, "language"),
    ({"dimensions": 0}, "dimensions"),
    ({"dimensions": 506, "index_type": "flat"}, "505"),
    ({"database": "a/b"}, "database"),
    ({"database": ""}, "database"),
    ({"url": "acct.documents.azure.com"}, "url"),
    ({"url": None}, "either"),
    ({"client": object()}, "either"),
    ({"search_type": "semantic"}, "search_type"),
    ({"keyword_weight": -1}, "keyword_weight"),
    ({"hybrid_candidates": 10_001}, "hybrid_candidates"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(InvalidInputError, match=message):
        store(**options)


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "a#b", "a?b", " kb", "a\nb", "x" * 256])
def test_bad_container_names_are_refused(name):
    with pytest.raises(InvalidInputError, match="container_name"):
        CosmosDb(name, url="https://h", credential="k")


@pytest.mark.parametrize("bad, message", [
    (lambda: Chunk(id="a", content="x", embedding=[1, 0, 0]), "dimensions"),
    (lambda: Chunk(id="a", content="x", embedding=[1, 0, 0, float("inf")]), "finite"),
    (lambda: Chunk(id="", content="x"), "chunk id"),
    (lambda: Chunk(id="a\nb", content="x"), "control"),
    (lambda: Chunk(id="a", content="nul \x00"), "NUL"),
    (lambda: Chunk(id="a", content="x", metadata={"k": object()}), "JSON"),
    (lambda: Chunk(id="a", content="x", position=-1), "position"),
])
def test_bad_chunks_are_refused_before_anything_is_written(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        store().write_plan([Chunk(id="good", content="x"), bad()])


def test_write_plans():
    chunks = [Chunk(id="a", content="first"), Chunk(id="a", content="second", content_id="other")]
    [item] = store().write_plan(chunks)
    assert item["content"] == "second" and item["content_id"] == "other"
    [item] = store().write_plan(chunks, content_id="c1")
    assert item["content_id"] == "c1"
    with pytest.raises(InvalidInputError, match="content_id"):
        store().write_plan(chunks, content_id="")


@pytest.mark.parametrize("kwargs, message", [
    ({"search_type": "vector"}, "embedding"),
    ({"search_type": "keyword"}, "query"),
    ({"search_type": "hybrid", "query": "x"}, "embedding"),
    ({"search_type": "vector", "embedding": [1, 0, 0]}, "dimensions"),
    ({"search_type": "vector", "embedding": [1, 0, 0, True]}, "numbers only"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "limit": 1001}, "limit"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "filters": {"k": None}}, "filter"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "filters": "k=1"}, "filter"),
])
def test_search_arguments_are_checked_before_any_request(kwargs, message):
    kwargs = dict(kwargs)
    query = kwargs.pop("query", None)
    with pytest.raises(InvalidInputError, match=message):
        store().search_plan(query, **kwargs)


def test_search_plans():
    s = store(search_type="hybrid", hybrid_candidates=25)
    plan = s.search_plan("disk error", embedding=[1, 0, 0, 0], limit=5, filters={"team": "ops"})
    assert plan["kind"] == "hybrid" and plan["limit"] == 5
    assert plan["vector"] == q().vector_query([1.0, 0.0, 0.0, 0.0], 25, {"team": "ops"})
    assert plan["keyword"] == q().keyword_query(kq("disk error"), 25, {"team": "ops"})
    only_vector = s.search_plan(embedding=[1, 0, 0, 0], search_type="vector", limit=3)
    assert "keyword" not in only_vector and only_vector["vector"][1][0] == {"name": "@n", "value": 3}
    assert s.search_plan("the", embedding=[1, 0, 0, 0])["keyword"] is None


def test_importing_and_planning_needs_no_driver():
    code = ("import sys\nfrom agentkeep.vector_db.cosmos import CosmosDb\n"
            "s = CosmosDb('kb', url='https://h', credential='k', dimensions=2)\n"
            "s.search_plan('x', embedding=[1, 0], search_type='hybrid')\n"
            "assert not [m for m in sys.modules if m.startswith('azure')], 'azure imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
