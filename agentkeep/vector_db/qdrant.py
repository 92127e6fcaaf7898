"""QdrantDb: chunks as points of a Qdrant collection, on the official `qdrant-client`.

    QdrantDb("my_kb", path="/var/lib/kb")             # local mode: files in a folder, this process
    QdrantDb("my_kb", location=":memory:")            # local mode, nothing persists
    QdrantDb("my_kb", url="http://qdrant:6333", api_key="...")  # a Qdrant server
    QdrantDb("my_kb", client=qdrant_client)           # share a QdrantClient

One collection per knowledge base, with a named dense vector `dense` (the chosen distance)
and one point per chunk. Point ids are `uuid5(chunk id)` (Qdrant ids must be integers or
UUIDs); the chunk id itself is in the payload, beside content, content_id, position and the
metadata object. Three derived payload fields serve the searches:

- `terms`: the chunk's distinct keyword terms (`in_memory.terms()`: lowercased, stopword-free,
  lightly stemmed), a keyword array; a keyword query requires each wanted term with a
  `MatchValue` condition (`must`) and excludes each `-term` (`must_not`);
- `text`: the same terms in order, joined by spaces, under a full-text index with BM25
  scoring, which a `TextQuery` ranks (Qdrant's BM25: k1 1.2, b 0.75, the suite's formula);
- `f`: the metadata's top-level scalars by type, `f.s.<key>` strings, `f.b.<key>` booleans,
  `f.i.<key>` 64-bit integers, `f.n.<key>` other numbers, so a filter is a payload filter
  with the suite's type rules (a list or object value is never copied there, so it never
  matches; numbers match by value across `f.i` and `f.n`).

Hybrid search runs both candidate lists in one `query_batch_points` request and fuses them
with `rrf_fuse` (Qdrant's own weighted RRF uses another formula). With the cosine distance
Qdrant keeps vectors normalized, so the payload keeps each vector's norm and `get()` returns
the vector as written (to single precision).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import uuid
from contextlib import nullcontext
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
    check_search_type,
    check_weights,
    dimension_mismatch,
    number_forms,
    rrf_top,
    typed_scalar,
)
from agentkeep.vector_db.text import query_terms, terms

DISTANCES = ("cosine", "l2", "inner_product")
VECTOR = "dense"
MAX_DIMENSIONS = 65_536  # Qdrant's limit for a dense vector
_POINT_NAMESPACE = uuid.UUID("5a3e1f0c-6b1d-5f0e-9c57-2f4a8e6b9d10")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = ["chunk_id", "content", "content_id", "position", "metadata", "norm"]
_BATCH = 512


def point_id(chunk_id: str) -> str:
    """The point id of a chunk: a UUID derived from the chunk id, the same in every process."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


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
    for key, value in filters.items():
        name = field_name(key)
        if isinstance(value, bool):
            out.append(models.FieldCondition(key=f"f.b.{name}", match=models.MatchValue(value=value)))
        elif isinstance(value, str):
            out.append(models.FieldCondition(key=f"f.s.{name}", match=models.MatchValue(value=value)))
        else:  # a number matches an integer or a float of the same value
            either = [
                models.FieldCondition(key=f"f.n.{name}", range=models.Range(gte=v, lte=v)) if kind == "n"
                else models.FieldCondition(key=f"f.i.{name}", match=models.MatchValue(value=v))
                for kind, v in number_forms(value)
            ]
            out.append(models.Filter(should=either))
    return out


class QdrantDb(VectorDb):
    """A Qdrant collection. Give exactly one of `path`, `location`, `url` or `client`."""

    def __init__(
        self,
        collection: str,
        *,
        path: str | None = None,
        location: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        client_options: dict[str, Any] | None = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise InvalidInputError(f"collection must be 1..255 letters, digits, _ or -; got {collection!r}")
        self.collection = collection
        self.search_type = check_search_type(search_type)
        self.distance = check_choice(distance, "distance", DISTANCES)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions, MAX_DIMENSIONS)
        if sum(x is not None for x in (path, location, url, client)) != 1:
            raise InvalidInputError("give exactly one of path=, location=, url= or client=")
        from qdrant_client import QdrantClient

        self._owns_client = client is None
        if client is None:
            options = dict(client_options or {})
            if path is not None:
                # the async twins call from worker threads; self._lock serializes local mode
                client = QdrantClient(path=path, force_disable_check_same_thread=True, **options)
            elif location is not None:
                client = QdrantClient(location=location, api_key=api_key, **options)
            else:
                client = QdrantClient(url=url, api_key=api_key, **options)
        self._client = client
        self._local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
        self._lock = threading.RLock() if self._local else nullcontext()
        self._known = False  # the collection was seen to exist with self.dimensions

    def describe(self) -> str:
        where = "local mode (exact search)" if self._local else "a Qdrant server"
        return f"QdrantDb collection {self.collection} on {where}"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _missing(self) -> str:
        return f"Qdrant collection {self.collection} does not exist: call create() first"

    def _run(self, fn):
        """Run fn(client) under the local-mode lock; a missing collection becomes NotFoundError."""
        with self._lock:
            try:
                return fn(self._client)
            except (InvalidInputError, NotFoundError):
                raise
            except Exception:
                if not self._client.collection_exists(self.collection):
                    self._known = False
                    raise NotFoundError(self._missing()) from None
                raise

    def _stored(self) -> tuple[int, str] | None:
        """(dimensions, distance) of the existing collection, None when there is none."""
        from qdrant_client import models

        if not self._client.collection_exists(self.collection):
            return None
        params = self._client.get_collection(self.collection).config.params.vectors
        dense = params.get(VECTOR) if isinstance(params, dict) else None
        if dense is None:
            raise InvalidInputError(
                f"Qdrant collection {self.collection} has no {VECTOR!r} vector: not an agentkeep store")
        names = {models.Distance.COSINE: "cosine", models.Distance.EUCLID: "l2", models.Distance.DOT: "inner_product"}
        return dense.size, names.get(dense.distance, str(dense.distance))

    def _ready(self) -> None:
        if self._known:
            return
        with self._lock:
            stored = self._stored()
            if stored is None:
                raise NotFoundError(self._missing())
            self._adopt(stored, self.dimensions)

    def _adopt(self, stored: tuple[int, str], wanted: int | None) -> None:
        dims, distance = stored
        if wanted is not None and wanted != dims:
            raise dimension_mismatch(f"Qdrant collection {self.collection}", dims, wanted)
        if distance != self.distance:
            raise InvalidInputError(
                f"Qdrant collection {self.collection} uses the {distance} distance, not {self.distance}")
        self.dimensions = dims
        self._known = True

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        from qdrant_client import models

        if dimensions is not None:
            check_dimensions(dimensions, MAX_DIMENSIONS)
        wanted = dimensions or self.dimensions
        with self._lock:
            stored = self._stored()
            if stored is None:
                if wanted is None:
                    raise InvalidInputError("create() needs dimensions= (or QdrantDb(dimensions=...)) the first time")
                distance = {"cosine": models.Distance.COSINE, "l2": models.Distance.EUCLID,
                            "inner_product": models.Distance.DOT}[self.distance]
                try:
                    self._client.create_collection(
                        self.collection, vectors_config={VECTOR: models.VectorParams(size=wanted, distance=distance)})
                    stored = (wanted, self.distance)
                except Exception:
                    stored = self._stored()  # another process created it first
                    if stored is None:
                        raise
            self._adopt(stored, wanted)
            self._create_indexes()

    def _create_indexes(self) -> None:
        """The payload indexes, if missing (a crash right after creating the collection may
        have left them out). BM25 ranking needs the text index, in local mode too."""
        from qdrant_client import models

        have = {} if self._local else self._client.get_collection(self.collection).payload_schema
        if "text" not in have:
            self._client.create_payload_index(
                self.collection, "text",
                models.TextIndexParams(type=models.TextIndexType.TEXT, lowercase=True,
                                       scoring=models.TextScoringParams(type=models.TextScoringType.BM25)),
            )
        if not self._local:  # local mode has no other indexes (and warns about them)
            for name in ("terms", "content_id"):
                if name not in have:
                    self._client.create_payload_index(self.collection, name, models.PayloadSchemaType.KEYWORD)

    def exists(self) -> bool:
        with self._lock:
            return self._client.collection_exists(self.collection)

    def drop(self) -> None:
        with self._lock:
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)
            self._known = False

    # -- writes -----------------------------------------------------------------------------

    def _point(self, c: Chunk):
        from qdrant_client import models

        found = terms(c.content)
        payload: dict[str, Any] = {
            "chunk_id": c.id, "content": c.content, "content_id": c.content_id, "position": c.position,
            "metadata": c.metadata, "terms": list(dict.fromkeys(found)), "text": " ".join(found),
            "f": typed_fields(c.metadata),
        }
        vector: dict[str, list[float]] = {}
        if c.embedding is not None:
            vector[VECTOR] = c.embedding
            if self.distance == "cosine":  # Qdrant stores the unit vector; keep the length to undo it
                payload["norm"] = math.sqrt(sum(x * x for x in c.embedding))
        return models.PointStruct(id=point_id(c.id), vector=vector, payload=payload)

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        points = [self._point(c) for c in checked]

        def write(client):
            for i in range(0, len(points), _BATCH):
                client.upsert(self.collection, points=points[i:i + _BATCH], wait=True)
            return len(points)

        return self._run(write) if points else 0

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """One `batch_update_points` request: upsert the new chunks, then delete the content's
        other chunks. Qdrant applies the two in order but not as one transaction: a reader may
        see old and new chunks side by side for a moment, and a failure between them leaves
        stale chunks (never a content with none of its new chunks)."""
        from qdrant_client import models

        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        points = [self._point(c) for c in checked]
        stale = models.Filter(
            must=[models.FieldCondition(key="content_id", match=models.MatchValue(value=content_id))],
            must_not=[models.HasIdCondition(has_id=[p.id for p in points])] if points else None,
        )
        ops = [models.UpsertOperation(upsert=models.PointsList(points=points))] if points else []
        ops.append(models.DeleteOperation(delete=models.FilterSelector(filter=stale)))
        self._run(lambda client: client.batch_update_points(self.collection, update_operations=ops, wait=True))
        return len(points)

    def _filter(self, ids: list[str] | None, content_id: str | None, filters: dict):
        from qdrant_client import models

        must: list[Any] = []
        if ids is not None:
            must.append(models.HasIdCondition(has_id=[point_id(i) for i in ids]))
        if content_id is not None:
            must.append(models.FieldCondition(key="content_id", match=models.MatchValue(value=content_id)))
        must.extend(filter_conditions(filters))
        return models.Filter(must=must) if must else None

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        """Counts, then deletes, the matching points (in local mode under one lock; on a server a
        write between the two can make the count differ from what was deleted)."""
        from qdrant_client import models

        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        selector = self._filter(ids, content_id, filters)

        def run(client):
            n = client.count(self.collection, count_filter=selector, exact=True).count
            if n:
                client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)
            return n

        return self._run(run)

    # -- reads ------------------------------------------------------------------------------

    def _chunk(self, payload: dict[str, Any], vector: Any) -> Chunk:
        embedding = None
        if isinstance(vector, dict) and vector.get(VECTOR) is not None:
            embedding = [float(x) for x in vector[VECTOR]]
            if payload.get("norm") is not None:
                embedding = [x * payload["norm"] for x in embedding]
        return Chunk(id=payload["chunk_id"], content=payload["content"], content_id=payload.get("content_id"),
                     embedding=embedding, metadata=payload.get("metadata") or {}, position=payload.get("position", 0))

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        if not ids:
            return []
        records = self._run(lambda client: client.retrieve(
            self.collection, ids=[point_id(i) for i in ids], with_payload=_FIELDS, with_vectors=[VECTOR]))
        found = {r.payload["chunk_id"]: self._chunk(r.payload, r.vector) for r in records}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        selector = self._filter(None, content_id, check_filters(filters))
        self._ready()
        return self._run(lambda client: client.count(self.collection, count_filter=selector, exact=True).count)

    def _vector_request(self, embedding: list[float], n: int, flt):
        from qdrant_client import models

        return models.QueryRequest(query=embedding, using=VECTOR, filter=flt, limit=n, with_payload=_FIELDS)

    def _keyword_request(self, wanted: list[str], unwanted: list[str], n: int, filters: dict):
        from qdrant_client import models

        must = filter_conditions(filters)
        must += [models.FieldCondition(key="terms", match=models.MatchValue(value=t)) for t in wanted]
        must_not = [models.FieldCondition(key="terms", match=models.MatchValue(value=t)) for t in unwanted]
        return models.QueryRequest(
            query=models.TextQuery(text=models.TextQueryInput(query=" ".join(wanted))), using="text",
            filter=models.Filter(must=must, must_not=must_not or None), limit=n, with_payload=_FIELDS,
        )

    def _score(self, raw: float) -> float:
        return 1.0 / (1.0 + raw) if self.distance == "l2" else float(raw)

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        wanted, unwanted = query_terms(query) if kind != "vector" else ([], [])
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        requests = []
        if kind in ("vector", "hybrid"):
            requests.append(self._vector_request(embedding, n, self._filter(None, None, filters)))
        if kind in ("keyword", "hybrid") and wanted:
            requests.append(self._keyword_request(wanted, unwanted, n, filters))
        if not requests:
            return []
        responses = self._run(lambda client: client.query_batch_points(self.collection, requests=requests))
        lists = []
        for i, response in enumerate(responses):
            vector_list = kind != "keyword" and i == 0
            scored = [(p.payload, self._score(p.score) if vector_list else float(p.score)) for p in response.points]
            scored.sort(key=lambda item: (-item[1], item[0]["chunk_id"]))  # ties by id, as every store
            lists.append(scored)
        if kind != "hybrid":
            ranked = lists[0]
        else:
            keyword = [p for p, _ in lists[1]] if len(lists) > 1 else []
            ranked = rrf_top([p for p, _ in lists[0]], keyword, limit, key=lambda p: p["chunk_id"],
                             vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [
            SearchHit(**self._chunk(p, None).model_dump(exclude={"embedding"}), score=score) for p, score in ranked
        ]
