"""`VectorDb`: what every store does the same way, over a handful of primitives per store.

The base owns the public methods: the options every store takes (checked once), the
lifecycle (`create`'s "use the stored dimensions, or create, or refuse a mismatch"; the lazy
check that the store exists before its first use), the argument checks of every operation,
search dispatch and hybrid fusion (`fuse`: reciprocal-rank or relative-score fusion, the one
definition every store uses), the keyword analyzer (`self.analyzer`), the awaitable twins,
and error translation (a server that cannot be reached is `ConnectionFailedError`).

A store supplies its connection or client, its record layout, the primitives below (each
called with checked arguments; the table in docs/knowledge.md, "Vector stores: the shared
core", says what each does) and the class attributes commented below.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

from agentkeep.db.errors import DbError, InvalidInputError, NotFoundError
from agentkeep.vector_db.checks import MAX_LIMIT, Chunk, SearchHit, check_choice, check_chunks, check_dimensions
from agentkeep.vector_db.checks import check_embedding, check_id, check_ids, check_int, check_search_type
from agentkeep.vector_db.checks import check_weights, dimension_mismatch
from agentkeep.vector_db.filters import check_filters, filter_terms
from agentkeep.vector_db.text import Analyzer, KeywordQuery, analyzer

__all__ = ["FUSIONS", "StoreOptions", "VectorDb", "batches", "chunk_of", "distance_score", "fuse", "hit_of",
           "json_document", "l2_score", "ranked", "relative_score_fuse", "rrf_fuse", "stored_fields"]

FUSIONS = ("rrf", "relative_score")


def rrf_fuse(vector_ids: Sequence[str], keyword_ids: Sequence[str], *, vector_weight: float, keyword_weight: float,
             k: int) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion: score = w_v / (k + rank_v) + w_k / (k + rank_k), ranks from 1;
    a list that misses an id adds nothing. Highest score first, ties by id."""
    scores: dict[str, float] = {}
    for i, id_ in enumerate(vector_ids, 1):
        scores[id_] = vector_weight / (k + i)
    for i, id_ in enumerate(keyword_ids, 1):
        scores[id_] = scores.get(id_, 0.0) + keyword_weight / (k + i)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def relative_score_fuse(vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *,
                        vector_weight: float, keyword_weight: float) -> list[tuple[str, float]]:
    """Relative-score fusion: each list's scores scaled to 0..1 (min-max; a list of equal scores
    is all 1), then score = w_v * scaled_v + w_k * scaled_k. Highest first, ties by id."""
    scores: dict[str, float] = {}
    for weight, hits in ((vector_weight, vector), (keyword_weight, keyword)):
        if not hits:
            continue
        low, high = min(s for _, s in hits), max(s for _, s in hits)
        for id_, s in hits:
            scaled = (s - low) / (high - low) if high > low else 1.0
            scores[id_] = scores.get(id_, 0.0) + weight * scaled
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fuse(vector: Sequence[SearchHit], keyword: Sequence[SearchHit], *, fusion: str = "rrf",
         vector_weight: float = 1.0, keyword_weight: float = 1.0, k: int = 60) -> list[SearchHit]:
    """The hybrid ranking of two candidate lists, each hit scored by the fusion."""
    vector, keyword = ranked(vector), ranked(keyword)
    if fusion == "rrf":
        fused = rrf_fuse([h.id for h in vector], [h.id for h in keyword], vector_weight=vector_weight,
                         keyword_weight=keyword_weight, k=k)
    else:
        fused = relative_score_fuse([(h.id, h.score) for h in vector], [(h.id, h.score) for h in keyword],
                                    vector_weight=vector_weight, keyword_weight=keyword_weight)
    by_id = {h.id: h for h in (*keyword, *vector)}
    return [by_id[i].model_copy(update={"score": s}) for i, s in fused]


def ranked(hits: Iterable[SearchHit]) -> list[SearchHit]:
    """Best first; equal scores by id, on every store."""
    return sorted(hits, key=lambda h: (-h.score, h.id))


def l2_score(squared_distance: float) -> float:
    """Every store's score of a euclidean distance d, 1 / (1 + d), from d² (what most engines
    report); a d² below 0 (rounding) counts as 0."""
    return 1.0 / (1.0 + math.sqrt(max(squared_distance, 0.0)))


def distance_score(distance: str, d: float) -> float:
    """The score of the distance most engines report (Chroma, LanceDB, RediSearch): 1 - d for
    cosine (d = 1 - cos) and the inner product (d = 1 - dot), `l2_score` of the squared l2."""
    return l2_score(d) if distance == "l2" else 1.0 - d


def stored_fields(row: Mapping[str, Any], id_key: str = "id", metadata_key: str = "metadata") -> dict[str, Any]:
    """A chunk's fields (but its embedding) from a stored record: metadata as JSON text or an
    object; an empty content_id (from engines that store no null) is None."""
    metadata = row.get(metadata_key)
    return {"id": row[id_key], "content": row.get("content") or "", "content_id": row.get("content_id") or None,
            "position": int(row.get("position") or 0),
            "metadata": metadata if isinstance(metadata, dict) else json.loads(metadata or "{}")}


def json_document(chunk: Chunk, analyzer: Analyzer, id_key: str = "id", terms_key: str = "terms") -> dict[str, Any]:
    """A chunk as a JSON document for engines that match metadata filters on its `filter_terms`
    and keywords on a text of its terms by the store's `analyzer` (Cosmos DB, MongoDB Atlas):
    the metadata as JSON text, the embedding only when there is one. `stored_fields` reads it back."""
    doc = {
        id_key: chunk.id, "content_id": chunk.content_id, "content": chunk.content, "position": chunk.position,
        "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False, allow_nan=False),
        terms_key: " ".join(analyzer.terms(chunk.content)), "filter_terms": filter_terms(chunk.metadata),
    }
    if chunk.embedding is not None:
        doc["embedding"] = chunk.embedding
    return doc


def chunk_of(row: Mapping[str, Any], embedding: list[float] | None = None, **keys: str) -> Chunk:
    return Chunk(**stored_fields(row, **keys), embedding=embedding)


def hit_of(row: Mapping[str, Any], score: float, **keys: str) -> SearchHit:
    return SearchHit(**stored_fields(row, **keys), score=score)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """`items` in consecutive slices of at most `size` (for engines that bound a request)."""
    return (items[i:i + size] for i in range(0, len(items), size))


def _twin(method: Callable[..., Any]) -> Callable[..., Any]:
    """The awaitable twin of a `VectorDb` method: the store's own method (an override too) run
    in a worker thread, an iterator argument (chunks as a generator) listed first, here."""
    name = method.__name__

    @functools.wraps(method)
    async def twin(self: VectorDb, *args: Any, **kwargs: Any) -> Any:
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        return await asyncio.to_thread(getattr(self, name), *args, **kwargs)

    twin.__name__, twin.__qualname__ = "a" + name, "VectorDb.a" + name
    return twin


class StoreOptions(TypedDict, total=False):
    """The options every store takes, checked by `VectorDb.__init__` (defaults there)."""

    dimensions: int | None
    search_type: str
    distance: str
    vector_weight: float
    keyword_weight: float
    rrf_k: int
    hybrid_candidates: int
    fusion: str
    language: str


class VectorDb(abc.ABC):
    """A store of chunks and their embeddings. See `agentkeep.vector_db.base` for the semantics.

    Every method has an `a`-prefixed awaitable twin (`asearch`, `aupsert`, ...) that runs
    the sync method in a worker thread; stores with a native async driver may override them.
    """

    DISTANCES: Iterable[str] = ("cosine", "l2", "inner_product")  # a dict: its keys
    MAX_DIMENSIONS = 65_535
    GET_BATCH: int | None = None  # the most ids `_get` is given at once (None: all)
    INTEGERS: tuple[int, int, str] | None = None  # (low, high, why): the only JSON integers it holds
    DIMENSIONS_LIMIT = ""  # whose limit MAX_DIMENSIONS is, for the message: " (pgvector's limit)"
    ENGINE = "the vector store"  # the server's name in "cannot connect to ..."
    UNREACHABLE: tuple[str, ...] = ()  # "module.Class" of driver errors: the server was not reached
    GONE: tuple[str, ...] | None = ()  # "module.Class" of driver errors: the store is not there
    # (None: a driver whose errors do not say so; after any error the store looks whether it is)
    label = "vector store"  # the store in messages: "Chroma collection my_kb"
    search_type: str = "vector"
    dimensions: int | None = None
    _known = False

    def __init__(self, *, dimensions: int | None = None, search_type: str = "vector", distance: str = "cosine",
                 vector_weight: float = 1.0, keyword_weight: float = 1.0, rrf_k: int = 60,
                 hybrid_candidates: int = 40, fusion: str = "rrf", language: str = "english") -> None:
        self.search_type = check_search_type(search_type)
        self.fusion = check_choice(fusion, "fusion", FUSIONS)
        if not isinstance(language, str):
            raise InvalidInputError(f"language must be a string, got {type(language).__name__}")
        self.analyzer: Analyzer = analyzer(language)  # the keyword terms of chunks and queries
        self.language = language
        self.distance = check_choice(distance, "distance", self.DISTANCES)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_int(hybrid_candidates, "hybrid_candidates", 1, 10_000)
        self.dimensions = None if dimensions is None else self._check_dimensions(dimensions)
        self._known = False  # the store was seen to exist with self.dimensions
        self._lifecycle = threading.RLock()

    @classmethod
    def _check_dimensions(cls, dimensions: Any) -> int:
        return check_dimensions(dimensions, cls.MAX_DIMENSIONS, cls.DIMENSIONS_LIMIT)

    # -- primitives (see the module docstring); the two searches are needed only by the base's
    # `_candidates`, which a store that asks for both lists at once overrides instead ----------

    @abc.abstractmethod
    def _stored_dimensions(self) -> int | None: ...

    @abc.abstractmethod
    def _create_store(self, dimensions: int) -> None: ...

    def _complete_store(self) -> None:
        """Add what an existing store lacks (indexes, markers), idempotently."""

    def _exists(self) -> bool:
        return self._stored_dimensions() is not None

    @abc.abstractmethod
    def _drop_store(self) -> None: ...

    @abc.abstractmethod
    def _write(self, chunks: list[Chunk], content_id: str | None) -> None: ...

    @abc.abstractmethod
    def _get(self, ids: list[str]) -> Iterable[Chunk]: ...

    @abc.abstractmethod
    def _delete(self, ids: list[str] | None, content_id: str | None, filters: dict[str, Any]) -> int: ...

    @abc.abstractmethod
    def _count(self, content_id: str | None, filters: dict[str, Any]) -> int: ...

    # A store supplies these two, or overrides `_search` whole (one statement for both lists,
    # as PgVector and Weaviate do); then they are never called.
    def _vector_search(self, embedding: list[float], n: int, filters: dict[str, Any]) -> list[SearchHit]:
        raise NotImplementedError(f"{type(self).__name__} searches in its own _search")

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict[str, Any]) -> list[SearchHit]:
        raise NotImplementedError(f"{type(self).__name__} searches in its own _search")

    def _phrase_checked(self, query: KeywordQuery, hits: list[SearchHit]) -> list[SearchHit]:
        """The hits that hold the query's phrases (and none of its excluded ones), for an engine
        that matched their words but not their order (it asks for `PHRASE_DEPTH` times more)."""
        if not query.positional:
            return hits
        return [h for h in hits if query.matches(self.analyzer.terms(h.content))]

    PHRASE_DEPTH = 10  # a query with a phrase asks an engine without positions for n x this many

    def _candidates(self, kind: str, query: str | None, embedding: list[float] | None, n: int,
                    filters: dict[str, Any]) -> tuple[list[SearchHit], list[SearchHit]]:
        """(vector hits, keyword hits), each at most `n`, the one `kind` does not need empty.
        A query of stopwords only matches nothing."""
        vector = self._vector_search(embedding, n, filters) if kind != "keyword" else []
        parsed = self.analyzer.query(query) if kind != "vector" else None
        keyword = self._keyword_search(parsed, n, filters) if parsed else []
        return vector, keyword

    # -- lifecycle -----------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        """Create the store if missing (idempotent). `dimensions` is required the first
        time unless given to the constructor; an existing store must agree with it."""
        if dimensions is not None:
            self._check_dimensions(dimensions)
        wanted = dimensions or self.dimensions
        with self._translated(lifecycle=True), self._lifecycle:
            stored = self._stored_dimensions()
            if stored is None:
                if wanted is None:
                    raise InvalidInputError(
                        f"create() needs dimensions= (or {type(self).__name__}(dimensions=...)) the first time")
                self._create_store(wanted)
                stored = self._stored_dimensions()  # as made, here or by another process first
                if stored is None:
                    raise self._gone()
            self._adopt(stored, wanted)
            self._complete_store()

    def _adopt(self, stored: int, wanted: int | None) -> None:
        if wanted is not None and wanted != stored:
            raise dimension_mismatch(self.label, stored, wanted)
        self.dimensions = stored
        self._known = True

    def _ready(self) -> None:
        """Before an operation: learn the stored dimensions once (NotFoundError: no store)."""
        if self._known:
            return
        with self._lifecycle:
            if not self._known:
                stored = self._stored_dimensions()
                if stored is None:
                    raise self._gone()
                self._adopt(stored, self.dimensions)

    def _gone(self) -> NotFoundError:
        """The error for a store that is not there (any more): the next call looks again."""
        self._known = False
        return NotFoundError(f"{self.label} does not exist: call create() first")

    def exists(self) -> bool:
        with self._translated(lifecycle=True):
            return self._exists()

    def drop(self) -> None:
        """Remove the store and everything in it (no error when it does not exist)."""
        with self._translated(lifecycle=True), self._lifecycle:
            self._known = False
            self._drop_store()

    # -- writes and reads ---------------------------------------------------------------------

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        """Insert or replace chunks by id; returns how many were written."""
        with self._translated():
            self._ready()
            checked = self._checked(chunks)
            if checked:
                self._write(checked, None)
            return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """Make `chunks` the only chunks of `content_id` (their content_id is set to it);
        returns how many were written. Atomic where the engine allows (see its page)."""
        check_id(content_id, "content_id")
        with self._translated():
            self._ready()
            checked = self._checked(chunks, content_id)
            self._write(checked, content_id)
            return len(checked)

    def _checked(self, chunks: Iterable[Chunk], content_id: str | None = None) -> list[Chunk]:
        """The chunks, all checked before anything is written; given to `content_id` if any (also
        checked, for a store's `write_plan`)."""
        if content_id is not None:
            check_id(content_id, "content_id")
        checked = check_chunks(chunks, self.dimensions, self.INTEGERS)
        return checked if content_id is None else [c.model_copy(update={"content_id": content_id}) for c in checked]

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids that exist, in the order asked."""
        ids = check_ids(ids)
        with self._translated():
            self._ready()
            if not ids:
                return []
            parts = batches(ids, self.GET_BATCH or len(ids))
            found = {c.id: c for part in parts for c in self._get(list(part))}
            return [found[i] for i in ids if i in found]

    def delete(self, *, ids: Sequence[str] | None = None, content_id: str | None = None,
               filters: dict[str, Any] | None = None) -> int:
        """Delete the chunks matching every condition given (at least one); returns how many."""
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        with self._translated():
            self._ready()
            return 0 if ids == [] else self._delete(ids, content_id, filters)

    def count(self, *, content_id: str | None = None, filters: dict[str, Any] | None = None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        with self._translated():
            self._ready()
            return self._count(content_id, filters)

    def search(self, query: str | None = None, *, embedding: Sequence[float] | None = None, limit: int = 5,
               filters: dict[str, Any] | None = None, search_type: str | None = None) -> list[SearchHit]:
        """The best `limit` chunks. "vector" needs `embedding`, "keyword" needs `query`,
        "hybrid" needs both. Hits carry no embedding."""
        with self._translated():
            self._ready()
            return self._search(*self._search_args(query, embedding, limit, filters, search_type))

    def _search(self, kind: str, query: str | None, embedding: list[float] | None, limit: int,
                filters: dict[str, Any]) -> list[SearchHit]:
        """Both candidate lists (`hybrid_candidates` long) fused by `fuse` for "hybrid"."""
        vector, keyword = self._candidates(kind, query, embedding, self._candidate_count(kind, limit), filters)
        if kind != "hybrid":
            return ranked(vector if kind == "vector" else keyword)[:limit]
        return self._fused(vector, keyword)[:limit]

    def _fused(self, vector: Sequence[SearchHit], keyword: Sequence[SearchHit]) -> list[SearchHit]:
        return fuse(vector, keyword, fusion=self.fusion, vector_weight=self.vector_weight,
                    keyword_weight=self.keyword_weight, k=self.rrf_k)

    def _plan(self, query: Any, embedding: Any, limit: Any, filters: Any, search_type: Any,
              vector: Any, keyword: Any) -> dict[str, Any]:
        """What a search sends, for a store's method that shows it: {"kind", "limit", "n" (each
        list's length), "vector": vector(embedding, n, filters), "keyword": keyword(query, n,
        filters)} for the lists `kind` needs, the arguments checked as `search` checks them."""
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        plan: dict[str, Any] = {"kind": kind, "limit": limit, "n": self._candidate_count(kind, limit)}
        if kind != "keyword":
            plan["vector"] = vector(embedding, plan["n"], filters)
        if kind != "vector":
            plan["keyword"] = keyword(self.analyzer.query(query), plan["n"], filters)
        return plan

    def _shown(self, build: Any, query: Any, embedding: Any, limit: Any, filters: Any, search_type: Any) -> Any:
        """What a search sends, for a store's method that shows it: `build(kind, query, embedding,
        limit, filters)` with the arguments checked as `search` checks them, the store known."""
        with self._translated():
            self._ready()
            return build(*self._search_args(query, embedding, limit, filters, search_type))

    def _candidate_count(self, kind: str, limit: int) -> int:
        """How many hits each candidate list of a search holds."""
        return limit if kind != "hybrid" else max(limit, self.hybrid_candidates)

    # -- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, lifecycle: bool = False) -> Iterator[None]:
        """Driver errors that mean the server cannot be reached become ConnectionFailedError;
        outside create/drop/exists, those that mean the store is gone become NotFoundError."""
        try:
            yield
        except DbError:
            raise
        except Exception as exc:
            error = self._connection_error(exc)
            if error is not None:
                raise error from exc
            if not lifecycle and self._store_gone(exc):
                raise self._gone() from None
            raise

    def _store_gone(self, exc: Exception) -> bool:
        """Whether a driver error says the store is not there (dropped by another process)."""
        from agentkeep.db.connection import raised_as

        if self.GONE is None:
            return not self._exists()
        return bool(self.GONE) and raised_as(exc, *self.GONE)

    def _connection_error(self, exc: Exception) -> Exception | None:
        from agentkeep.db.connection import connection_failed, raised_as

        if not self.UNREACHABLE or not raised_as(exc, *self.UNREACHABLE):
            return None
        return connection_failed(self.ENGINE, self._location(), exc)

    _address: str | None = None  # the server's address, when the store was given one

    def _location(self) -> str:
        """Where the server is, without any password."""
        return self._address or "the client's server"

    # -- the rest of the interface --------------------------------------------------------------

    _client: Any = None  # the driver's client, if the store has one
    _owns_client = False  # made by the store (not passed in): close() closes it

    def close(self) -> None:
        """Release connections (the store's data stays); a client passed in stays open."""
        if self._owns_client and self._client is not None:
            self._client.close()

    def joined_transaction(self, db: Any) -> contextlib.AbstractContextManager:
        """A context whose writes to `db` and to this store commit or roll back together,
        when the store lives in `db`'s own database (PgVector given `db=` that PostgresDb);
        otherwise it joins nothing and each write commits on its own."""
        return contextlib.nullcontext()

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # the awaitable twins (see the class docstring)
    acreate, aexists, adrop, aupsert, areplace, aget, adelete, asearch, acount, aclose = map(
        _twin, (create, exists, drop, upsert, replace, get, delete, search, count, close))

    # -- argument checks ----------------------------------------------------------------------

    def _search_args(self, query: Any, embedding: Any, limit: Any, filters: Any,
                     search_type: Any) -> tuple[str, str | None, list[float] | None, int, dict[str, Any]]:
        kind = check_search_type(self.search_type if search_type is None else search_type)
        limit = check_int(limit, "limit", 1, MAX_LIMIT)
        filters = check_filters(filters)
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if query is not None and "\x00" in query:
            raise InvalidInputError("query must not contain NUL characters")
        if kind in ("vector", "hybrid"):
            if embedding is None:
                raise InvalidInputError(f"{kind} search needs the query's embedding (embedding=...)")
            embedding = check_embedding(embedding, self.dimensions, "query embedding")
        if kind in ("keyword", "hybrid") and (query is None or not query.strip()):
            raise InvalidInputError(f"{kind} search needs a query text")
        return kind, query, embedding, limit, filters

    @staticmethod
    def _delete_args(ids: Any, content_id: Any, filters: Any) -> tuple[list[str] | None, str | None, dict]:
        if ids is None and content_id is None and filters is None:
            raise InvalidInputError("delete needs ids=, content_id= or filters= (use drop() to remove everything)")
        if ids is not None:
            ids = check_ids(ids)
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        if filters == {} and ids is None and content_id is None:
            raise InvalidInputError("an empty filter would delete everything; use drop() for that")
        return ids, content_id, filters
