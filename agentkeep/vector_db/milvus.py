"""MilvusDb: chunks and embeddings in a Milvus collection (a server, Zilliz Cloud or Milvus Lite).

    MilvusDb("my_kb", uri="./kb.db")                          # Milvus Lite, in this process
    MilvusDb("my_kb", uri="http://host:19530", token="root:Milvus")  # a Milvus server
    MilvusDb("my_kb", client=milvus_client)                   # share a pymilvus MilvusClient

Collection layout, the native BM25 keyword search, filters on `filter_meta` and what differs
between Milvus Lite and a server: docs/vector_db/milvus.md.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.messages import shorten
from agentkeep.vector_db import text
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, batches, check_choice, check_int
from agentkeep.vector_db.base import INT64, check_name, check_one_given, chunk_of, filter_token, hit_of, l2_score
from agentkeep.vector_db.base import filter_alternatives
from agentkeep.vector_db.text import KeywordQuery

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_METRICS = {"cosine": "COSINE", "l2": "L2", "inner_product": "IP"}
INDEXES = ("AUTOINDEX", "HNSW", "IVF_FLAT", "FLAT")
MAX_ID_BYTES = 4096  # 1024 characters of up to 4 UTF-8 bytes
MAX_TEXT_BYTES = 65535  # Milvus' default VARCHAR limit
MAX_TERM_BYTES = 64  # longer terms are stored as a digest (same on the query side)
MAX_TOPK = 16384  # the most hits one Milvus search returns
BATCH = 500  # rows per upsert call: stays well under the gRPC message limit
NOT_FOUND = 100  # Milvus' error code for a missing collection
_FIELDS = ["id", "content_id", "content", "metadata", "position"]


def quote(value: str) -> str:
    """A Milvus expression string literal: the escapes Milvus and Milvus Lite both read."""
    return '"' + (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    ) + '"'


def term_key(term: str) -> str:
    """A term as stored in `terms_text`; over-long ones become `_` and a digest."""
    if len(term.encode()) <= MAX_TERM_BYTES:
        return term
    return "_" + hashlib.blake2b(term.encode(), digest_size=16).hexdigest()


def keyword_expr(query: KeywordQuery) -> list[str]:
    """The TEXT_MATCH conditions of a query's marks, to AND: each required term, no excluded
    one. The any-term match is the BM25 search itself (a chunk without a query term scores
    nothing); phrases are checked on the hits (Milvus Lite has no PHRASE_MATCH)."""
    parts = [f"TEXT_MATCH(terms_text, {quote(term_key(t))})" for t in query.must]
    if query.must_not:  # TEXT_MATCH of several terms is "any of them"
        parts.append(f"not TEXT_MATCH(terms_text, {quote(' '.join(term_key(t) for t in query.must_not))})")
    return parts


def _key(key: str) -> str:
    """A metadata key as a `filter_meta` key: Milvus' JSON-path syntax does not unescape keys,
    so every key is spelled as a digest that needs no escaping."""
    return "k" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def filter_meta(metadata: dict[str, Any]) -> dict[str, str]:
    """The `filter_meta` field: the `filter_token` of each top-level scalar, by digested key."""
    return {_key(k): token for k, v in metadata.items() if (token := filter_token(v)) is not None}


def filter_expr(filters: dict[str, Any]) -> list[str]:
    """A (checked) metadata filter as Milvus boolean expressions, one per key, to AND; an
    "any of" is an `or` of equalities (Milvus Lite takes `in [...]` on fields, not JSON paths)."""
    out = []
    for key, values in filter_alternatives(filters):
        either = [f'filter_meta["{_key(key)}"] == {quote(filter_token(v))}' for v in values]
        out.append(either[0] if len(either) == 1 else "(" + " or ".join(either) + ")")
    return out


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

    DISTANCES = _METRICS
    MAX_DIMENSIONS = 32768  # Milvus' limit for FLOAT_VECTOR
    INTEGERS = (-INT64, INT64 - 1, "Milvus stores JSON integers of 64 bits")
    GET_BATCH = 1000
    ENGINE = "Milvus"
    UNREACHABLE = ("pymilvus.exceptions.MilvusUnavailableException",)

    def __init__(self, collection: str, uri: str | None = None, *, token: str | None = None, client: Any = None,
                 index: str | None = None, ef_search: int = 64, nprobe: int = 16,
                 **options: Unpack[StoreOptions]) -> None:
        self.collection = check_name(collection, "collection", _NAME,
                                     "a Milvus name (a letter or _, then letters, digits, _)")
        super().__init__(**options)
        self.label = f"Milvus collection {collection}"
        self.ef_search = check_int(ef_search, "ef_search", 1, 32768)
        self.nprobe = check_int(nprobe, "nprobe", 1, 65536)
        check_one_given((uri, client),
                        "give either uri= (a Milvus Lite file or a server URL) or client= (a MilvusClient)")
        if uri is not None and not isinstance(uri, str):
            raise InvalidInputError(f"uri must be a string, got {type(uri).__name__}")
        self.uri = self._address = uri
        local = uri is not None and not re.match(r"^(https?|tcp|unix)://", uri)
        if index is None:  # Milvus Lite is for small data: exact search; a server picks its own index
            index = "FLAT" if local else "AUTOINDEX"
        self.index = check_choice(index, "index", INDEXES)
        self._owns_client = client is None
        if client is None:
            from pymilvus import MilvusClient

            # Milvus Lite's embedded server refuses a ping more often than every 5 minutes
            # without data ("too many pings": it drops the connection, and a call in flight
            # fails); pymilvus pings every 10 s, idle or not
            calm = {"grpc_options": {"grpc.keepalive_time_ms": 300_000,
                                     "grpc.keepalive_permit_without_calls": False}} if local else {}
            client = MilvusClient(uri=uri, token=token or "", **calm)
        self._client = client

    def describe(self) -> str:
        server = self._client.get_server_version()
        return f"MilvusDb {self.collection} ({self.index}, {self.distance}) on {self.uri or 'a client'}, {server}"

    def _store_gone(self, exc: Exception) -> bool:
        from agentkeep.db.connection import raised_as

        return raised_as(exc, "pymilvus.exceptions.MilvusException") and exc.code == NOT_FOUND

    def _stored_dimensions(self) -> int | None:
        """The collection's dimensions; it is loaded (searchable) from here on."""
        if not self._client.has_collection(self.collection):
            return None
        info = self._client.describe_collection(self.collection)
        dims = next((int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector"), None)
        if dims is None:
            raise InvalidInputError(f"{self.label} was not made by MilvusDb (no `vector` field)")
        state = str(self._client.get_load_state(self.collection).get("state", ""))
        if not state.endswith("Loaded"):
            self._client.load_collection(self.collection)
        return dims

    def _create_store(self, dims: int) -> None:
        from pymilvus import DataType, Function, FunctionType
        from pymilvus.exceptions import MilvusException

        client = self._client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("content_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
        schema.add_field("content", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("position", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("filter_meta", DataType.JSON)
        # the chunk's analyzer terms, space-separated: BM25 over them, TEXT_MATCH for the marks
        schema.add_field("terms_text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True,
                         enable_match=True, analyzer_params={"tokenizer": "standard"})
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
                         params={"bm25_k1": text.K1, "bm25_b": text.B})  # as the reference store
        params.add_index("content_id", index_type="INVERTED")
        try:
            client.create_collection(self.collection, schema=schema, consistency_level="Strong")
        except MilvusException as exc:
            if "exist" in str(exc.message) and client.has_collection(self.collection):
                return  # another process won the race
            raise
        # indexes of an empty collection are ready at once: do not poll for them (pymilvus waits 0.5 s a poll)
        client.create_index(self.collection, params, sync=False)
        client.load_collection(self.collection)

    def _exists(self) -> bool:
        return self._client.has_collection(self.collection)

    def _drop_store(self) -> None:
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)

    def _row(self, c: Chunk) -> dict[str, Any]:
        _bytes(c.id, MAX_ID_BYTES, f"chunk id {shorten(repr(c.id), 40)}")
        if c.content_id is not None:
            _bytes(c.content_id, MAX_ID_BYTES, f"chunk {c.id!r}: content_id")
        _bytes(c.content, MAX_TEXT_BYTES, f"chunk {c.id!r}: content")
        terms_text = " ".join(term_key(t) for t in self.analyzer.terms(c.content))
        _bytes(terms_text, MAX_TEXT_BYTES, f"chunk {c.id!r}: its terms")
        return {
            "id": c.id, "content_id": c.content_id or "", "content": c.content, "position": c.position,
            "metadata": c.metadata, "filter_meta": filter_meta(c.metadata), "terms_text": terms_text,
            # Milvus has no portable nullable vector: a zero vector that searches skip
            "has_vector": c.embedding is not None,
            "vector": c.embedding if c.embedding is not None else [0.0] * self.dimensions}

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace`: the new chunks, then the removal of the content's others (not atomic)."""
        rows = [self._row(c) for c in chunks]
        for batch in batches(rows, BATCH):
            self._client.upsert(self.collection, batch)
        if content_id is not None:
            stale = f"content_id == {quote(content_id)}"
            if rows:
                stale += " and not (" + where(ids=[r["id"] for r in rows]) + ")"
            self._client.delete(self.collection, filter=stale)

    def _delete(self, ids, content_id, filters) -> int:
        expr = where(ids, content_id, filters)
        # Milvus reports the ids it was asked to delete, not the rows it found: count first
        n = self._count_where(expr)
        if n:
            self._client.delete(self.collection, filter=expr)
        return n

    def _get(self, ids: list[str]) -> list[Chunk]:
        rows = self._client.query(self.collection, filter=where(ids=ids), limit=len(ids),
                                  output_fields=_FIELDS + ["has_vector", "vector"])
        return [chunk_of(r, [float(x) for x in r["vector"]] if r["has_vector"] else None) for r in rows]

    def _count_where(self, expr: str) -> int:
        rows = self._client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _count(self, content_id, filters) -> int:
        return self._count_where(where(None, content_id, filters))

    def _search_params(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index == "HNSW":
            params["ef"] = max(self.ef_search, n)
        elif self.index == "IVF_FLAT":
            params["nprobe"] = self.nprobe
        return {"metric_type": _METRICS[self.distance], "params": params}

    def _score(self, distance: float) -> float:
        if self.distance == "l2":  # Milvus reports the squared L2 distance
            return l2_score(distance)
        return float(distance)  # COSINE: the similarity; IP: the inner product

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        expr = " and ".join(["has_vector == true"] + filter_expr(filters))
        result = self._client.search(self.collection, data=[embedding], anns_field="vector", limit=n,
                                     filter=expr, output_fields=_FIELDS, search_params=self._search_params(n))
        return self._hits(result, self._score)

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        """Milvus' BM25 over the ranked terms (any may match), narrowed by TEXT_MATCH; with a
        phrase, more candidates, checked here."""
        depth = min(n * self.PHRASE_DEPTH, MAX_TOPK) if query.positional else n
        result = self._client.search(self.collection, data=[" ".join(term_key(t) for t in query.ranked)],
                                     anns_field="sparse", limit=depth,
                                     filter=" and ".join(keyword_expr(query) + filter_expr(filters)),
                                     output_fields=_FIELDS, search_params={"metric_type": "BM25"})
        # a server reports the BM25 score, Milvus Lite its negation (as a distance)
        return self._phrase_checked(query, self._hits(result, abs))[:n]

    @staticmethod
    def _hits(result, score) -> list[SearchHit]:
        return [hit_of({**h["entity"], "id": h["id"]}, score(h["distance"])) for h in (result[0] if result else [])]
