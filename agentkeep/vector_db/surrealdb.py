"""SurrealDb: chunks and embeddings in a SurrealDB table, through the official `surrealdb` SDK.

    SurrealDb("my_kb")                                   # embedded, in memory (mem://)
    SurrealDb("my_kb", url="surrealkv:///var/lib/kb")    # embedded, on disk
    SurrealDb("my_kb", url="ws://localhost:8000", username="root", password="root")

The table, the registry every statement checks first, the searches (both hybrid lists in one
request) and parameter binding: docs/vector_db/surrealdb.md.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import Counter
from typing import Any, Unpack

from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.vector_db.base import Chunk, StoreOptions, VectorDb, check_choice, check_int, check_name
from agentkeep.vector_db.base import check_number, chunk_of, filter_alternatives, hit_of, typed_scalar
from agentkeep.vector_db.text import KeywordQuery, analyzer

REGISTRY = "agentkeep_vector_stores"
MISSING = "agentkeep: vector store does not exist"
INDEXES = ("hnsw", None)
_HNSW_DIST = {"cosine": "COSINE", "l2": "EUCLIDEAN"}  # SurrealDB's HNSW has no inner product
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_COLUMNS = "record::id(id) AS id, content, content_id, position, metadata"


def _ident(value: Any, what: str) -> str:
    return check_name(value, what, _IDENT, "a plain identifier (letters, digits, _; 1..63)")


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
        f"DEFINE FIELD IF NOT EXISTS tf ON {t} FLEXIBLE TYPE object",
        f"DEFINE FIELD IF NOT EXISTS length ON {t} TYPE int",
        "DEFINE ANALYZER IF NOT EXISTS agentkeep_terms TOKENIZERS blank",
        (f"DEFINE INDEX IF NOT EXISTS terms_search ON {t} FIELDS terms SEARCH ANALYZER agentkeep_terms"
         f" BM25({float(bm25_k1)!r},{float(bm25_b)!r})"),
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


def record(chunk: Chunk, language: str = "english") -> dict[str, Any]:
    """The stored document of a (checked) chunk; the record id is the chunk id."""
    words = analyzer(language).terms(chunk.content)
    doc: dict[str, Any] = {
        "content": chunk.content, "position": chunk.position, "terms": " ".join(words),
        "tf": dict(Counter(words)), "length": len(words),
        "metadata": json.dumps(chunk.metadata, ensure_ascii=False, separators=(",", ":")),
        "meta": {k: t[1] for k, v in chunk.metadata.items() if (t := typed_scalar(v)) is not None}}  # 64-bit ints
    if chunk.content_id is not None:
        doc["content_id"] = chunk.content_id
    if chunk.embedding is not None:
        doc["embedding"] = [float(x) for x in chunk.embedding]
    return {"id": chunk.id, "doc": doc}


# The registry record keeps the table's BM25 statistics (chunks, and terms in all of them),
# changed in the transaction of every write; SurrealDB's own count of the search index's
# documents does not drop when a record is deleted.
_STATS = ("(SELECT count() AS n, math::sum(length) AS l FROM {source} GROUP ALL)[0]")
_ADJUST = ("UPDATE type::thing($registry, $table) SET docs {op} (${name}.n ?? 0),"
           " length {op} (${name}.l ?? 0) RETURN NONE;\n")


def write_statement(table: str, chunks: list[Chunk], replace_content_id: str | None = None,
                    language: str = "english") -> tuple[str, dict]:
    """Upsert (or, with `replace_content_id`, replace a content's chunks) in one transaction,
    the statistics following: what is replaced leaves them, what is written joins them."""
    from surrealdb import RecordID

    params = base_params(table)
    params["rows"] = [record(c, language) for c in chunks]
    params["records"] = [RecordID(table, c.id) for c in chunks]
    params["added"] = {"n": len(chunks), "l": sum(r["doc"]["length"] for r in params["rows"])}
    body = ""
    if replace_content_id is not None:
        params["content_id"] = replace_content_id
        body += f"LET $gone = {_STATS.format(source='type::table($table) WHERE content_id = $content_id')};\n"
        body += _ADJUST.format(op="-=", name="gone")
        body += "DELETE type::table($table) WHERE content_id = $content_id;\n"
    body += f"LET $old = {_STATS.format(source='$records')};\n" + _ADJUST.format(op="-=", name="old")
    body += "FOR $row IN $rows { UPSERT type::thing($table, $row.id) CONTENT $row.doc; };\n"
    body += _ADJUST.format(op="+=", name="added")
    return f"BEGIN TRANSACTION;\n{guard()}\n{body}COMMIT TRANSACTION;", params


def where(content_id: str | None, filters: dict[str, Any], params: dict[str, Any]) -> str:
    """The condition of a content id and a metadata filter ("true" for neither). SurrealDB's `=`
    already has the suite's type rules: 1 = 1.0, true != 1, "1" != 1, and a list or object
    never equals a scalar."""
    parts = []
    if content_id is not None:
        parts.append("content_id = $content_id")
        params["content_id"] = content_id
    for i, (key, values) in enumerate(filter_alternatives(filters)):
        if len(values) == 1:
            parts.append(f"meta[$fk{i}] = $fv{i}")
            params.update({f"fk{i}": key, f"fv{i}": typed_scalar(values[0])[1]})
        else:  # `IN` compares as `=` does
            parts.append(f"meta[$fk{i}] IN $fv{i}")
            params.update({f"fk{i}": key, f"fv{i}": [typed_scalar(v)[1] for v in values]})
    return " AND ".join(parts) or "true"


def get_statement(table: str, ids: list[str]) -> tuple[str, dict]:
    from surrealdb import RecordID

    params = base_params(table)
    params["records"] = [RecordID(table, i) for i in ids]
    return f"{guard()}\nSELECT {_COLUMNS}, embedding FROM $records;", params


def count_statement(table: str, content_id: str | None, filters: dict) -> tuple[str, dict]:
    params = base_params(table)
    cond = where(content_id, filters, params)
    return f"{guard()}\nSELECT count() AS n FROM type::table($table) WHERE {cond} GROUP ALL;", params


def delete_statement(table: str, ids: list[str] | None, content_id: str | None, filters: dict) -> tuple[str, dict]:
    """Select the doomed record ids (by key when ids are given), delete them, return how many."""
    params = base_params(table)
    cond = where(content_id, filters, params)
    source = "type::table($table)"
    if ids is not None:
        from surrealdb import RecordID

        params["records"] = [RecordID(table, i) for i in ids]
        source = "$records"
    return (
        "BEGIN TRANSACTION;\n"
        f"{guard()}\n"
        f"LET $gone = (SELECT VALUE id FROM {source} WHERE {cond});\n"
        f"LET $stats = {_STATS.format(source='$gone')};\n"
        + _ADJUST.format(op="-=", name="stats") +
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


def keyword_lets(query: KeywordQuery, k1: float, b: float) -> str:
    """The statements before a keyword search: the query's terms bound as $kw1.., each one's
    idf ($kw_idf) from its document frequency (a count on the SEARCH index) and the table's
    chunk count, and the average length, from the registry's statistics."""
    count = "(SELECT count() AS n FROM type::table($table) WHERE terms @@ $kw{i} GROUP ALL)[0].n ?? 0"
    dfs = "".join(f"LET $kw_df{i} = {count.format(i=i)};\n" for i in range(1, len(query.ranked) + 1))
    idfs = ", ".join(f"math::ln(1 + ($kw_n - $kw_df{i} + 0.5) / ($kw_df{i} + 0.5))"
                     for i in range(1, len(query.ranked) + 1))
    return (
        "LET $kw_stats = (SELECT docs, length FROM ONLY type::thing($registry, $table));\n"
        "LET $kw_n = math::max([$kw_stats.docs ?? 0, 1]);\n"
        "LET $kw_avg = math::max([<float> ($kw_stats.length ?? 0) / $kw_n, 1e-9]);\n"
        f"{dfs}LET $kw_idf = [{idfs}];\n"
        f"LET $kw_norm = {float(k1)!r} * {1 - float(b)!r};\n"
    )


def keyword_select(query: KeywordQuery, cond: str, params: dict[str, Any], k1: float = 1.2, b: float = 0.75) -> str:
    """One BM25 search (after `keyword_lets`); binds $limit and the query's terms. Any ranked
    term may match: one `@N@` per term, OR-ed (SurrealDB's `@@` requires every term of its
    text), which the planner reads from the SEARCH index only when the WHERE holds nothing
    else, so the filter and the marks (required and excluded terms, phrases as runs of the
    space-separated terms) are applied by an outer SELECT over its matches. The score is BM25
    as in_memory computes it, from each match's term counts and length."""
    matches, scores = [], []
    for i, term in enumerate(query.ranked, 1):
        params[f"kw{i}"] = term
        matches.append(f"terms @{i}@ $kw{i}")
        tf = f"(tf[$kw{i}] ?? 0)"
        scores.append(f"$kw_idf[{i - 1}] * {tf} * {float(k1) + 1!r}"
                      f" / ({tf} + $kw_norm + {float(k1) * float(b)!r} * length / $kw_avg)")
    outer = [cond]
    if query.must:
        params["kw_must"] = list(query.must)
        outer.append("string::split(terms, ' ') CONTAINSALL $kw_must")
    if query.must_not:
        params["kw_not"] = list(query.must_not)
        outer.append("string::split(terms, ' ') CONTAINSNONE $kw_not")
    for i, phrase in enumerate((*query.phrases, *query.excluded_phrases)):
        params[f"kw_phrase{i}"] = " " + " ".join(phrase) + " "
        test = f"string::contains(string::concat(' ', terms, ' '), $kw_phrase{i})"
        outer.append(test if i < len(query.phrases) else f"!{test}")
    return (
        f"SELECT id, content, content_id, position, metadata, {' + '.join(scores)} AS score"
        f" FROM (SELECT {_COLUMNS}, meta, terms, tf, length FROM type::table($table) WHERE {' OR '.join(matches)})"
        f" WHERE {' AND '.join(outer)} ORDER BY score DESC, id LIMIT $limit"
    )


def search_statement(
    table: str, kind: str, query: str | None, embedding: list[float] | None, limit: int, filters: dict, *,
    distance: str, indexed: bool, ef_search: int, candidates: int, language: str = "english",
    bm25_k1: float = 1.2, bm25_b: float = 0.75,
) -> tuple[str, dict, list[str]]:
    """The request for one search and the names of its result statements ("vector", "keyword"),
    its last ones."""
    params = base_params(table)
    cond = where(None, filters, params)
    selects: dict[str, str] = {}
    lets = ""
    n = limit if kind != "hybrid" else max(limit, candidates)
    if kind in ("vector", "hybrid"):
        params.update(vector=embedding, limit=n)
        selects["vector"] = vector_select(distance, indexed, n, max(ef_search, n), cond)
    if kind in ("keyword", "hybrid"):
        parsed = analyzer(language).query(query or "")
        if parsed:  # else only stop words, or only exclusions: nothing can match
            params["limit"] = n
            lets = keyword_lets(parsed, bm25_k1, bm25_b)
            selects["keyword"] = keyword_select(parsed, cond, params, bm25_k1, bm25_b)
    text = guard() + "\n" + lets + ";\n".join(selects.values()) + (";" if selects else "")
    return text, params, list(selects)


# -- the store --------------------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
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

    def __init__(self, table_name: str, url: str | None = "mem://", *, client: Any = None,
                 namespace: str = "agentkeep", database: str = "agentkeep", username: str | None = None,
                 password: str | None = None, index: str | None = "hnsw", hnsw_m: int = 12,
                 hnsw_ef_construction: int = 150, ef_search: int = 40, bm25_k1: float = 1.2, bm25_b: float = 0.75,
                 **options: Unpack[StoreOptions]) -> None:
        self.table_name = _ident(table_name, "table_name")
        if self.table_name == REGISTRY:
            raise InvalidInputError(f"{REGISTRY} is agentkeep's registry table; pick another table_name")
        super().__init__(**options)
        self.label = f"vector table {self.table_name}"
        self.index = check_choice(index, "index", INDEXES)
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 128)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 4096)
        self.ef_search = check_int(ef_search, "ef_search", 1, 10_000)
        self.bm25_k1 = check_number(bm25_k1, "bm25_k1", 0, 10)
        self.bm25_b = check_number(bm25_b, "bm25_b", 0, 10)
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
            self._owns_client = True
        self._client = client
        self._url = url if self._owns_client else None
        self._address = self._url or "a shared connection"
        self._lock = _lock_for(client)

    @property
    def indexed(self) -> bool:
        return self.index == "hnsw" and self.distance in _HNSW_DIST

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
            raise self._gone()
        if errors:
            raise DbError(f"SurrealDB: {errors[0]}")
        return [r.get("result") for r in results]

    def _stored_dimensions(self) -> int | None:
        [dims] = self._query(
            "RETURN (SELECT VALUE dimensions FROM ONLY type::thing($registry, $table));",
            {"registry": REGISTRY, "table": self.table_name},
        )
        return dims

    def describe(self) -> str:
        where_ = self._url or "a shared SurrealDB connection"
        return f"SurrealDb {self.table_name} on {where_} ({'HNSW' if self.indexed else 'exact'} vector search)"

    def _create_store(self, dimensions: int) -> None:
        """The table and its indexes, then its registry record (what says the store exists)."""
        self._query(ddl(self.table_name, dimensions, self.distance, self.index, hnsw_m=self.hnsw_m,
                        hnsw_ef_construction=self.hnsw_ef_construction, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b), {})
        self._query(
            "UPSERT type::thing($registry, $table)"
            " CONTENT {dimensions: $dimensions, distance: $distance, docs: 0, length: 0};",
            {"registry": REGISTRY, "table": self.table_name, "dimensions": dimensions, "distance": self.distance},
        )

    def _drop_store(self) -> None:
        self._query(
            f"BEGIN TRANSACTION; REMOVE TABLE IF EXISTS {self.table_name};"
            " DELETE type::thing($registry, $table); COMMIT TRANSACTION;",
            {"registry": REGISTRY, "table": self.table_name},
        )

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        if chunks or content_id is not None:
            self._query(*write_statement(self.table_name, chunks, replace_content_id=content_id,
                                         language=self.language))

    def _delete(self, ids, content_id, filters) -> int:
        return int(self._query(*delete_statement(self.table_name, ids, content_id, filters))[-1] or 0)

    def _get(self, ids: list[str]) -> list[Chunk]:
        rows = self._query(*get_statement(self.table_name, ids))[-1] or []
        return [chunk_of(r, r.get("embedding") and [float(x) for x in r["embedding"]]) for r in rows]

    def _count(self, content_id, filters) -> int:
        rows = self._query(*count_statement(self.table_name, content_id, filters))[-1] or []
        return int(rows[0]["n"]) if rows else 0

    def search_statement(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None):
        """The request `search` sends: (SurrealQL, parameters, result names)."""
        return self._shown(self._statement, query, embedding, limit, filters, search_type)

    def _statement(self, kind, query, embedding, limit, filters):
        return search_statement(
            self.table_name, kind, query, embedding, limit, filters, distance=self.distance,
            indexed=self.indexed, ef_search=self.ef_search, candidates=self.hybrid_candidates,
            language=self.language, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b,
        )

    def _candidates(self, kind, query, embedding, n, filters):
        """Both lists in one request."""
        statement, params, names = self._statement(kind, query, embedding, n, filters)
        results = self._query(statement, params)
        lists = {name: rows or [] for name, rows in zip(names, results[len(results) - len(names):])}
        return ([hit_of(r, float(r["score"])) for r in lists.get("vector", [])],
                [hit_of(r, float(r["score"])) for r in lists.get("keyword", [])])
