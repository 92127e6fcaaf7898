"""InMemoryVectorDb: a vector store in this process's memory, exact and thread-safe.

It is the reference store of the conformance suite and handy for tests and small
knowledge bases: vector search is an exact scan, keyword search BM25 over the analyzer's
terms (any query term may match; `+term`, `-term` and "phrases" narrow it, see
`agentkeep.vector_db.text`), with term statistics kept as chunks come and go, hybrid the
same fusion as every other store. Nothing persists.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Unpack

from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_id, l2_score, matches
from agentkeep.vector_db.text import KeywordQuery, bm25, idf


class InMemoryVectorDb(VectorDb):
    """InMemoryVectorDb("my_kb", dimensions=None, search_type="vector", distance="cosine", ...).

    `table_name` takes the place every other store's table or collection name has, so one
    store can stand in for another; it only labels this store."""

    def __init__(self, table_name: str | None = None, **options: Unpack[StoreOptions]) -> None:
        if table_name is not None:
            check_id(table_name, "table_name")
        super().__init__(**options)
        self.table_name = table_name
        self.label = f"in-memory table {table_name}" if table_name else "in-memory store"
        self._rows: dict[str, Chunk] | None = None
        self._stored: int | None = None
        self._terms: dict[str, tuple[list[str], Counter]] = {}  # id -> (terms in order, their counts)
        self._postings: dict[str, set[str]] = {}  # term -> ids of the chunks holding it
        self._length = 0  # the terms of every chunk, for the average length
        self._contents: dict[str, set[str]] = {}  # content id -> its chunks' ids (replace without a scan)
        self._lock = threading.RLock()

    def describe(self) -> str:
        return f"{self.label} (this process only, exact search)"

    def _stored_dimensions(self) -> int | None:
        return None if self._rows is None else self._stored

    def _create_store(self, dimensions: int) -> None:
        with self._lock:
            self._rows, self._stored = {}, dimensions

    def _exists(self) -> bool:
        return self._rows is not None

    def _drop_store(self) -> None:
        with self._lock:
            self._rows = None
            self._terms, self._postings, self._length, self._contents = {}, {}, 0, {}

    def _table(self) -> dict[str, Chunk]:
        if self._rows is None:
            raise self._gone()
        return self._rows

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        with self._lock:
            rows = self._table()
            if content_id is not None:
                self._remove([rows[i] for i in list(self._contents.get(content_id, ()))])
            for c in chunks:
                if c.id in rows:
                    self._unindex(c.id)
                rows[c.id] = c
                if c.content_id is not None:
                    self._contents.setdefault(c.content_id, set()).add(c.id)
                words = self.analyzer.terms(c.content)
                self._terms[c.id] = (words, Counter(words))
                self._length += len(words)
                for t in self._terms[c.id][1]:
                    self._postings.setdefault(t, set()).add(c.id)

    def _unindex(self, id_: str) -> None:
        content_id = self._rows[id_].content_id
        if content_id is not None:
            self._contents[content_id].discard(id_)
            if not self._contents[content_id]:
                del self._contents[content_id]
        words, counts = self._terms.pop(id_)
        self._length -= len(words)
        for t in counts:
            self._postings[t].discard(id_)
            if not self._postings[t]:
                del self._postings[t]

    def _remove(self, doomed: list[Chunk]) -> int:
        for c in doomed:
            self._unindex(c.id)
            del self._rows[c.id]
        return len(doomed)

    def _get(self, ids: list[str]) -> list[Chunk]:
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

    def _delete(self, ids, content_id, filters) -> int:
        with self._lock:
            return self._remove(self._select(ids, content_id, filters))

    def _count(self, content_id, filters) -> int:
        with self._lock:
            return len(self._select(None, content_id, filters))

    def _candidates(self, kind, query, embedding, n, filters):
        with self._lock:  # both lists from the same rows
            return super()._candidates(kind, query, embedding, n, filters)

    @staticmethod
    def _top(scored: list[tuple[Chunk, float]], n: int) -> list[SearchHit]:
        scored.sort(key=lambda item: (-item[1], item[0].id))
        return [SearchHit(**c.model_dump(exclude={"embedding"}), score=s) for c, s in scored[:n]]

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        scored = []
        q = embedding
        qnorm = math.sqrt(sum(x * x for x in q))
        for c in self._select(None, None, filters):
            if c.embedding is None:
                continue
            e = c.embedding
            if self.distance == "l2":
                score = l2_score(sum((a - b) ** 2 for a, b in zip(e, q)))
            else:
                dot = sum(a * b for a, b in zip(e, q))
                if self.distance == "inner_product":
                    score = dot
                else:
                    norm = math.sqrt(sum(a * a for a in e)) * qnorm
                    score = dot / norm if norm else 0.0
            scored.append((c, score))
        return self._top(scored, n)

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        """BM25 over the chunks holding any ranked term, narrowed as the query says."""
        rows, total = self._table(), len(self._terms) or 1
        avg_len = self._length / total or 1.0
        idfs = {t: idf(total, len(self._postings.get(t, ()))) for t in query.ranked}
        found = set().union(*(self._postings.get(t, set()) for t in query.ranked))
        scored = []
        for id_ in found:
            words, counts = self._terms[id_]
            if query.matches(words, counts) and matches(rows[id_].metadata, filters):
                scored.append((rows[id_], bm25(counts, len(words), avg_len, query.ranked, idfs)))
        return self._top(scored, n)
