"""LanceDb: chunks and embeddings in a LanceDB table, embedded in this process.

    LanceDb("my_kb", uri="./data/lancedb", search_type="hybrid")
    LanceDb("my_kb", uri="s3://bucket/kb", storage_options={"region": "eu-west-1"})

One Lance table per knowledge base, `<uri>/<table_name>.lance`:

    id string, content_id string, content string, terms string,
    embedding fixed_size_list<float32>[N] (null: no embedding), metadata string (JSON),
    filter_tokens list<string>, position int32

`terms` holds `in_memory.terms(content)` (lowercased, stopword-free, stemmed words) and
carries LanceDB's native full-text index (whitespace tokenizer, no further analysis), so
keyword search has the same words as every other store: a query becomes an AND of its
terms, `-term` a MUST_NOT clause, ranked by Lance's BM25. `filter_tokens` holds one
canonical token per top-level scalar metadata value (`["team","support"]`, `["n",1]`,
`["flag",true]`; numbers by value), so an equality filter is `array_has_all(filter_tokens,
[...])`, pushed into Lance's `where` (prefiltering) and served by a LabelList index.

Vector search is exact until the table holds `index_threshold` rows; the first write past
it builds the vector index (`index`, default IVF_HNSW_SQ), searched with `nprobes` probes
(more when a filter leaves too few results), `ef` and `refine_factor` (exact re-scoring of
the candidates, so scores stay true distances). Rows written after the index was built are
searched exactly until `optimize()` folds them in; it runs every `optimize_every` writes.

Hybrid search runs the vector and the keyword search natively and fuses the two candidate
lists with `base.rrf_fuse`: LanceDB's RRFReranker has no weights, float32 scores and no
tie order, and its hybrid query min-max normalises scores before any reranker sees them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from datetime import timedelta
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
    filter_token,
    rrf_top,
)
from agentkeep.vector_db.text import query_terms, terms

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DISTANCES = {  # distance -> (Lance distance type, score from Lance's distance d)
    "cosine": ("cosine", lambda d: 1.0 - d),
    "l2": ("l2", lambda d: 1.0 / (1.0 + math.sqrt(max(d, 0.0)))),  # Lance's l2 is squared
    "inner_product": ("dot", lambda d: 1.0 - d),  # Lance's dot distance is 1 - a.b
}
INDEXES = ("ivf_hnsw_sq", "ivf_pq", "ivf_flat", None)
_RESULT_COLUMNS = ["id", "content_id", "content", "metadata", "position"]
_META_KEY = b"agentkeep"
_GET_BATCH = 1000
log = logging.getLogger(__name__)


def _lit(value: str) -> str:
    """A SQL string literal (Lance's parser takes backslashes literally; quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def _token(key: str, value: Any) -> str:
    """The canonical token of one metadata equality: numbers by value (1 == 1.0, and an
    integral float is written as the integer it equals), booleans apart from numbers: the
    shared `filter_token`, spelled as JSON."""
    kind, text = filter_token(value).split(":", 1)
    return f"[{json.dumps(key)},{json.dumps(value) if kind == 's' else text}]"


def filter_tokens(metadata: dict[str, Any]) -> list[str]:
    """One token per top-level str/number/bool value; lists, objects and null match nothing."""
    return [_token(k, v) for k, v in metadata.items() if isinstance(v, (str, int, float))]


def _interval(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInputError(f"read_consistency_interval must be seconds >= 0, a timedelta or None, got {value!r}")
    return timedelta(seconds=value)


class LanceDb(VectorDb):
    """A LanceDB table `table_name` in the database at `uri` (a local directory, or an
    object-store URI such as s3://bucket/path with `storage_options`)."""

    def __init__(
        self,
        table_name: str,
        uri: Any,
        *,
        storage_options: dict[str, str] | None = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        index: str | None = "ivf_hnsw_sq",
        index_threshold: int = 10_000,
        num_partitions: int | None = None,
        hnsw_m: int = 20,
        hnsw_ef_construction: int = 300,
        nprobes: int = 20,
        ef: int | None = None,
        refine_factor: int | None = 2,
        optimize_every: int | None = 100,
        read_consistency_interval: float | timedelta | None = 0,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.table_name = check_name(table_name, "table_name", _TABLE_NAME,
                                     "1..128 letters, digits, '_', '-' or '.' (not first)")
        if hasattr(uri, "__fspath__"):
            uri = str(uri.__fspath__())
        if not isinstance(uri, str) or not uri:
            raise InvalidInputError(f"uri must be a directory or an object-store URI, got {uri!r}")
        self.uri = uri
        if storage_options is not None and not (
                isinstance(storage_options, dict) and all(isinstance(v, str) for v in storage_options.values())):
            raise InvalidInputError("storage_options must be a dict of str -> str (see LanceDB's object-store options)")
        self.storage_options = dict(storage_options) if storage_options else None
        self.search_type = check_search_type(search_type)
        check_choice(distance, "distance", _DISTANCES)
        if index not in INDEXES:
            raise InvalidInputError(f"index must be one of {', '.join(map(repr, INDEXES))}; got {index!r}")
        self.distance = distance
        self.index = index
        self.index_threshold = check_int(index_threshold, "index_threshold", 1, 2**62)
        self.num_partitions = None if num_partitions is None else check_int(num_partitions, "num_partitions", 1, 65_536)
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 256)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 10_000)
        self.nprobes = check_int(nprobes, "nprobes", 1, 65_536)
        self.ef = None if ef is None else check_int(ef, "ef", 1, 100_000)
        self.refine_factor = None if refine_factor is None else check_int(refine_factor, "refine_factor", 1, 1000)
        self.optimize_every = None if optimize_every is None else check_int(optimize_every, "optimize_every", 1, 2**31)
        self.read_consistency_interval = _interval(read_consistency_interval)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions)
        self._db = None
        self._table = None
        self._has_vector_index = False
        self._writes = 0
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def _connection(self):
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(self.uri, storage_options=self.storage_options,
                                       read_consistency_interval=self.read_consistency_interval)
        return self._db

    def _missing(self) -> str:
        return f"LanceDB table {self.table_name!r} does not exist at {self.uri}: call create() first"

    def _exists_now(self) -> bool:
        try:
            self._connection().open_table(self.table_name)
        except ValueError:
            return False
        return True

    def _ready(self):
        """The open table (NotFoundError if there is none); learns its dimensions once."""
        if self._table is not None:
            return self._table
        with self._lock:
            if self._table is None:
                try:
                    table = self._connection().open_table(self.table_name)
                except ValueError:
                    raise NotFoundError(self._missing()) from None
                self._adopt(table)
        return self._table

    def _adopt(self, table) -> None:
        schema = table.schema
        if "embedding" not in schema.names or "filter_tokens" not in schema.names:
            raise InvalidInputError(f"LanceDB table {self.table_name!r} was not created by agentkeep's LanceDb")
        dims = schema.field("embedding").type.list_size
        if self.dimensions is not None and self.dimensions != dims:
            raise dimension_mismatch(f"LanceDB table {self.table_name!r}", dims, self.dimensions)
        stored = json.loads((schema.metadata or {}).get(_META_KEY, b"{}")).get("distance", self.distance)
        if stored != self.distance:
            raise InvalidInputError(
                f"LanceDB table {self.table_name!r} was created for {stored} distance, not {self.distance}")
        self.dimensions = dims
        self._has_vector_index = any(i.columns == ["embedding"] for i in table.list_indices())
        self._table = table

    def _run(self, fn):
        """Run fn(table); a table dropped underneath (by another process) is NotFoundError."""
        table = self._ready()
        try:
            return fn(table)
        except (InvalidInputError, NotFoundError):
            raise
        except Exception:
            if not self._exists_now():
                self._table = None
                raise NotFoundError(self._missing()) from None
            raise

    def describe(self) -> str:
        import lancedb

        state = "not created"
        if self._exists_now():
            table = self._ready()
            state = f"{table.count_rows()} rows, " + (
                f"{self.index} vector index" if self._has_vector_index else "exact vector search")
        return f"LanceDb {self.table_name!r} at {self.uri} (lancedb {lancedb.__version__}; {state})"

    def close(self) -> None:
        self._table = None
        self._db = None

    # -- lifecycle --------------------------------------------------------------------------

    def _schema(self, dimensions: int):
        import pyarrow as pa

        meta = json.dumps({"distance": self.distance, "format": 1}).encode()
        return pa.schema([
            pa.field("id", pa.string(), nullable=False),
            pa.field("content_id", pa.string()),
            pa.field("content", pa.string(), nullable=False),
            pa.field("terms", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimensions)),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("filter_tokens", pa.list_(pa.string()), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
        ], metadata={_META_KEY: meta})

    def create(self, dimensions: int | None = None) -> None:
        if dimensions is not None:
            check_dimensions(dimensions)
        wanted = dimensions or self.dimensions
        db = self._connection()
        with self._lock:
            try:
                table = db.open_table(self.table_name)
            except ValueError:
                if wanted is None:
                    raise InvalidInputError(
                        "create() needs dimensions= (or LanceDb(dimensions=...)) to create the table")
                try:
                    table = db.create_table(self.table_name, schema=self._schema(wanted))
                except ValueError:  # created meanwhile by another process
                    table = db.open_table(self.table_name)
            if wanted is not None:
                dims = table.schema.field("embedding").type.list_size
                if dims != wanted:
                    raise dimension_mismatch(f"LanceDB table {self.table_name!r}", dims, wanted)
            self._adopt(table)
            self._ensure_indexes(table)

    def _ensure_indexes(self, table) -> None:
        """The scalar and full-text indexes (built empty at creation; `optimize()` grows them)."""
        from lancedb.index import FTS, BTree, LabelList

        have = {tuple(i.columns) for i in table.list_indices()}
        wanted = [
            ("id", BTree()), ("content_id", BTree()), ("filter_tokens", LabelList()),
            ("terms", FTS(base_tokenizer="whitespace", lower_case=False, stem=False, remove_stop_words=False,
                          ascii_folding=False, max_token_length=None)),
        ]
        for column, config in wanted:
            if (column,) not in have:
                try:
                    table.create_index(column, config=config, replace=False)
                except Exception:
                    if not any(i.columns == [column] for i in table.list_indices()):
                        raise  # not a concurrent creation of the same index

    def exists(self) -> bool:
        return self._exists_now()

    def drop(self) -> None:
        with self._lock:
            try:
                self._connection().drop_table(self.table_name)
            except ValueError:
                pass  # not there
            self._table = None
            self._has_vector_index = False

    # -- maintenance ------------------------------------------------------------------------

    def _vector_index_config(self):
        from lancedb.index import HnswSq, IvfFlat, IvfPq

        metric = _DISTANCES[self.distance][0]
        if self.index == "ivf_hnsw_sq":
            return HnswSq(distance_type=metric, num_partitions=self.num_partitions, m=self.hnsw_m,
                          ef_construction=self.hnsw_ef_construction)
        if self.index == "ivf_pq":
            return IvfPq(distance_type=metric, num_partitions=self.num_partitions)
        return IvfFlat(distance_type=metric, num_partitions=self.num_partitions)

    def create_vector_index(self) -> None:
        """Build (or rebuild) the vector index now, whatever the table's size."""
        if self.index is None:
            return
        self._run(lambda t: t.create_index("embedding", config=self._vector_index_config(), replace=True))
        self._has_vector_index = True

    def optimize(self, cleanup_older_than: timedelta | None = None) -> None:
        """Compact small files, fold new rows into every index, and remove table versions
        older than `cleanup_older_than` (Lance's default: 7 days)."""
        self._run(lambda t: t.optimize(cleanup_older_than=cleanup_older_than))

    def _after_write(self, table) -> None:
        """Index upkeep after a committed write; a failure here is logged, not raised, since
        the write itself is done (the next write or an explicit call tries again)."""
        self._writes += 1
        try:
            if self.index is not None and not self._has_vector_index:
                if any(i.columns == ["embedding"] for i in table.list_indices()):
                    self._has_vector_index = True  # built by another handle
                elif table.count_rows() >= self.index_threshold:
                    table.create_index("embedding", config=self._vector_index_config(), replace=True)
                    self._has_vector_index = True
                    return
            if self.optimize_every is not None and self._writes % self.optimize_every == 0:
                table.optimize()
        except Exception as exc:
            log.warning("LanceDb %r: index maintenance failed (%s); the write itself is committed",
                        self.table_name, exc)

    # -- writes -----------------------------------------------------------------------------

    def _arrow(self, chunks: list[Chunk]):
        import numpy as np
        import pyarrow as pa

        dims = self.dimensions
        vectors = np.zeros((len(chunks), dims), dtype=np.float32)
        missing = np.zeros(len(chunks), dtype=bool)
        for i, c in enumerate(chunks):
            if c.embedding is None:
                missing[i] = True
            else:
                vectors[i] = c.embedding
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.ravel()), dims, mask=pa.array(missing) if missing.any() else None)
        columns = {
            "id": [c.id for c in chunks],
            "content_id": [c.content_id for c in chunks],
            "content": [c.content for c in chunks],
            "terms": [" ".join(terms(c.content)) for c in chunks],
            "embedding": embedding,
            "metadata": [json.dumps(c.metadata, ensure_ascii=False) for c in chunks],
            "filter_tokens": [filter_tokens(c.metadata) for c in chunks],
            "position": [c.position for c in chunks],
        }
        schema = self._schema(dims)
        return pa.Table.from_arrays([pa.array(v, type=schema.field(k).type) if not isinstance(v, pa.Array) else v
                                     for k, v in columns.items()], schema=schema)

    def _merge(self, table, data, delete_where: str | None):
        """One merge_insert on `id`: one commit, so one new table version."""
        merge = table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
        if delete_where is not None:
            merge = merge.when_not_matched_by_source_delete(delete_where)
        return merge.execute(data, on_bad_vectors="null")  # validated already; null = no embedding

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        if not checked:
            return 0
        data = self._arrow(checked)

        def write(table):
            self._merge(table, data, None)
            self._after_write(table)
            return len(checked)

        return self._run(write)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        data = self._arrow(checked)

        def write(table):
            self._merge(table, data, f"content_id = {_lit(content_id)}")
            self._after_write(table)
            return len(checked)

        return self._run(write)

    @staticmethod
    def _where(ids: list[str] | None, content_id: str | None, filters: dict) -> str | None:
        parts = []
        if ids is not None:
            parts.append(f"id IN ({', '.join(map(_lit, ids))})")
        if content_id is not None:
            parts.append(f"content_id = {_lit(content_id)}")
        if filters:
            tokens = ", ".join(_lit(_token(k, v)) for k, v in filters.items())
            parts.append(f"array_has_all(filter_tokens, [{tokens}])")
        return " AND ".join(parts) if parts else None

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        if ids == []:
            return 0
        where = self._where(ids, content_id, filters)
        return self._run(lambda t: t.delete(where).num_deleted_rows)

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        if not ids:
            return []

        def read(table):
            found = {}
            for start in range(0, len(ids), _GET_BATCH):
                batch = ids[start:start + _GET_BATCH]
                rows = (table.search().where(self._where(batch, None, {}))
                        .select(_RESULT_COLUMNS + ["embedding"]).limit(len(batch)).to_arrow().to_pylist())
                for r in rows:
                    found[r["id"]] = Chunk(id=r["id"], content_id=r["content_id"], content=r["content"],
                                           embedding=r["embedding"], metadata=json.loads(r["metadata"]),
                                           position=r["position"])
            return [found[i] for i in ids if i in found]

        return self._run(read)

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        where = self._where(None, content_id, check_filters(filters))
        return self._run(lambda t: t.count_rows(where))

    def _vector_ranking(self, table, embedding, n: int, where: str | None) -> list[tuple[dict, float]]:
        metric, score = _DISTANCES[self.distance]
        query = (table.search(embedding, vector_column_name="embedding", query_type="vector")
                 .distance_type(metric).select(_RESULT_COLUMNS + ["_distance"]).limit(n))
        if where is not None:
            query = query.where(where, prefilter=True)
        if self._has_vector_index:
            # nprobes partitions always; more, up to all, when a filter leaves fewer than n hits
            query = query.minimum_nprobes(self.nprobes).maximum_nprobes(0)
            if self.ef is not None:
                query = query.ef(max(self.ef, n))
            if self.refine_factor is not None:
                query = query.refine_factor(self.refine_factor)
        ranked = [(r, score(r["_distance"])) for r in query.to_arrow().to_pylist()]
        ranked.sort(key=lambda item: (-item[1], item[0]["id"]))
        return ranked

    @staticmethod
    def _fts_query(text: str):
        """AND of the query's terms, minus its `-term`s; None when no term is left."""
        from lancedb.query import BooleanQuery, MatchQuery, Occur

        wanted, unwanted = query_terms(text)
        if not wanted:
            return None
        match = MatchQuery(" ".join(wanted), "terms", operator="AND")
        if not unwanted:
            return match
        return BooleanQuery([(Occur.MUST, match), (Occur.MUST_NOT, MatchQuery(" ".join(unwanted), "terms"))])

    def _keyword_ranking(self, table, text: str, n: int, where: str | None) -> list[tuple[dict, float]]:
        fts = self._fts_query(text)
        if fts is None:
            return []  # only stopwords: nothing to match
        query = table.search(fts, query_type="fts").select(_RESULT_COLUMNS + ["_score"]).limit(n)
        if where is not None:
            query = query.where(where, prefilter=True)
        ranked = [(r, float(r["_score"])) for r in query.to_arrow().to_pylist()]
        ranked.sort(key=lambda item: (-item[1], item[0]["id"]))
        return ranked

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        where = self._where(None, None, filters)

        def run(table):
            if kind == "vector":
                return self._vector_ranking(table, embedding, limit, where)
            if kind == "keyword":
                return self._keyword_ranking(table, query, limit, where)
            n = max(limit, self.hybrid_candidates)
            vector = self._vector_ranking(table, embedding, n, where)
            keyword = self._keyword_ranking(table, query, n, where)
            return rrf_top([r for r, _ in vector], [r for r, _ in keyword], limit, key=lambda r: r["id"],
                           vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)

        return [
            SearchHit(id=r["id"], content_id=r["content_id"], content=r["content"],
                      metadata=json.loads(r["metadata"]), position=r["position"], score=score)
            for r, score in self._run(run)
        ]
