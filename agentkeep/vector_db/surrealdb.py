"""SurrealDb: chunks and embeddings in a SurrealDB table, through the official `surrealdb` SDK.

    SurrealDb("my_kb")                                   # embedded, in memory (mem://)
    SurrealDb("my_kb", url="surrealkv:///var/lib/kb")    # embedded, on disk
    SurrealDb("my_kb", url="ws://localhost:8000", username="root", password="root")

One SCHEMAFULL table per knowledge base; every record is `<table>:<chunk id>` with

    content string, content_id option<string>, position int,
    embedding option<array<float>>, metadata string (the JSON text, so it round-trips exactly),
    meta object (the top-level scalar metadata values, for filters),
    terms string (agentkeep's keyword terms of the content, space-separated)

and indexes: HNSW on `embedding` (DIST COSINE or EUCLIDEAN), a BM25 SEARCH index on `terms`
with a whitespace analyzer, and a plain index on `content_id`. A registry table
(`agentkeep_vector_stores`) holds one record per store with its dimensions: every statement
checks it first, so an operation on a dropped store fails instead of silently creating a
schemaless table.

Search types: "vector" uses the KNN operator `embedding <|k,ef|> $vector` (the HNSW index,
filters applied inside the index search) or, with `index=None` or `distance="inner_product"`
(HNSW has no inner-product distance), an exact scan ordered by `vector::similarity::cosine`,
`vector::distance::euclidean` or `vector::dot`; "keyword" matches `terms @1@ $terms` (every
term must match, as the index's default) and ranks by `search::score(1)`; `-term`s are
dropped by an outer `WHERE string::split(terms, ' ') CONTAINSNONE $exclude` over the index's
matches; "hybrid" runs both in one request and fuses the two candidate lists with `rrf_fuse`.

Every data value travels as a bound parameter (`$vars`); only identifiers (checked against a
strict pattern) and checked integers (dimensions, HNSW parameters, the KNN k and ef, which
SurrealQL does not accept as parameters) are written into statement text.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import Any, Iterable, Sequence

from agentkeep.db.errors import DbError, InvalidInputError, NotFoundError
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
    check_number,
    check_search_type,
    check_weights,
    dimension_mismatch,
    rrf_top,
)
from agentkeep.vector_db.text import query_terms
from agentkeep.vector_db.text import terms as keyword_terms

REGISTRY = "agentkeep_vector_stores"
MISSING = "agentkeep: vector store does not exist"
DISTANCES = ("cosine", "l2", "inner_product")
INDEXES = ("hnsw", None)
_HNSW_DIST = {"cosine": "COSINE", "l2": "EUCLIDEAN"}  # SurrealDB's HNSW has no inner product
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INT64 = 2**63
_COLUMNS = "record::id(id) AS id, content, content_id, position, metadata"


def _ident(value: Any, what: str) -> str:
    return check_name(value, what, _IDENT, "a plain identifier (letters, digits, _; 1..63)")


def _scalar(value: Any) -> Any:
    """A metadata scalar as SurrealDB stores it (its integers are 64-bit)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        return float(value)
    return value


# -- translation: statements and their parameters (no connection needed) ----------------------


def ddl(table: str, dimensions: int, distance: str, index: str | None, *, hnsw_m: int = 12,
        hnsw_ef_construction: int = 150, bm25_k1: float = 1.2, bm25_b: float = 0.75) -> str:
    """The statements that create a store's table, fields and indexes (idempotent)."""
    t = _ident(table, "table_name")
    parts = [
        f"DEFINE TABLE IF NOT EXISTS {t} SCHEMAFULL",
        f"DEFINE FIELD IF NOT EXISTS content ON {t} TYPE string",
        f"DEFINE FIELD IF NOT EXISTS content_id ON {t} TYPE option<string>",
        f"DEFINE FIELD IF NOT EXISTS position ON {t} TYPE int",
        f"DEFINE FIELD IF NOT EXISTS embedding ON {t} TYPE option<array<float>>",
        f"DEFINE FIELD IF NOT EXISTS metadata ON {t} TYPE string",
        f"DEFINE FIELD IF NOT EXISTS meta ON {t} FLEXIBLE TYPE object",
        f"DEFINE FIELD IF NOT EXISTS terms ON {t} TYPE string",
        "DEFINE ANALYZER IF NOT EXISTS agentkeep_terms TOKENIZERS blank",
        f"DEFINE INDEX IF NOT EXISTS terms_search ON {t} FIELDS terms SEARCH ANALYZER agentkeep_terms"
        f" BM25({float(bm25_k1)!r},{float(bm25_b)!r})",
        f"DEFINE INDEX IF NOT EXISTS content_id_idx ON {t} FIELDS content_id",
    ]
    if index == "hnsw" and distance in _HNSW_DIST:
        parts.append(
            f"DEFINE INDEX IF NOT EXISTS embedding_hnsw ON {t} FIELDS embedding HNSW DIMENSION {int(dimensions)}"
            f" DIST {_HNSW_DIST[distance]} TYPE F32 EFC {int(hnsw_ef_construction)} M {int(hnsw_m)}"
        )
    return ";\n".join(parts) + ";"


def guard() -> str:
    """The first statement of every request: a store that is not registered does not exist."""
    return "IF !record::exists(type::thing($registry, $table)) { THROW $missing };"


def base_params(table: str) -> dict[str, Any]:
    return {"registry": REGISTRY, "table": table, "missing": MISSING}


def record(chunk: Chunk) -> dict[str, Any]:
    """The stored document of a (checked) chunk; the record id is the chunk id."""
    doc: dict[str, Any] = {
        "content": chunk.content,
        "position": chunk.position,
        "metadata": json.dumps(chunk.metadata, ensure_ascii=False, separators=(",", ":")),
        "meta": {k: _scalar(v) for k, v in chunk.metadata.items() if isinstance(v, (str, int, float))},
        "terms": " ".join(keyword_terms(chunk.content)),
    }
    if chunk.content_id is not None:
        doc["content_id"] = chunk.content_id
    if chunk.embedding is not None:
        doc["embedding"] = [float(x) for x in chunk.embedding]
    return {"id": chunk.id, "doc": doc}


def write_statement(table: str, chunks: list[Chunk], replace_content_id: str | None = None) -> tuple[str, dict]:
    """Upsert (or, with `replace_content_id`, replace a content's chunks) in one transaction."""
    params = base_params(table)
    params["rows"] = [record(c) for c in chunks]
    body = ""
    if replace_content_id is not None:
        params["content_id"] = replace_content_id
        body += "DELETE type::table($table) WHERE content_id = $content_id;\n"
    body += "FOR $row IN $rows { UPSERT type::thing($table, $row.id) CONTENT $row.doc; };\n"
    return f"BEGIN TRANSACTION;\n{guard()}\n{body}COMMIT TRANSACTION;", params


def where(content_id: str | None, filters: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Conditions for content_id and a metadata filter. SurrealDB's `=` already has the suite's
    type rules: 1 = 1.0, true != 1, "1" != 1, and a list or object never equals a scalar."""
    parts = []
    if content_id is not None:
        parts.append("content_id = $content_id")
        params["content_id"] = content_id
    for i, (key, value) in enumerate(filters.items()):
        parts.append(f"meta[$fk{i}] = $fv{i}")
        params[f"fk{i}"] = key
        params[f"fv{i}"] = _scalar(value)
    return parts


def _and(parts: list[str]) -> str:
    return " AND ".join(parts) if parts else "true"


def get_statement(table: str, ids: list[str]) -> tuple[str, dict]:
    from surrealdb import RecordID

    params = base_params(table)
    params["records"] = [RecordID(table, i) for i in ids]
    return f"{guard()}\nSELECT {_COLUMNS}, embedding FROM $records;", params


def count_statement(table: str, content_id: str | None, filters: dict) -> tuple[str, dict]:
    params = base_params(table)
    cond = _and(where(content_id, filters, params))
    return f"{guard()}\nSELECT count() AS n FROM type::table($table) WHERE {cond} GROUP ALL;", params


def delete_statement(table: str, ids: list[str] | None, content_id: str | None, filters: dict) -> tuple[str, dict]:
    """Select the doomed record ids (by key when ids are given), delete them, return how many."""
    params = base_params(table)
    cond = _and(where(content_id, filters, params))
    if ids is not None:
        from surrealdb import RecordID

        params["records"] = [RecordID(table, i) for i in ids]
        source = "$records"
    else:
        source = "type::table($table)"
    return (
        "BEGIN TRANSACTION;\n"
        f"{guard()}\n"
        f"LET $gone = (SELECT VALUE id FROM {source} WHERE {cond});\n"
        "DELETE $gone;\n"
        "RETURN array::len($gone);\n"
        "COMMIT TRANSACTION;"
    ), params


def vector_select(distance: str, indexed: bool, k: int, ef: int, cond: str) -> str:
    """One vector search; binds $vector and $limit. Selects a `score` (higher is closer)."""
    if indexed:
        score = {"cosine": "1 - vector::distance::knn()", "l2": "1 / (1 + vector::distance::knn())"}[distance]
        return (
            f"SELECT {_COLUMNS}, {score} AS score FROM type::table($table)"
            f" WHERE {cond} AND embedding <|{int(k)},{int(ef)}|> $vector ORDER BY score DESC, id LIMIT $limit"
        )
    score = {
        "cosine": "vector::similarity::cosine(embedding, $vector)",
        "l2": "1 / (1 + vector::distance::euclidean(embedding, $vector))",
        "inner_product": "vector::dot(embedding, $vector)",
    }[distance]
    return (
        f"SELECT {_COLUMNS}, {score} AS score FROM type::table($table)"
        f" WHERE embedding != NONE AND {cond} ORDER BY score DESC, id LIMIT $limit"
    )


def keyword_select(cond: str, exclude: bool) -> str:
    """One BM25 search; binds $terms (and $exclude) and $limit. The planner leaves the SEARCH
    index for a table scan when the WHERE holds a function call, so excluded terms are
    dropped by an outer SELECT over the index's matches."""
    select = f"SELECT {_COLUMNS}, search::score(1) AS score{', terms' if exclude else ''} FROM type::table($table)"
    if not exclude:
        return f"{select} WHERE terms @1@ $terms AND {cond} ORDER BY score DESC, id LIMIT $limit"
    return (
        "SELECT id, content, content_id, position, metadata, score"
        f" FROM ({select} WHERE terms @1@ $terms AND {cond})"
        " WHERE string::split(terms, ' ') CONTAINSNONE $exclude ORDER BY score DESC, id LIMIT $limit"
    )


def search_statement(
    table: str, kind: str, query: str | None, embedding: list[float] | None, limit: int, filters: dict, *,
    distance: str, indexed: bool, ef_search: int, candidates: int,
) -> tuple[str, dict, list[str]]:
    """The request for one search and the names of its result statements ("vector", "keyword")."""
    params = base_params(table)
    cond = _and(where(None, filters, params))
    selects: list[str] = []
    names: list[str] = []
    n = limit if kind != "hybrid" else max(limit, candidates)
    if kind in ("vector", "hybrid"):
        params.update(vector=embedding, limit=n)
        selects.append(vector_select(distance, indexed, n, max(ef_search, n), cond))
        names.append("vector")
    if kind in ("keyword", "hybrid"):
        wanted, unwanted = query_terms(query or "")
        if wanted:
            params.update(terms=" ".join(wanted), limit=n)
            if unwanted:
                params["exclude"] = unwanted
            selects.append(keyword_select(cond, bool(unwanted)))
            names.append("keyword")
    return guard() + "\n" + ";\n".join(selects) + (";" if selects else ""), params, names


# -- the store --------------------------------------------------------------------------------

_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(client: Any) -> threading.RLock:
    with _LOCKS_GUARD:
        try:
            return _LOCKS.setdefault(client, threading.RLock())
        except TypeError:  # not weak-referenceable: a lock of its own
            return threading.RLock()


class SurrealDb(VectorDb):
    """A SurrealDB table. Give `url` (embedded `mem://`, `surrealkv://...`, or a server's
    `ws://`/`http://` address) or `client` (a connected `surrealdb.Surreal`, namespace and
    database already chosen)."""

    def __init__(
        self,
        table_name: str,
        url: str | None = "mem://",
        *,
        client: Any = None,
        namespace: str = "agentkeep",
        database: str = "agentkeep",
        username: str | None = None,
        password: str | None = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        index: str | None = "hnsw",
        hnsw_m: int = 12,
        hnsw_ef_construction: int = 150,
        ef_search: int = 40,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.table_name = _ident(table_name, "table_name")
        if self.table_name == REGISTRY:
            raise InvalidInputError(f"{REGISTRY} is agentkeep's registry table; pick another table_name")
        self.search_type = check_search_type(search_type)
        check_choice(distance, "distance", DISTANCES)
        if index not in INDEXES:
            raise InvalidInputError(f"index must be 'hnsw' or None; got {index!r}")
        self.distance = distance
        self.index = index
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 128)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 4096)
        self.ef_search = check_int(ef_search, "ef_search", 1, 10_000)
        self.bm25_k1 = check_number(bm25_k1, "bm25_k1", 0, 10)
        self.bm25_b = check_number(bm25_b, "bm25_b", 0, 10)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions)
        self._registered: bool | None = None
        if client is None:
            if not isinstance(url, str) or not url:
                raise InvalidInputError("give url= (mem://, surrealkv://..., ws://...) or client=")
            from surrealdb import Surreal

            client = Surreal(url)
            if hasattr(client, "connect"):
                client.connect()
            if username is not None:
                client.signin({"username": username, "password": password})
            client.use(namespace, database)
            self._owned = True
        else:
            self._owned = False
        self._client = client
        self._url = url if self._owned else None
        self._lock = _lock_for(client)

    @property
    def indexed(self) -> bool:
        return self.index == "hnsw" and self.distance in _HNSW_DIST

    # -- plumbing ---------------------------------------------------------------------------

    def _query(self, statement: str, params: dict[str, Any]) -> list[Any]:
        """Run a request; the results of its statements, in order. A failed guard is a
        missing store; any other failed statement raises."""
        with self._lock:
            response = self._client.query_raw(statement, params)
        if response.get("error"):
            raise DbError(f"SurrealDB: {response['error']}")
        results = response.get("result") or []
        errors = [str(r.get("result")) for r in results if r.get("status") == "ERR"]
        if any(MISSING in e for e in errors):
            self._registered = False
            raise NotFoundError(self._missing())
        if errors:
            raise DbError(f"SurrealDB: {errors[0]}")
        return [r.get("result") for r in results]

    def _missing(self) -> str:
        return f"vector table {self.table_name} does not exist: call create() first"

    def _registered_dimensions(self) -> int | None:
        [dims] = self._query(
            "RETURN (SELECT VALUE dimensions FROM ONLY type::thing($registry, $table));",
            {"registry": REGISTRY, "table": self.table_name},
        )
        return dims

    def _ready(self) -> None:
        """Learn the stored dimensions once; NotFoundError when the store does not exist."""
        if self._registered and self.dimensions is not None:
            return
        dims = self._registered_dimensions()
        if dims is None:
            raise NotFoundError(self._missing())
        if self.dimensions is not None and self.dimensions != dims:
            raise dimension_mismatch(f"vector table {self.table_name}", dims, self.dimensions)
        self.dimensions = dims
        self._registered = True

    def describe(self) -> str:
        where_ = self._url or "a shared SurrealDB connection"
        return f"SurrealDb {self.table_name} on {where_} ({'HNSW' if self.indexed else 'exact'} vector search)"

    def close(self) -> None:
        if self._owned:
            self._client.close()

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        if dimensions is not None:
            check_dimensions(dimensions)
        stored = self._registered_dimensions()
        wanted = dimensions or self.dimensions
        if stored is not None:
            if wanted is not None and wanted != stored:
                raise dimension_mismatch(f"vector table {self.table_name}", stored, wanted)
            wanted = stored
        elif wanted is None:
            raise InvalidInputError("create() needs dimensions= (or SurrealDb(dimensions=...)) to create the table")
        self._query(ddl(self.table_name, wanted, self.distance, self.index, hnsw_m=self.hnsw_m,
                        hnsw_ef_construction=self.hnsw_ef_construction, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b), {})
        if stored is None:
            self._query(
                "UPSERT type::thing($registry, $table) CONTENT {dimensions: $dimensions, distance: $distance};",
                {"registry": REGISTRY, "table": self.table_name, "dimensions": wanted, "distance": self.distance},
            )
        self.dimensions = wanted
        self._registered = True

    def exists(self) -> bool:
        return self._registered_dimensions() is not None

    def drop(self) -> None:
        self._query(
            f"BEGIN TRANSACTION; REMOVE TABLE IF EXISTS {self.table_name};"
            " DELETE type::thing($registry, $table); COMMIT TRANSACTION;",
            {"registry": REGISTRY, "table": self.table_name},
        )
        self._registered = False

    # -- writes -----------------------------------------------------------------------------

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        if checked:
            self._query(*write_statement(self.table_name, checked))
        return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        self._query(*write_statement(self.table_name, checked, replace_content_id=content_id))
        return len(checked)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        results = self._query(*delete_statement(self.table_name, ids, content_id, filters))
        return int(results[-1] or 0)

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        if not ids:
            return []
        rows = self._query(*get_statement(self.table_name, ids))[-1] or []
        found = {r["id"]: _chunk(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        rows = self._query(*count_statement(self.table_name, content_id, filters))[-1] or []
        return int(rows[0]["n"]) if rows else 0

    def search_statement(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None):
        """The request `search` sends: (SurrealQL, parameters, result names)."""
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        return self._statement(kind, query, embedding, limit, filters)

    def _statement(self, kind, query, embedding, limit, filters):
        return search_statement(
            self.table_name, kind, query, embedding, limit, filters, distance=self.distance,
            indexed=self.indexed, ef_search=self.ef_search, candidates=self.hybrid_candidates,
        )

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        statement, params, names = self._statement(kind, query, embedding, limit, filters)
        results = self._query(statement, params)
        lists = {name: rows or [] for name, rows in zip(names, results[1:])}
        if kind != "hybrid":
            return [_hit(r, float(r["score"])) for r in lists.get(kind, [])[:limit]]
        top = rrf_top(lists.get("vector", []), lists.get("keyword", []), limit, key=lambda r: r["id"],
                      vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [_hit(r, score) for r, score in top]


def _chunk(row: dict[str, Any]) -> Chunk:
    embedding = row.get("embedding")
    return Chunk(id=row["id"], content=row["content"], content_id=row.get("content_id"),
                 embedding=None if embedding is None else [float(x) for x in embedding],
                 metadata=json.loads(row["metadata"]), position=row["position"])


def _hit(row: dict[str, Any], score: float) -> SearchHit:
    return SearchHit(id=row["id"], content=row["content"], content_id=row.get("content_id"),
                     metadata=json.loads(row["metadata"]), position=row["position"], score=score)
