"""InMemoryVectorDb: a vector store in this process's memory, exact and thread-safe.

It is the reference store of the conformance suite and handy for tests and small
knowledge bases: vector search is an exact scan, keyword search a BM25 ranking over
lightly stemmed English terms where every query term must match (a term written `-term`
must not), hybrid the same reciprocal-rank fusion as every other store. Nothing persists.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Iterable, Sequence

from agentkeep.db.errors import InvalidInputError
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
    matches,
    rrf_top,
)
from agentkeep.vector_db.text import STOPWORDS, query_terms, stem, terms  # noqa: F401  (re-exported)

DISTANCES = ("cosine", "l2", "inner_product")

class InMemoryVectorDb(VectorDb):
    """InMemoryVectorDb("my_kb", dimensions=None, search_type="vector", distance="cosine", ...).

    `table_name` takes the place every other store's table or collection name has, so one
    store can stand in for another; it only labels this store."""

    def __init__(
        self,
        table_name: str | None = None,
        *,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        if table_name is not None:
            check_id(table_name, "table_name")
        check_choice(distance, "distance", DISTANCES)
        self.table_name = table_name
        self.search_type = check_search_type(search_type)
        self.distance = distance
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else check_dimensions(dimensions)
        self._rows: dict[str, Chunk] | None = None
        self._terms: dict[str, Counter] = {}
        self._lock = threading.RLock()

    def describe(self) -> str:
        return f"{self._label()} (this process only, exact search)"

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        if dimensions is not None:
            check_dimensions(dimensions)
        with self._lock:
            if self.dimensions is not None and dimensions is not None and dimensions != self.dimensions:
                raise dimension_mismatch(self._label(), self.dimensions, dimensions)
            if self.dimensions is None:
                if dimensions is None:
                    raise InvalidInputError("create() needs dimensions= the first time")
                self.dimensions = dimensions
            if self._rows is None:
                self._rows = {}

    def exists(self) -> bool:
        return self._rows is not None

    def drop(self) -> None:
        with self._lock:
            self._rows = None
            self._terms = {}

    def _label(self) -> str:
        return f"in-memory table {self.table_name}" if self.table_name else "in-memory store"

    def _table(self) -> dict[str, Chunk]:
        if self._rows is None:
            raise InvalidInputError("the store does not exist yet: call create() first")
        return self._rows

    # -- writes ----------------------------------------------------------------------------

    def _put(self, rows: dict[str, Chunk], chunk: Chunk) -> None:
        rows[chunk.id] = chunk
        self._terms[chunk.id] = Counter(terms(chunk.content))

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        with self._lock:
            rows = self._table()
            checked = check_chunks(chunks, self.dimensions)
            for c in checked:
                self._put(rows, c)
            return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        check_id(content_id, "content_id")
        with self._lock:
            rows = self._table()
            checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
            for id_ in [i for i, c in rows.items() if c.content_id == content_id]:
                del rows[id_]
                self._terms.pop(id_, None)
            for c in checked:
                self._put(rows, c)
            return len(checked)

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        with self._lock:
            rows = self._table()
            return [rows[i].model_copy(deep=True) for i in ids if i in rows]

    def _select(self, ids: list[str] | None, content_id: str | None, filters: dict) -> list[Chunk]:
        rows = self._table()
        pool = [rows[i] for i in ids if i in rows] if ids is not None else rows.values()
        return [
            c for c in pool
            if (content_id is None or c.content_id == content_id) and matches(c.metadata, filters)
        ]

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        with self._lock:
            rows = self._table()
            doomed = self._select(ids, content_id, filters)
            for c in doomed:
                del rows[c.id]
                self._terms.pop(c.id, None)
            return len(doomed)

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        with self._lock:
            return len(self._select(None, content_id, filters))

    # -- search ----------------------------------------------------------------------------

    def _vector_ranking(self, pool: list[Chunk], q: list[float], n: int) -> list[tuple[Chunk, float]]:
        scored = []
        qnorm = math.sqrt(sum(x * x for x in q))
        for c in pool:
            if c.embedding is None:
                continue
            e = c.embedding
            if self.distance == "l2":
                score = 1.0 / (1.0 + math.sqrt(sum((a - b) ** 2 for a, b in zip(e, q))))
            else:
                dot = sum(a * b for a, b in zip(e, q))
                if self.distance == "inner_product":
                    score = dot
                else:
                    norm = math.sqrt(sum(a * a for a in e)) * qnorm
                    score = dot / norm if norm else 0.0
            scored.append((c, score))
        scored.sort(key=lambda item: (-item[1], item[0].id))
        return scored[:n]

    def _keyword_ranking(self, pool: list[Chunk], query: str, n: int) -> list[tuple[Chunk, float]]:
        wanted, unwanted = query_terms(query)
        if not wanted:
            return []
        docs = [(c, self._terms[c.id]) for c in pool]
        total = len(self._terms) or 1
        avg_len = sum(sum(t.values()) for t in self._terms.values()) / total or 1.0
        scored = []
        for c, tf in docs:
            if not all(w in tf for w in wanted) or any(w in tf for w in unwanted):
                continue
            length = sum(tf.values())
            score = 0.0
            for w in set(wanted):
                df = sum(1 for t in self._terms.values() if w in t)
                idf = math.log(1 + (total - df + 0.5) / (df + 0.5))
                score += idf * tf[w] * 2.2 / (tf[w] + 1.2 * (0.25 + 0.75 * length / avg_len))
            scored.append((c, score))
        scored.sort(key=lambda item: (-item[1], item[0].id))
        return scored[:n]

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        with self._lock:
            pool = self._select(None, None, filters)
            if kind == "vector":
                ranked = self._vector_ranking(pool, embedding, limit)
            elif kind == "keyword":
                ranked = self._keyword_ranking(pool, query, limit)
            else:
                n = max(limit, self.hybrid_candidates)
                v = self._vector_ranking(pool, embedding, n)
                k = self._keyword_ranking(pool, query, n)
                ranked = rrf_top([c for c, _ in v], [c for c, _ in k], limit, key=lambda c: c.id,
                                 vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
            return [
                SearchHit(**c.model_dump(exclude={"embedding"}), score=score) for c, score in ranked
            ]

