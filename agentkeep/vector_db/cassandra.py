"""CassandraDb: chunks in an Apache Cassandra 5 table with vector search on SAI indexes.

    CassandraDb("my_kb", keyspace="agentkeep", contact_points=["10.0.0.1"], search_type="hybrid")
    CassandraDb("my_kb", keyspace="agentkeep", session=session)   # share a cassandra-driver Session

One row per chunk (the keyspace must exist; its replication is yours to choose):

    id text PRIMARY KEY, content_id text, content text, embedding vector<float, N>,
    metadata text (JSON), position int,
    meta map<text, text>       -- top-level scalar metadata values, type-tagged: 's:sec', 'n:1', 'b:true'
    term_freqs map<text, int>  -- the chunk's keyword terms and how often each occurs
    term_count int             -- how many keyword terms the chunk has

with Storage-Attached Indexes (SAI) on `embedding` (similarity_function COSINE, EUCLIDEAN or
DOT_PRODUCT), `content_id`, `ENTRIES(meta)` and `KEYS(term_freqs)`. Keyword terms come from
`in_memory.terms()` (lowercased, stopword-free, lightly stemmed), so every store matches the
same words. Metadata is kept as JSON text for an exact round trip; `meta` exists for filters.

Search types:

- "vector": `SELECT ..., similarity_<fn>(embedding, ?) FROM t WHERE <filters> ORDER BY
  embedding ANN OF ? LIMIT ?` (SAI applies the filters inside the ANN search).
- "keyword": `WHERE term_freqs CONTAINS KEY ? AND ...` (one per query term, so every term
  must occur) plus the filters, at most `keyword_candidates` rows. Cassandra has no text
  ranking (no BM25), so the candidates are ranked here by BM25's term-frequency part with
  length normalisation (k1=1.2, b=0.75, average length over the candidates) and no IDF:
  every candidate contains every query term, so IDF could only reweigh terms, not change
  which rows match. `-term`s are dropped from the candidates (SAI has no NOT CONTAINS KEY).
  When more than `keyword_candidates` rows match, the ranking covers the first ones SAI returns.
- "hybrid": both lists (`hybrid_candidates` each) fused with `rrf_fuse`.

Filters are `meta[?] = ?` (SAI on the map's entries): `{"team": "sec"}` matches
`meta['team'] = 's:sec'`, so 1 and 1.0 meet (`n:1`), a bool is not a number, and lists or
objects, which are not in `meta`, never match. Every value is a bound parameter of a prepared
statement; identifiers are checked and quoted.

Scores: similarity_cosine/dot_product return (1 + s) / 2 and similarity_euclidean
1 / (1 + d²); they are turned back into cosine, the dot product and 1 / (1 + d).

`replace` is one LOGGED batch (all or nothing) when it fits in `batch_size` statements;
bigger replacements are split into several batches and are then not atomic.

`CassandraStatements` builds every CQL statement and its values (pure, tested without a
server); `CassandraDb` validates and executes them with cassandra-driver.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from typing import Any, Iterable, Sequence

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db.base import (
    Chunk,
    SearchHit,
    VectorDb,
    check_candidates,
    check_choice,
    check_chunks,
    check_dimensions,
    check_filters,
    check_id,
    check_ids,
    check_int,
    check_name,
    check_search_type,
    check_weights,
    dimension_mismatch,
    rrf_top,
    tagged_value,
)
from agentkeep.vector_db.text import query_terms, terms

SIMILARITY = {  # distance -> (SAI similarity_function, CQL function)
    "cosine": ("COSINE", "similarity_cosine"),
    "l2": ("EUCLIDEAN", "similarity_euclidean"),
    "inner_product": ("DOT_PRODUCT", "similarity_dot_product"),
}
MAX_DIMENSIONS = 8192
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_VECTOR_TYPE = re.compile(r"^vector<float,\s*(\d+)>$")
_ROW = "id, content_id, content, metadata, position"
BM25_K1, BM25_B = 1.2, 0.75


def _name(value: Any, what: str) -> str:
    return check_name(value, what, _NAME, "a Cassandra name (a letter, then letters, digits or _; 1..48)")


def _check_dimensions(dimensions: Any) -> int:
    return check_dimensions(dimensions, MAX_DIMENSIONS)


def meta_entries(metadata: dict[str, Any]) -> dict[str, str]:
    """The `meta` map of a chunk: its top-level scalar values, type-tagged."""
    return {k: tagged_value(v) for k, v in metadata.items() if isinstance(v, (str, bool, int, float))}


class CassandraStatements:
    """CQL text and bound values for every operation. Pure: no driver, no I/O."""

    def __init__(self, keyspace: str, table: str, *, distance: str = "cosine") -> None:
        self.keyspace = _name(keyspace, "keyspace")
        self.table_name = _name(table, "table_name")
        self.distance = check_choice(distance, "distance", SIMILARITY)
        self.table = f'"{self.keyspace}"."{self.table_name}"'
        # index names are per keyspace: keep them short and tied to this table
        base = self.table_name if len(self.table_name) <= 40 else (
            self.table_name[:33] + "_" + hashlib.sha1(self.table_name.encode()).hexdigest()[:6])
        self._index_base = base

    # -- schema ---------------------------------------------------------------------------------

    def create_table(self, dimensions: int) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "id text PRIMARY KEY, content_id text, content text, "
            f"embedding vector<float, {_check_dimensions(dimensions)}>, metadata text, position int, "
            "meta map<text, text>, term_freqs map<text, int>, term_count int)"
        )

    def index_name(self, suffix: str) -> str:
        return f"{self._index_base}_{suffix}"

    def create_indexes(self) -> list[str]:
        def sai(suffix: str, target: str, options: str = "") -> str:
            return (f'CREATE CUSTOM INDEX IF NOT EXISTS "{self.index_name(suffix)}" ON {self.table} ({target}) '
                    f"USING 'StorageAttachedIndex'{options}")

        return [
            sai("vec", "embedding", f" WITH OPTIONS = {{'similarity_function': '{SIMILARITY[self.distance][0]}'}}"),
            sai("cid", "content_id"),
            sai("meta", "ENTRIES(meta)"),
            sai("terms", "KEYS(term_freqs)"),
        ]

    def drop_table(self) -> str:
        return f"DROP TABLE IF EXISTS {self.table}"

    def table_exists(self) -> tuple[str, tuple]:
        return ("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                (self.keyspace, self.table_name))

    def embedding_type(self) -> tuple[str, tuple]:
        return ("SELECT type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? "
                "AND column_name = 'embedding'", (self.keyspace, self.table_name))

    @staticmethod
    def dimensions_of(cql_type: str | None) -> int | None:
        match = _VECTOR_TYPE.match((cql_type or "").strip())
        return int(match.group(1)) if match else None

    # -- rows -----------------------------------------------------------------------------------

    def insert(self) -> str:
        return (f"INSERT INTO {self.table} (id, content_id, content, embedding, metadata, position, meta, "
                "term_freqs, term_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    @staticmethod
    def row(chunk: Chunk) -> tuple:
        words = terms(chunk.content)
        return (chunk.id, chunk.content_id, chunk.content, chunk.embedding,
                json.dumps(chunk.metadata, ensure_ascii=False, allow_nan=False), chunk.position,
                meta_entries(chunk.metadata), dict(Counter(words)), len(words))

    def select_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        return f"SELECT {_ROW}, embedding FROM {self.table} WHERE id IN ?", (ids,)

    @staticmethod
    def chunk(row: Any) -> Chunk:
        return Chunk(id=row.id, content=row.content, content_id=row.content_id,
                     embedding=None if row.embedding is None else [float(x) for x in row.embedding],
                     metadata=json.loads(row.metadata or "{}"), position=row.position or 0)

    # -- conditions -----------------------------------------------------------------------------

    @staticmethod
    def where(content_id: str | None, filters: dict[str, Any]) -> tuple[list[str], list[Any]]:
        parts: list[str] = []
        values: list[Any] = []
        if content_id is not None:
            parts.append("content_id = ?")
            values.append(content_id)
        for key, value in filters.items():
            parts.append("meta[?] = ?")
            values += [key, tagged_value(value)]
        return parts, values

    @staticmethod
    def _clause(parts: list[str]) -> str:
        return " WHERE " + " AND ".join(parts) if parts else ""

    def select_ids(self, content_id: str | None, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(content_id, filters)
        return f"SELECT id FROM {self.table}" + self._clause(parts), tuple(values)

    def select_candidates_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        """`delete(ids=..., ...)`: the rows asked for, with what their conditions need."""
        return f"SELECT id, content_id, meta FROM {self.table} WHERE id IN ?", (ids,)

    @staticmethod
    def row_matches(row: Any, content_id: str | None, filters: dict[str, Any]) -> bool:
        meta = row.meta or {}
        return ((content_id is None or row.content_id == content_id)
                and all(meta.get(k) == tagged_value(v) for k, v in filters.items()))

    def delete_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        return f"DELETE FROM {self.table} WHERE id IN ?", (ids,)

    def count(self, content_id: str | None, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(content_id, filters)
        return f"SELECT COUNT(*) FROM {self.table}" + self._clause(parts), tuple(values)

    # -- search ---------------------------------------------------------------------------------

    def vector_search(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(None, filters)
        fn = SIMILARITY[self.distance][1]
        q = list(embedding)
        return (f"SELECT {_ROW}, {fn}(embedding, ?) AS score FROM {self.table}" + self._clause(parts)
                + " ORDER BY embedding ANN OF ? LIMIT ?", (q, *values, q, limit))

    def keyword_candidates(self, wanted: list[str], limit: int, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(None, filters)
        conditions = ["term_freqs CONTAINS KEY ?"] * len(wanted) + parts
        return (f"SELECT {_ROW}, term_freqs, term_count FROM {self.table}" + self._clause(conditions) + " LIMIT ?",
                (*wanted, *values, limit))

    def vector_score(self, raw: float) -> float:
        """Undo Cassandra's normalisation: (1 + s) / 2 for cosine and dot product,
        1 / (1 + d²) for euclidean (scored 1 / (1 + d) on every store)."""
        raw = float(raw)
        if self.distance == "l2":
            return 1.0 / (1.0 + math.sqrt(max(0.0, 1.0 / raw - 1.0))) if raw > 0 else 0.0
        return 2.0 * raw - 1.0

    @staticmethod
    def rank_keyword(rows: Iterable[Any], wanted: list[str], unwanted: list[str],
                     limit: int) -> list[tuple[Any, float]]:
        """BM25's term-frequency part over the candidates (see the module docstring)."""
        rows = [r for r in rows if not any(t in (r.term_freqs or {}) for t in unwanted)]
        if not rows:
            return []
        avg = sum(r.term_count or 0 for r in rows) / len(rows) or 1.0
        scored = []
        for r in rows:
            tf_of = r.term_freqs or {}
            norm = BM25_K1 * (1 - BM25_B + BM25_B * (r.term_count or 0) / avg)
            score = sum(tf_of.get(t, 0) * (BM25_K1 + 1) / (tf_of.get(t, 0) + norm) for t in wanted)
            scored.append((r, score))
        scored.sort(key=lambda item: (-item[1], item[0].id))
        return scored[:limit]


class CassandraDb(VectorDb):
    """A Cassandra 5 table. Give `session` (a connected cassandra-driver Session) or
    `contact_points` (and `port`, `cluster_options`) for a cluster of its own."""

    def __init__(
        self,
        table_name: str,
        *,
        keyspace: str,
        session: Any = None,
        contact_points: Sequence[str] | None = None,
        port: int = 9042,
        cluster_options: dict[str, Any] | None = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        keyword_candidates: int = 1000,
        batch_size: int = 50,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.statements = CassandraStatements(keyspace, table_name, distance=distance)
        self.keyspace, self.table_name = keyspace, table_name
        self.search_type = check_search_type(search_type)
        self.distance = distance
        self.keyword_candidates = check_int(keyword_candidates, "keyword_candidates", 1, 100_000)
        self.batch_size = check_int(batch_size, "batch_size", 1, 65_535)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else _check_dimensions(dimensions)
        if (session is None) == (contact_points is None):
            raise InvalidInputError("give either session= or contact_points=")
        if contact_points is not None and (isinstance(contact_points, str)
                                           or not all(isinstance(p, str) for p in contact_points)):
            raise InvalidInputError("contact_points must be a list of host names or addresses")
        self._contact_points = None if contact_points is None else list(contact_points)
        self._port = check_int(port, "port", 1, 65_535)
        self._cluster_options = dict(cluster_options or {})
        self._session = session
        self._cluster = None
        self._prepared: dict[str, Any] = {}

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def session(self):
        if self._session is None:
            from cassandra.cluster import Cluster

            self._cluster = Cluster(self._contact_points, port=self._port, **self._cluster_options)
            self._session = self._cluster.connect()
        return self._session

    def _missing(self) -> str:
        return f"vector table {self.keyspace}.{self.table_name} does not exist: call create() first"

    def _missing_table(self, exc: Exception) -> Exception:
        """A driver error as NotFoundError when it says the table is gone, else itself."""
        text = str(exc).lower()
        if "unconfigured table" in text or "does not exist" in text:
            self._prepared = {}
            return NotFoundError(self._missing())
        return exc

    def _prepare(self, cql: str):
        from cassandra import InvalidRequest

        if cql not in self._prepared:
            try:
                self._prepared[cql] = self.session.prepare(cql)
            except InvalidRequest as exc:
                raise self._missing_table(exc) from None
        return self._prepared[cql]

    def _execute(self, statement: tuple[str, tuple]):
        from cassandra import InvalidRequest

        cql, values = statement
        prepared = self._prepare(cql)
        try:
            return self.session.execute(prepared, values)
        except InvalidRequest as exc:
            raise self._missing_table(exc) from None

    def _stored_dimensions(self) -> int | None:
        cql, values = self.statements.embedding_type()
        row = self.session.execute(cql, values).one()
        return None if row is None else self.statements.dimensions_of(row.type)

    def _ready(self) -> None:
        if self.dimensions is not None and self._prepared:
            return
        stored = self._stored_dimensions()
        if stored is None:
            raise NotFoundError(self._missing())
        if self.dimensions is not None and stored != self.dimensions:
            raise dimension_mismatch(f"vector table {self.keyspace}.{self.table_name}", stored, self.dimensions)
        self.dimensions = stored

    def describe(self) -> str:
        row = self.session.execute("SELECT release_version FROM system.local").one()
        return f"CassandraDb {self.keyspace}.{self.table_name} on Cassandra {row.release_version if row else '?'}"

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = self._session = None
        self._prepared = {}

    # -- lifecycle --------------------------------------------------------------------------

    def exists(self) -> bool:
        cql, values = self.statements.table_exists()
        return self.session.execute(cql, values).one() is not None

    def create(self, dimensions: int | None = None) -> None:
        if dimensions is not None:
            _check_dimensions(dimensions)
        stored = self._stored_dimensions()
        known = stored if stored is not None else self.dimensions
        if known is not None and dimensions is not None and known != dimensions:
            raise dimension_mismatch(f"vector table {self.keyspace}.{self.table_name}", known, dimensions)
        wanted = known if known is not None else dimensions
        if wanted is None:
            raise InvalidInputError("create() needs dimensions= (or CassandraDb(dimensions=...)) the first time")
        from cassandra import InvalidRequest

        try:
            self.session.execute(self.statements.create_table(wanted))
        except InvalidRequest as exc:
            if "keyspace" in str(exc).lower():
                raise InvalidInputError(f"keyspace {self.keyspace} does not exist: create it (with the replication "
                                        f"you want) first ({exc})") from None
            raise
        for cql in self.statements.create_indexes():
            self.session.execute(cql)
        self.dimensions = wanted

    def drop(self) -> None:
        self.session.execute(self.statements.drop_table())
        self._prepared = {}

    # -- writes -----------------------------------------------------------------------------

    def write_plan(self, chunks: Iterable[Chunk], content_id: str | None = None) -> tuple[str, list[tuple]]:
        """The INSERT and the rows `upsert` (or `replace(content_id, ...)`) writes, checked as
        they would be; runs nothing."""
        if content_id is not None:
            check_id(content_id, "content_id")
        checked = check_chunks(chunks, self.dimensions)
        if content_id is not None:
            checked = [c.model_copy(update={"content_id": content_id}) for c in checked]
        return self.statements.insert(), [self.statements.row(c) for c in checked]

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        from cassandra.concurrent import execute_concurrent_with_args

        self._ready()
        cql, rows = self.write_plan(chunks)
        if rows:
            execute_concurrent_with_args(self.session, self._prepare(cql), rows, concurrency=16)
        return len(rows)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        from cassandra.query import BatchStatement, BatchType

        check_id(content_id, "content_id")
        self._ready()
        cql, rows = self.write_plan(chunks, content_id)
        keep = {r[0] for r in rows}
        old = [r.id for r in self._execute(self.statements.select_ids(content_id, {})) if r.id not in keep]
        insert = self._prepare(cql)
        delete_cql, _ = self.statements.delete_by_ids([])
        delete = self._prepare(delete_cql)
        work = [(delete, ([i],)) for i in old] + [(insert, r) for r in rows]
        for start in range(0, len(work), self.batch_size):
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            for statement, values in work[start:start + self.batch_size]:
                batch.add(statement, values)
            self.session.execute(batch)
        return len(rows)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        if ids is not None:  # bounded by the ids asked for: check the other conditions here
            rows = self._execute(self.statements.select_candidates_by_ids(ids))
            doomed = [r.id for r in rows if self.statements.row_matches(r, content_id, filters)]
        else:
            doomed = [r.id for r in self._execute(self.statements.select_ids(content_id, filters))]
        for start in range(0, len(doomed), 100):
            self._execute(self.statements.delete_by_ids(doomed[start:start + 100]))
        return len(doomed)

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        if not ids:
            return []
        found = {r.id: self.statements.chunk(r) for r in self._execute(self.statements.select_by_ids(ids))}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        return int(self._execute(self.statements.count(content_id, filters)).one()[0])

    def search_plan(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> dict[str, Any]:
        """The statements `search` runs, by list ("vector", "keyword"; a keyword statement is
        None when nothing can match) with the terms the ranking uses; runs nothing."""
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        plan: dict[str, Any] = {"kind": kind, "limit": limit, "n": n}
        if kind in ("vector", "hybrid"):
            plan["vector"] = self.statements.vector_search(embedding, n, filters)
        if kind in ("keyword", "hybrid"):
            wanted, unwanted = query_terms(query)
            plan["wanted"], plan["unwanted"] = wanted, unwanted
            plan["keyword"] = (self.statements.keyword_candidates(wanted, max(n, self.keyword_candidates), filters)
                               if wanted else None)
        return plan

    def _ranked(self, plan: dict[str, Any], which: str) -> list[tuple[Any, float]]:
        if plan[which] is None:
            return []
        rows = list(self._execute(plan[which]))
        if which == "keyword":
            return self.statements.rank_keyword(rows, plan["wanted"], plan["unwanted"], plan["n"])
        scored = [(r, self.statements.vector_score(r.score)) for r in rows]
        scored.sort(key=lambda item: (-item[1], item[0].id))
        return scored

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        plan = self.search_plan(query, embedding=embedding, limit=limit, filters=filters, search_type=search_type)
        if plan["kind"] != "hybrid":
            ranked = self._ranked(plan, plan["kind"])
        else:
            v, k = self._ranked(plan, "vector"), self._ranked(plan, "keyword")
            ranked = rrf_top([r for r, _ in v], [r for r, _ in k], plan["limit"], key=lambda r: r.id,
                             vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [
            SearchHit(id=r.id, content=r.content, content_id=r.content_id, metadata=json.loads(r.metadata or "{}"),
                      position=r.position or 0, score=s)
            for r, s in ranked
        ]
