"""PineconeDb: chunks and embeddings in a Pinecone serverless index, through `pinecone` 10.x.

    PineconeDb("my-kb", index_name="agentkeep", api_key="...")   # a namespace of that index

Not verified against a live service: the translation is unit-tested. The index (`dotproduct`,
one namespace per store, each distance mapped onto the dot product with one extra dimension),
records, the sparse BM25 keyword vectors and filters: docs/vector_db/pinecone.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, batches, check_name, check_number
from agentkeep.vector_db.base import all_of, chunk_of, filter_alternatives, filter_scalar, hit_of, l2_score
from agentkeep.vector_db.text import Analyzer, KeywordQuery, idf
from agentkeep.vector_db.text import analyzer as analyzer_of

MAX_METADATA_BYTES = 40_960
MAX_ID_BYTES = 512
MAX_TOP_K_WITH_METADATA = 1000
MAX_IN_VALUES = 10_000
_INDEX_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


# -- translation: request documents (no client needed) ----------------------------------------


def vector_id(chunk_id: str) -> str:
    """Pinecone ids are ASCII, at most 512 bytes: other chunk ids (and any starting with '#')
    become '#' + their SHA-256; the chunk id itself is kept in metadata."""
    if chunk_id.isascii() and len(chunk_id) <= MAX_ID_BYTES and not chunk_id.startswith("#"):
        return chunk_id
    return "#" + hashlib.sha256(chunk_id.encode()).hexdigest()


def dense_values(embedding: Sequence[float], distance: str) -> tuple[list[float], dict[str, Any]]:
    """A chunk's stored dense vector (dimensions + 1 wide) and the metadata to restore it."""
    squared = math.fsum(x * x for x in embedding)
    if squared == 0:
        raise InvalidInputError("Pinecone refuses all-zero dense vectors; this embedding is all zeros")
    if distance == "cosine":
        norm = math.sqrt(squared)
        return [x / norm for x in embedding] + [0.0], {"norm": norm}
    if distance == "l2":
        return [float(x) for x in embedding] + [-squared / 2], {}
    return [float(x) for x in embedding] + [0.0], {}


def placeholder_values(dimensions: int) -> list[float]:
    """The dense vector of a chunk without embedding: non-zero, scores 0 against a cosine or
    inner-product query, and filtered out of vector searches anyway."""
    return [0.0] * dimensions + [1.0]


def query_values(embedding: Sequence[float], distance: str) -> list[float]:
    if distance == "cosine":
        norm = math.sqrt(math.fsum(x * x for x in embedding)) or 1.0
        return [x / norm for x in embedding] + [0.0]
    return [float(x) for x in embedding] + [1.0 if distance == "l2" else 0.0]


def restore_embedding(values: Sequence[float], metadata: dict[str, Any], distance: str) -> list[float] | None:
    if not metadata.get("has_embedding"):
        return None
    vector = [float(x) for x in values[:-1]]
    if distance == "cosine":
        norm = float(metadata.get("norm", 1.0))
        vector = [x * norm for x in vector]
    return vector


def score(raw: float, distance: str, query: Sequence[float]) -> float:
    """The index's dot product -> the suite's score."""
    if distance == "l2":
        squared = math.fsum(x * x for x in query) - 2 * raw
        return l2_score(squared)
    return float(raw)


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


def _sparse(weights: Iterable[tuple[str, float]]) -> dict[str, list]:
    """A sparse vector of term weights, each at its term's index (colliding hashes add up)."""
    by_index: dict[int, float] = {}
    for term, weight in weights:
        i = term_index(term)
        by_index[i] = by_index.get(i, 0.0) + weight
    indices = sorted(by_index)
    return {"indices": indices, "values": [by_index[i] for i in indices]}


def sparse_document(terms: Sequence[str], *, k1: float, b: float, avg_length: float) -> dict[str, list] | None:
    """BM25's saturated term frequencies of a chunk's terms."""
    if not terms:
        return None
    norm = k1 * (1 - b + b * len(terms) / avg_length)
    return _sparse((term, count * (k1 + 1) / (count + norm)) for term, count in Counter(terms).items())


def sparse_query(wanted: Sequence[str], idfs: Mapping[str, float] | None = None) -> dict[str, list]:
    """The query's sparse vector: each term weighs its idf (1 with no corpus statistics), so its
    dot product with a chunk's `sparse_document` is the chunk's BM25."""
    return _sparse((term, 1.0 if idfs is None else idfs[term]) for term in dict.fromkeys(wanted))


def _flat_key(key: str, value: Any) -> tuple[str, Any] | None:
    """The type-tagged metadata key and value a filter on `key` = `value` looks for."""
    typed = filter_scalar(value)
    return None if typed is None else (f"{typed[0]}:{key}", typed[1])


def record(chunk: Chunk, *, distance: str, dimensions: int, k1: float = 1.2, b: float = 0.75,
           avg_length: float = 64.0, analyzer: Analyzer | None = None) -> dict[str, Any]:
    """The upsert record of a (checked) chunk, its keyword terms by the store's analyzer."""
    terms = (analyzer or analyzer_of("english")).terms(chunk.content)
    metadata: dict[str, Any] = {
        "chunk_id": chunk.id, "content": chunk.content, "position": chunk.position,
        "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False, separators=(",", ":")),
        "terms": list(dict.fromkeys(terms)), "has_embedding": chunk.embedding is not None}
    if chunk.content_id is not None:
        metadata["content_id"] = chunk.content_id
    metadata.update(flat for key, value in chunk.metadata.items() if (flat := _flat_key(key, value)) is not None)
    if chunk.embedding is not None:
        values, extra = dense_values(chunk.embedding, distance)
        metadata.update(extra)
    else:
        values = placeholder_values(dimensions)
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"chunk {chunk.id!r}: content and metadata take {size} bytes; Pinecone keeps at most "
            f"{MAX_METADATA_BYTES} bytes of metadata per record")
    out: dict[str, Any] = {"id": vector_id(chunk.id), "values": values, "metadata": metadata}
    sparse = sparse_document(terms, k1=k1, b=b, avg_length=avg_length)
    if sparse is not None:
        out["sparse_values"] = sparse
    return out


NOTHING = {"$nothing": True}  # a filter no record can match; never sent


def filter_doc(ids: list[str] | None, content_id: str | None, filters: dict[str, Any],
               extra: Sequence[dict] = ()) -> dict | None:
    """Pinecone's filter language for the AND of the conditions; None for none, NOTHING for a
    value no record can hold (a number beyond a double)."""
    parts: list[dict] = []
    if ids is not None:
        parts.append({"chunk_id": {"$in": list(ids)}})
    if content_id is not None:
        parts.append({"content_id": {"$eq": content_id}})
    for key, values in filter_alternatives(filters):
        by_key: dict[str, list[Any]] = {}  # each type-tagged key holds one type
        for flat in filter(None, (_flat_key(key, v) for v in values)):
            by_key.setdefault(flat[0], []).append(flat[1])
        if not by_key:
            return NOTHING
        # "$in" takes strings and numbers; a boolean "any of" is an "$or" of equalities
        either = [{name: {"$eq": v}} for name, vs in by_key.items() for v in vs if len(vs) == 1 or isinstance(v, bool)]
        either += [{name: {"$in": vs}} for name, vs in by_key.items() if len(vs) > 1 and not isinstance(vs[0], bool)]
        parts.append(all_of(either, lambda parts: {"$or": parts}))
    return all_of(parts + list(extra))


def term_filter(query: KeywordQuery) -> list[dict]:
    """The conditions a keyword query puts on the stored terms: every `must` term (or, with none,
    any ranked term: a chunk holding none scores 0 and is no match), no `must_not` term."""
    parts = [{"terms": {"$in": [t]}} for t in query.must] or [{"terms": {"$in": list(query.should)}}]
    if query.must_not:
        parts.append({"terms": {"$nin": list(query.must_not)}})
    return parts


def query_requests(kind: str, query: KeywordQuery | None, embedding: list[float] | None, limit: int, filters: dict,
                   *, namespace: str, distance: str, dimensions: int, candidates: int = 40,
                   idfs: Mapping[str, float] | None = None, phrase_depth: int = 10) -> list[dict]:
    """Keyword arguments of the `Index.query` calls one search sends, named by "list". The
    keyword list is the sparse BM25 query over the ranked terms (weighted by `idfs`), `phrase_depth`
    times deeper with a phrase (the store checks the words' order)."""
    n = limit if kind != "hybrid" else min(max(limit, candidates), MAX_TOP_K_WITH_METADATA)
    if filter_doc(None, None, filters) == NOTHING:
        return []
    requests = []
    if kind in ("vector", "hybrid"):
        requests.append({"list": "vector", "namespace": namespace, "top_k": n,
                         "vector": query_values(embedding, distance), "include_metadata": True,
                         "filter": filter_doc(None, None, filters, [{"has_embedding": {"$eq": True}}])})
    if kind in ("keyword", "hybrid") and query:
        deep = min(n * phrase_depth, MAX_TOP_K_WITH_METADATA) if query.positional else n
        requests.append({"list": "keyword", "namespace": namespace, "top_k": deep,
                         "vector": [0.0] * (dimensions + 1), "sparse_vector": sparse_query(query.ranked, idfs),
                         "include_metadata": True, "filter": filter_doc(None, None, filters, term_filter(query))})
    return requests


# -- the store --------------------------------------------------------------------------------


class PineconeDb(VectorDb):
    """A namespace of a Pinecone serverless index (created on `create()` if missing). Give
    `api_key` (or PINECONE_API_KEY in the environment) or `client` (a `pinecone.Pinecone`).

    The store is checked once per store object: a namespace dropped by another process is not
    noticed, and a write would recreate it."""

    MAX_DIMENSIONS = 19_999  # Pinecone's 20,000, less the keyword dimension
    GET_BATCH = 100
    ENGINE = "Pinecone"
    UNREACHABLE = ("urllib3.exceptions.MaxRetryError", "urllib3.exceptions.NewConnectionError")

    def __init__(self, namespace: str, index_name: str = "agentkeep", *, api_key: str | None = None,
                 client: Any = None, cloud: str = "aws", region: str = "us-east-1", bm25_k1: float = 1.2,
                 bm25_b: float = 0.75, bm25_avg_length: float = 64.0, keyword_idf: bool = True, **options: Unpack[StoreOptions]) -> None:
        check_name(namespace, "namespace", _NAMESPACE, "1..100 of letters, digits, _ . -")
        check_name(index_name, "index_name", _INDEX_NAME, "1..45 lowercase letters, digits and -")
        self.namespace, self.index_name, self.cloud, self.region = namespace, index_name, cloud, region
        self._address = f"index {index_name}"
        super().__init__(**options)
        self.label = f"Pinecone namespace {index_name}/{namespace}"
        self.bm25_k1 = check_number(bm25_k1, "bm25_k1", 0, 10)
        self.bm25_b = check_number(bm25_b, "bm25_b", 0, 1)
        self.bm25_avg_length = check_number(bm25_avg_length, "bm25_avg_length", 1, 1e6)
        if not isinstance(keyword_idf, bool):
            raise InvalidInputError(f"keyword_idf must be True or False, got {keyword_idf!r}")
        self.keyword_idf = keyword_idf
        if client is None:
            from pinecone import Pinecone

            client = Pinecone(api_key=api_key) if api_key is not None else Pinecone()
        self._client = client
        self._index = None

    def _idx(self):
        if self._index is None:
            self._index = self._client.Index(name=self.index_name)
        return self._index

    def describe(self) -> str:
        return f"PineconeDb {self.index_name}/{self.namespace} (serverless {self.cloud} {self.region})"

    def close(self) -> None:
        if self._index is not None and hasattr(self._index, "close"):
            self._index.close()

    def _stored_dimensions(self) -> int | None:
        """The index's dimensions (less the keyword one) when it and the namespace exist."""
        from pinecone import NotFoundError as PineconeNotFound

        if not self._client.has_index(self.index_name):
            return None
        model = self._client.describe_index(self.index_name)
        if model.metric != "dotproduct":
            raise InvalidInputError(f"Pinecone index {self.index_name} uses {model.metric}; agentkeep needs dotproduct")
        try:
            self._idx().describe_namespace(name=self.namespace)
        except PineconeNotFound:
            return None
        return int(model.dimension) - 1

    def _create_store(self, dimensions: int) -> None:
        """The index, unless it exists (with any dimensions: they are checked after), and the namespace."""
        from pinecone import ConflictError, ServerlessSpec

        with contextlib.suppress(ConflictError):  # created meanwhile by another process
            if not self._client.has_index(self.index_name):
                self._client.create_index(name=self.index_name, dimension=dimensions + 1, metric="dotproduct",
                                          spec=ServerlessSpec(cloud=self.cloud, region=self.region))
        with contextlib.suppress(ConflictError):
            self._idx().create_namespace(name=self.namespace)

    def _drop_store(self) -> None:
        from pinecone import NotFoundError as PineconeNotFound

        if not self._client.has_index(self.index_name):
            return
        with contextlib.suppress(PineconeNotFound):
            self._idx().delete_namespace(name=self.namespace)

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace` upserts the new chunks, then deletes the content's others by filter
        (Pinecone has no transactions: a reader in between sees both)."""
        if content_id is not None and len(chunks) > MAX_IN_VALUES:
            raise InvalidInputError(f"replace() takes at most {MAX_IN_VALUES} chunks per content on Pinecone")
        records = [record(c, distance=self.distance, dimensions=self.dimensions, k1=self.bm25_k1, b=self.bm25_b,
                          avg_length=self.bm25_avg_length, analyzer=self.analyzer) for c in chunks]  # all checked before anything is sent
        if records:
            self._idx().upsert(vectors=records, namespace=self.namespace, batch_size=100, show_progress=False)
        if content_id is not None:
            keep = [{"chunk_id": {"$nin": [c.id for c in chunks]}}] if chunks else []
            self._idx().delete(filter=filter_doc(None, content_id, {}, keep), namespace=self.namespace)

    def _matching(self, doc: dict) -> int:
        """How many records a filter matches: a dry-run metadata update counts them server-side."""
        result = self._idx().update(filter=doc, set_metadata={}, dry_run=True, namespace=self.namespace)
        return int(result.matched_records or 0)

    def _delete(self, ids, content_id, filters) -> int:
        total = 0
        for part in [None] if ids is None else batches(ids, MAX_IN_VALUES):
            doc = filter_doc(part, content_id, filters)
            if doc == NOTHING:
                return 0
            found = self._matching(doc)
            if found:
                self._idx().delete(filter=doc, namespace=self.namespace)
            total += found
        return total

    def _get(self, ids: list[str]) -> list[Chunk]:
        result = self._idx().fetch(ids=[vector_id(i) for i in ids], namespace=self.namespace)
        metas = [(v, dict(v.metadata or {})) for v in result.vectors.values()]
        return [chunk_of(m, restore_embedding(v.values, m, self.distance), id_key="chunk_id",
                         metadata_key="metadata_json") for v, m in metas]

    def _count(self, content_id, filters) -> int:
        doc = filter_doc(None, content_id, filters)
        if doc is None:
            return int(self._idx().describe_namespace(name=self.namespace).record_count or 0)
        return 0 if doc == NOTHING else self._matching(doc)

    def query_requests(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[dict]:
        """The `Index.query` keyword arguments `search` sends (each with its "list" name)."""
        return self._shown(self._requests, query, embedding, limit, filters, search_type)

    def _idfs(self, query: KeywordQuery) -> dict[str, float] | None:
        """Each ranked term's idf from the namespace as it is now: its record count and, per term,
        the records holding it (counted server-side); None with `keyword_idf=False`."""
        if not self.keyword_idf:
            return None
        total = self._count(None, {})
        return {t: idf(total, self._matching({"terms": {"$in": [t]}})) for t in query.ranked}

    def _requests(self, kind, query, embedding, limit, filters):
        parsed = self.analyzer.query(query) if kind != "vector" else None
        idfs = self._idfs(parsed) if parsed else None
        return query_requests(kind, parsed, embedding, limit, filters, namespace=self.namespace,
                              distance=self.distance, dimensions=self.dimensions, candidates=self.hybrid_candidates,
                              idfs=idfs, phrase_depth=self.PHRASE_DEPTH)

    def _candidates(self, kind, query, embedding, n, filters):
        lists: dict[str, list[SearchHit]] = {"vector": [], "keyword": []}
        for request in self._requests(kind, query, embedding, n, filters):
            name = request.pop("list")
            lists[name] = [
                hit_of(dict(m.metadata or {}),
                       score(m.score, self.distance, embedding) if name == "vector" else float(m.score),
                       id_key="chunk_id", metadata_key="metadata_json")
                for m in self._idx().query(**request).matches
            ]
        if lists["keyword"]:
            lists["keyword"] = self._phrase_checked(self.analyzer.query(query), lists["keyword"])[:n]
        return lists["vector"], lists["keyword"]
