"""PgVector: chunks and embeddings in a PostgreSQL table with the pgvector extension.

    PgVector("my_kb", db_url="postgresql://user:pass@host/db", search_type="hybrid")
    PgVector("my_kb", db=postgres_db)   # share a PostgresDb's connection pool and transactions

The table and its indexes, BM25 keyword search (term statistics kept by triggers beside the
table: `pg_bm25`), the searches (each one statement; hybrid gets both candidate lists at
once and fuses them with the base's `fuse`) and writes in pgvector's binary format:
docs/knowledge.md, "PgVector".
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Unpack

from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.errors import InvalidInputError, UnsupportedError
from agentkeep.db.messages import shorten
from agentkeep.vector_db import pg_bm25
from agentkeep.vector_db.base import Chunk, Dialect, Params, SearchHit, StoreOptions, VectorDb, check_choice
from agentkeep.vector_db.base import batches, check_int, check_name, check_one_given, split_filters
from agentkeep.vector_db.text import split_query

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_OPS = {  # distance -> (operator, operator class, score from distance d)
    "cosine": ("<=>", "cosine", "1 - {d}"),
    "l2": ("<->", "l2", "1 / (1 + {d})"),
    "inner_product": ("<#>", "ip", "-{d}"),
}
INDEXES = ("hnsw", "ivfflat", None)
MAX_INDEXED_DIMENSIONS = 2000  # pgvector's limit for indexing the `vector` type
HNSW_DEFAULT_EF_SEARCH = 40


def _ident(value: Any, what: str) -> str:
    return check_name(value, what, _IDENT, "a plain SQL identifier (letters, digits, _; 1..63)")


def _conninfo(db_url: str) -> str:
    if not isinstance(db_url, str):
        raise InvalidInputError(f"db_url must be a string, got {type(db_url).__name__}")
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if db_url.startswith(scheme):
            return "postgresql://" + db_url[len(scheme):]
    raise InvalidInputError("not a PostgreSQL URL (expected postgresql://, postgres:// or postgresql+psycopg://)")


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(map(repr, vector)) + "]"


def _contains(filters: dict[str, Any], params: Params) -> list[str]:
    """`metadata @> equalities`, the filter in the PostgresDb codec (numbers round-trip exactly),
    and for each "any of" an OR of containments: every condition is served by the GIN index."""
    from agentkeep.db.postgres import _json_param

    equal, any_of = split_filters(filters)
    parts = [f"metadata @> {params.add(_json_param(equal))}"] if equal else []
    for key, members in any_of.items():
        parts.append("(" + " OR ".join(f"metadata @> {params.add(_json_param({key: m}))}" for m in members) + ")")
    return parts


_WHERE = Dialect("id = ANY({})", "content_id = {}", _contains)


class _Binary:
    """A vector in pgvector's binary wire format (dimensions, 0, big-endian float4s)."""

    __slots__ = ("data",)

    def __init__(self, vector: Sequence[float]) -> None:
        self.data = struct.pack(f">HH{len(vector)}f", len(vector), 0, *vector)


def _cursor(conn):
    """A cursor that sends `_Binary` values untyped and binary, so `%s::vector` reads them with
    pgvector's binary input (no text formatting and parsing of every float)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class BinaryDumper(Dumper):
        format = Format.BINARY
        oid = 0  # unknown: the server takes the type from the ::vector cast

        def dump(self, obj):
            return obj.data

    cur = conn.cursor()
    cur.adapters.register_dumper(_Binary, BinaryDumper)
    return cur


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "0"))


def _check_alive(conn) -> None:
    """Before a pooled connection is handed out: one system call instead of a round trip."""
    from agentkeep.db.sql.base import peer_closed

    if peer_closed(conn.fileno()):
        conn.close()  # the pool discards it and connects again
        raise ConnectionError("the server closed this connection")


class PgVector(VectorDb):
    """A pgvector table. Give `db_url` (a pool of its own) or `db` (a PostgresDb to share)."""

    DISTANCES = _OPS
    MAX_DIMENSIONS = 16000
    DIMENSIONS_LIMIT = " (pgvector's limit)"
    GONE = ("psycopg.errors.UndefinedTable",)

    def __init__(self, table_name: str, db_url: str | None = None, *, db: Any = None, schema: str = "public",
                 index: str | None = "hnsw", hnsw_m: int = 16, hnsw_ef_construction: int = 64, ef_search: int = 40,
                 ivfflat_lists: int = 100, ivfflat_probes: int = 10, language: str = "english", pool_size: int = 5,
                 bm25_depth: int | None = 1000, **options: Unpack[StoreOptions]) -> None:
        self.table_name = _ident(table_name, "table_name")
        self.schema = _ident(schema, "schema")
        super().__init__(language="english", **options)  # keyword text is analysed in PostgreSQL
        self.label = f"vector table {self.schema}.{self.table_name}"
        self.index = check_choice(index, "index", INDEXES)
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 100)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 1000)
        self.ef_search = check_int(ef_search, "ef_search", 1, 1000)
        self.ivfflat_lists = check_int(ivfflat_lists, "ivfflat_lists", 1, 32768)
        self.ivfflat_probes = check_int(ivfflat_probes, "ivfflat_probes", 1, 32768)
        self.language = _ident(language, "language")
        # a keyword search scores each term's bm25_depth postings of highest impact (None: all)
        self.bm25_depth = None if bm25_depth is None else check_int(bm25_depth, "bm25_depth", 10, 10**9)
        self._pgvector: tuple[int, ...] | None = None
        self._pool = None
        self._db = None
        check_one_given((db_url, db), "give either db_url= or db= (a PostgresDb)")
        if db is not None:
            from agentkeep.db.postgres import PostgresKernel

            if not isinstance(getattr(db, "kernel", None), PostgresKernel):
                raise InvalidInputError("db= must be a (sync) PostgresDb; for anything else pass db_url=")
            self._db = db
        else:
            from psycopg_pool import ConnectionPool

            self._conninfo = _conninfo(db_url)
            self._pool = ConnectionPool(
                self._conninfo, min_size=1, max_size=check_int(pool_size, "pool_size", 1, 1000), open=False,
                kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)}, check=_check_alive,
            )
        # index and lock names: PostgreSQL cuts identifiers at 63 bytes, so keep them short and unique
        digest = hashlib.sha1(f"{self.schema}.{self.table_name}".encode()).hexdigest()[:8]
        self._prefix = f"{self.table_name[:40]}_{digest}"
        lock = hashlib.sha1(f"agentkeep.vector:{self.schema}.{self.table_name}".encode()).digest()[:8]
        self._lock_key = int.from_bytes(lock, "big", signed=True)

    def _connection_error(self, exc: Exception) -> Exception | None:
        """A server that cannot be reached: the shared db's own translation, or psycopg's words."""
        if self._db is not None:
            return self._db.kernel.translate_error(exc)
        from agentkeep.db.connection import connection_failed
        from agentkeep.db.postgres import unreachable

        if not unreachable(exc):
            return None
        import sqlalchemy as sa

        url = sa.make_url(self._conninfo)
        return connection_failed("PostgreSQL", url.render_as_string(hide_password=True), exc, secret=url.password)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._pool is not None:
            if self._pool.closed:
                # one connection of our own first: the pool only logs a refused connection,
                # login or database and retries until its 30 s timeout, where this raises at once
                import psycopg

                psycopg.connect(self._conninfo, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
                self._pool.open()
            with self._pool.connection() as conn:
                yield conn
            return
        joined = self._db.kernel.current_connection()
        if joined is not None:  # inside the shared db's transaction: write in it, under a savepoint
            conn = joined.driver_connection
            with conn.transaction():
                yield conn
            return
        raw = self._db.kernel.acquire()
        try:
            conn = raw.driver_connection
            if not conn.autocommit:
                conn.autocommit = True
            yield conn
        finally:
            self._db.kernel.release(raw)

    def _sql(self):
        from psycopg import sql

        return sql

    @property
    def _table(self):
        return self._sql().Identifier(self.schema, self.table_name)

    def _name(self, suffix: str):
        return self._sql().Identifier(f"{self._prefix}_{suffix}")

    def _run(self, fn):
        with self._connection() as conn:
            return fn(conn)

    @staticmethod
    def _extension_version(conn) -> tuple[int, ...] | None:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        return _version(row[0]) if row else None

    def describe(self) -> str:
        with self._translated(), self._connection() as conn:
            server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            pgvector = ".".join(map(str, self._extension_version(conn) or ())) or "(not installed)"
        return f"PgVector {self.schema}.{self.table_name} on PostgreSQL {server}, pgvector {pgvector}"

    def joined_transaction(self, db: Any):
        if db is not None and db is self._db:
            return db.kernel.transaction()
        return super().joined_transaction(db)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _stored_dimensions(self) -> int | None:
        """The table's dimensions, and pgvector's version (which decides the search settings)."""
        with self._connection() as conn:
            self._pgvector = self._extension_version(conn)
            row = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                               " AND attname = 'embedding'", (f'"{self.schema}"."{self.table_name}"',)).fetchone()
            return None if row is None else row[0]

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """A transaction under the table's advisory lock, so that concurrent processes may all create."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            yield conn

    def _check_indexable(self, dimensions: int) -> None:
        if self.index is not None and dimensions > MAX_INDEXED_DIMENSIONS:
            raise InvalidInputError(
                f"pgvector indexes vectors of at most {MAX_INDEXED_DIMENSIONS} dimensions, not {dimensions}: "
                "pick an embedder with fewer dimensions or index=None (exact search)"
            )

    def _create_store(self, dimensions: int) -> None:
        import psycopg

        sql = self._sql()
        self._check_indexable(dimensions)
        with self._locked() as conn:
            if self._extension_version(conn) is None:
                try:
                    with conn.transaction():
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise UnsupportedError(
                        f"the pgvector extension is not available on this PostgreSQL server ({shorten(exc, 200)})"
                    ) from None
            if conn.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", (self.language,)).fetchone() is None:
                raise InvalidInputError(f"PostgreSQL has no text search configuration {self.language!r}")
            if self.schema != "public":
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " id text PRIMARY KEY,"
                " content_id text,"
                " content text NOT NULL,"
                " embedding vector({dims}),"
                " metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
                " position integer NOT NULL DEFAULT 0,"
                " updated_at timestamptz NOT NULL DEFAULT now(),"
                " fts tsvector GENERATED ALWAYS AS (to_tsvector({lang}::regconfig, content)) STORED)"
            ).format(t=self._table, dims=sql.Literal(dimensions), lang=sql.Literal(self.language)))

    def _complete_store(self) -> None:
        """The indexes, when missing (also the vector index of a table loaded with index=None)."""
        sql = self._sql()
        self._check_indexable(self.dimensions)
        vector = f"(embedding vector_{_OPS[self.distance][1]}_ops) WITH "  # the options are checked integers
        indexes = {"cid": "(content_id, position)", "fts": "USING gin (fts)",
                   "meta": "USING gin (metadata jsonb_path_ops)",
                   "vec": None if self.index is None else f"USING {self.index} {vector}" + (
                       f"(m = {self.hnsw_m}, ef_construction = {self.hnsw_ef_construction})"
                       if self.index == "hnsw" else f"(lists = {self.ivfflat_lists})")}
        with self._locked() as conn:
            for suffix, how in indexes.items():
                if how is not None:
                    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + how).format(
                        self._name(suffix), self._table))
            pg_bm25.setup(conn, sql, self._table, self.schema, self._prefix)

    def rebuild_index(self) -> None:
        """Rebuild the vector index (an IVFFlat index learns its lists from the rows present
        when it is built: rebuild it after a bulk load)."""
        if self.index is None:
            return
        sql = self._sql()
        self._run(lambda conn: conn.execute(sql.SQL("REINDEX INDEX {}").format(
            sql.Identifier(self.schema, f"{self._prefix}_vec"))))

    def _drop_store(self) -> None:
        with self._locked() as conn:
            conn.execute(self._sql().SQL("DROP TABLE IF EXISTS {}").format(self._table))
            pg_bm25.drop(conn, self._sql(), self.schema, self._prefix)
        self._pgvector = None

    WRITE_BATCH = 500  # rows per INSERT: the BM25 triggers run once per statement

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """One transaction: `replace` deletes the content's chunks and inserts the new ones, in
        multi-row INSERTs (a chunk id given twice keeps its last chunk)."""
        from agentkeep.db.postgres import _json_param  # the PostgresDb codec: numbers round-trip exactly

        sql = self._sql()
        upsert = (" ON CONFLICT (id) DO UPDATE SET content_id = EXCLUDED.content_id, content = EXCLUDED.content,"
                  " embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata, position = EXCLUDED.position,"
                  " updated_at = now()")
        rows = [(c.id, c.content_id, c.content, None if c.embedding is None else _Binary(c.embedding),
                 _json_param(c.metadata), c.position) for c in {c.id: c for c in chunks}.values()]

        def insert(n: int):
            values = ", ".join(["(%s, %s, %s, %s::vector, %s, %s)"] * n)
            return sql.SQL("INSERT INTO {} (id, content_id, content, embedding, metadata, position) VALUES "
                           + values + upsert).format(self._table)

        def write(conn):
            with conn.transaction(), _cursor(conn) as cur:
                if content_id is not None:
                    cur.execute(sql.SQL("DELETE FROM {} WHERE content_id = %s").format(self._table), (content_id,))
                for part in batches(rows, self.WRITE_BATCH):
                    cur.execute(insert(len(part)), [x for row in part for x in row])

        self._run(write)

    def _where(self, ids: list[str] | None, content_id: str | None, filters: dict, params: Params):
        return self._sql().SQL(" AND ".join(_WHERE.where(params, ids, content_id, filters)) or "TRUE")

    def _delete(self, ids, content_id, filters) -> int:
        params = Params("%({name})s")
        where = self._where(ids, content_id, filters, params)
        stmt = self._sql().SQL("DELETE FROM {} WHERE {}").format(self._table, where)
        return self._run(lambda conn: conn.execute(stmt, params.values).rowcount)

    def _get(self, ids: list[str]) -> list[Chunk]:
        stmt = self._sql().SQL(
            "SELECT id, content_id, content, embedding::text, metadata, position FROM {} WHERE id = ANY(%s)"
        ).format(self._table)
        rows = self._run(lambda conn: conn.execute(stmt, (ids,)).fetchall())
        return [Chunk(id=r[0], content_id=r[1], content=r[2], embedding=None if r[3] is None else json.loads(r[3]),
                      metadata=r[4], position=r[5]) for r in rows]

    def _count(self, content_id, filters) -> int:
        params = Params("%({name})s")
        stmt = self._sql().SQL("SELECT count(*) FROM {} WHERE {}").format(
            self._table, self._where(None, content_id, filters, params))
        return self._run(lambda conn: conn.execute(stmt, params.values).fetchone()[0])

    def search_sql(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None):
        """The statement and parameters `search` runs (for EXPLAIN)."""
        return self._shown(self._build, query, embedding, limit, filters, search_type)

    def _build(self, kind: str, query, embedding, limit: int, filters: dict, exact: bool = False):
        """One statement: the vector or keyword list, or for hybrid both (`list` 'v' or 'k');
        `exact` scores every posting of the query's terms (not only the `bm25_depth` best)."""
        sql = self._sql()
        op, _, score = _OPS[self.distance]
        n = self._candidate_count(kind, limit)
        params = Params("%({name})s", n=n, lang=self.language, q=None if kind == "keyword" else _literal(embedding))
        cols = "t.id, t.content_id, t.content, t.metadata, t.position"
        nearest = (f"SELECT {cols}, {score.format(d='d')} AS score FROM (SELECT {cols}, t.embedding {op} %(q)s::vector"
                   " AS d FROM {t} t WHERE t.embedding IS NOT NULL AND {where} ORDER BY d LIMIT %(n)s) t ORDER BY d, id")
        where = self._where(None, None, filters, params)
        depth = None if exact or self.bm25_depth is None else max(self.bm25_depth, n)
        matching = "" if kind == "vector" else pg_bm25.keyword_select(split_query(query), params, bool(filters), depth)
        text = {"vector": nearest, "keyword": matching,
                "hybrid": f"(SELECT 'v' AS list, * FROM ({nearest}) v) UNION ALL (SELECT 'k', * FROM ({matching}) k)"}[kind]
        names = pg_bm25.table_names(sql, self.schema, self._prefix)
        stmt = sql.SQL(text).format(cols=sql.SQL(cols), n=sql.SQL("%(n)s"), t=self._table, where=where, **names)
        return stmt, params.values

    def _settings(self, kind: str, limit: int, filtered: bool) -> list[tuple[str, str]]:
        """Per-query index settings, applied with SET LOCAL inside the search's transaction."""
        if kind == "keyword" or self.index is None:
            return []
        wanted = limit if kind == "vector" else max(limit, self.hybrid_candidates)
        iterative = filtered and (self._pgvector or (0,)) >= (0, 8)
        if self.index == "hnsw":
            ef = min(1000, max(self.ef_search, wanted))
            # at pgvector's default (40) the common search needs no settings: one round trip
            out = [] if ef == HNSW_DEFAULT_EF_SEARCH else [("hnsw.ef_search", str(ef))]
            if iterative:
                out.append(("hnsw.iterative_scan", "relaxed_order"))
        else:
            out = [("ivfflat.probes", str(self.ivfflat_probes))]
            if iterative:
                out.append(("ivfflat.iterative_scan", "relaxed_order"))
        return out

    def _search(self, kind, query, embedding, limit, filters) -> list[SearchHit]:
        """One statement for each search type (hybrid: both candidate lists, fused here). A
        keyword list cut short (a filter or a required term passed fewer chunks than asked
        among the best postings) is asked again, scoring every posting."""
        settings = self._settings(kind, limit, bool(filters))
        n = self._candidate_count(kind, limit)

        def run(conn, exact=False):
            stmt, params = self._build(kind, query, embedding, limit, filters, exact)
            if not settings:
                return conn.execute(stmt, params).fetchall()
            with conn.transaction():
                conn.execute(
                    "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(settings)),
                    [x for pair in settings for x in pair],
                )
                return conn.execute(stmt, params).fetchall()

        rows = self._run(run)
        # with no condition, fewer hits than n means every term had fewer postings than the depth
        narrowed = kind != "vector" and (filters or pg_bm25.tsquery(split_query(query), Params("%({name})s")))
        if narrowed and self.bm25_depth is not None and sum(1 for r in rows if kind == "keyword" or r[0] == "k") < n:
            rows = self._run(lambda conn: run(conn, exact=True))
        if kind != "hybrid":
            return [_hit(r) for r in rows][:limit]
        return self._fused([_hit(r[1:]) for r in rows if r[0] == "v"], [_hit(r[1:]) for r in rows if r[0] == "k"])[:limit]


def _hit(r: Sequence[Any]) -> SearchHit:
    return SearchHit(id=r[0], content_id=r[1], content=r[2], metadata=r[3], position=r[4], score=float(r[5]))
