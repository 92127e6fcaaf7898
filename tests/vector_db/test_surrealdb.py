"""SurrealDb beyond the conformance suite: the SurrealQL it sends (values bound, never written
into the text), that the HNSW and SEARCH indexes serve the searches, exact mode, an on-disk
embedded store, and stores sharing one connection. Runs on the SDK's embedded engine."""

from __future__ import annotations

import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk

pytest.importorskip("surrealdb")

from agentkeep.vector_db import surrealdb as sdb  # noqa: E402
from agentkeep.vector_db.surrealdb import SurrealDb  # noqa: E402
from tests.vector_db.stores import dropped_after  # noqa: E402

HOSTILE = "x'; REMOVE TABLE agentkeep_vector_stores; -- \" $table `"


@pytest.fixture
def stores():
    def open_store(**options):
        options.setdefault("dimensions", 4)
        return SurrealDb(options.pop("table", f"t_{uuid.uuid4().hex[:10]}"), **options)

    with dropped_after(open_store) as make:
        yield make


def chunk(id_, content="text", emb=(1.0, 0.0, 0.0, 0.0), **kw):
    return Chunk(id=id_, content=content, embedding=None if emb is None else list(emb), **kw)


# -- translation --------------------------------------------------------------------------------


def test_search_values_are_bound_never_written_into_the_statement():
    statement, params, names = sdb.search_statement(
        "kb", "hybrid", f"disk {HOSTILE} -quota", [1.0, 0.0], 3, {HOSTILE: HOSTILE, "n": 2**70},
        distance="cosine", indexed=True, ef_search=40, candidates=10,
    )
    assert names == ["vector", "keyword"]
    assert HOSTILE not in statement and "disk" not in statement and "quota" not in statement
    assert "'x'" not in statement and "REMOVE" not in statement
    assert params["fk0"] == HOSTILE and params["fv0"] == HOSTILE
    assert params["fv1"] == float(2**70)  # beyond SurrealDB's 64-bit integers: compared as a number
    terms = ["disk", "remov", "tabl", "agentkeep_vector_stor"]  # distinct terms, one match each
    assert [params[f"kw{i}"] for i in range(1, 5)] == terms and "kw5" not in params
    assert " OR ".join(f"terms @{i}@ $kw{i}" for i in range(1, 5)) in statement  # any term may match
    assert params["kw_not"] == ["quota"] and params["limit"] == 10 and params["vector"] == [1.0, 0.0]
    assert "embedding <|10,40|> $vector" in statement  # k and ef: checked integers, not parameters
    assert "CONTAINSNONE $kw_not" in statement
    assert statement.startswith(sdb.guard())


def test_only_stopwords_send_no_keyword_select():
    statement, params, names = sdb.search_statement(
        "kb", "keyword", "the of and", None, 5, {}, distance="cosine", indexed=True, ef_search=40, candidates=40)
    assert names == [] and "SELECT" not in statement.replace(sdb.guard(), "")


@pytest.mark.parametrize("distance, indexed, fragment", [
    ("cosine", True, "1 - vector::distance::knn()"),
    ("l2", True, "1 / (1 + vector::distance::knn())"),
    ("cosine", False, "vector::similarity::cosine(embedding, $vector)"),
    ("l2", False, "1 / (1 + vector::distance::euclidean(embedding, $vector))"),
    ("inner_product", False, "vector::dot(embedding, $vector)"),
])
def test_vector_scores(distance, indexed, fragment):
    select = sdb.vector_select(distance, indexed, 5, 40, "true")
    assert fragment in select and select.endswith("ORDER BY score DESC, id LIMIT $limit")
    assert ("<|5,40|>" in select) == indexed


def test_ddl():
    text = sdb.ddl("kb", 384, "cosine", "hnsw")
    assert "DEFINE TABLE IF NOT EXISTS kb SCHEMAFULL" in text
    assert "HNSW DIMENSION 384 DIST COSINE TYPE F32 EFC 150 M 12" in text
    assert "SEARCH ANALYZER agentkeep_terms BM25(1.2,0.75)" in text
    assert "DIST EUCLIDEAN" in sdb.ddl("kb", 3, "l2", "hnsw")
    assert "HNSW" not in sdb.ddl("kb", 3, "inner_product", "hnsw")  # no inner-product HNSW: exact scan
    assert "HNSW" not in sdb.ddl("kb", 3, "cosine", None)
    for bad in ("kb;", "k b", "1kb", "", "`kb`", "a" * 64):
        with pytest.raises(InvalidInputError, match="identifier"):
            sdb.ddl(bad, 3, "cosine", "hnsw")


def test_write_statement():
    c = Chunk(id=HOSTILE, content="Rotating keys", embedding=[1, 0], content_id="c",
              metadata={"n": 1, "f": 1.0, "b": True, "s": "x", "l": [1], "o": {"a": None}, "z": None})
    statement, params = sdb.write_statement("kb", [c], replace_content_id="c")
    assert statement.startswith("BEGIN TRANSACTION;") and statement.endswith("COMMIT TRANSACTION;")
    assert HOSTILE not in statement and "DELETE type::table($table) WHERE content_id = $content_id" in statement
    [row] = params["rows"]
    assert row["id"] == HOSTILE
    doc = row["doc"]
    assert doc["terms"] == "rotat key" and doc["embedding"] == [1.0, 0.0] and doc["content_id"] == "c"
    assert doc["tf"] == {"rotat": 1, "key": 1} and doc["length"] == 2  # what BM25 reads of a match
    assert doc["meta"] == {"n": 1, "f": 1.0, "b": True, "s": "x"}  # only scalars are filterable
    assert doc["metadata"] == '{"n":1,"f":1.0,"b":true,"s":"x","l":[1],"o":{"a":null},"z":null}'


def test_bad_options_are_refused():
    for kwargs in ({"distance": "dot"}, {"index": "mtree"}, {"hnsw_m": 0}, {"ef_search": True}, {"bm25_b": -1}):
        with pytest.raises(InvalidInputError):
            SurrealDb("kb", **kwargs)
    with pytest.raises(InvalidInputError, match="registry"):
        SurrealDb(sdb.REGISTRY)
    with pytest.raises(InvalidInputError, match="identifier"):
        SurrealDb("kb-1")


# -- against the embedded engine ----------------------------------------------------------------


def explain(store, select: str, params: dict) -> list[str]:
    rows = store._query(f"{select} EXPLAIN;", params)[-1]
    return [f"{r['operation']}:{r.get('detail', {}).get('plan', {}).get('index', '')}" for r in rows]


def test_the_indexes_serve_the_searches(stores):
    store = stores(search_type="hybrid")
    store.create()
    store.upsert([chunk("a", "disk quota full", metadata={"t": 1}), chunk("b", "disk resize", (0, 1, 0, 0))])
    statement, params, _ = store.search_statement("disk", embedding=[1, 0, 0, 0], filters={"t": 1})
    *_, vector, keyword = statement.split(";\n")
    assert explain(store, vector, params)[0] == "Iterate Index:embedding_hnsw"
    matches = keyword[keyword.index("FROM (") + 6:keyword.rindex(") WHERE")]  # the select the filter wraps
    assert explain(store, matches, params)[0] == "Iterate Index:terms_search"
    info = store._query(f"INFO FOR TABLE {store.table_name};", {})[0]
    assert set(info["indexes"]) == {"embedding_hnsw", "terms_search", "content_id_idx"}


@pytest.mark.parametrize("options", [{"index": None}, {"distance": "inner_product"}])
def test_exact_search(stores, options):
    store = stores(**options)
    store.create()
    store.upsert([chunk("a", emb=(2, 0, 0, 0)), chunk("b", emb=(0, 1, 0, 0)), chunk("c", emb=(0.5, 0.5, 0, 0)),
                  chunk("t", emb=None)])
    assert not store.indexed
    assert "HNSW" not in str(store._query(f"INFO FOR TABLE {store.table_name};", {})[0]["indexes"])
    hits = store.search(embedding=[1, 0, 0, 0], limit=10)
    assert [h.id for h in hits] == ["a", "c", "b"]
    expected = [1.0, 0.5 ** 0.5, 0.0] if store.distance == "cosine" else [2.0, 0.5, 0.0]
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-6)


def test_keyword_scores_equal_the_reference_through_writes_and_deletes(stores):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    store, ref = stores(), InMemoryVectorDb()
    for s in (store, ref):
        s.create(4)
        s.upsert([chunk("a", "Rotate the API keys; keys, keys", content_id="c1"), chunk("b", "API keys are shown once"),
                  chunk("c", "disk keys", content_id="c1"), chunk("d", "nothing here"), chunk("e", "rotating api")])
        s.replace("c1", [chunk("a", "Rotate keys every day", content_id="c1"),
                         chunk("f", "more disk", content_id="c1")])
        s.upsert([chunk("b", "API keys are shown once, then hidden keys")])
        s.delete(ids=["d", "missing"])
    stats = store._query("SELECT docs, length FROM ONLY type::thing($registry, $table);",
                         sdb.base_params(store.table_name))[0]
    assert stats == {"docs": 4, "length": 14}  # kept by the writes, not counted per search
    for q in ("keys", "api keys", "rotate -disk", '"api keys" hidden', "+disk keys"):
        got = [(h.id, round(h.score, 9)) for h in store.search(q, search_type="keyword", limit=10)]
        assert got == [(h.id, round(h.score, 9)) for h in ref.search(q, search_type="keyword", limit=10)], q


def test_an_on_disk_store_keeps_its_data(tmp_path):
    url = f"surrealkv://{tmp_path}/kb"
    store = SurrealDb("kb", url=url)
    store.create(4)
    store.upsert([chunk("a", "kept words")])
    store.close()
    again = SurrealDb("kb", url=url)
    try:
        assert again.dimensions is None and again.exists()
        assert again.count() == 1 and again.dimensions == 4  # learnt from the registry
        assert [h.id for h in again.search("kept", search_type="keyword")] == ["a"]
    finally:
        again.close()


def test_stores_sharing_a_connection_are_independent():
    from surrealdb import Surreal

    client = Surreal("mem://")
    client.connect()
    client.use("agentkeep", "agentkeep")
    one, two = SurrealDb("one", client=client), SurrealDb("two", client=client)
    one.create(4)
    two.create(3)
    one.upsert([chunk("a")])
    two.upsert([chunk("a", emb=(0, 1, 0)), chunk("b", emb=(0, 0, 1))])
    assert (one.count(), two.count()) == (1, 2)
    one.drop()
    with pytest.raises(NotFoundError, match="create"):
        one.count()
    assert two.count() == 2 and two.get(["a"])[0].embedding == [0, 1, 0]
    two.drop()
    one.close()  # the caller's connection stays open
    assert client.query("RETURN 1") == 1
    client.close()
