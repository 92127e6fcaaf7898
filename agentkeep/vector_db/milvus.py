"""MilvusDb: chunks and embeddings in a Milvus collection (a server, Zilliz Cloud or Milvus Lite).

    MilvusDb("my_kb", uri="./kb.db")                          # Milvus Lite, in this process
    MilvusDb("my_kb", uri="http://host:19530", token="root:Milvus")  # a Milvus server
    MilvusDb("my_kb", client=milvus_client)                   # share a pymilvus MilvusClient

One collection per knowledge base, created by `create()`:

    id VARCHAR primary key, content_id VARCHAR ("" = none), content VARCHAR, position INT64,
    metadata JSON, filter_meta JSON, terms ARRAY<VARCHAR>, terms_text VARCHAR (analyzer),
    sparse SPARSE_FLOAT_VECTOR (BM25 function of terms_text), has_vector BOOL,
    vector FLOAT_VECTOR(N)

Search types: "vector" is an ANN search on `vector` with the chosen metric; "keyword" is a
native BM25 full-text search on `sparse`, restricted by the filter
`array_contains_all(terms, [...]) and not array_contains_any(terms, [...])`, where `terms`
holds the chunk's `in_memory.terms()` (every query term must match, `-term` must not);
"hybrid" fuses the two candidate lists by reciprocal rank with `rrf_fuse`. Metadata
filters compare `filter_meta`, a typed copy of the top-level scalars, so that numbers
match by value and booleans only booleans on every Milvus (see docs/vector_db/milvus.md).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Iterable, Sequence

from agentkeep.db.messages import shorten
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
    check_json_integers,
    check_name,
    check_search_type,
    check_weights,
    dimension_mismatch,
    filter_token,
    fuse_hits,
)
from agentkeep.vector_db import text
from agentkeep.vector_db.text import terms

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_METRICS = {"cosine": "COSINE", "l2": "L2", "inner_product": "IP"}
INDEXES = ("AUTOINDEX", "HNSW", "IVF_FLAT", "FLAT")
MAX_DIMENSIONS = 32768  # Milvus' limit for FLOAT_VECTOR
MAX_ID_BYTES = 4096  # 1024 characters of up to 4 UTF-8 bytes
MAX_TEXT_BYTES = 65535  # Milvus' default VARCHAR limit
MAX_TERMS = 4096  # Milvus' ARRAY capacity limit: distinct terms per chunk
MAX_TERM_BYTES = 64  # longer terms are stored as a digest (same on the query side)
BATCH = 500  # rows per upsert call: stays well under the gRPC message limit
NOT_FOUND = 100  # Milvus' error code for a missing collection
_FIELDS = ["id", "content_id", "content", "metadata", "position"]
# BM25 parameters of the reference store (in_memory), so the rankings agree
BM25_K1 = 1.2
BM25_B = 0.75


def quote(value: str) -> str:
    """A Milvus expression string literal: the escapes Milvus and Milvus Lite both read."""
    return '"' + (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    ) + '"'


def term_key(term: str) -> str:
    """A term as stored in `terms`; over-long ones become a digest (`_` never occurs in a term)."""
    if len(term.encode()) <= MAX_TERM_BYTES:
        return term
    return "_" + hashlib.blake2b(term.encode(), digest_size=16).hexdigest()


def query_terms(query: str) -> tuple[list[str], list[str]]:
    """(wanted, unwanted) term keys of a keyword query, as in_memory reads it."""
    wanted, unwanted = text.query_terms(query)
    return [term_key(t) for t in wanted], [term_key(t) for t in unwanted]


def _key(key: str) -> str:
    """A metadata key as a `filter_meta` key: Milvus' JSON-path syntax does not unescape keys,
    so every key is spelled as a digest that needs no escaping."""
    return "k" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def filter_meta(metadata: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in metadata.items():
        typed = filter_token(v)
        if typed is not None:
            out[_key(k)] = typed
    return out


def filter_expr(filters: dict[str, Any]) -> list[str]:
    """A (checked) metadata filter as Milvus boolean expressions, one per key, to AND."""
    return [f'filter_meta["{_key(k)}"] == {quote(filter_token(v))}' for k, v in filters.items()]


def where(ids: list[str] | None = None, content_id: str | None = None, filters: dict | None = None) -> str:
    parts = []
    if ids is not None:
        parts.append("id in [" + ", ".join(quote(i) for i in ids) + "]")
    if content_id is not None:
        parts.append(f"content_id == {quote(content_id)}")
    parts.extend(filter_expr(filters or {}))
    return " and ".join(parts)


def _bytes(value: str, limit: int, what: str) -> None:
    if len(value) * 4 > limit and len(value.encode()) > limit:
        raise InvalidInputError(f"{what} is longer than Milvus' VARCHAR limit of {limit} bytes")


class MilvusDb(VectorDb):
    """A Milvus collection. Give `uri` (and `token` for a server) or `client` (a MilvusClient)."""

    def __init__(
        self,
        collection: str,
        uri: str | None = None,
        *,
        token: str | None = None,
        client: Any = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        index: str | None = None,
        ef_search: int = 64,
        nprobe: int = 16,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.collection = check_name(collection, "collection", _NAME,
                                     "a Milvus name (a letter or _, then letters, digits, _)")
        self.search_type = check_search_type(search_type)
        self.distance = check_choice(distance, "distance", _METRICS)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.ef_search = check_int(ef_search, "ef_search", 1, 32768)
        self.nprobe = check_int(nprobe, "nprobe", 1, 65536)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions, MAX_DIMENSIONS)
        if (uri is None) == (client is None):
            raise InvalidInputError("give either uri= (a Milvus Lite file or a server URL) or client= (a MilvusClient)")
        if uri is not None and not isinstance(uri, str):
            raise InvalidInputError(f"uri must be a string, got {type(uri).__name__}")
        self.uri = uri
        local = uri is not None and not re.match(r"^(https?|tcp|unix)://", uri)
        if index is None:  # Milvus Lite is for small data: exact search; a server picks its own index
            index = "FLAT" if local else "AUTOINDEX"
        self.index = check_choice(index, "index", INDEXES)
        self._own_client = client is None
        if client is None:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, token=token or "")
        self._client = client
        self._ready_dims: int | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def describe(self) -> str:
        server = self._client.get_server_version()
        return f"MilvusDb {self.collection} ({self.index}, {self.distance}) on {self.uri or 'a client'}, {server}"

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def _missing(self) -> str:
        return f"Milvus collection {self.collection} does not exist: call create() first"

    def _wrong_dimensions(self, stored: int, wanted: int) -> InvalidInputError:
        return dimension_mismatch(f"Milvus collection {self.collection}", stored, wanted)

    def _call(self, fn, *args, **kwargs):
        """A client call; a missing collection becomes NotFoundError."""
        from pymilvus.exceptions import MilvusException

        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            if exc.code == NOT_FOUND:
                self._ready_dims = None
                raise NotFoundError(self._missing()) from None
            raise

    def _stored_dimensions(self) -> int | None:
        if not self._client.has_collection(self.collection):
            return None
        info = self._client.describe_collection(self.collection)
        for field in info["fields"]:
            if field["name"] == "vector":
                return int(field["params"]["dim"])
        raise InvalidInputError(f"Milvus collection {self.collection} was not made by MilvusDb (no `vector` field)")

    def _ready(self) -> None:
        """Learn the collection's dimensions once and load it (NotFoundError: no collection)."""
        if self._ready_dims is not None:
            return
        dims = self._stored_dimensions()
        if dims is None:
            raise NotFoundError(self._missing())
        if self.dimensions is not None and self.dimensions != dims:
            raise self._wrong_dimensions(dims, self.dimensions)
        state = str(self._client.get_load_state(self.collection).get("state", ""))
        if not state.endswith("Loaded"):
            self._call(self._client.load_collection, self.collection)
        self.dimensions = self._ready_dims = dims

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        from pymilvus.exceptions import MilvusException

        if dimensions is not None:
            check_dimensions(dimensions, MAX_DIMENSIONS)
        wanted = dimensions or self.dimensions
        stored = self._stored_dimensions()
        if stored is None:
            if wanted is None:
                raise InvalidInputError("create() needs dimensions= (or MilvusDb(dimensions=...)) for a new collection")
            try:
                self._create(wanted)
            except MilvusException as exc:
                if "exist" not in str(exc.message) or self._stored_dimensions() is None:
                    raise  # not another process winning the race
            stored = self._stored_dimensions()
        if wanted is not None and wanted != stored:
            raise self._wrong_dimensions(stored, wanted)
        self.dimensions = stored
        self._ready_dims = None
        self._ready()

    def _create(self, dims: int) -> None:
        from pymilvus import DataType, Function, FunctionType

        client = self._client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("content_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
        schema.add_field("content", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("position", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("filter_meta", DataType.JSON)
        schema.add_field("terms", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TERMS,
                         max_length=MAX_TERM_BYTES)
        schema.add_field("terms_text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True,
                         analyzer_params={"tokenizer": "standard"})
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("has_vector", DataType.BOOL)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dims)
        schema.add_function(Function(name="terms_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["terms_text"], output_field_names=["sparse"]))
        params = client.prepare_index_params()
        vector_params = {"M": 16, "efConstruction": 200} if self.index == "HNSW" else \
            {"nlist": 128} if self.index == "IVF_FLAT" else {}
        params.add_index("vector", index_type=self.index, metric_type=_METRICS[self.distance], params=vector_params)
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={"bm25_k1": BM25_K1, "bm25_b": BM25_B})
        params.add_index("content_id", index_type="INVERTED")
        if not str(client.get_server_version()).startswith("milvus_lite"):  # Milvus Lite indexes no ARRAY
            params.add_index("terms", index_type="INVERTED")
        client.create_collection(self.collection, schema=schema, consistency_level="Strong")
        # indexes of an empty collection are ready at once: do not poll for them (pymilvus waits 0.5 s a poll)
        client.create_index(self.collection, params, sync=False)
        client.load_collection(self.collection)

    def exists(self) -> bool:
        return self._client.has_collection(self.collection)

    def drop(self) -> None:
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        self._ready_dims = None

    # -- writes -----------------------------------------------------------------------------

    def _row(self, c: Chunk) -> dict[str, Any]:
        _bytes(c.id, MAX_ID_BYTES, f"chunk id {shorten(repr(c.id), 40)}")
        if c.content_id is not None:
            _bytes(c.content_id, MAX_ID_BYTES, f"chunk {c.id!r}: content_id")
        _bytes(c.content, MAX_TEXT_BYTES, f"chunk {c.id!r}: content")
        keys = [term_key(t) for t in terms(c.content)]
        distinct = list(dict.fromkeys(keys))
        if len(distinct) > MAX_TERMS:
            raise InvalidInputError(
                f"chunk {c.id!r} has {len(distinct)} distinct terms; Milvus holds at most {MAX_TERMS}: split it")
        terms_text = " ".join(keys)
        _bytes(terms_text, MAX_TEXT_BYTES, f"chunk {c.id!r}: its terms")
        check_json_integers(c.metadata, f"chunk {c.id!r} metadata", -(2**63), 2**63 - 1,
                            "Milvus stores JSON integers of 64 bits")
        return {
            "id": c.id,
            "content_id": c.content_id or "",
            "content": c.content,
            "position": c.position,
            "metadata": c.metadata,
            "filter_meta": filter_meta(c.metadata),
            "terms": distinct,
            "terms_text": terms_text,
            "has_vector": c.embedding is not None,
            # Milvus has no portable nullable vector: a zero vector that searches skip
            "vector": c.embedding if c.embedding is not None else [0.0] * self.dimensions,
        }

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), BATCH):
            self._call(self._client.upsert, self.collection, rows[i:i + BATCH])

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        rows = [self._row(c) for c in check_chunks(chunks, self.dimensions)]
        self._write(rows)
        return len(rows)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """Not atomic (Milvus has no transactions): the new chunks are written first, then the
        content's other chunks deleted, so a reader sees old and new together, never neither."""
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        rows = [self._row(c) for c in checked]
        self._write(rows)
        stale = f"content_id == {quote(content_id)}"
        if rows:
            stale += " and not (" + where(ids=[r["id"] for r in rows]) + ")"
        self._call(self._client.delete, self.collection, filter=stale)
        return len(rows)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        expr = where(ids, content_id, filters)
        # Milvus reports the ids it was asked to delete, not the rows it found: count first
        n = self._count(expr)
        if n:
            self._call(self._client.delete, self.collection, filter=expr)
        return n

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        found: dict[str, Chunk] = {}
        for i in range(0, len(ids), 1000):
            part = ids[i:i + 1000]
            rows = self._call(self._client.query, self.collection, filter=where(ids=part),
                              output_fields=_FIELDS + ["has_vector", "vector"], limit=len(part))
            for r in rows:
                found[r["id"]] = Chunk(
                    id=r["id"], content_id=r["content_id"] or None, content=r["content"], metadata=r["metadata"],
                    position=r["position"],
                    embedding=[float(x) for x in r["vector"]] if r["has_vector"] else None)
        return [found[i] for i in ids if i in found]

    def _count(self, expr: str) -> int:
        rows = self._call(self._client.query, self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        return self._count(where(None, content_id, filters))

    def _search_params(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index == "HNSW":
            params["ef"] = max(self.ef_search, n)
        elif self.index == "IVF_FLAT":
            params["nprobe"] = self.nprobe
        return {"metric_type": _METRICS[self.distance], "params": params}

    def _score(self, distance: float) -> float:
        if self.distance == "l2":  # Milvus reports the squared L2 distance
            return 1.0 / (1.0 + math.sqrt(max(distance, 0.0)))
        return float(distance)  # COSINE: the similarity; IP: the inner product

    def _vector_hits(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        expr = " and ".join(["has_vector == true"] + filter_expr(filters))
        result = self._call(self._client.search, self.collection, data=[embedding], anns_field="vector", limit=n,
                            filter=expr, output_fields=_FIELDS, search_params=self._search_params(n))
        return self._hits(result, self._score)

    def _keyword_hits(self, query: str, n: int, filters: dict) -> list[SearchHit]:
        wanted, unwanted = query_terms(query)
        if not wanted:
            return []
        parts = ["array_contains_all(terms, [" + ", ".join(quote(t) for t in wanted) + "])"]
        if unwanted:
            parts.append("not array_contains_any(terms, [" + ", ".join(quote(t) for t in unwanted) + "])")
        result = self._call(self._client.search, self.collection, data=[" ".join(wanted)], anns_field="sparse",
                            limit=n, filter=" and ".join(parts + filter_expr(filters)), output_fields=_FIELDS,
                            search_params={"metric_type": "BM25"})
        # a server reports the BM25 score, Milvus Lite its negation (as a distance)
        return self._hits(result, abs)

    @staticmethod
    def _hits(result, score) -> list[SearchHit]:
        hits = []
        for h in result[0] if result else []:
            e = h["entity"]
            hits.append(SearchHit(id=h["id"], content_id=e["content_id"] or None, content=e["content"],
                                  metadata=e["metadata"], position=e["position"], score=score(h["distance"])))
        hits.sort(key=lambda hit: (-hit.score, hit.id))
        return hits

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        self._ready()
        if kind == "vector":
            return self._vector_hits(embedding, limit, filters)
        if kind == "keyword":
            return self._keyword_hits(query, limit, filters)
        n = max(limit, self.hybrid_candidates)
        return fuse_hits(self._vector_hits(embedding, n, filters), self._keyword_hits(query, n, filters), limit,
                         vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
