"""WeaviateDb's translation layer: the objects, schema, filters and queries it sends.

No Weaviate server can run here (embedded Weaviate downloads its binary at run time), so
WeaviateDb is not verified against a live service: these tests check the request documents
and the weaviate-client objects (down to the gRPC filter message and the REST schema body)
that they become, with no client connection."""

from __future__ import annotations

import json
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import check_filters
from agentkeep.vector_db.text import analyzer

pytest.importorskip("weaviate")

from agentkeep.vector_db import weaviate as w  # noqa: E402
from agentkeep.vector_db.weaviate import WeaviateDb  # noqa: E402

kq = analyzer().query  # a keyword query as the store parses it


def prop(key, value):
    return w.meta_property(key, value)[0]


def test_object_doc():
    c = Chunk(id="a'b", content="Rotating the API keys", embedding=[1, 0.5], content_id="c1", position=3,
              metadata={"team": "sec", "n": 1, "f": 1.0, "ok": True, "list": [1], "obj": {"a": None}, "none": None,
                        "huge": 10**400})
    doc = w.object_doc(c)
    assert doc["uuid"] == str(uuid.uuid5(w.UUID_NAMESPACE, "a'b")) == w.object_uuid("a'b")
    assert doc["vector"] == [1.0, 0.5]
    p = doc["properties"]
    assert (p["chunk_id"], p["content"], p["content_id"], p["position"]) == ("a'b", "Rotating the API keys", "c1", 3)
    assert p["terms"] == "rotat api key"
    assert json.loads(p["metadata"])["obj"] == {"a": None}  # the whole metadata, as JSON text
    # one typed property per filterable scalar: 1 and 1.0 both become NUMBER 1.0
    assert p[prop("team", "x")] == "sec" and p[prop("n", 1)] == 1.0 and p[prop("f", 1.0)] == 1.0
    assert p[prop("ok", True)] is True
    assert prop("n", 1) == prop("n", 2.5) != prop("n", "1") != prop("n", True)
    assert set(doc["specs"]) == {prop("team", "x"), prop("n", 1), prop("f", 1.0), prop("ok", True)}
    assert doc["specs"][prop("team", "x")] == {"name": prop("team", "x"), "data_type": "text", "tokenization": "field",
                                               "filterable": True, "searchable": False}
    assert all(w.meta_property(k, v) is None for k, v in {"list": [1], "obj": {}, "none": None, "h": 10**400}.items())
    no_vector = w.object_doc(Chunk(id="t", content="plain"))
    assert no_vector["vector"] is None and "content_id" not in no_vector["properties"]
    german = w.object_doc(Chunk(id="g", content="Die Schlüssel"), analyzer("german"))
    assert german["properties"]["terms"] == "schlussel"


def test_property_names_are_valid_weaviate_names_for_any_key():
    for key in ("$key.with.dots", "日本", "a" * 5000, "", " "):
        name = prop(key, "x")
        assert len(name) == 35 and name.replace("_", "").isalnum() and name.isascii()


def test_filter_doc_and_type_rules():
    known = {prop("k", 1), prop("k", "1"), prop("k", True), prop("team", "s")}
    assert w.filter_doc(None, None, {}) is None
    assert w.filter_doc(None, None, {"k": 1}, known) == {"op": "equal", "path": prop("k", 1), "value": 1.0}
    assert w.filter_doc(None, None, {"k": 1.0}, known) == w.filter_doc(None, None, {"k": 1}, known)
    assert w.filter_doc(None, None, {"k": True}, known)["path"] == prop("k", True)
    assert w.filter_doc(None, None, {"k": "1"}, known) == {"op": "equal", "path": prop("k", "1"), "value": "1"}
    # a key/type no object ever stored has no property: nothing matches, no query is sent
    assert w.filter_doc(None, None, {"missing": "x"}, known) is w.NOTHING
    assert w.filter_doc(None, None, {"k": False, "team": "s"}, {prop("team", "s")}) is w.NOTHING
    doc = w.filter_doc(["a", "b"], "c1", {"team": "s"}, known)
    assert doc == {"op": "and", "filters": [
        {"op": "id_in", "value": [w.object_uuid("a"), w.object_uuid("b")]},
        {"op": "equal", "path": "content_id", "value": "c1"},
        {"op": "equal", "path": prop("team", "s"), "value": "s"},
    ]}


def test_any_of_filters_are_an_or_of_equalities():
    known = {prop("owner", ""), prop("owner", "alice"), prop("k", 1), prop("team", "s")}

    def doc(filters, known=known):
        return w.filter_doc(None, None, check_filters(filters), known)

    assert doc({"owner": {"$in": ["", "alice"]}, "team": "s"}) == {"op": "and", "filters": [
        {"op": "or", "filters": [{"op": "equal", "path": prop("owner", ""), "value": ""},
                                 {"op": "equal", "path": prop("owner", "alice"), "value": "alice"}]},
        {"op": "equal", "path": prop("team", "s"), "value": "s"},
    ]}
    # a member whose property no object has drops out; with none left nothing matches
    assert doc({"k": {"$in": [1, True]}}) == {"op": "equal", "path": prop("k", 1), "value": 1.0}
    assert doc({"k": {"$in": [False, "x"]}}) is w.NOTHING
    from weaviate.collections.filters import _FilterToGRPC

    message = _FilterToGRPC.convert(w.to_filter(doc({"owner": {"$in": ["", "alice"]}})))
    assert message.operator == message.OPERATOR_OR
    assert [p.value_text for p in message.filters] == ["", "alice"]


def test_filters_become_the_grpc_message_weaviate_receives():
    from weaviate.collections.filters import _FilterToGRPC

    known = {prop("k", 1), prop("t", True)}
    terms = w.keyword_filter(kq("+disk keys -quota"))
    message = _FilterToGRPC.convert(w.to_filter(w.filter_doc(["a"], "c1", {"k": 1, "t": True}, known, terms)))
    assert message.operator == message.OPERATOR_AND
    parts = list(message.filters)
    assert [p.target.property for p in parts[:5]] == ["_id", "content_id", prop("k", 1), prop("t", True), "terms"]
    assert list(parts[0].value_text_array.values) == [w.object_uuid("a")]
    assert parts[1].value_text == "c1" and parts[2].value_number == 1.0 and parts[3].value_boolean is True
    assert parts[4].operator == message.OPERATOR_CONTAINS_ALL and list(parts[4].value_text_array.values) == ["disk"]
    assert parts[5].operator == message.OPERATOR_NOT
    assert list(parts[5].filters[0].value_text_array.values) == ["quota"]
    assert parts[5].filters[0].target.property == "terms"
    assert w.to_filter(None) is None


def test_search_requests():
    known = {prop("team", "s")}
    [vector] = w.search_requests("vector", None, [1.0, 0.0], 5, {"team": "s"}, known=known)
    assert vector == {"kind": "near_vector", "vector": [1.0, 0.0], "limit": 5,
                      "filters": {"op": "equal", "path": prop("team", "s"), "value": "s"}}
    # any term may match (BM25 OR, at least one term), ranked by Weaviate's BM25
    [bm25] = w.search_requests("keyword", kq("Rotating the keys -disks -the"), None, 3, {})
    assert bm25 == {"kind": "bm25", "query": "rotat key", "properties": ["terms"], "operator": "or",
                    "minimum_match": 1, "limit": 3,
                    "filters": {"op": "not", "filter": {"op": "contains_any", "path": "terms", "value": ["disk"]}}}
    assert w.search_requests("keyword", kq("the of and"), None, 3, {}) == []  # only stopwords: nothing to match
    assert w.search_requests("vector", None, [1.0], 3, {"other": 1}, known=known) == []  # NOTHING
    vector, bm25 = w.search_requests("hybrid", kq("disk"), [1.0], 5, {}, candidates=40)
    assert vector["limit"] == bm25["limit"] == 40 and bm25["query"] == "disk"


def test_required_terms_and_phrases():
    known = {prop("team", "s")}
    [bm25] = w.search_requests("keyword", kq('rotate +disk "api keys" -quota'), None, 3, {"team": "s"}, known=known,
                               phrase_depth=10)
    assert bm25["query"] == "disk api key rotat" and bm25["operator"] == "or"  # every ranked term scores
    assert bm25["filters"] == {"op": "and", "filters": [
        {"op": "equal", "path": prop("team", "s"), "value": "s"},
        {"op": "contains_all", "path": "terms", "value": ["disk", "api", "key"]},
        {"op": "not", "filter": {"op": "contains_any", "path": "terms", "value": ["quota"]}},
    ]}
    assert bm25["limit"] == 30  # a phrase: ten times deeper, the words' order checked on the hits


def test_native_hybrid():
    [native] = w.search_requests("hybrid", kq("disk"), [1.0], 5, {}, native_fusion="ranked", vector_weight=3.0,
                                 keyword_weight=1.0)
    assert native["kind"] == "hybrid" and native["alpha"] == 0.75 and native["limit"] == 5
    assert (native["operator"], native["minimum_match"], native["fusion"]) == ("or", 1, "ranked")
    # with no keyword term, a native hybrid falls back to the vector list
    assert [r["kind"] for r in w.search_requests("hybrid", kq("the"), [1.0], 5, {}, native_fusion="ranked")] == [
        "near_vector"]


def unconnected(**options) -> WeaviateDb:
    """A store on a real, never connected client, answering with the lists `lists` holds by
    request kind (what Weaviate would send back)."""
    import weaviate
    from weaviate.connect import ConnectionParams

    client = weaviate.WeaviateClient(ConnectionParams.from_url("http://localhost:8080", 50051), skip_init_checks=True)
    s = WeaviateDb("Kb", client=client, **options)
    s._known, s._properties = True, set()
    return s


def test_hybrid_goes_through_the_base_fusion():
    from agentkeep.vector_db.base import SearchHit

    def hit(id_, score):
        return SearchHit(id=id_, content=id_, score=score)

    lists = {"near_vector": [hit("a", 0.9), hit("b", 0.8), hit("c", 0.1)], "bm25": [hit("c", 7.0), hit("b", 6.95), hit("d", 1.0)]}
    s = unconnected(search_type="hybrid", fusion="relative_score")
    s._send = lambda request: lists[request["kind"]]  # the lists Weaviate would answer
    # relative-score fusion: each list scaled to 0..1, then added
    assert [h.id for h in s.search("disk", embedding=[1.0], limit=3)] == ["b", "a", "c"]
    assert [h.id for h in s.search("disk", embedding=[1.0], limit=2, search_type="keyword")] == ["c", "b"]
    rrf = unconnected(search_type="hybrid")
    rrf._send = s._send
    # the default: the base's reciprocal-rank fusion, 1 / (60 + rank) from each list
    assert [h.id for h in rrf.search("disk", embedding=[1.0], limit=3)] == ["c", "b", "a"]
    assert rrf.search("disk", embedding=[1.0], limit=1)[0].score == pytest.approx(1 / 63 + 1 / 61)


def test_phrases_are_checked_on_the_hits():
    from agentkeep.vector_db.base import SearchHit

    bm25 = [SearchHit(id="apart", content="keys of the API", score=3.0),
            SearchHit(id="near", content="rotate the API keys", score=2.0)]
    s = unconnected()
    s._send = lambda request: bm25
    assert [h.id for h in s.search('"api keys"', search_type="keyword")] == ["near"]


@pytest.mark.parametrize("distance, reported, expected", [
    ("cosine", 0.25, 0.75),
    ("l2", 0.5, 1 / (1 + 0.5 ** 0.5)),  # Weaviate reports the squared distance
    ("inner_product", -2.0, 2.0),  # and the negated dot product
])
def test_scores(distance, reported, expected):
    assert w.score_from_distance(distance, reported) == pytest.approx(expected)


@pytest.mark.parametrize("distance, metric", [("cosine", "cosine"), ("l2", "l2-squared"), ("inner_product", "dot")])
def test_the_schema_request(distance, metric):
    from weaviate.collections.classes.config import _CollectionConfigCreate

    body = _CollectionConfigCreate(**w.collection_config(
        "Kb", 384, distance, ef=-1, ef_construction=128, max_connections=32, bm25_k1=1.2, bm25_b=0.75))._to_dict()
    assert body["class"] == "Kb" and w.parse_description(body["description"]) == (384, distance)
    vector = body["vectorConfig"]["default"]
    assert vector["vectorizer"] == {"none": {}} and vector["vectorIndexType"] == "hnsw"
    assert vector["vectorIndexConfig"]["distance"] == metric
    assert body["invertedIndexConfig"] == {"bm25": {"b": 0.75, "k1": 1.2}, "stopwords": {"preset": "none"}}
    props = {p["name"]: p for p in body["properties"]}
    assert props["terms"]["tokenization"] == "whitespace" and props["terms"]["indexSearchable"] is True
    assert props["content_id"]["tokenization"] == "field" and props["content_id"]["indexFilterable"] is True
    assert props["metadata"]["indexFilterable"] is False and props["metadata"]["indexSearchable"] is False
    added = w.to_property(w.meta_property("team", "x")[1])._to_dict()
    assert added["dataType"] == ["text"] and added["tokenization"] == "field" and added["indexFilterable"] is True


def test_options_are_checked():
    for bad in ("kb", "1Kb", "K-b", "", "K" * 300):
        with pytest.raises(InvalidInputError, match="class name"):
            WeaviateDb(bad, url="http://localhost:8080")
    for kwargs in ({"distance": "dot"}, {"fusion": "ranked"}, {"native_fusion": "rrf"}, {"ef": -2}, {"bm25_b": True}, {"rrf_k": -1},
                   {"dimensions": 0}, {"hybrid_candidates": 0}):
        with pytest.raises(InvalidInputError):
            WeaviateDb("Kb", url="http://localhost:8080", **kwargs)
    with pytest.raises(InvalidInputError, match="url= or client="):
        WeaviateDb("Kb")
    with pytest.raises(InvalidInputError, match="http"):
        WeaviateDb("Kb", url="ftp://x")
