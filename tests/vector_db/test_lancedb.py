"""LanceDb beyond the conformance suite: the table's layout and indexes, the vector index
built past the threshold still finding the true neighbours (with filters, with rows written
after it), keyword search equal to the reference store's BM25 after updates and deletes (the full-text
index rebuilt on write) and rows the index lacks still searched, atomic replace() as seen by a concurrent reader, and several handles on one table."""

from __future__ import annotations

import math
import random
import threading

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES

pytest.importorskip("lancedb")
from agentkeep.vector_db.lancedb import LanceDb, _has_positions, filter_tokens  # noqa: E402

pytestmark = pytest.mark.usefixtures("lancedb_available")


@pytest.fixture
def lancedb_available():
    require(next(s for s in STORES if s.name == "lancedb"))


@pytest.fixture
def stores(tmp_path):
    made = []

    def make(name="chunks", **options):
        s = LanceDb(name, uri=tmp_path / "lance", **options)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def random_chunks(n, dim, seed=1, start=0):
    r = random.Random(seed)
    return [Chunk(id=f"r{i}", content=f"row {i} tag{i % 7}", embedding=[r.gauss(0, 1) for _ in range(dim)],
                  metadata={"bucket": i % 10}) for i in range(start, start + n)]


def exact(chunks, q, distance, k):
    def score(e):
        dot = sum(a * b for a, b in zip(e, q))
        if distance == "cosine":
            return dot / math.sqrt(sum(a * a for a in e) * sum(b * b for b in q))
        if distance == "inner_product":
            return dot
        return 1 / (1 + math.sqrt(sum((a - b) ** 2 for a, b in zip(e, q))))

    return sorted(((c.id, score(c.embedding)) for c in chunks), key=lambda x: (-x[1], x[0]))[:k]


def test_create_builds_the_table_and_its_indexes(stores):
    s = stores()
    s.create(8)
    table = s._ready()
    assert table.schema.names == ["id", "content_id", "content", "terms", "embedding", "metadata", "filter_tokens",
                                  "position"]
    found = {tuple(i.columns): i.index_type for i in table.list_indices()}
    assert found == {("id",): "BTree", ("content_id",): "BTree", ("filter_tokens",): "LabelList", ("terms",): "FTS"}
    s.upsert([Chunk(id="a", content="Rotating the API keys", embedding=[1.0] * 8, metadata={"team": "sec", "n": 2.0})])
    row = table.search().where("id = 'a'").select(["terms", "filter_tokens"]).to_arrow().to_pylist()[0]
    assert row == {"terms": "rotat api key", "filter_tokens": ['["team","sec"]', '["n",2]']}


def test_filter_tokens_compare_numbers_by_value_and_keep_booleans_apart():
    assert filter_tokens({"a": 1}) == filter_tokens({"a": 1.0}) == ['["a",1]']
    assert filter_tokens({"a": True}) == ['["a",true]'] != filter_tokens({"a": 1})
    assert filter_tokens({"a": "1"}) == ['["a","1"]']
    assert filter_tokens({"a": 2**53 + 1}) != filter_tokens({"a": float(2**53 + 1)})  # not equal in Python either
    assert filter_tokens({"a": 0.1, "b": -0.0, "c": 1e16}) == ['["a",0.1]', '["b",0]', '["c",10000000000000000]']
    assert filter_tokens({"l": [1], "o": {"k": 1}, "n": None}) == []


def test_hostile_metadata_keys_and_values_filter_exactly(stores):
    s = stores()
    s.create(2)
    meta = {"it's": "a'b\\c\"d", 'k"\\': "日本 ' OR 1=1 --", "": 1}
    s.upsert([Chunk(id="x", content="x", embedding=[1, 0], metadata=meta),
              Chunk(id="y", content="y", embedding=[1, 0])])
    assert s.count(filters={"it's": "a'b\\c\"d"}) == 1
    assert s.count(filters={'k"\\': "日本 ' OR 1=1 --"}) == 1
    assert s.count(filters={"it's": "a'b\\c"}) == 0
    assert s.delete(filters={"it's": "a'b\\c\"d", 'k"\\': "日本 ' OR 1=1 --"}) == 1 and s.count() == 1


@pytest.mark.parametrize("index, distance, options, min_found", [
    ("ivf_hnsw_sq", "cosine", {}, 45),
    ("ivf_hnsw_sq", "l2", {}, 45),
    # product quantization is coarse (and its training random): re-score more, expect less
    ("ivf_pq", "inner_product", {"refine_factor": 20}, 38),
    ("ivf_flat", "cosine", {"refine_factor": None}, 45),  # full vectors: scores are exact anyway
])
def test_the_index_built_past_the_threshold_finds_the_true_neighbours(stores, index, distance, options, min_found):
    dim = 16
    s = stores(index=index, distance=distance, index_threshold=400, num_partitions=2, **options)
    s.create(dim)
    chunks = random_chunks(600, dim)
    s.upsert(chunks[:300])
    assert not s._has_vector_index  # below the threshold: exact search
    s.upsert(chunks[300:])
    assert s._has_vector_index
    assert [i.index_type for i in s._ready().list_indices() if i.columns == ["embedding"]]

    r = random.Random(7)
    hits_found = 0
    for _ in range(10):
        q = [r.gauss(0, 1) for _ in range(dim)]
        truth = exact(chunks, q, distance, 5)
        hits = s.search(embedding=q, search_type="vector", limit=5)
        hits_found += len({h.id for h in hits} & {i for i, _ in truth})
        want = dict(exact(chunks, q, distance, 600))
        for h in hits:  # refine_factor re-scores the candidates: scores are exact distances
            assert h.score == pytest.approx(want[h.id], rel=1e-4, abs=1e-4)
    assert hits_found >= min_found  # of 50: recall@5 over 10 queries

    # a filter that keeps few rows, all far from the query, still finds them all
    far = [Chunk(id=f"far{i}", content="far", embedding=[0.0] * (dim - 1) + [-1.0 - i], metadata={"rare": True})
           for i in range(3)]
    s.upsert(far)
    hits = s.search(embedding=[0.0] * (dim - 1) + [1.0], search_type="vector", limit=5, filters={"rare": True})
    assert sorted(h.id for h in hits) == ["far0", "far1", "far2"]

    # rows written after the index are searched exactly until optimize() folds them in
    q = [r.gauss(0, 1) for _ in range(dim)]
    s.upsert([Chunk(id="new", content="new", embedding=q)])
    assert s.search(embedding=q, search_type="vector", limit=1)[0].id == "new"
    s.optimize()
    stats = s._ready().index_stats(next(i.name for i in s._ready().list_indices() if i.columns == ["embedding"]))
    assert stats.num_unindexed_rows == 0
    assert s.search(embedding=q, search_type="vector", limit=1)[0].id == "new"


def test_a_narrow_filter_probes_more_partitions_than_nprobes(stores):
    # 8 IVF partitions, 1 probe: the partition nearest the query holds none of the rare rows,
    # and a fixed probe count would come back empty
    dim = 16
    s = stores(index="ivf_flat", num_partitions=8, nprobes=1, index_threshold=100)
    s.create(dim)
    r = random.Random(3)
    near = [Chunk(id=f"n{i}", content="n", embedding=[1 + r.random() / 10] + [r.gauss(0, 1) for _ in range(dim - 1)])
            for i in range(800)]
    far = [Chunk(id=f"far{i}", content="far", embedding=[-5.0 - i] + [r.gauss(0, 0.1) for _ in range(dim - 1)],
                 metadata={"rare": True}) for i in range(3)]
    s.upsert(near + far)
    assert s._has_vector_index
    q = [1.0] + [0.0] * (dim - 1)
    fixed = (s._ready().search(q, vector_column_name="embedding").distance_type("cosine")
             .where("""array_has_all(filter_tokens, ['["rare",true]'])""").nprobes(1).limit(5).to_arrow())
    assert fixed.num_rows == 0  # what the store avoids
    hits = s.search(embedding=q, search_type="vector", limit=5, filters={"rare": True})
    assert sorted(h.id for h in hits) == ["far0", "far1", "far2"]


KEYWORD_CORPUS = [
    ("k1", "Rotate the API keys every ninety days", {"team": "sec"}),
    ("k2", "API keys are shown once after creation; keys keys", {"team": "sec"}),
    ("k3", "Rotating credentials: the keys rotate themselves", {"team": "ops"}),
    ("d1", "Disk quota exceeded: error ERR-4471", {"team": "ops"}),
    ("d2", "Resize the disk volume from the console", {"team": "ops"}),
    ("u1", "Grüße aus München: Schlüssel rotieren", {"team": "de"}),
    ("x1", "x" * 300 + " very long token", {"team": "sec"}),
]
KEYWORD_QUERIES = ["keys", "rotate keys", "API keys -shown", "disk", "disk -quota", "ERR-4471", "schlüssel",
                   "GRÜSSE", "the of", "x" * 300, "keys zebra", "-keys", "how do I rotate my keys?", "+keys rotate",
                   '"api keys"', '"keys api"', 'keys -"api keys"', '"rotate keys" +credentials', "+disk +quota"]


def test_keyword_search_is_the_reference_bm25(stores):
    s = stores()
    ref = InMemoryVectorDb()
    for store in (s, ref):
        store.create(2)
        store.upsert([Chunk(id=i, content=text, embedding=[1, 0], metadata=m) for i, text, m in KEYWORD_CORPUS])
        store.delete(ids=["d2"])  # the statistics leave deleted rows out
        store.upsert([Chunk(id="k1", content="Rotate the keys", embedding=[1, 0], metadata={"team": "sec"})])
    assert s._ready().index_stats("terms_idx").num_unindexed_rows > 0  # writes leave the index alone
    for q in KEYWORD_QUERIES:
        for filters in (None, {"team": "sec"}):
            got = s.search(q, search_type="keyword", limit=10, filters=filters)
            want = ref.search(q, search_type="keyword", limit=10, filters=filters)
            assert [h.id for h in got] == [h.id for h in want], (q, filters)
            assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5), (q, filters)
    assert s._ready().index_stats("terms_idx").num_unindexed_rows == 0  # rebuilt once, at the first search


def test_rows_written_behind_the_index_are_searched(stores):
    """Rows another writer added (a new table version) bring the index up to date first."""
    s = stores()
    s.create(2)
    s.upsert([Chunk(id="a", content="keys of the old rows", embedding=[1, 0])])
    assert [h.id for h in s.search("keys", search_type="keyword", limit=10)] == ["a"]
    table = s._ready()
    table.add(s._arrow([Chunk(id="b", content="keys written behind the index", embedding=[1, 0])]))
    assert table.index_stats("terms_idx").num_unindexed_rows == 1
    assert sorted(h.id for h in s.search("keys", search_type="keyword", limit=10)) == ["a", "b"]
    assert [h.id for h in s.search('"written behind"', search_type="keyword", limit=10)] == ["b"]
    assert table.index_stats("terms_idx").num_unindexed_rows == 0


def test_replace_is_atomic_for_a_concurrent_reader(stores):
    s = stores()
    s.create(2)
    versions = [[Chunk(id=f"c:{i}", content=f"part {i} of {n}", embedding=[1, 0]) for i in range(n)] for n in (3, 5)]
    s.replace("c", versions[0])
    reader = stores()  # another handle, as another process would have
    seen: set[int] = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            seen.add(reader.count(content_id="c"))

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(20):
            s.replace("c", versions[i % 2 == 0])
    finally:
        stop.set()
        t.join(timeout=30)
    assert seen and seen <= {3, 5}


def test_handles_on_one_table_see_each_other(stores):
    a, b = stores(), stores()
    a.create(2)
    b.create()
    assert b.dimensions == 2
    a.upsert([Chunk(id="x", content="shared words", embedding=[1, 0])])
    assert [h.id for h in b.search("shared", search_type="keyword")] == ["x"]
    b.drop()
    with pytest.raises(NotFoundError, match="create"):
        a.count()
    with pytest.raises(NotFoundError, match="create"):
        a.upsert([Chunk(id="y", content="y", embedding=[1, 0])])


def test_a_table_keeps_its_distance(stores):
    stores(distance="l2").create(2)
    with pytest.raises(InvalidInputError, match="l2"):
        stores(distance="cosine").create(2)
    with pytest.raises(InvalidInputError, match="3"):
        stores(distance="l2", dimensions=3).count()


def test_optimize_runs_every_n_writes(stores, monkeypatch):
    s = stores(optimize_every=3)
    s.create(2)
    table, optimized = s._ready(), []
    real = table.optimize
    monkeypatch.setattr(table, "optimize", lambda *a, **k: optimized.append(1) or real(*a, **k))
    for i in range(3):
        s.upsert([Chunk(id=f"a{i}", content=f"word{i}", embedding=[1, 0])])
        assert len(optimized) == (1 if i == 2 else 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "bad name"}, "table_name"),
    ({"name": "../up"}, "table_name"),
    ({"index": "hnsw"}, "index"),
    ({"distance": "dot"}, "distance"),
    ({"index_threshold": 0}, "index_threshold"),
    ({"refine_factor": 0}, "refine_factor"),
    ({"read_consistency_interval": -1}, "read_consistency_interval"),
    ({"rrf_k": -1}, "rrf_k"),
])
def test_bad_options(stores, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        stores(**kwargs)


def test_an_object_store_uri(tmp_path):
    s = LanceDb("kb", uri="memory://agentkeep-test", search_type="hybrid")
    s.create(2)
    s.upsert([Chunk(id="a", content="in memory object store", embedding=[1, 0])])
    assert [h.id for h in s.search("object store", embedding=[1, 0])] == ["a"]
    assert "memory://" in s.describe()
    s.drop()
    assert not s.exists()


def test_an_earlier_full_text_index_gets_positions_on_create(stores):
    from lancedb.index import FTS

    s = stores()
    s.create(2)
    s.upsert([Chunk(id="a", content="rotate the api keys", embedding=[1, 0])])
    # as an earlier agentkeep built it: no positions, so no phrase queries
    s._ready().create_index("terms", replace=True, config=FTS(
        base_tokenizer="whitespace", lower_case=False, stem=False, remove_stop_words=False, ascii_folding=False,
        max_token_length=None))
    assert not _has_positions(s._ready())
    again = stores()
    again.create()
    assert _has_positions(again._ready())
    assert [h.id for h in again.search('"api keys"', search_type="keyword")] == ["a"]
