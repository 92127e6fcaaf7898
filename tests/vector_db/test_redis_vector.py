"""RedisVectorDb beyond the conformance suite: the index layout really exists, filters and
keyword queries reach FT.SEARCH escaped (or as digests), hostile text is data, matching
agrees with InMemoryVectorDb, and several handles on one store stay consistent."""

from __future__ import annotations

import threading
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from agentkeep.vector_db.text import analyzer
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES, dropped_after

redis = pytest.importorskip("redis")
from agentkeep.vector_db.redis import (  # noqa: E402
    RedisVectorDb,
    condition,
    content_token,
    escape,
    keyword_clause,
    meta_token,
)

REDIS = next(s for s in STORES if s.name == "redis")
HOSTILE = ["@k:{x}", "a|b", "{}", "*", "-", "--x", "x -y", "$param", '"quoted"', "%fuzzy%", "~opt",
           "w'*x*'", "=>[KNN 5 @vec $vector]", "\\", "(a | b)", "@terms:(x)", "ü ß 日本", "x* -*"]


@pytest.fixture
def url() -> str:
    require(REDIS)
    from tests.services.redis_stack import server_url

    return server_url()


@pytest.fixture
def stores(url):
    with dropped_after(lambda name=None, **options: RedisVectorDb(
            name or f"t_{uuid.uuid4().hex[:12]}", db_url=url, prefix="akt", **options)) as make:
        yield make


def client(url):
    return redis.Redis.from_url(url, protocol=2)


def info(url, index) -> dict:
    with client(url) as r:
        raw = r.execute_command("FT.INFO", index)
    return dict(zip(raw[::2], raw[1::2]))


def attributes(url, index) -> dict:
    out = {}
    for a in info(url, index)[b"attributes"]:
        out[a[1].decode()] = [x.decode() if isinstance(x, bytes) else x for x in a[4:]]  # after identifier, attribute
    return out


# -- translation (no server) -----------------------------------------------------------------


def test_escape_quotes_every_operator():
    assert escape("a@b|c{d}*e-f") == r"a\@b\|c\{d\}\*e\-f"
    assert escape('x y$z"(w)~%:;=>[]\\') == r'x\ y\$z\"\(w\)\~\%\:\;\=\>\[\]\\'
    assert escape("ü日本2024") == "ü日本2024"  # letters and digits stay as they are


def clause(text: str) -> str | None:
    query = analyzer().query(text)
    return keyword_clause(query) if query else None


def test_keyword_clause_is_a_union_narrowed_by_the_marks():
    assert clause("Rotating the API keys") == "@terms:((rotat | api | key))"
    assert clause("disk -quota") == "@terms:((disk) -quota)"
    assert clause("ERR-4471 err") == "@terms:((err | 4471))"  # a term once
    assert clause("+keys invoices") == "@terms:(key ~(invoic))"  # required, then optional
    assert clause('"resize the disk" -"ninety days" volume') == '@terms:("resiz disk" ~(volum) -"nineti day")'
    assert clause("the of and") is None and clause("-disk") is None
    for text in HOSTILE:  # operators never reach the query: terms are letters and digits
        found = clause(text)
        assert found is None or all(ch.isalnum() or ch in " -|~()" for ch in found[len("@terms:("):-1]), found


def test_filter_tokens_follow_the_suite_type_rules():
    assert meta_token("k", 1) == meta_token("k", 1.0) == meta_token("k", -(-1))
    assert meta_token("k", 0) == meta_token("k", -0.0)
    assert meta_token("k", 2**62) == meta_token("k", float(2**62)) != meta_token("k", 2**62 + 1)
    assert meta_token("k", 0.1) != meta_token("k", 0.1 + 1e-17 * 2)  # exact values
    assert len({meta_token("k", 1), meta_token("k", True), meta_token("k", "1"), meta_token("j", 1)}) == 4
    assert meta_token("k", False) != meta_token("k", 0)
    assert meta_token("k", None) is None and meta_token("k", [1]) is None and meta_token("k", {"a": 1}) is None
    token = meta_token("@k", "{x}|y*")
    assert len(token) == 32 and all(ch in "0123456789abcdef" for ch in token)  # no user text in a query
    assert condition("c1", {"@k": "{x}|y*"}) == f"@cid:{{{content_token('c1')}}} @meta:{{{token}}}"
    assert condition(None, {}) == ""


def test_constructor_checks_its_arguments():
    for kwargs in ({"name": "a:b"}, {"name": ""}, {"name": "x" * 129}, {"name": "kb", "prefix": "a b"},
                   {"name": "kb", "distance": "dot"}, {"name": "kb", "index": "ivf"},
                   {"name": "kb", "scorer": "TFIDF"}, {"name": "kb", "ef_runtime": 0},
                   {"name": "kb", "db_url": "http://x"}, {"name": "kb", "dimensions": 0},
                   {"name": "kb", "timeout_ms": -1}):
        with pytest.raises(InvalidInputError):
            RedisVectorDb(**kwargs)


# -- against the server ----------------------------------------------------------------------


@pytest.mark.parametrize("distance, index, metric", [
    ("cosine", "hnsw", "COSINE"), ("l2", "flat", "L2"), ("inner_product", "hnsw", "IP"),
])
def test_create_builds_the_index(stores, url, distance, index, metric):
    s = stores(distance=distance, index=index, hnsw_m=8, hnsw_ef_construction=50)
    s.create(6)
    found = info(url, s.index_name)
    definition = dict(zip(found[b"index_definition"][::2], found[b"index_definition"][1::2]))
    assert definition[b"key_type"] == b"HASH" and definition[b"prefixes"] == [f"akt:vdb:{s.name}:".encode()]
    attrs = attributes(url, s.index_name)
    assert attrs["terms"][:2] == ["type", "TEXT"] and "NOSTEM" in attrs["terms"]
    assert attrs["cid"][:2] == attrs["meta"][:2] == ["type", "TAG"]
    vec = dict(zip(attrs["vec"][::2], attrs["vec"][1::2]))
    assert (vec["type"], vec["algorithm"], vec["data_type"], vec["dim"], vec["distance_metric"]) == (
        "VECTOR", index.upper(), "FLOAT32", 6, metric)
    if index == "hnsw":
        assert (vec["M"], vec["ef_construction"]) == (8, 50)
    with client(url) as r:
        assert r.hgetall(s.index_name) == {b"dimensions": b"6", b"distance": distance.encode(),
                                           b"index": index.encode()}


def test_chunks_are_hashes_under_the_store_prefix_and_drop_removes_them(stores, url):
    s = stores()
    s.create(2)
    s.upsert([Chunk(id="a b:c", content="Rotate keys", embedding=[1, 0], content_id="c1", metadata={"t": "x"}),
              Chunk(id="t", content="plain")])
    with client(url) as r:
        keys = sorted(r.scan_iter(match=f"akt:vdb:{s.name}*"))
        assert keys == [s.index_name.encode(), f"{s.index_name}:a b:c".encode(), f"{s.index_name}:t".encode()]
        row = r.hgetall(f"{s.index_name}:a b:c")
        assert row[b"terms"] == b"rotat key" and row[b"content"] == b"Rotate keys" and len(row[b"vec"]) == 8
        assert row[b"cid"].decode() == content_token("c1") and row[b"meta"].decode() == meta_token("t", "x")
        assert b"vec" not in r.hgetall(f"{s.index_name}:t")
    s.drop()
    with client(url) as r:
        assert list(r.scan_iter(match=f"akt:vdb:{s.name}*")) == []


def test_stores_whose_names_share_a_beginning_are_apart(stores):
    a = stores("kb_" + uuid.uuid4().hex[:6])
    b = stores(a.name + "2")
    for s in (a, b):
        s.create(2)
    a.upsert([Chunk(id="x", content="alpha", embedding=[1, 0])])
    b.upsert([Chunk(id="y", content="alpha", embedding=[1, 0])])
    assert a.count() == b.count() == 1
    assert [h.id for h in a.search("alpha", search_type="keyword")] == ["x"]
    b.drop()
    assert a.get(["x"])[0].content == "alpha"


def test_filters_and_limits_are_in_the_query(stores):
    s = stores(search_type="hybrid", ef_runtime=10, hybrid_candidates=30, timeout_ms=2000)
    s.create(2)
    [vector, keyword] = s.search_args("rotating keys", embedding=[1, 0], limit=50, filters={"team": "a|b"})
    token = meta_token("team", "a|b")
    assert vector[2] == f"(@meta:{{{token}}})=>[KNN 50 @vec $vector EF_RUNTIME 50 AS __dist]"
    assert vector[vector.index("LIMIT") + 2] == 50 and vector[vector.index("TIMEOUT") + 1] == 2000
    assert keyword[2] == f"@terms:((rotat | key)) @meta:{{{token}}}"
    assert keyword[keyword.index("SCORER") + 1] == "BM25STD" and "VERBATIM" in keyword
    [only] = s.search_args(embedding=[1, 0], search_type="vector", limit=3)
    assert only[2] == "*=>[KNN 3 @vec $vector EF_RUNTIME 10 AS __dist]"


def _corpus():
    texts = {
        "k1": "Rotate the API keys every ninety days",
        "k2": "API keys are shown once after creation; keys keys",
        "d1": "Disk quota exceeded: error ERR-4471",
        "d2": "Resize the disk volume from the console",
        "u1": "Grüße aus 日本: straße STRASSE Ǆemal",
        "h1": "@k:{x} a|b {} * $param %fuzzy% ~opt (a | b) => [KNN 5 @vec $vector] \\ quoted",
        "h2": "w'*x*' -- x -y @terms:(x) hyphen-ated",
    }
    meta = {"k1": {"team": "@k:{x}"}, "k2": {"team": "a|b"}, "d1": {"team": "*"}, "d2": {"team": "-"},
            "u1": {"team": "ü 日本"}, "h1": {"team": "{}", "n": 1}, "h2": {"team": "$param", "n": 1.0}}
    return [Chunk(id=i, content=t, embedding=[1.0, float(n)], metadata=meta[i], content_id=f"c|{n % 2}*")
            for n, (i, t) in enumerate(texts.items())]


def test_hostile_queries_and_filter_values_match_like_the_reference(stores):
    s = stores()
    ref = InMemoryVectorDb()
    for x in (s, ref):
        x.create(2)
        x.upsert(_corpus())
    queries = HOSTILE + ["keys", "api -rotate", "grüße", "STRASSE", "日本", "ǆemal", "ERR-4471", "hyphen ated",
                         "KNN vec", "param fuzzy", "quoted", "disk -quota -resize"]
    for q in queries:
        got = sorted(h.id for h in s.search(q, search_type="keyword", limit=100))
        want = sorted(h.id for h in ref.search(q, search_type="keyword", limit=100))
        assert got == want, q
    for value in ["@k:{x}", "a|b", "*", "-", "{}", "$param", "ü 日本", "nothing", "A|B"]:
        assert s.count(filters={"team": value}) == ref.count(filters={"team": value}), value
        got = sorted(h.id for h in s.search(embedding=[1, 0], search_type="vector", limit=100, filters={"team": value}))
        assert got == sorted(h.id for h in ref.search(embedding=[1, 0], search_type="vector", limit=100,
                                                      filters={"team": value}))
    assert s.count(content_id="c|0*") == 4 and s.count(content_id="c|0") == 0
    assert s.count(filters={"n": 1}) == 2 and s.delete(content_id="c|1*", filters={"team": "-"}) == 1
    assert s.delete(filters={"team": "*"}) == 1 and s.count() == 5


def test_keyword_ranking_follows_bm25_like_the_reference(stores):
    # "zircon" is rare and "common" is everywhere: more zircons must rank first, shorter texts
    # before longer ones with the same counts; the legacy BM25 scorer knows neither
    docs = {
        "many-rare": "zircon zircon zircon common",
        "one-rare": "zircon common common common",
        "long": "zircon common " + " ".join(f"filler{i}" for i in range(30)),
        **{f"other{i}": f"common words number {i}" for i in range(12)},
    }
    s = stores()
    ref = InMemoryVectorDb()
    for x in (s, ref):
        x.create(2)
        x.upsert([Chunk(id=i, content=t) for i, t in docs.items()])
    ranked = [h.id for h in s.search("zircon common", search_type="keyword", limit=20)]
    want = [h.id for h in ref.search("zircon common", search_type="keyword", limit=20)]
    assert ranked[:3] == want[:3] == ["many-rare", "one-rare", "long"]  # then the chunks of "common" alone
    assert sorted(ranked) == sorted(want) == sorted(docs)
    assert s.search("zircon", search_type="keyword")[0].score > s.search("common", search_type="keyword")[0].score
    legacy = stores(scorer="BM25")
    legacy.create(2)
    legacy.upsert([Chunk(id=i, content=t) for i, t in docs.items()])
    assert sorted(h.id for h in legacy.search("zircon common", search_type="keyword", limit=20)) == sorted(ranked)


def test_zero_vectors_under_cosine_are_kept_but_not_ranked(stores):
    s = stores()
    s.create(2)
    s.upsert([Chunk(id="z", content="zero", embedding=[0.0, -0.0]), Chunk(id="a", content="a", embedding=[1, 1])])
    assert s.get(["z"])[0].embedding == [0.0, 0.0]
    assert [(h.id, round(h.score, 6)) for h in s.search(embedding=[1, 0], search_type="vector")] == [("a", 0.707107)]
    assert [h.score for h in s.search(embedding=[0, 0], search_type="vector")] == [0.0]


def test_lone_surrogates_are_refused_and_nothing_is_written(stores):
    s = stores()
    s.create(2)
    for bad in (Chunk(id="b", content="x\ud800"), Chunk(id="\udc00", content="x")):
        with pytest.raises(InvalidInputError, match="Unicode"):
            s.upsert([Chunk(id="ok", content="fine"), bad])
    assert s.count() == 0
    s.upsert([Chunk(id="m", content="x", metadata={"k": "\ud800"})])  # metadata travels as ASCII JSON
    assert s.get(["m"])[0].metadata == {"k": "\ud800"}


def test_replace_and_delete_many_chunks(stores):
    s = stores()
    s.create(2)
    s.upsert([Chunk(id=f"c{i}", content="x", content_id="big", metadata={"b": i % 2}) for i in range(2300)])
    s.upsert([Chunk(id="other", content="x", content_id="small")])
    assert s.replace("big", [Chunk(id="c1", content="new")]) == 1  # 2,300 found in three FT.SEARCH batches
    assert s.count(content_id="big") == 1 and s.count() == 2
    s.upsert([Chunk(id=f"d{i}", content="x", metadata={"b": i % 2}) for i in range(2100)])
    ids = [f"d{i}" for i in range(2100)] + ["missing"]
    assert s.delete(ids=ids, filters={"b": 1}) == 1050  # ids in batches of 1,000, INKEYS
    assert s.delete(ids=ids) == 1050 and s.count() == 2


def test_flat_index_and_distances_agree_with_the_reference(stores):
    import random

    rng = random.Random(7)
    chunks = [Chunk(id=f"r{i}", content="x", embedding=[rng.gauss(0, 1) for _ in range(8)]) for i in range(200)]
    q = [rng.gauss(0, 1) for _ in range(8)]
    for distance in ("cosine", "l2", "inner_product"):
        s = stores(distance=distance, index="flat")
        ref = InMemoryVectorDb(distance=distance)
        for x in (s, ref):
            x.create(8)
            x.upsert(chunks)
        got = s.search(embedding=q, search_type="vector", limit=20)
        want = ref.search(embedding=q, search_type="vector", limit=20)
        assert [h.id for h in got] == [h.id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5, abs=1e-5)


def test_other_handles_see_drops_and_changes(stores):
    name = f"t_{uuid.uuid4().hex[:12]}"
    a, b = stores(name), stores(name)
    a.create(2)
    b.upsert([Chunk(id="x", content="x", embedding=[1, 0])])  # b learns the store from its marker
    a.drop()
    with pytest.raises(NotFoundError, match="create"):
        b.upsert([Chunk(id="y", content="y", embedding=[1, 0])])
    a.create(3)
    with pytest.raises(InvalidInputError, match="3-dimensional"):
        b.upsert([Chunk(id="y", content="y", embedding=[1, 0])])  # b still thought 2: refused, not written
    assert a.count() == 0
    other = stores(name, distance="l2")
    with pytest.raises(InvalidInputError, match="distance"):
        other.create()
    with pytest.raises(InvalidInputError, match="distance"):
        other.search(embedding=[1, 0, 0], search_type="vector")


def test_concurrent_creates_make_one_index(stores, url):
    name = f"t_{uuid.uuid4().hex[:12]}"
    handles = [stores(name) for _ in range(4)]
    errors = []

    def create(s):
        try:
            s.create(4)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(s.exists() and s.dimensions == 4 for s in handles)
    with client(url) as r:
        assert r.execute_command("FT._LIST").count(handles[0].index_name.encode()) == 1


def test_describe_names_the_server(stores):
    s = stores()
    assert "RediSearch 2." in s.describe() and s.index_name in s.describe()
