"""LanceDb: chunks and embeddings in a LanceDB table, embedded in this process.

    LanceDb("my_kb", uri="./data/lancedb", search_type="hybrid")
    LanceDb("my_kb", uri="s3://bucket/kb", storage_options={"region": "eu-west-1"})

Table layout, indexes and their upkeep, searches and what `replace` guarantees:
docs/vector_db/lancedb.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from datetime import timedelta
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_choice, check_int
from agentkeep.vector_db.base import check_name, check_number, chunk_of, distance_score, filter_token, hit_of
from agentkeep.vector_db.base import split_filters
from agentkeep.vector_db.text import KeywordQuery

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# distance -> Lance's distance type (its l2 is squared, its dot 1 - a.b: see distance_score)
_DISTANCES = {"cosine": "cosine", "l2": "l2", "inner_product": "dot"}
INDEXES = ("ivf_hnsw_sq", "ivf_pq", "ivf_flat", None)
_RESULT_COLUMNS = ["id", "content_id", "content", "metadata", "position"]
_META_KEY = b"agentkeep"
log = logging.getLogger(__name__)


def _lit(value: str) -> str:
    """A SQL string literal (Lance's parser takes backslashes literally; quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def _token(key: str, value: Any) -> str:
    """The shared `filter_token` of one metadata equality, spelled as JSON: `["n",2]`."""
    kind, text = filter_token(value).split(":", 1)
    return f"[{json.dumps(key)},{json.dumps(value) if kind == 's' else text}]"


def filter_tokens(metadata: dict[str, Any]) -> list[str]:
    """One token per top-level str/number/bool value; lists, objects and null match nothing."""
    return [_token(k, v) for k, v in metadata.items() if isinstance(v, (str, int, float))]


class LanceDb(VectorDb):
    """A LanceDB table `table_name` in the database at `uri` (a local directory, or an
    object-store URI such as s3://bucket/path with `storage_options`)."""

    DISTANCES = _DISTANCES
    GONE = None  # its errors do not say that the store was dropped underneath
    GET_BATCH = 1000

    def __init__(self, table_name: str, uri: Any, *, storage_options: dict[str, str] | None = None,
                 index: str | None = "ivf_hnsw_sq", index_threshold: int = 10_000, num_partitions: int | None = None,
                 hnsw_m: int = 20, hnsw_ef_construction: int = 300, nprobes: int = 20, ef: int | None = None,
                 refine_factor: int | None = 2, optimize_every: int | None = 100,
                 read_consistency_interval: float | timedelta | None = 0, **options: Unpack[StoreOptions]) -> None:
        self.table_name = check_name(table_name, "table_name", _TABLE_NAME,
                                     "1..128 letters, digits, '_', '-' or '.' (not first)")
        self.uri = str(uri.__fspath__()) if hasattr(uri, "__fspath__") else uri
        if not isinstance(self.uri, str) or not self.uri:
            raise InvalidInputError(f"uri must be a directory or an object-store URI, got {uri!r}")
        if storage_options is not None and not (
                isinstance(storage_options, dict) and all(isinstance(v, str) for v in storage_options.values())):
            raise InvalidInputError("storage_options must be a dict of str -> str (see LanceDB's object-store options)")
        self.storage_options = dict(storage_options) if storage_options else None
        super().__init__(**options)
        self.index = check_choice(index, "index", INDEXES)
        self.index_threshold = check_int(index_threshold, "index_threshold", 1, 2**62)
        self.num_partitions = None if num_partitions is None else check_int(num_partitions, "num_partitions", 1, 65_536)
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 256)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 10_000)
        self.nprobes = check_int(nprobes, "nprobes", 1, 65_536)
        self.ef = None if ef is None else check_int(ef, "ef", 1, 100_000)
        self.refine_factor = None if refine_factor is None else check_int(refine_factor, "refine_factor", 1, 1000)
        self.optimize_every = None if optimize_every is None else check_int(optimize_every, "optimize_every", 1, 2**31)
        interval = read_consistency_interval  # seconds, a timedelta or None
        self.read_consistency_interval = interval if interval is None or isinstance(interval, timedelta) else (
            timedelta(seconds=check_number(interval, "read_consistency_interval", 0, math.inf)))
        self.label = f"LanceDB table {self.table_name!r} at {self.uri}"
        self._db = self._table = None
        self._has_vector_index = False
        self._writes = 0

    def _connection(self):
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(self.uri, storage_options=self.storage_options,
                                       read_consistency_interval=self.read_consistency_interval)
        return self._db

    def _ready(self):
        """The open table (NotFoundError if there is none)."""
        super()._ready()
        return self._table

    def describe(self) -> str:
        import lancedb

        state = "not created"
        if self._exists():
            state = f"{self._ready().count_rows()} rows, " + (
                f"{self.index} vector index" if self._has_vector_index else "exact vector search")
        return f"LanceDb {self.table_name!r} at {self.uri} (lancedb {lancedb.__version__}; {state})"

    def close(self) -> None:
        self._db = self._table = None
        self._known = False

    def _schema(self, dimensions: int):
        import pyarrow as pa

        return pa.schema([
            pa.field("id", pa.string(), nullable=False), pa.field("content_id", pa.string()),
            pa.field("content", pa.string(), nullable=False), pa.field("terms", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimensions)),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("filter_tokens", pa.list_(pa.string()), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
        ], metadata={_META_KEY: json.dumps({"distance": self.distance, "format": 1}).encode()})

    def _open(self):
        try:
            return self._connection().open_table(self.table_name)
        except ValueError:
            return None

    def _exists(self) -> bool:
        return self._open() is not None

    def _stored_dimensions(self) -> int | None:
        table = self._open()
        if table is None:
            return None
        schema = table.schema
        if "embedding" not in schema.names or "filter_tokens" not in schema.names:
            raise InvalidInputError(f"LanceDB table {self.table_name!r} was not created by agentkeep's LanceDb")
        stored = json.loads((schema.metadata or {}).get(_META_KEY, b"{}")).get("distance", self.distance)
        if stored != self.distance:
            raise InvalidInputError(
                f"LanceDB table {self.table_name!r} was created for {stored} distance, not {self.distance}")
        self._has_vector_index = any(i.columns == ["embedding"] for i in table.list_indices())
        self._table = table
        return schema.field("embedding").type.list_size

    def _create_store(self, dimensions: int) -> None:
        with contextlib.suppress(ValueError):  # created meanwhile by another process
            self._connection().create_table(self.table_name, schema=self._schema(dimensions))

    def _complete_store(self) -> None:
        """The scalar and full-text indexes (built empty at creation; `optimize()` grows them)."""
        from lancedb.index import BTree, LabelList

        have = {tuple(i.columns) for i in self._table.list_indices()}
        if ("terms",) in have and not _has_positions(self._table):  # an earlier agentkeep's: no phrases
            self._refresh_keyword_index(self._table)
        for column, config in (("id", BTree()), ("content_id", BTree()), ("filter_tokens", LabelList()),
                               ("terms", _fts())):
            if (column,) not in have:
                try:
                    self._table.create_index(column, config=config, replace=False)
                except Exception:
                    if not any(i.columns == [column] for i in self._table.list_indices()):
                        raise  # not a concurrent creation of the same index

    def _drop_store(self) -> None:
        self._table = None
        self._has_vector_index = False
        with contextlib.suppress(ValueError):  # not there
            self._connection().drop_table(self.table_name)

    def create_vector_index(self) -> None:
        """Build (or rebuild) the vector index now, whatever the table's size."""
        from lancedb.index import HnswSq, IvfFlat, IvfPq

        if self.index is None:
            return
        common = {"distance_type": _DISTANCES[self.distance], "num_partitions": self.num_partitions}
        config = (HnswSq(m=self.hnsw_m, ef_construction=self.hnsw_ef_construction, **common)
                  if self.index == "ivf_hnsw_sq" else IvfPq(**common) if self.index == "ivf_pq" else IvfFlat(**common))
        with self._translated():
            self._ready().create_index("embedding", config=config, replace=True)
        self._has_vector_index = True

    def optimize(self, cleanup_older_than: timedelta | None = None) -> None:
        """Compact small files, fold new rows into every index, and remove table versions
        older than `cleanup_older_than` (Lance's default: 7 days)."""
        with self._translated():
            self._ready().optimize(cleanup_older_than=cleanup_older_than)

    def _refresh_keyword_index(self, table) -> None:
        """Build the full-text index again over the rows now in the table. Lance's BM25 takes its
        statistics (documents, lengths, document frequencies) from the index, which keeps counting
        deleted and replaced rows and does not count rows written after it: rebuilt at the first
        keyword search after a change (not at every write, so a bulk load builds it once),
        keyword scores are those of the table as it is (docs/vector_db/lancedb.md)."""
        table.create_index("terms", config=_fts(), replace=True)
        self._keyword_version = table.version

    _keyword_version: int | None = None  # the table version the full-text index was built at

    def _after_write(self, table) -> None:
        """Index upkeep after a committed write: a failure is logged, not raised (the write is
        done; the next write or an explicit call tries again)."""
        self._writes += 1
        try:
            if self.index is not None and not self._has_vector_index:
                if any(i.columns == ["embedding"] for i in table.list_indices()):
                    self._has_vector_index = True  # built by another handle
                elif table.count_rows() >= self.index_threshold:
                    return self.create_vector_index()
            if self.optimize_every is not None and self._writes % self.optimize_every == 0:
                table.optimize()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("LanceDb %r: index maintenance failed (%s); the write itself is committed",
                        self.table_name, exc)

    def _arrow(self, chunks: list[Chunk]):
        """The chunks as an Arrow table; the vectors through numpy, measured cheaper than Arrow's
        conversion of Python rows (CPU 0.45 s against 0.49 s for 5,000 chunks of 384 dimensions)."""
        import numpy as np
        import pyarrow as pa

        dims = self.dimensions
        missing = [c.embedding is None for c in chunks]
        vectors = np.zeros((len(chunks), dims), dtype=np.float32)
        for i, c in enumerate(chunks):
            if c.embedding is not None:
                vectors[i] = c.embedding
        return pa.Table.from_pydict({
            "id": [c.id for c in chunks], "content_id": [c.content_id for c in chunks],
            "content": [c.content for c in chunks], "terms": [" ".join(self.analyzer.terms(c.content)) for c in chunks],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dims,
                                                           mask=pa.array(missing) if any(missing) else None),
            "metadata": [json.dumps(c.metadata, ensure_ascii=False) for c in chunks],
            "filter_tokens": [filter_tokens(c.metadata) for c in chunks], "position": [c.position for c in chunks],
        }, schema=self._schema(dims))

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """One merge_insert on `id`, so one commit (one new table version), `replace` too."""
        merge = self._table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
        if content_id is not None:
            merge = merge.when_not_matched_by_source_delete(f"content_id = {_lit(content_id)}")
        merge.execute(self._arrow(chunks), on_bad_vectors="null")  # validated already; null = no embedding
        self._after_write(self._table)

    @staticmethod
    def _where(ids: list[str] | None, content_id: str | None, filters: dict) -> str | None:
        parts = [] if ids is None else [f"id IN ({', '.join(map(_lit, ids))})"]
        if content_id is not None:
            parts.append(f"content_id = {_lit(content_id)}")
        equal, any_of = split_filters(filters)
        if equal:  # the LabelList index serves both functions
            parts.append(f"array_has_all(filter_tokens, [{', '.join(_lit(_token(k, v)) for k, v in equal.items())}])")
        for key, members in any_of.items():
            parts.append(f"array_has_any(filter_tokens, [{', '.join(_lit(_token(key, v)) for v in members)}])")
        return " AND ".join(parts) if parts else None

    def _delete(self, ids, content_id, filters) -> int:
        deleted = self._table.delete(self._where(ids, content_id, filters)).num_deleted_rows
        if deleted:
            self._after_write(self._table)
        return deleted

    def _get(self, ids: list[str]) -> list[Chunk]:
        rows = self._rows(self._table.search().where(self._where(ids, None, {})), "embedding", len(ids), {})
        return [chunk_of(r, r["embedding"]) for r in rows]

    def _count(self, content_id, filters) -> int:
        return self._table.count_rows(self._where(None, content_id, filters))

    def _rows(self, q, column: str, n: int, filters: dict) -> list[dict[str, Any]]:
        """The rows of a query, with the chunk's fields and `column`, at most `n`, filtered first."""
        q = q.select(_RESULT_COLUMNS + [column]).limit(n)
        if filters:
            q = q.where(self._where(None, None, filters), prefilter=True)
        return q.to_arrow().to_pylist()

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        q = (self._table.search(embedding, vector_column_name="embedding", query_type="vector")
             .distance_type(_DISTANCES[self.distance]))
        if self._has_vector_index:
            # nprobes partitions always; more, up to all, when a filter leaves fewer than n hits
            q = q.minimum_nprobes(self.nprobes).maximum_nprobes(0)
            if self.ef is not None:
                q = q.ef(max(self.ef, n))
            if self.refine_factor is not None:
                q = q.refine_factor(self.refine_factor)
        rows = self._rows(q, "_distance", n, filters)
        return [hit_of(r, distance_score(self.distance, r["_distance"])) for r in rows]

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        """Lance's BM25 over the analyzer's terms (`fts_query` says how the query is put), the
        index first brought up to the table's version."""
        if self._table.version != self._keyword_version:
            self._refresh_keyword_index(self._table)
        try:
            rows = self._rows(self._table.search(fts_query(query), query_type="fts"), "_score", n, filters)
        except ValueError as exc:
            if query.positional and "position" in str(exc):
                raise InvalidInputError(f"{self.label} has a full-text index without term positions (made by an "
                                        "earlier agentkeep): call create() once to build it with them") from exc
            raise
        return [hit_of(r, float(r["_score"])) for r in rows]


def _fts():
    """The full-text index on `terms`: the stored terms as they are (split on spaces only), with
    their positions for phrase queries."""
    from lancedb.index import FTS

    return FTS(base_tokenizer="whitespace", lower_case=False, stem=False, remove_stop_words=False,
               ascii_folding=False, max_token_length=None, with_position=True)


def _has_positions(table) -> bool:
    """Whether the full-text index keeps term positions (Lance refuses a phrase query without)."""
    from lancedb.query import PhraseQuery

    try:
        table.search(PhraseQuery("a b", "terms"), query_type="fts").limit(1).to_arrow()
    except ValueError as exc:
        if "position" in str(exc):
            return False
        raise
    return True


def fts_query(query: KeywordQuery):
    """A keyword query as a Lance full-text query. Any `should` term may match (an OR match
    query); each `+term` and each phrase is a MUST clause, `-term`s and excluded phrases
    MUST_NOT. Lance adds up the BM25 scores of the clauses that match: a phrase scores its
    words, so each ranked term counts once (a word of two phrases, twice)."""
    from lancedb.query import BooleanQuery, MatchQuery, Occur, PhraseQuery

    in_phrases = {t for p in query.phrases for t in p}
    clauses = [(Occur.SHOULD, MatchQuery(" ".join(query.should), "terms"))] if query.should else []
    clauses += [(Occur.MUST, MatchQuery(t, "terms")) for t in query.must if t not in in_phrases]
    clauses += [(Occur.MUST, PhraseQuery(" ".join(p), "terms")) for p in query.phrases]
    if query.must_not:
        clauses.append((Occur.MUST_NOT, MatchQuery(" ".join(query.must_not), "terms")))
    clauses += [(Occur.MUST_NOT, PhraseQuery(" ".join(p), "terms")) for p in query.excluded_phrases]
    return clauses[0][1] if len(clauses) == 1 and clauses[0][0] == Occur.SHOULD else BooleanQuery(clauses)
