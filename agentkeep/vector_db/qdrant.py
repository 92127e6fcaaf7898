"""QdrantDb: chunks as points of a Qdrant collection, on the official `qdrant-client`.

    QdrantDb("my_kb", path="/var/lib/kb")             # local mode: files in a folder, this process
    QdrantDb("my_kb", location=":memory:")            # local mode, nothing persists
    QdrantDb("my_kb", url="http://qdrant:6333", api_key="...")  # a Qdrant server
    QdrantDb("my_kb", client=qdrant_client)           # share a QdrantClient

Collection layout, searches and filters: docs/vector_db/qdrant.md.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections import Counter
from contextlib import nullcontext
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import StoreOptions, VectorDb, batches, check_name, check_number, chunk_of, hit_of
from agentkeep.vector_db.base import Chunk, check_one_given, filter_alternatives, number_forms, ranked, typed_scalar
from agentkeep.vector_db.text import KeywordQuery, bm25_weights

VECTOR = "dense"
SPARSE = "bm25"  # the chunk's BM25 term weights; Qdrant's IDF modifier supplies the idf
AVG_LENGTH_KEY = "agentkeep_bm25_avg_length"  # collection metadata: the length the weights assume
DEFAULT_AVG_LENGTH = 100.0  # terms in a chunk of the default chunkers (1,000 characters)
DISTANCES = {"cosine": "Cosine", "l2": "Euclid", "inner_product": "Dot"}  # Qdrant's names
_POINT_NAMESPACE = uuid.UUID("5a3e1f0c-6b1d-5f0e-9c57-2f4a8e6b9d10")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = ["chunk_id", "content", "content_id", "position", "metadata", "norm"]
_BATCH = 512
_TIE_SLACK = 10  # extra keyword hits asked for, so that equal scores at the cut are ordered by id


def point_id(chunk_id: str) -> str:
    """The point id of a chunk: a UUID derived from the chunk id, the same in every process."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


def term_index(term: str) -> int:
    """A term's sparse-vector index: a stable 31-bit hash, the same in every process."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


def sparse_vector(weights: dict[str, float]):
    """Term weights as a Qdrant sparse vector (terms whose hashes collide share one index)."""
    from qdrant_client import models

    merged: dict[int, float] = {}
    for term, weight in weights.items():
        index = term_index(term)
        merged[index] = merged.get(index, 0.0) + weight
    return models.SparseVector(indices=list(merged), values=list(merged.values()))


def keyword_filter(query: KeywordQuery, filters: dict[str, Any]):
    """The payload conditions of a keyword query beyond "any ranked term": required and excluded
    terms on `terms` (exact keyword values), phrases on `text` (the terms in order)."""
    from qdrant_client import models

    must = filter_conditions(filters)
    must += [models.FieldCondition(key="terms", match=models.MatchValue(value=t)) for t in query.must]
    must += [models.FieldCondition(key="text", match=models.MatchPhrase(phrase=" ".join(p))) for p in query.phrases]
    must_not = [models.FieldCondition(key="text", match=models.MatchPhrase(phrase=" ".join(p)))
                for p in query.excluded_phrases]
    if query.must_not:
        must_not.append(models.FieldCondition(key="terms", match=models.MatchAny(any=list(query.must_not))))
    return models.Filter(must=must or None, must_not=must_not or None)


def field_name(key: str) -> str:
    """The name of a metadata key under `f.<type>.`: the key when it is a plain path
    segment, else `h-` and a digest (Qdrant payload paths treat `.`, `[`, `"` specially)."""
    if _PLAIN_KEY.match(key) and not key.startswith("h-"):
        return key
    return "h-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def typed_fields(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `f` payload object: top-level scalar metadata by type (lists, objects, null left out)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        typed = typed_scalar(value)
        if typed is not None:
            out.setdefault(typed[0], {})[field_name(key)] = typed[1]
    return out


def filter_conditions(filters: dict[str, Any]) -> list[Any]:
    """Payload conditions for a checked metadata filter, one per key (AND-ed by `must`)."""
    from qdrant_client import models

    out: list[Any] = []
    for key, values in filter_alternatives(filters):
        name = field_name(key)
        strings = [v for v in values if isinstance(v, str)]
        ints = [i for v in values if not isinstance(v, (bool, str)) for kind, i in number_forms(v) if kind == "i"]
        either = [models.FieldCondition(key=f"f.b.{name}", match=models.MatchValue(value=v))
                  for v in values if isinstance(v, bool)]
        # a number matches an integer or a float of the same value
        either += [models.FieldCondition(key=f"f.n.{name}", range=models.Range(gte=f, lte=f))
                   for v in values if not isinstance(v, (bool, str)) for kind, f in number_forms(v) if kind == "n"]
        for kind, group in (("s", strings), ("i", ints)):
            if group:
                match = models.MatchValue(value=group[0]) if len(group) == 1 else models.MatchAny(any=group)
                either.append(models.FieldCondition(key=f"f.{kind}.{name}", match=match))
        single = len(values) == 1 and isinstance(values[0], (bool, str))
        out.append(either[0] if single else models.Filter(should=either))
    return out


class QdrantDb(VectorDb):
    """A Qdrant collection. Give exactly one of `path`, `location`, `url` or `client`."""

    DISTANCES = DISTANCES
    GONE = None  # its errors do not say that the store was dropped underneath
    MAX_DIMENSIONS = 65_536  # Qdrant's limit for a dense vector
    ENGINE = "Qdrant"
    UNREACHABLE = ("qdrant_client.http.exceptions.ResponseHandlingException",)

    def __init__(self, collection: str, *, path: str | None = None, location: str | None = None,
                 url: str | None = None, api_key: str | None = None, client: Any = None,
                 client_options: dict[str, Any] | None = None, bm25_avg_length: float | None = None,
                 **options: Unpack[StoreOptions]) -> None:
        self.collection = check_name(collection, "collection", _NAME, "1..255 letters, digits, _ or -")
        super().__init__(**options)
        # the average chunk length (in terms) BM25 weights assume: fixed when the collection is
        # made, so every chunk's weights stay valid as others come and go (docs/vector_db/qdrant.md)
        self._asked_avg_length = None if bm25_avg_length is None else check_number(
            bm25_avg_length, "bm25_avg_length", 1, 1_000_000)
        self.bm25_avg_length = self._asked_avg_length or DEFAULT_AVG_LENGTH
        self._has_sparse = True
        self.label = f"Qdrant collection {collection}"
        check_one_given((path, location, url, client), "give exactly one of path=, location=, url= or client=")
        from qdrant_client import QdrantClient

        self.url = self._address = url
        self._owns_client = client is None
        if path is not None:
            # the async twins call from worker threads; self._lock serializes local mode
            client = QdrantClient(path=path, force_disable_check_same_thread=True, **(client_options or {}))
        elif client is None:
            client = QdrantClient(location=location, url=url, api_key=api_key, **(client_options or {}))
        self._client = client
        self._local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
        # local mode: one lock for every call, the base's lifecycle lock (held around the
        # lifecycle primitives, which so need no lock of their own)
        self._lock = self._lifecycle if self._local else nullcontext()

    def describe(self) -> str:
        where = "local mode (exact search)" if self._local else "a Qdrant server"
        return f"QdrantDb collection {self.collection} on {where}"

    def _run(self, fn):
        """Run fn(client) under the local-mode lock."""
        with self._lock:
            return fn(self._client)

    def _stored_dimensions(self) -> int | None:
        if not self._client.collection_exists(self.collection):
            return None
        info = self._client.get_collection(self.collection)
        params = info.config.params.vectors
        dense = params.get(VECTOR) if isinstance(params, dict) else None
        if dense is None:
            raise InvalidInputError(f"{self.label} has no {VECTOR!r} vector: not an agentkeep store")
        distance = next((d for d, name in DISTANCES.items() if name == dense.distance), str(dense.distance))
        if distance != self.distance:
            raise InvalidInputError(f"{self.label} uses the {distance} distance, not {self.distance}")
        self._adopt_keyword_layout(info.config)
        return dense.size

    def _adopt_keyword_layout(self, config) -> None:
        """Learn whether the collection has the BM25 sparse vector, and the average length its
        weights assume (a collection made before it was recorded: the default)."""
        self._has_sparse = SPARSE in (config.params.sparse_vectors or {})
        stored = (config.metadata or {}).get(AVG_LENGTH_KEY)
        if stored is None:
            return
        if self._asked_avg_length is not None and stored != self._asked_avg_length:
            raise InvalidInputError(f"{self.label} weighs keywords for bm25_avg_length={stored}, "
                                    f"not {self._asked_avg_length}")
        self.bm25_avg_length = float(stored)

    def _create_store(self, dimensions: int) -> None:
        from qdrant_client import models

        params = models.VectorParams(size=dimensions, distance=DISTANCES[self.distance])
        try:
            self._client.create_collection(
                self.collection, vectors_config={VECTOR: params},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                metadata={AVG_LENGTH_KEY: self.bm25_avg_length})
        except Exception:
            if not self._client.collection_exists(self.collection):
                raise  # not another process creating it first

    def _complete_store(self) -> None:
        """What an older collection or a crash right after creation left out: the BM25 sparse
        vector (added, and filled from the stored terms) and, on a server, the payload indexes
        (local mode builds none)."""
        from qdrant_client import models

        if not self._has_sparse:
            self._add_sparse_vector()
        if self._local:
            return
        have = self._client.get_collection(self.collection).payload_schema
        text = have.get("text")
        if text is None or not getattr(text.params, "phrase_matching", False):  # phrases, in term order
            self._client.create_payload_index(self.collection, "text", models.TextIndexParams(
                type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WHITESPACE, lowercase=False,
                phrase_matching=True))
        for name in ("terms", "content_id"):
            if name not in have:
                self._client.create_payload_index(self.collection, name, models.PayloadSchemaType.KEYWORD)

    def _add_sparse_vector(self) -> None:
        """Give a collection made before keyword search used sparse vectors its `bm25` vector,
        each point's weights computed from its stored `text` (once, at `create()`)."""
        from qdrant_client import models

        self._client.create_vector_name(self.collection, SPARSE, models.SparseVectorNameConfig(
            sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)))
        self._client.update_collection(self.collection, metadata={AVG_LENGTH_KEY: self.bm25_avg_length})
        offset = None
        while True:
            records, offset = self._client.scroll(self.collection, limit=_BATCH, offset=offset,
                                                  with_payload=["text"], with_vectors=False)
            vectors = [models.PointVectors(id=r.id, vector={SPARSE: self._sparse((r.payload or {}).get("text", "")
                                                                                 .split())}) for r in records]
            if vectors:
                self._client.update_vectors(self.collection, points=vectors, wait=True)
            if offset is None:
                break
        self._has_sparse = True

    def _sparse(self, found: list[str]):
        """A chunk's BM25 weights (without idf) as its sparse vector."""
        return sparse_vector(bm25_weights(Counter(found), len(found), self.bm25_avg_length))

    def _exists(self) -> bool:
        return self._run(lambda client: client.collection_exists(self.collection))

    def _drop_store(self) -> None:
        if self._client.collection_exists(self.collection):
            self._client.delete_collection(self.collection)

    def _point(self, c: Chunk):
        from qdrant_client import models

        found = self.analyzer.terms(c.content)
        payload: dict[str, Any] = {
            "chunk_id": c.id, "content": c.content, "content_id": c.content_id, "position": c.position,
            "metadata": c.metadata, "terms": list(dict.fromkeys(found)), "text": " ".join(found),
            "f": typed_fields(c.metadata),
        }
        vector: dict[str, Any] = {SPARSE: self._sparse(found)}
        if c.embedding is not None:
            vector[VECTOR] = c.embedding
            if self.distance == "cosine":  # Qdrant stores the unit vector; keep the length to undo it
                payload["norm"] = math.sqrt(sum(x * x for x in c.embedding))
        return models.PointStruct(id=point_id(c.id), vector=vector, payload=payload)

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace` is one `batch_update_points` request: the new chunks, then the removal of
        the content's others (in order, not as a transaction)."""
        from qdrant_client import models

        points = [self._point(c) for c in chunks]
        if content_id is None:
            with self._lock:
                for batch in batches(points, _BATCH):
                    self._client.upsert(self.collection, points=batch, wait=True)
            return
        stale = self._filter(None, content_id, {})
        stale.must_not = [models.HasIdCondition(has_id=[p.id for p in points])] if points else None
        ops = [models.UpsertOperation(upsert=models.PointsList(points=points))] if points else []
        ops.append(models.DeleteOperation(delete=models.FilterSelector(filter=stale)))
        self._run(lambda client: client.batch_update_points(self.collection, update_operations=ops, wait=True))

    def _filter(self, ids: list[str] | None, content_id: str | None, filters: dict):
        from qdrant_client import models

        must: list[Any] = []
        if ids is not None:
            must.append(models.HasIdCondition(has_id=[point_id(i) for i in ids]))
        if content_id is not None:
            must.append(models.FieldCondition(key="content_id", match=models.MatchValue(value=content_id)))
        must.extend(filter_conditions(filters))
        return models.Filter(must=must) if must else None

    def _delete(self, ids, content_id, filters) -> int:
        """Counts, then deletes, the matching points (Qdrant returns no count)."""
        from qdrant_client import models

        selector = self._filter(ids, content_id, filters)
        with self._lock:
            n = self._client.count(self.collection, count_filter=selector, exact=True).count
            if n:
                self._client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)
        return n

    def _get(self, ids: list[str]) -> list[Chunk]:
        records = self._run(lambda client: client.retrieve(
            self.collection, ids=[point_id(i) for i in ids], with_payload=_FIELDS, with_vectors=[VECTOR]))
        found = [((r.vector or {}).get(VECTOR), r.payload) for r in records]
        return [chunk_of(p, None if v is None else [float(x) * p.get("norm", 1.0) for x in v], id_key="chunk_id")
                for v, p in found]  # no norm: as stored

    def _count(self, content_id, filters) -> int:
        selector = self._filter(None, content_id, filters)
        return self._run(lambda client: client.count(self.collection, count_filter=selector, exact=True).count)

    def _candidates(self, kind, query, embedding, n, filters):
        """The lists `kind` needs, in one `query_batch_points` request; the base fuses them."""
        from qdrant_client import models

        parsed = self.analyzer.query(query) if kind != "vector" else None
        requests = {}
        if kind != "keyword":
            requests["vector"] = models.QueryRequest(query=embedding, using=VECTOR, limit=n, with_payload=_FIELDS,
                                                     filter=self._filter(None, None, filters))
        if parsed:
            requests["keyword"] = self._keyword_request(parsed, n, filters)
        responses = self._run(lambda client: client.query_batch_points(self.collection, requests=[*requests.values()])
                              ) if requests else []
        lists = {"vector": [], "keyword": []}
        for name, response in zip(requests, responses):
            l2 = name == "vector" and self.distance == "l2"  # Qdrant reports the euclidean distance
            hits = [hit_of(p.payload, 1.0 / (1.0 + p.score) if l2 else float(p.score), id_key="chunk_id")
                    for p in response.points]
            lists[name] = ranked(hits)[:n]
        return lists["vector"], lists["keyword"]

    def _keyword_request(self, query: KeywordQuery, n: int, filters: dict):
        """BM25 as a sparse dot product: the query's ranked terms weigh 1, Qdrant's IDF modifier
        multiplies each by its idf over the collection, the chunk's vector holds its saturated,
        length-normalised term frequencies. A chunk scores when it holds any ranked term."""
        from qdrant_client import models

        if not self._has_sparse:
            raise InvalidInputError(f"{self.label} has no {SPARSE!r} sparse vector (made by an older agentkeep): "
                                    "call create() once to add it")
        # BM25 ties often (chunks alike in their terms): a few more, so the cut at n goes by id
        return models.QueryRequest(query=sparse_vector(dict.fromkeys(query.ranked, 1.0)), using=SPARSE,
                                   limit=n + max(n, _TIE_SLACK),
                                   filter=keyword_filter(query, filters), with_payload=_FIELDS)
