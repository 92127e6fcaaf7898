"""MilvusDb beyond the conformance suite: the collection it makes (BM25 function, indexes),
string literals that carry hostile values as data, the typed filter field that keeps
booleans apart from numbers where a plain JSON comparison does not, and the limits of
Milvus' field sizes, refused before anything is written."""

from __future__ import annotations

import logging
import math
import os
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES, _local_dir, dropped_after

MILVUS = next(s for s in STORES if s.name == "milvus")
HOSTILE = [
    '" or id != "', "a'b\"c", "back\\slash", "ends with \\", '\\"', "tab\there", "new\nline", "cr\rx", "日本 🚀",
    "\x01\x7f", "%s", "]) or true or ([", "", "\\n", 'x" || "1" == "1',
]


@pytest.fixture
def stores():
    require(MILVUS)
    from agentkeep.vector_db.milvus import MilvusDb

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # pymilvus logs each expected NotFound
    uri = os.path.join(_local_dir("milvus"), "milvus.db")
    with dropped_after(lambda collection=None, **options: MilvusDb(
            collection or f"t_{uuid.uuid4().hex[:12]}", uri=uri, **options)) as make:
        yield make


def c(id_, content="text", emb=(1.0, 0.0), **kw):
    return Chunk(id=id_, content=content, embedding=list(emb), **kw)


def unit(*xs):
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


# -- expressions, without an engine ---------------------------------------------------------


def test_quote_escapes_what_ends_or_breaks_a_literal():
    from agentkeep.vector_db.milvus import quote

    assert quote('a"b') == '"a\\"b"'
    assert quote("a\\") == '"a\\\\"'
    assert quote('\\" or true or "') == '"\\\\\\" or true or \\""'
    assert quote("x\ny\rz\tw") == '"x\\ny\\rz\\tw"'
    assert quote("it's 日本") == '"it\'s 日本"'


def test_filters_compare_a_typed_copy_with_hashed_keys():
    from agentkeep.vector_db.milvus import _key, filter_expr, filter_meta

    meta = {"team": "s", "n": 1, "f": 1.0, "x": 0.5, "t": True, "l": [1], "o": {"a": 1}, "z": None, 'k"]': "v"}
    typed = filter_meta(meta)
    assert typed == {_key("team"): "s:s", _key("n"): "n:1", _key("f"): "n:1", _key("x"): "n:0.5",
                     _key("t"): "b:true", _key('k"]'): "s:v"}  # lists, objects, null: never match
    assert filter_expr({"n": 1.0, "t": False, 'k"]': 'a"b'}) == [
        f'filter_meta["{_key("n")}"] == "n:1"', f'filter_meta["{_key("t")}"] == "b:false"',
        f'filter_meta["{_key(chr(107) + chr(34) + "]")}"] == "s:a\\"b"',
    ]
    assert all(len(k) == 33 and k.isalnum() for k in typed)


def test_keyword_marks_and_long_terms():
    from agentkeep.vector_db.milvus import keyword_expr, term_key
    from agentkeep.vector_db.text import analyzer

    assert keyword_expr(analyzer().query("Rotating keys -disks -volume")) == [
        'not TEXT_MATCH(terms_text, "disk volum")']  # any-term matching is the BM25 search's
    assert keyword_expr(analyzer().query('+keys "API keys"')) == [
        'TEXT_MATCH(terms_text, "key")', 'TEXT_MATCH(terms_text, "api")']
    long = "x" * 100
    assert term_key("short") == "short"
    assert term_key(long).startswith("_") and len(term_key(long)) == 33 and term_key(long) == term_key(long)


def test_bad_names_and_options_are_refused():
    from agentkeep.vector_db.milvus import MilvusDb

    for bad in ("t; drop", "1abc", "", "a-b", 'x"'):
        with pytest.raises(InvalidInputError, match="collection"):
            MilvusDb(bad, uri="unused.db")
    with pytest.raises(InvalidInputError, match="index"):
        MilvusDb("t", uri="unused.db", index="DISKANN")
    with pytest.raises(InvalidInputError, match="uri"):
        MilvusDb("t")


# -- on Milvus Lite -------------------------------------------------------------------------


def test_create_builds_the_collection(stores):
    s = stores(distance="l2")
    s.create(3)
    info = s._client.describe_collection(s.collection)
    fields = {f["name"]: f for f in info["fields"]}
    assert list(fields) == ["id", "content_id", "content", "position", "metadata", "filter_meta", "terms_text",
                            "sparse", "has_vector", "vector"]
    assert fields["id"]["is_primary"] and fields["vector"]["params"]["dim"] == 3
    assert fields["terms_text"]["params"]["enable_analyzer"] in (True, "true")
    assert fields["terms_text"]["params"]["enable_match"] in (True, "true")
    [bm25] = info["functions"]
    assert (bm25["input_field_names"], bm25["output_field_names"]) == (["terms_text"], ["sparse"])
    assert sorted(s._client.list_indexes(s.collection)) == ["content_id", "sparse", "vector"]
    vector = s._client.describe_index(s.collection, "vector")
    assert (vector["index_type"], vector["metric_type"]) == ("FLAT", "L2")  # Milvus Lite: exact by default
    sparse = s._client.describe_index(s.collection, "sparse")
    assert (sparse["index_type"], sparse["metric_type"]) == ("SPARSE_INVERTED_INDEX", "BM25")


@pytest.mark.parametrize("index, options", [("AUTOINDEX", {}), ("HNSW", {}), ("IVF_FLAT", {"nprobe": 128})])
def test_other_indexes_serve_filtered_searches(stores, index, options):
    # the suite's filtered-search case, with the rows flushed into a segment the index covers;
    # IVF_FLAT probes all 128 lists here: with fewer, matches in unprobed lists are missed
    s = stores(index=index, **options)
    s.create(8)
    near = [c(f"n{i}", "near", unit(1, 0.01 * (i % 97), 0, 0, 0, 0, 0, 0.001 * i), metadata={"tag": "common"})
            for i in range(1500)]
    far = [c(f"f{i}", "far", unit(0, 0, 0, 0, 0, 1, 0.1 * i, 0), metadata={"tag": "rare"}) for i in range(5)]
    s.upsert(near + far)
    s._client.flush(s.collection)
    assert s._client.describe_index(s.collection, "vector")["index_type"] == index
    q = unit(1, 0, 0, 0, 0, 0, 0, 0)
    assert sorted(h.id for h in s.search(embedding=q, limit=5, filters={"tag": "rare"})) == [f"f{i}" for i in range(5)]
    assert [h.id for h in s.search(embedding=q, limit=3)] == ["n0", "n1", "n2"]


def test_booleans_stay_apart_from_numbers(stores):
    s = stores()
    s.create(2)
    s.upsert([c("one", metadata={"k": 1}), c("true", metadata={"k": True}), c("float", metadata={"k": 1.0})])
    # the plain JSON comparison Milvus Lite evaluates in Python, where True == 1
    plain = s._client.query(s.collection, filter='metadata["k"] == 1', output_fields=["id"])
    assert sorted(r["id"] for r in plain) == ["float", "one", "true"]
    assert s.count(filters={"k": 1}) == 2 and s.count(filters={"k": True}) == 1 and s.count(filters={"k": False}) == 0


def test_hostile_values_are_data(stores):
    s = stores()
    s.create(2)
    s.upsert([c(f"i{n}", "x", metadata={"k": v, v: 1}) for n, v in enumerate(HOSTILE)] + [c("other", "x")])
    for n, v in enumerate(HOSTILE):
        assert [h.id for h in s.search(embedding=[1, 0], limit=50, filters={"k": v})] == [f"i{n}"]
        if v:
            assert s.count(filters={v: 1}) == 1
    ids = ['a"b', "a\\b", '" or true or "', "x]) or ([1"]
    s.upsert([c(i, content_id=i) for i in ids])
    assert [x.id for x in s.get(ids)] == ids
    assert all(s.count(content_id=i) == 1 for i in ids)
    assert s.delete(ids=['" or true or "']) == 1 and s.count() == len(HOSTILE) + len(ids)


def test_keyword_ranking_follows_the_reference_store(stores):
    s = stores()
    ref = InMemoryVectorDb()
    docs = {"a": "Rotate the API keys every ninety days; keys, keys", "b": "API keys are shown once",
            "c": "disk keys", "d": "nothing here", "e": "rotating rotated api"}
    for store in (s, ref):
        store.create(2)
        store.upsert([c(k, v) for k, v in docs.items()])
    for q in ("keys", "api keys", "rotate", "api -disk"):
        got = s.search(q, search_type="keyword", limit=10)
        assert [h.id for h in got] == [h.id for h in ref.search(q, search_type="keyword", limit=10)]
        assert all(h.score > 0 for h in got)


def test_long_terms_many_terms_and_long_content(stores):
    s = stores()
    s.create(2)
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3
    s.upsert([c("long", f"about {word} here"), c("other", "about here")])
    assert [h.id for h in s.search(word, search_type="keyword")] == ["long"]
    s.upsert([c("many", " ".join(f"w{i}x" for i in range(5000)))])  # no limit on distinct terms
    assert [h.id for h in s.search("w4999x w17x", search_type="keyword")] == ["many"]
    s.delete(ids=["many"])
    with pytest.raises(InvalidInputError, match="65535 bytes"):
        s.upsert([c("ok"), c("big", "ü" * 40000)])
    with pytest.raises(InvalidInputError, match="64 bits"):
        s.upsert([c("ok"), c("huge", metadata={"a": [{"b": 2**64}]})])
    assert s.count() == 2


def test_a_collection_dropped_elsewhere_is_reported(stores):
    s = stores()
    s.create(2)
    s.upsert([c("a")])
    other = stores(s.collection)
    assert other.count() == 1 and other.dimensions == 2  # the same collection, found by name
    other.drop()
    with pytest.raises(NotFoundError, match="create"):
        s.count()
    s.create(2)
    with pytest.raises(InvalidInputError, match="holds 2-dimensional"):
        stores(s.collection, dimensions=3).create()


def test_replace_writes_before_it_deletes(stores):
    s = stores()
    s.create(2)
    s.upsert([c("x:0", content_id="x"), c("x:1", content_id="x"), c("y:0", content_id="y")])
    assert s.replace("x", [c("x:1", "kept id, new text"), c("x:2")]) == 2
    assert sorted(h.id for h in s.search(embedding=[1, 0], limit=10, filters=None)) == ["x:1", "x:2", "y:0"]
    assert [x.content for x in s.get(["x:1"])] == ["kept id, new text"]
