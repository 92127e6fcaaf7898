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

pytest.importorskip("weaviate")

from agentkeep.vector_db import weaviate as w  # noqa: E402
from agentkeep.vector_db.weaviate import WeaviateDb  # noqa: E402


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
    exclude = [{"op": "not", "filter": {"op": "contains_any", "path": "terms", "value": ["quota"]}}]
    message = _FilterToGRPC.convert(w.to_filter(w.filter_doc(["a"], "c1", {"k": 1, "t": True}, known, exclude)))
    assert message.operator == message.OPERATOR_AND
    parts = list(message.filters)
    assert [p.target.property for p in parts[:4]] == ["_id", "content_id", prop("k", 1), prop("t", True)]
    assert list(parts[0].value_text_array.values) == [w.object_uuid("a")]
    assert parts[1].value_text == "c1" and parts[2].value_number == 1.0 and parts[3].value_boolean is True
    assert parts[4].operator == message.OPERATOR_NOT
    assert list(parts[4].filters[0].value_text_array.values) == ["quota"]
    assert parts[4].filters[0].target.property == "terms"
    assert w.to_filter(None) is None


def test_search_requests():
    known = {prop("team", "s")}
    [vector] = w.search_requests("vector", None, [1.0, 0.0], 5, {"team": "s"}, known=known)
    assert vector == {"kind": "near_vector", "vector": [1.0, 0.0], "limit": 5,
                      "filters": {"op": "equal", "path": prop("team", "s"), "value": "s"}}
    [bm25] = w.search_requests("keyword", "Rotating the keys -disks -the", None, 3, {})
    assert bm25 == {"kind": "bm25", "query": "rotat key", "properties": ["terms"], "operator": "and", "limit": 3,
                    "filters": {"op": "not", "filter": {"op": "contains_any", "path": "terms", "value": ["disk"]}}}
    assert w.search_requests("keyword", "the of and", None, 3, {}) == []  # only stopwords: nothing to match
    assert w.search_requests("vector", None, [1.0], 3, {"other": 1}, known=known) == []  # NOTHING
    vector, bm25 = w.search_requests("hybrid", "disk", [1.0], 5, {}, candidates=40)
    assert vector["limit"] == bm25["limit"] == 40 and bm25["query"] == "disk"
    [native] = w.search_requests("hybrid", "disk", [1.0], 5, {}, fusion="ranked", vector_weight=3.0, keyword_weight=1.0)
    assert native["kind"] == "hybrid" and native["alpha"] == 0.75 and native["limit"] == 5
    # with no keyword term, a native hybrid falls back to the vector list
    assert [r["kind"] for r in w.search_requests("hybrid", "the", [1.0], 5, {}, fusion="ranked")] == ["near_vector"]


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
    for kwargs in ({"distance": "dot"}, {"fusion": "rrf"}, {"ef": -2}, {"bm25_b": True}, {"rrf_k": -1},
                   {"dimensions": 0}, {"hybrid_candidates": 0}):
        with pytest.raises(InvalidInputError):
            WeaviateDb("Kb", url="http://localhost:8080", **kwargs)
    with pytest.raises(InvalidInputError, match="url= or client="):
        WeaviateDb("Kb")
    with pytest.raises(InvalidInputError, match="http"):
        WeaviateDb("Kb", url="ftp://x")
