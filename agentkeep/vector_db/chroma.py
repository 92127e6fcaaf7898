"""ChromaDb: chunks as records of a Chroma collection, on the official `chromadb` client.

    ChromaDb("my_kb", path="/var/lib/kb")        # embedded: a PersistentClient on a folder
    ChromaDb("my_kb", client=chromadb.HttpClient(host="chroma", port=8000))

Record layout, filters and the BM25 ranking of keyword candidates: docs/vector_db/chroma.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, batches, check_int, check_name
from agentkeep.vector_db.base import all_of, check_one_given, chunk_of, distance_score, hit_of, number_forms
from agentkeep.vector_db.base import filter_alternatives, typed_scalar
from agentkeep.vector_db.text import K1, KeywordQuery, bm25, idf

SPACES = {"cosine": "cosine", "l2": "l2", "inner_product": "ip"}
DIMENSIONS_KEY = "agentkeep_dimensions"
STATS_KEY = "agentkeep_bm25_of"  # the keyword statistics collection: whose statistics it holds
TOTALS = " totals"  # its record of the chunk count and their total length (no term holds a space)
SHARDS = 256  # its records of document frequencies: the terms whose hash falls in each, as JSON
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


def typed_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The tagged flat keys of a metadata object's top-level scalars (Chroma metadata is flat;
    its integers are 64-bit: larger ones become floats)."""
    return {f"{t[0]}:{key}": t[1] for key, value in metadata.items() if (t := typed_scalar(value)) is not None}


def where_clause(filters: dict[str, Any], *extra: dict[str, Any], content_id: str | None = None) -> dict | None:
    """A Chroma `where` for a checked metadata filter, a content id and any extra conditions, AND-ed."""
    parts = list(extra) + ([] if content_id is None else [{"_cid": {"$eq": content_id}}])
    for key, values in filter_alternatives(filters):
        by_kind: dict[str, list[Any]] = {}  # each tagged key holds one type: "$in" needs that
        for value in values:
            if isinstance(value, (bool, str)):
                by_kind.setdefault("b" if isinstance(value, bool) else "s", []).append(value)
            else:  # a number matches an integer or a float of the same value, exactly
                for kind, v in number_forms(value):
                    by_kind.setdefault(kind, []).append(v)
        either = [{f"{kind}:{key}": {"$eq": vs[0]} if len(vs) == 1 else {"$in": vs}} for kind, vs in by_kind.items()]
        parts.append(all_of(either, lambda parts: {"$or": parts}))
    return all_of(parts)


def document_clause(query: KeywordQuery, should: Iterable[str] = ()) -> dict[str, Any] | None:
    """A Chroma `where_document` over the space-framed terms: any of the `should` terms given,
    every `+term` and phrase (its terms side by side), no `-term` or excluded phrase."""
    def framed(words) -> str:
        return " " + " ".join(words) + " "

    any_of = [{"$contains": framed([t])} for t in should]
    parts = [all_of(any_of, lambda parts: {"$or": parts})] if any_of else []
    in_phrases = {t for p in query.phrases for t in p}
    parts += [{"$contains": framed([t])} for t in query.must if t not in in_phrases]
    parts += [{"$contains": framed(p)} for p in query.phrases]
    parts += [{"$not_contains": framed([t])} for t in query.must_not]
    parts += [{"$not_contains": framed(p)} for p in query.excluded_phrases]
    return all_of(parts)


def stats_name(collection: str) -> str:
    """The name of the collection that holds a collection's keyword statistics."""
    name = f"{collection}-bm25"
    return name if len(name) <= 512 else f"{collection[:470]}-{hashlib.sha256(collection.encode()).hexdigest()[:32]}-bm25"


def shard_of(term: str) -> str:
    """The statistics record holding a term's document frequency."""
    return f" df{int.from_bytes(hashlib.blake2b(term.encode(), digest_size=2).digest(), 'big') % SHARDS}"


def document_terms(document: str | None) -> list[str]:
    return (document or "").split()


class ChromaDb(VectorDb):
    """A Chroma collection. Give `path` (a PersistentClient of its own) or `client`."""

    DISTANCES = SPACES
    ENGINE = "Chroma"
    UNREACHABLE = ("httpx.ConnectError", "httpx.ConnectTimeout")

    def __init__(self, collection: str, *, path: str | None = None, client: Any = None,
                 keyword_candidates: int = 1000, hnsw: dict[str, Any] | None = None,
                 **options: Unpack[StoreOptions]) -> None:
        self.collection = check_name(collection, "collection", _NAME, "3..512 letters, digits, ., _ or -, "
                                     "starting and ending with a letter or digit")
        super().__init__(**options)
        self.label = f"Chroma collection {collection}"
        self.keyword_candidates = check_int(keyword_candidates, "keyword_candidates", 1, 100_000)
        if hnsw is not None and not isinstance(hnsw, dict):
            raise InvalidInputError("hnsw must be a dict of Chroma HNSW settings (ef_search, max_neighbors, ...)")
        self.hnsw = dict(hnsw or {})
        check_one_given((path, client),
                        "give either path= (a PersistentClient) or client= (e.g. a chromadb.HttpClient)")
        if client is None:
            import chromadb
            from chromadb.config import Settings

            client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        self._owns_client = path is not None
        self._client = client
        self._collection: Any = None  # the opened collection, once seen to exist
        self._stats_collection: Any = None  # the opened keyword statistics collection

    def describe(self) -> str:
        import chromadb

        return f"ChromaDb collection {self.collection} on chromadb {chromadb.__version__}"

    def _location(self) -> str:
        settings = self._client.get_settings()
        return f"{settings.chroma_server_host}:{settings.chroma_server_http_port}"

    def _open(self) -> Any | None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        try:
            # embedding_function=None: never the default model, which Chroma would download
            return self._client.get_collection(self.collection, embedding_function=None)
        except (ChromaNotFound, ValueError):
            return None

    def _stored_dimensions(self) -> int | None:
        col = self._open()
        if col is None:
            return None
        dims = (col.metadata or {}).get(DIMENSIONS_KEY)
        space = ((col.configuration_json or {}).get("hnsw") or {}).get("space", "l2")
        if not isinstance(dims, int):
            raise InvalidInputError(f"{self.label} was not made by agentkeep (no {DIMENSIONS_KEY})")
        if space != SPACES[self.distance]:
            raise InvalidInputError(f"{self.label} uses the {space!r} space, not {SPACES[self.distance]!r}")
        self._collection = col
        return dims

    def _create_store(self, dimensions: int) -> None:
        self._client.get_or_create_collection(  # get_or_create: another process may win
            self.collection, embedding_function=None, metadata={DIMENSIONS_KEY: dimensions},
            configuration={"hnsw": {**self.hnsw, "space": SPACES[self.distance]}},
        )

    def _complete_store(self) -> None:
        """The keyword statistics of a collection made before they were kept: counted once."""
        self._stats()

    def _exists(self) -> bool:
        return self._open() is not None

    def _drop_store(self) -> None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        self._collection = self._stats_collection = None
        for name in (self.collection, stats_name(self.collection)):
            with contextlib.suppress(ChromaNotFound, ValueError):
                self._client.delete_collection(name)

    def _run(self, fn):
        """Run fn(collection). If the collection was dropped meanwhile: NotFoundError, or,
        when it was made again (a new collection id), one more try on the new one."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        for _ in range(2):
            try:
                return fn(self._collection)
            except ChromaNotFound:
                self._known = False
                self._ready()
        raise self._gone()

    def _record(self, c: Chunk) -> tuple[str, list[float], str, dict[str, Any]]:
        meta: dict[str, Any] = {
            "_content": c.content, "_pos": c.position, "_meta": json.dumps(c.metadata),
            "_v": c.embedding is not None, **typed_metadata(c.metadata),
        }
        if c.content_id is not None:
            meta["_cid"] = c.content_id
        placeholder = [1.0] + [0.0] * (self.dimensions - 1)
        document = " " + " ".join(self.analyzer.terms(c.content)) + " "
        return c.id, c.embedding if c.embedding is not None else placeholder, document, meta

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace`: the new chunks, then the removal of the content's others (not atomic); then
        the keyword statistics, by the terms of the records added and of those replaced."""
        records = [self._record(c) for c in chunks]

        def write(col) -> tuple[list[str], list[str]]:
            gone: list[str] = []  # the documents of the records replaced or removed
            for batch in batches(records, self._client.get_max_batch_size()):
                ids, embeddings, documents, metadatas = zip(*batch)
                # Chroma's upsert merges metadata: a key the stored record has and this one lacks
                # (a metadata key, the content id) is removed by giving it as None
                old = col.get(ids=list(ids), include=["metadatas", "documents"])
                stored = dict(zip(old["ids"], old["metadatas"] or []))
                gone += old["documents"] or []
                metadatas = [{**dict.fromkeys(set(stored.get(i) or {}) - set(m)), **m} for i, m in zip(ids, metadatas)]
                col.upsert(ids=list(ids), embeddings=list(embeddings), documents=list(documents),
                           metadatas=metadatas)
            if content_id is not None:
                keep = {c.id for c in chunks}
                old = col.get(where={"_cid": {"$eq": content_id}}, include=["documents"])
                stale = [(i, d) for i, d in zip(old["ids"], old["documents"]) if i not in keep]
                if stale:
                    col.delete(ids=[i for i, _ in stale])
                    gone += [d for _, d in stale]
            return [r[2] for r in records], gone

        added, removed = self._run(write)
        self._with_stats(lambda stats: self._count_terms(stats, added, removed))

    def _delete(self, ids, content_id, filters) -> int:
        """The matching records are read (their terms leave the statistics), then deleted by id."""
        where = where_clause(filters, content_id=content_id)

        def delete(col) -> list[str]:
            found = col.get(ids=ids, where=where, include=["documents"])
            if found["ids"]:
                col.delete(ids=found["ids"])
            return found["documents"] or []

        removed = self._run(delete)
        self._with_stats(lambda stats: self._count_terms(stats, [], removed))
        return len(removed)

    # -- keyword statistics: a side collection of term -> document frequency, and the totals ----

    def _stats(self) -> Any:
        """The keyword statistics collection, made (and counted from the records) if missing."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        if self._stats_collection is not None:
            return self._stats_collection
        name = stats_name(self.collection)
        try:
            stats = self._client.get_collection(name, embedding_function=None)
        except (ChromaNotFound, ValueError):
            stats = None
        if stats is not None and (stats.metadata or {}).get(STATS_KEY) != self.collection:
            raise InvalidInputError(f"Chroma collection {name} is not the keyword statistics of {self.collection}")
        if stats is None:
            documents = self._all_documents()  # first: the collection is there
            stats = self._client.get_or_create_collection(name, embedding_function=None,
                                                          metadata={STATS_KEY: self.collection})
            self._count_terms(stats, documents, [])
        self._stats_collection = stats
        return stats

    def _with_stats(self, fn) -> Any:
        """fn(statistics collection), once more on a fresh one if it was dropped meanwhile."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        try:
            return fn(self._stats())
        except ChromaNotFound:
            self._stats_collection = None
            return fn(self._stats())

    def _all_documents(self) -> list[str]:
        """Every record's document (the whole collection, read once to count its statistics)."""
        documents: list[str] = []
        page = self._client.get_max_batch_size()
        while True:
            got = self._run(lambda col: col.get(include=["documents"], limit=page, offset=len(documents)))
            documents += got["documents"] or []
            if len(got["ids"]) < page:
                return documents

    def rebuild_keyword_statistics(self) -> None:
        """Count the keyword statistics again from the records (after writers that raced)."""
        with self._translated():
            self._ready()
            self._client.delete_collection(stats_name(self.collection))
            self._stats_collection = None
            self._stats()

    def _count_terms(self, stats: Any, added: list[str], removed: list[str]) -> None:
        """Apply the documents added and removed to the statistics: each term's document
        frequency (in the shard record its hash picks), the number of chunks and their length."""
        df: Counter = Counter()
        chunks = length = 0
        for sign, documents in ((1, added), (-1, removed)):
            for doc in documents:
                words = document_terms(doc)
                df.update({t: sign for t in set(words)})
                chunks, length = chunks + sign, length + sign * len(words)
        by_shard: dict[str, list[str]] = {}
        for t, d in df.items():
            if d:
                by_shard.setdefault(shard_of(t), []).append(t)
        if not (by_shard or chunks or length):
            return
        got = stats.get(ids=[*by_shard, TOTALS], include=["metadatas"])
        now = dict(zip(got["ids"], got["metadatas"]))
        totals = now.get(TOTALS) or {}
        records = {TOTALS: {"chunks": totals.get("chunks", 0) + chunks, "length": totals.get("length", 0) + length}}
        for shard, words in by_shard.items():
            counts = json.loads((now.get(shard) or {}).get("df", "{}"))
            for t in words:
                counts[t] = counts.get(t, 0) + df[t]
                if counts[t] <= 0:
                    del counts[t]
            records[shard] = {"df": json.dumps(counts, separators=(",", ":"), sort_keys=True)}
        stats.upsert(ids=list(records), embeddings=[[1.0]] * len(records), metadatas=list(records.values()))

    def _statistics(self, words: Iterable[str]) -> tuple[int, float, dict[str, int]]:
        """(chunks, average length, each term's document frequency) from the statistics."""
        words = list(dict.fromkeys(words))
        keys = [*dict.fromkeys(shard_of(t) for t in words), TOTALS]
        got = self._with_stats(lambda stats: stats.get(ids=keys, include=["metadatas"]))
        now = dict(zip(got["ids"], got["metadatas"]))
        totals = now.get(TOTALS) or {}
        chunks = totals.get("chunks", 0)
        shards = {k: json.loads(m.get("df", "{}")) for k, m in now.items() if k != TOTALS}
        dfs = {t: shards.get(shard_of(t), {}).get(t, 0) for t in words}
        return chunks, totals.get("length", 0) / chunks if chunks else 1.0, dfs

    def _get(self, ids: list[str]) -> list[Chunk]:
        got = self._run(lambda col: col.get(ids=ids, include=["metadatas", "embeddings"]))
        return [chunk_of(_row(i, m), [float(x) for x in e] if e is not None and m.get("_v") else None)
                for i, m, e in zip(got["ids"], got["metadatas"], got["embeddings"])]

    def _count(self, content_id, filters) -> int:
        where = where_clause(filters, content_id=content_id)
        if where is None:
            return self._run(lambda col: col.count())
        return self._run(lambda col: len(col.get(where=where, include=[])["ids"]))

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        # `_v` only when a placeholder is in the answer: Chroma scans every record for a `where`
        def query(col):
            got = col.query(query_embeddings=[embedding], n_results=n, where=where_clause(filters),
                            include=["distances", "metadatas"])
            if not all(m.get("_v") for m in got["metadatas"][0]):
                got = col.query(query_embeddings=[embedding], n_results=n, include=["distances", "metadatas"],
                                where=where_clause(filters, {"_v": {"$eq": True}}))
            return got

        got = self._run(query)
        # Chroma's distances: cosine 1 - cos, ip 1 - dot, l2 squared
        return [hit_of(_row(i, m), distance_score(self.distance, d))
                for i, m, d in zip(got["ids"][0], got["metadatas"][0], got["distances"][0])]

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        """BM25 over the matching records, with the corpus statistics of the side collection.
        Chroma finds the candidates (`$contains` on its full-text index); they are ranked here."""
        total, avg_len, dfs = self._statistics(query.ranked)
        should = [t for t in query.should if dfs[t]]  # a term no chunk holds can match none
        if any(not dfs[t] for t in query.must) or not (query.must or should):
            return []
        idfs = {t: idf(total, df) for t, df in dfs.items()}
        bound, where = self.keyword_candidates, where_clause(filters)
        scores: dict[str, float] = {}

        def fetch(col, clause) -> bool:
            """Score the matches of `clause`; whether they were all read (not cut at `bound`)."""
            got = col.get(where=where, where_document=clause, limit=bound, include=["documents"])
            for id_, doc in zip(got["ids"], got["documents"]):
                words = document_terms(doc)
                scores[id_] = bm25(Counter(words), len(words), avg_len, query.ranked, idfs)
            return len(got["ids"]) < bound

        def candidates(col) -> None:
            if query.must:  # the `should` terms only rank
                fetch(col, document_clause(query))
            elif sum(dfs[t] for t in should) <= bound:  # every match fits in one request
                fetch(col, document_clause(query, should))
            else:  # each term's chunks (up to `bound`), rarest first, while a chunk not read yet
                # could still reach the n-th best score: it holds no term read in full, so it
                # scores at most the other terms' idf x (k1 + 1), BM25's ceiling for a term
                unread = sorted(should, key=lambda t: dfs[t])
                for t in list(unread):
                    best = sorted(scores.values(), reverse=True)[:n]
                    if len(best) == n and best[-1] >= sum(idfs[u] * (K1 + 1) for u in unread):
                        return
                    if fetch(col, document_clause(query, [t])):
                        unread.remove(t)

        self._run(candidates)
        top = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:n]
        if not top:
            return []
        # the candidates were ranked without their metadata: only the best n fetch it
        got = self._run(lambda col: col.get(ids=[i for i, _ in top], include=["metadatas"]))
        metas = dict(zip(got["ids"], got["metadatas"]))
        return [hit_of(_row(i, metas[i]), s) for i, s in top if i in metas]


def _row(id_: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A record's fields by the names `chunk_of` and `hit_of` read."""
    return {"id": id_, "content": meta["_content"], "content_id": meta.get("_cid"), "position": meta.get("_pos"),
            "metadata": meta.get("_meta")}
