"""PineconeDb: chunks and embeddings in a Pinecone serverless index, through `pinecone` 10.x.

    PineconeDb("my-kb", index_name="agentkeep", api_key="...")   # a namespace of that index

One serverless index (metric `dotproduct`, the only metric that takes sparse values, so every
store can do keyword and hybrid search) holds many stores, one namespace each. Each distance is
mapped onto the dot product with one extra dimension, so the index is `dimensions + 1` wide:

    cosine          stored [x/|x|, 0]        queried [q/|q|, 0]   dot = cos(x, q)
    inner_product   stored [x, 0]            queried [q, 0]       dot = x.q
    l2              stored [x, -|x|^2/2]     queried [q, 1]       dot = (|q|^2 - |x - q|^2) / 2

so the index ranks exactly as the distance does; the score is then the suite's (cosine, x.q,
1 / (1 + |x - q|), the last computed from the dot and |q|). A cosine vector's norm is kept in
metadata to give `get` the original back. A chunk without embedding is stored with the
placeholder [0, ..., 0, 1] and `has_embedding: false`, which vector searches filter out
(Pinecone refuses all-zero dense vectors, so an all-zero embedding is refused).

Metadata: Pinecone metadata is flat (string, number, bool, list of strings) and numbers are
doubles, so the chunk's metadata is kept as its JSON text (`metadata_json`) and every top-level
scalar is copied under a type-tagged key: `s:<key>` (string), `n:<key>` (number, as a double:
1 and 1.0 meet), `b:<key>` (bool); a filter `{"k": v}` becomes `{"<tag>:k": {"$eq": v}}`, AND-ed
with `$and`, so true never matches 1 and "1" never matches 1. Lists and objects get no copy and
never match. Content, content_id, position, chunk_id and the keyword terms live in metadata too
(Pinecone's limit: 40 KB of metadata per record, checked before writing).

Keyword search: each record carries a sparse vector over its terms (agentkeep's lowercased,
stopword-free, stemmed words, hashed to uint32 indices) with BM25's saturated term frequency
`tf (k1 + 1) / (tf + k1 (1 - b + b len / bm25_avg_length))`, and the distinct terms as a list
(`terms`). A keyword query sends a zero dense vector plus a sparse vector of weight 1 per query
term, with the filter `terms $in [t]` for every term (every term must match) and
`terms $nin [...]` for `-term`s. What differs from the suite's BM25: no IDF (Pinecone holds no
corpus statistics, so a rare term weighs as much as a common one) and a fixed average length.
Hybrid: Pinecone's own sparse-dense query adds the two dot products (a convex `alpha`
weighting at best), which is not rank fusion, so the store sends the vector and the keyword
query and fuses the two lists with `rrf_fuse`.

Not verified against a live service: no Pinecone server or emulator runs where this was
written. The translation (records, vectors, filters, sparse values, queries) is unit-tested.
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
    check_name,
    check_number,
    check_search_type,
    check_weights,
    dimension_mismatch,
    filter_scalar,
    rrf_top,
)
from agentkeep.vector_db.text import query_terms
from agentkeep.vector_db.text import terms as keyword_terms

DISTANCES = ("cosine", "l2", "inner_product")
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
        return 1.0 / (1.0 + math.sqrt(max(squared, 0.0)))
    return float(raw)


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


def sparse_document(terms: Sequence[str], *, k1: float, b: float, avg_length: float) -> dict[str, list] | None:
    """BM25's saturated term frequencies of a chunk's terms (colliding hashes add up)."""
    if not terms:
        return None
    tf = Counter(terms)
    norm = k1 * (1 - b + b * len(terms) / avg_length)
    weights: dict[int, float] = {}
    for term, count in tf.items():
        i = term_index(term)
        weights[i] = weights.get(i, 0.0) + count * (k1 + 1) / (count + norm)
    indices = sorted(weights)
    return {"indices": indices, "values": [weights[i] for i in indices]}


def sparse_query(wanted: Sequence[str]) -> dict[str, list]:
    weights: dict[int, float] = {}
    for term in dict.fromkeys(wanted):
        i = term_index(term)
        weights[i] = weights.get(i, 0.0) + 1.0
    indices = sorted(weights)
    return {"indices": indices, "values": [weights[i] for i in indices]}


def _flat_key(key: str, value: Any) -> tuple[str, Any] | None:
    """The type-tagged metadata key and value a filter on `key` = `value` looks for."""
    typed = filter_scalar(value)
    return None if typed is None else (f"{typed[0]}:{key}", typed[1])


def record(chunk: Chunk, *, distance: str, dimensions: int, k1: float = 1.2, b: float = 0.75,
           avg_length: float = 64.0) -> dict[str, Any]:
    """The upsert record of a (checked) chunk."""
    terms = keyword_terms(chunk.content)
    metadata: dict[str, Any] = {
        "chunk_id": chunk.id,
        "content": chunk.content,
        "position": chunk.position,
        "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False, separators=(",", ":")),
        "terms": list(dict.fromkeys(terms)),
        "has_embedding": chunk.embedding is not None,
    }
    if chunk.content_id is not None:
        metadata["content_id"] = chunk.content_id
    for key, value in chunk.metadata.items():
        flat = _flat_key(key, value)
        if flat is not None:
            metadata[flat[0]] = flat[1]
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
    for key, value in filters.items():
        flat = _flat_key(key, value)
        if flat is None:
            return NOTHING
        parts.append({flat[0]: {"$eq": flat[1]}})
    parts.extend(extra)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def query_requests(kind: str, query: str | None, embedding: list[float] | None, limit: int, filters: dict, *,
                   namespace: str, distance: str, dimensions: int, candidates: int = 40) -> list[dict]:
    """Keyword arguments of the `Index.query` calls one search sends, named by "list"."""
    n = limit if kind != "hybrid" else min(max(limit, candidates), MAX_TOP_K_WITH_METADATA)
    if filter_doc(None, None, filters) == NOTHING:
        return []
    requests = []
    if kind in ("vector", "hybrid"):
        requests.append({"list": "vector", "namespace": namespace, "top_k": n,
                         "vector": query_values(embedding, distance), "include_metadata": True,
                         "filter": filter_doc(None, None, filters, [{"has_embedding": {"$eq": True}}])})
    if kind in ("keyword", "hybrid"):
        wanted, unwanted = query_terms(query or "")
        if wanted:
            must = [{"terms": {"$in": [t]}} for t in wanted]
            if unwanted:
                must.append({"terms": {"$nin": unwanted}})
            requests.append({"list": "keyword", "namespace": namespace, "top_k": n,
                             "vector": [0.0] * (dimensions + 1), "sparse_vector": sparse_query(wanted),
                             "include_metadata": True, "filter": filter_doc(None, None, filters, must)})
    return requests


# -- the store --------------------------------------------------------------------------------


class PineconeDb(VectorDb):
    """A namespace of a Pinecone serverless index (created on `create()` if missing). Give
    `api_key` (or PINECONE_API_KEY in the environment) or `client` (a `pinecone.Pinecone`)."""

    def __init__(
        self,
        namespace: str,
        index_name: str = "agentkeep",
        *,
        api_key: str | None = None,
        client: Any = None,
        cloud: str = "aws",
        region: str = "us-east-1",
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        bm25_avg_length: float = 64.0,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise InvalidInputError(f"namespace must be 1..100 of letters, digits, _ . - ; got {namespace!r}")
        check_name(index_name, "index_name", _INDEX_NAME, "1..45 lowercase letters, digits and -")
        self.namespace, self.index_name, self.cloud, self.region = namespace, index_name, cloud, region
        self.search_type = check_search_type(search_type)
        self.distance = check_choice(distance, "distance", DISTANCES)
        self.bm25_k1 = check_number(bm25_k1, "bm25_k1", 0, 10)
        self.bm25_b = check_number(bm25_b, "bm25_b", 0, 1)
        self.bm25_avg_length = check_number(bm25_avg_length, "bm25_avg_length", 1, 1e6)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions, 19_999)
        if client is None:
            from pinecone import Pinecone

            client = Pinecone(api_key=api_key) if api_key is not None else Pinecone()
        self._client = client
        self._index = None
        self._present = False  # the namespace is known to exist

    # -- plumbing ---------------------------------------------------------------------------

    def _missing(self) -> str:
        return f"Pinecone namespace {self.index_name}/{self.namespace} does not exist: call create() first"

    def _idx(self):
        if self._index is None:
            self._index = self._client.Index(name=self.index_name)
        return self._index

    def _ready(self) -> None:
        """Index and namespace exist and the dimensions are known (one check per store object:
        a namespace dropped by another process is not noticed, and a write would recreate it)."""
        if self._present and self.dimensions is not None:
            return
        from pinecone import NotFoundError as PineconeNotFound

        try:
            if not self._client.has_index(self.index_name):
                raise NotFoundError(self._missing())
            self._check_index(self.dimensions)
            self._idx().describe_namespace(name=self.namespace)
        except PineconeNotFound:
            raise NotFoundError(self._missing()) from None
        self._present = True

    def _check_index(self, wanted: int | None) -> None:
        model = self._client.describe_index(self.index_name)
        if model.metric != "dotproduct":
            raise InvalidInputError(f"Pinecone index {self.index_name} uses {model.metric}; agentkeep needs dotproduct")
        dims = int(model.dimension) - 1
        if wanted is not None and wanted != dims:
            raise dimension_mismatch(f"Pinecone index {self.index_name}", dims, wanted)
        self.dimensions = dims

    def describe(self) -> str:
        return f"PineconeDb {self.index_name}/{self.namespace} (serverless {self.cloud} {self.region})"

    def close(self) -> None:
        if self._index is not None and hasattr(self._index, "close"):
            self._index.close()

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        from pinecone import ConflictError, ServerlessSpec

        wanted = dimensions or self.dimensions
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or not 1 <= dimensions <= 19_999):
            raise InvalidInputError(f"dimensions must be an integer in 1..19999, got {dimensions!r}")
        if not self._client.has_index(self.index_name):
            if wanted is None:
                raise InvalidInputError("create() needs dimensions= (or PineconeDb(dimensions=...)) to create the index")
            try:
                self._client.create_index(name=self.index_name, dimension=wanted + 1, metric="dotproduct",
                                          spec=ServerlessSpec(cloud=self.cloud, region=self.region))
            except ConflictError:  # created meanwhile by another process
                pass
        self._check_index(wanted)
        try:
            self._idx().create_namespace(name=self.namespace)
        except ConflictError:
            pass
        self._present = True

    def exists(self) -> bool:
        from pinecone import NotFoundError as PineconeNotFound

        if not self._client.has_index(self.index_name):
            return False
        try:
            self._idx().describe_namespace(name=self.namespace)
        except PineconeNotFound:
            return False
        return True

    def drop(self) -> None:
        from pinecone import NotFoundError as PineconeNotFound

        self._present = False
        if not self._client.has_index(self.index_name):
            return
        try:
            self._idx().delete_namespace(name=self.namespace)
        except PineconeNotFound:
            pass

    # -- writes -----------------------------------------------------------------------------

    def _records(self, chunks: list[Chunk]) -> list[dict]:
        return [record(c, distance=self.distance, dimensions=self.dimensions, k1=self.bm25_k1, b=self.bm25_b,
                       avg_length=self.bm25_avg_length) for c in chunks]

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        records = self._records(checked)  # every record is checked before anything is sent
        if records:
            self._idx().upsert(vectors=records, namespace=self.namespace, batch_size=100, show_progress=False)
        return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """Upserts the new chunks, then deletes the content's others by filter (Pinecone has no
        transactions: a reader in between sees both)."""
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        if len(checked) > MAX_IN_VALUES:
            raise InvalidInputError(f"replace() takes at most {MAX_IN_VALUES} chunks per content on Pinecone")
        records = self._records(checked)
        if records:
            self._idx().upsert(vectors=records, namespace=self.namespace, batch_size=100, show_progress=False)
        keep = [{"chunk_id": {"$nin": [c.id for c in checked]}}] if checked else []
        self._idx().delete(filter=filter_doc(None, content_id, {}, keep), namespace=self.namespace)
        return len(checked)

    def _matching(self, doc: dict) -> int:
        """How many records a filter matches: a dry-run metadata update counts them server-side."""
        result = self._idx().update(filter=doc, set_metadata={}, dry_run=True, namespace=self.namespace)
        return int(result.matched_records or 0)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        total = 0
        for start in range(0, len(ids or [None]), MAX_IN_VALUES):
            part = None if ids is None else ids[start:start + MAX_IN_VALUES]
            doc = filter_doc(part, content_id, filters)
            if doc == NOTHING:
                return 0
            found = self._matching(doc)
            if found:
                self._idx().delete(filter=doc, namespace=self.namespace)
            total += found
        return total

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        found: dict[str, Chunk] = {}
        for start in range(0, len(ids), 100):
            part = ids[start:start + 100]
            result = self._idx().fetch(ids=[vector_id(i) for i in part], namespace=self.namespace)
            for vector in result.vectors.values():
                meta = dict(vector.metadata or {})
                chunk = _chunk(meta, restore_embedding(vector.values, meta, self.distance))
                found[chunk.id] = chunk
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        doc = filter_doc(None, content_id, filters)
        if doc is None:
            return int(self._idx().describe_namespace(name=self.namespace).record_count or 0)
        return 0 if doc == NOTHING else self._matching(doc)

    def query_requests(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[dict]:
        """The `Index.query` keyword arguments `search` sends (each with its "list" name)."""
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        return self._requests(kind, query, embedding, limit, filters)

    def _requests(self, kind, query, embedding, limit, filters):
        return query_requests(kind, query, embedding, limit, filters, namespace=self.namespace,
                              distance=self.distance, dimensions=self.dimensions, candidates=self.hybrid_candidates)

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        lists: dict[str, list[tuple[dict, float]]] = {}
        for request in self._requests(kind, query, embedding, limit, filters):
            name = request.pop("list")
            matches = self._idx().query(**request).matches
            lists[name] = [
                (dict(m.metadata or {}), score(m.score, self.distance, embedding) if name == "vector" else float(m.score))
                for m in matches
            ]
        if kind != "hybrid":
            ranked = sorted(lists.get(kind, []), key=lambda item: (-item[1], item[0]["chunk_id"]))
            return [_hit(meta, s) for meta, s in ranked[:limit]]
        top = rrf_top([m for m, _ in lists.get("vector", [])], [m for m, _ in lists.get("keyword", [])], limit,
                      key=lambda m: m["chunk_id"], vector_weight=self.vector_weight,
                      keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [_hit(meta, s) for meta, s in top]


def _chunk(meta: dict[str, Any], embedding: list[float] | None) -> Chunk:
    return Chunk(id=meta["chunk_id"], content=meta.get("content", ""), content_id=meta.get("content_id"),
                 embedding=embedding, metadata=json.loads(meta.get("metadata_json") or "{}"),
                 position=int(meta.get("position") or 0))


def _hit(meta: dict[str, Any], s: float) -> SearchHit:
    return SearchHit(**_chunk(meta, None).model_dump(exclude={"embedding"}), score=s)
