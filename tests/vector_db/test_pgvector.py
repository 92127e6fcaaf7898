"""PgVector beyond the conformance suite: the table layout and its indexes really exist and
serve the searches, index settings, connection sharing with PostgresDb, bad identifiers."""

from __future__ import annotations

import random
import threading
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError, UnsupportedError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import Params
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES

psycopg = pytest.importorskip("psycopg")
PG = next(s for s in STORES if s.name == "pgvector")


@pytest.fixture
def url() -> str:
    require(PG)
    from tests.services.pgvector import server_url

    return server_url()


@pytest.fixture
def stores(url):
    from agentkeep.vector_db.pgvector import PgVector

    made = []

    def make(table=None, **options):
        s = PgVector(table or f"t_{uuid.uuid4().hex[:12]}", db_url=url, **{"pool_size": 2, **options})
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            s.drop()
        finally:
            s.close()


def random_chunks(n, dim, seed=1, **meta):
    r = random.Random(seed)
    return [Chunk(id=f"r{i}", content=f"row {i} tag{i % 500}", embedding=[r.gauss(0, 1) for _ in range(dim)],
                  metadata={"bucket": i % 10, **meta}) for i in range(n)]


def indexes(url, schema, table) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                                 (schema, table)).fetchall())


def plan(url, stmt, params, *settings: str) -> str:
    with psycopg.connect(url) as conn:
        for s in settings:
            conn.execute(s)
        return "\n".join(r[0] for r in conn.execute(psycopg.sql.SQL("EXPLAIN ") + stmt, params).fetchall())


@pytest.mark.parametrize("distance, index, expected", [
    ("cosine", "hnsw", "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')"),
    ("l2", "hnsw", "USING hnsw (embedding vector_l2_ops)"),
    ("inner_product", "ivfflat", "USING ivfflat (embedding vector_ip_ops) WITH (lists='100')"),
    ("cosine", None, None),
])
def test_create_builds_the_table_and_its_indexes(stores, url, distance, index, expected):
    s = stores(distance=distance, index=index)
    s.create(8)
    found = indexes(url, "public", s.table_name)
    defs = " | ".join(found.values())
    assert "UNIQUE INDEX" in defs and "(id)" in defs  # the primary key
    assert "USING btree (content_id, \"position\")" in defs
    assert "USING gin (fts)" in defs
    assert "USING gin (metadata jsonb_path_ops)" in defs
    if expected:
        assert expected in defs
        assert len(found) == 5
    else:
        assert "vector_" not in defs and len(found) == 4
    assert all(len(name) <= 63 for name in found)
    with psycopg.connect(url) as conn:
        cols = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            (s.table_name,)).fetchall())
        generated = conn.execute(
            "SELECT generation_expression FROM information_schema.columns WHERE table_name = %s AND column_name = 'fts'",
            (s.table_name,)).fetchone()[0]
    assert cols["embedding"] == "vector(8)" and cols["metadata"] == "jsonb" and cols["fts"] == "tsvector"
    assert "to_tsvector('english'::regconfig, content)" in generated


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh-load", "analyzed"])
def test_the_indexes_serve_the_searches(stores, url, analyzed):
    s = stores(search_type="hybrid")
    s.create(16)
    s.upsert(random_chunks(3000, 16))
    if analyzed:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{s.table_name}", "{s._prefix}_terms"')
    q = [0.1] * 16
    vec = s._name("vec").as_string(None).strip('"')
    assert f"Index Scan using {vec}" in plan(url, *s.search_sql(embedding=q, search_type="vector"))
    # BM25 reads the postings of the query's terms best first from their index, not the whole table
    postings, whole = f"{s._prefix}_impact", f"Seq Scan on {s._prefix}_terms "
    keyword = plan(url, *s.search_sql("tag7 tag8", search_type="keyword"))
    assert postings in keyword and whole not in keyword and f"Seq Scan on {s.table_name} " not in keyword
    # required terms and phrases are checked on the scored chunks only
    required = plan(url, *s.search_sql('+tag7 "row 7"', search_type="keyword"))
    assert postings in required and whole not in required and f"Seq Scan on {s.table_name} " not in required
    hybrid = plan(url, *s.search_sql("tag7", embedding=q))
    assert f"Index Scan using {vec}" in hybrid and postings in hybrid
    params = Params("%({name})s")
    stmt = psycopg.sql.SQL("SELECT count(*) FROM {} WHERE {}").format(s._table, s._where(None, None, {"bucket": 3}, params))
    meta = s._name("meta").as_string(None).strip('"')
    assert f"Bitmap Index Scan on {meta}" in plan(url, stmt, params.values, "SET enable_seqscan = off")


def test_ef_search_grows_with_the_limit(stores):
    # an HNSW scan returns at most ef_search rows: the store raises it for large limits
    s = stores(ef_search=10)
    s.create(8)
    s.upsert(random_chunks(1000, 8))
    assert len(s.search(embedding=[0.5] * 8, limit=100)) == 100
    assert s._settings("vector", 100, False) == [("hnsw.ef_search", "100")]
    default = stores()  # at pgvector's defaults a search is one statement, no SET LOCAL
    assert default._settings("vector", 10, False) == [] and default._settings("hybrid", 10, False) == []


def test_filtered_ann_search_uses_iterative_scans(stores, url):
    s = stores()
    s.create(8)
    s.upsert(random_chunks(2000, 8))
    s.upsert([Chunk(id=f"rare{i}", content="rare", embedding=[-5.0] * 7 + [float(i)], metadata={"rare": True})
              for i in range(3)])
    stmt, params = s.search_sql(embedding=[5.0] * 8, limit=3, filters={"rare": True})
    settings = s._settings("vector", 3, True)
    assert ("hnsw.iterative_scan", "relaxed_order") in settings

    def run(with_settings):
        with psycopg.connect(url) as conn:  # force the ANN index even though GIN could serve the filter
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_bitmapscan = off")
            for name, value in settings:
                if name.endswith("iterative_scan") and not with_settings:
                    continue
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            return sorted(r[0] for r in conn.execute(stmt, params).fetchall())

    assert run(with_settings=False) == []  # ef_search candidates, all filtered away
    assert run(with_settings=True) == ["rare0", "rare1", "rare2"]
    assert sorted(h.id for h in s.search(embedding=[5.0] * 8, limit=3, filters={"rare": True})) == ["rare0", "rare1", "rare2"]


def test_ivfflat_and_exact_search_return_the_nearest(stores):
    chunks = random_chunks(500, 8, seed=3)
    q = chunks[17].embedding
    for index in ("ivfflat", None):
        s = stores(index=index, ivfflat_lists=10, ivfflat_probes=10)
        s.create(8)
        s.upsert(chunks)
        s.rebuild_index()
        assert s.search(embedding=q, limit=1)[0].id == "r17"


def test_concurrent_creates_agree(stores, url):
    table = f"t_{uuid.uuid4().hex[:12]}"
    instances = [stores(table) for _ in range(4)]
    errors = []

    def create(s):
        try:
            s.create(8)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(indexes(url, "public", table)) == 5


def test_an_existing_table_is_opened_without_dimensions(stores):
    table = f"t_{uuid.uuid4().hex[:12]}"
    first = stores(table)
    first.create(8)
    first.upsert(random_chunks(10, 8))
    second = stores(table)
    assert second.dimensions is None and second.exists()
    assert len(second.search(embedding=[0.0] * 7 + [1.0], limit=3)) == 3
    assert second.dimensions == 8
    with pytest.raises(InvalidInputError, match="8-dimensional"):
        stores(table).create(9)
    with pytest.raises(InvalidInputError, match="8-dimensional"):
        stores(table, dimensions=9).search(embedding=[1.0] * 9)


def test_unknown_language(stores):
    s = stores(language="klingon")
    with pytest.raises(InvalidInputError, match="klingon"):
        s.create(4)
    assert not s.exists()


def test_missing_table(stores):
    s = stores()
    with pytest.raises(NotFoundError, match="create"):
        s.search(embedding=[1.0], limit=1)
    with pytest.raises(NotFoundError):
        s.count()


def test_large_vectors_need_index_none(stores):
    with pytest.raises(InvalidInputError, match="2000"):
        stores().create(3072)
    s = stores(index=None)
    s.create(3072)
    s.upsert([Chunk(id="a", content="a", embedding=[1.0] * 3072)])
    assert s.search(embedding=[1.0] * 3072, limit=1)[0].id == "a"


def test_own_schema_and_language(stores, url):
    schema = f"s_{uuid.uuid4().hex[:10]}"
    s = stores(schema=schema, language="simple", search_type="keyword")
    try:
        s.create(4)
        s.upsert([Chunk(id="a", content="The running dogs", embedding=[1, 0, 0, 0])])
        assert "USING gin (fts)" in " ".join(indexes(url, schema, s.table_name).values())
        assert [h.id for h in s.search("running")] == ["a"]
        assert s.search("run") == []  # "simple" does not stem
    finally:
        s.drop()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_sharing_a_postgres_db_pool(url):
    from agentkeep.db.models import KnowledgeContent
    from agentkeep.db.postgres import AsyncPostgresDb, PostgresDb
    from agentkeep.vector_db.pgvector import PgVector

    schema = f"s_{uuid.uuid4().hex[:10]}"
    db = PostgresDb(db_url=url, db_schema=schema)
    try:
        db.upsert_knowledge(KnowledgeContent(id="c1", name="doc"))
        s = PgVector("chunks", db=db, schema=schema)
        s.create(4)
        s.upsert([Chunk(id="a", content="shared pool", content_id="c1", embedding=[1, 0, 0, 0])])
        assert s.search(embedding=[1, 0, 0, 0], limit=1)[0].content_id == "c1"
        s.close()  # the db's pool stays open
        assert db.get_knowledge("c1").name == "doc" and s.count() == 1
        with pytest.raises(InvalidInputError, match="PostgresDb"):
            PgVector("chunks", db=AsyncPostgresDb(db_url=url, db_schema=schema))
    finally:
        db.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("kwargs", [
    {"table_name": "kb; DROP TABLE x"}, {"table_name": "a.b"}, {"table_name": "x" * 64}, {"table_name": ""},
    {"schema": "pub\"lic"}, {"language": "english'"}, {"distance": "dot"}, {"index": "diskann"},
    {"search_type": "semantic"}, {"hybrid_candidates": 0}, {"rrf_k": -1}, {"vector_weight": -1.0},
    {"vector_weight": 0.0, "keyword_weight": 0.0}, {"dimensions": 0}, {"db_url": "mysql://x/y"},
    {"db_url": None},
])
def test_bad_arguments_are_refused(url, kwargs):
    from agentkeep.vector_db.pgvector import PgVector

    args = {"table_name": "kb", "db_url": url, **kwargs}
    with pytest.raises(InvalidInputError):
        PgVector(**args)


def test_url_schemes(stores, url):
    from agentkeep.vector_db.pgvector import PgVector

    for scheme in ("postgres://", "postgresql+psycopg://"):
        s = PgVector("kb", db_url=url.replace("postgresql://", scheme), pool_size=1)
        try:
            assert not s.exists()
        finally:
            s.close()


def test_a_server_without_pgvector_is_reported(stores):
    from agentkeep.vector_db.pgvector import PgVector
    from tests.services.postgres import DEFAULT_URL, reachable

    if reachable(DEFAULT_URL) is not None:
        pytest.skip(f"no PostgreSQL without pgvector at {DEFAULT_URL}")
    with psycopg.connect(DEFAULT_URL) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
            pytest.skip("the local PostgreSQL has pgvector")
    s = PgVector(f"t_{uuid.uuid4().hex[:12]}", db_url=DEFAULT_URL, pool_size=1)
    try:
        with pytest.raises(UnsupportedError, match="pgvector"):
            s.create(4)
    finally:
        s.close()


def test_describe(stores):
    s = stores()
    assert "pgvector 0." in s.describe() and "PostgreSQL" in s.describe()


@pytest.mark.parametrize("shared", [False, True], ids=["own pool", "shared PostgresDb"])
def test_an_unreachable_server_is_connection_failed_at_once(shared: bool) -> None:
    from agentkeep.db import ConnectionFailedError
    from agentkeep.db.postgres import PostgresDb
    from agentkeep.vector_db.pgvector import PgVector
    from tests.services.process import free_port

    url = f"postgresql://kb:s3cret@127.0.0.1:{free_port()}/kb"
    db = PostgresDb(db_url=url) if shared else None
    store = PgVector("kb", db=db) if shared else PgVector("kb", db_url=url)
    try:
        with pytest.raises(ConnectionFailedError) as caught:
            store.create(8)
        assert "s3cret" not in str(caught.value) and isinstance(caught.value.__cause__, psycopg.OperationalError)
    finally:
        store.close()
        if db is not None:
            db.close()


def _keyword(store, query):
    return [(h.id, round(h.score, 6)) for h in store.search(query, search_type="keyword", limit=20)]


def test_a_table_without_term_statistics_gains_them_on_create(stores, url):
    """A table made before BM25 (no side tables) gets its postings from the rows it holds."""
    from agentkeep.vector_db import pg_bm25

    s = stores()
    s.create(8)
    s.upsert(random_chunks(300, 8))
    before = _keyword(s, "tag7 row 12")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP FUNCTION "public"."{s._prefix}_bm25"() CASCADE')  # and its triggers
        pg_bm25.drop(conn, psycopg.sql, "public", s._prefix)
    again = stores(s.table_name)
    again.create()
    assert _keyword(again, "tag7 row 12") == before
    again.upsert([Chunk(id="new", content="tag7 tag7 tag7", embedding=[1.0] * 8)])  # the triggers are back
    assert _keyword(again, "tag7 row 12")[0][0] == "new"


def test_concurrent_writers_keep_the_statistics_exact(stores):
    """Writers on several connections at once: the counts spread over slots add up."""
    import concurrent.futures

    s = stores(pool_size=4)
    s.create(8)

    def write(n):
        s.upsert([Chunk(id=f"w{n}-{i}", content=f"writer {n} chunk {i} tag{i % 7}", embedding=[1.0] * 8)
                  for i in range(40)])
        s.delete(ids=[f"w{n}-{i}" for i in range(0, 40, 4)])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(8)))
    fresh = stores()
    fresh.create(8)
    fresh.upsert(s.get([f"w{n}-{i}" for n in range(8) for i in range(40)]))
    assert s.count() == fresh.count() == 8 * 30
    assert _keyword(s, "writer tag3 chunk") == _keyword(fresh, "writer tag3 chunk")


def test_a_filter_outside_the_best_postings_still_gets_its_hits(stores):
    """bm25_depth bounds the postings scored per term; a filter (or a required term) that
    passes fewer chunks than asked among them makes the search score every posting."""
    s = stores(bm25_depth=10)
    s.create(8)
    # "disk" once in short chunks (high impact), once in long ones (low impact): only the long ones are "ops"
    s.upsert([Chunk(id=f"s{i}", content="disk", embedding=[1.0] * 8, metadata={"team": "dev"}) for i in range(30)]
             + [Chunk(id=f"l{i}", content="disk " + "padding words here " * 20, embedding=[1.0] * 8,
                      metadata={"team": "ops"}) for i in range(5)])
    assert {h.id for h in s.search("disk", search_type="keyword", limit=10)} <= {f"s{i}" for i in range(30)}
    ops = s.search("disk", search_type="keyword", limit=5, filters={"team": "ops"})
    assert sorted(h.id for h in ops) == [f"l{i}" for i in range(5)]
    assert sorted(h.id for h in s.search("+padding disk", search_type="keyword", limit=5)) == [f"l{i}" for i in range(5)]
    exact = stores(s.table_name, bm25_depth=None)
    assert _keyword(exact, "disk")[:10] == _keyword(s, "disk")[:10]


def test_marks_of_postgresql_stop_words_narrow_nothing(stores):
    """PostgreSQL's stop list is longer than the analyzer's: a mark it empties is no condition."""
    s = stores()
    s.create(8)
    s.upsert([Chunk(id="k", content="Rotate the keys", embedding=[1.0] * 8)])
    for query in ("keys -the", "+what keys", 'keys ""', 'keys -"of the"'):
        assert [h.id for h in s.search(query, search_type="keyword")] == ["k"], query
