"""ChromaDb: chunks as records of a Chroma collection, on the official `chromadb` client.

    ChromaDb("my_kb", path="/var/lib/kb")        # embedded: a PersistentClient on a folder
    ChromaDb("my_kb", client=chromadb.HttpClient(host="chroma", port=8000))

One collection per knowledge base; the record id is the chunk id. Embeddings are always
passed in, and the collection is created and opened with `embedding_function=None`, so
Chroma never runs (or downloads) its default embedding model. The vector space is the
chosen distance (`cosine`, `l2`, `ip`); the dimensions are kept in the collection metadata.

What a record holds:

- its embedding; a chunk without one gets a placeholder vector and `_v: false`, and a
  vector query whose answer holds a placeholder is asked again for `_v: true` only, so such
  a chunk is found by keyword search only;
- as its document, the chunk's keyword terms (`in_memory.terms()`: lowercased, stopword-free,
  lightly stemmed) joined by single spaces with a space at each end, so `$contains " term "`
  matches a whole term;
- in its metadata: the content (`_content`), content_id (`_cid`), position (`_pos`), the
  original metadata as JSON (`_meta`, returned as written), and each top-level scalar of the
  metadata under a type-tagged key, `s:<key>` strings, `b:<key>` booleans, `i:<key>`
  64-bit integers, `n:<key>` other numbers (as floats). A filter becomes a `where` on the
  tagged keys, which gives the suite's type rules: a number asks for `i:` or `n:` with the
  same value (1 matches 1.0; 2**62 + 1 does not match 2.0**62), a boolean is never a number
  or a string, and a list, object or null is never copied, so it never matches.

Keyword search: Chroma's full-text index finds the records whose document holds every wanted
term and none of the `-terms` (`where_document` with `$contains`/`$not_contains`, plus the
filter as `where`), at most `keyword_candidates` of them; those are ranked by BM25 (k1 1.2,
b 0.75) here, with the collection's record count and each term's document frequency
(counted by Chroma, up to `keyword_candidates`) for the IDF and the candidates' mean length
as the average length. Hybrid search fuses the vector and keyword candidate lists with
`rrf_fuse`.
"""

from __future__ import annotations

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
    check_int,
    check_search_type,
    check_weights,
    dimension_mismatch,
    number_forms,
    rrf_fuse,
    typed_scalar,
)
from agentkeep.vector_db.text import query_terms, terms

SPACES = {"cosine": "cosine", "l2": "l2", "inner_product": "ip"}
DIMENSIONS_KEY = "agentkeep_dimensions"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
K1, B = 1.2, 0.75


def typed_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The tagged flat keys of a metadata object's top-level scalars (Chroma metadata is flat)."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        typed = typed_scalar(value)  # Chroma integers are 64-bit: larger ones become floats
        if typed is not None:
            out[typed[0] + ":" + key] = typed[1]
    return out


def where_clause(filters: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any] | None:
    """A Chroma `where` for a checked metadata filter and any extra conditions, AND-ed."""
    parts = list(extra)
    for key, value in filters.items():
        if isinstance(value, bool):
            parts.append({"b:" + key: {"$eq": value}})
        elif isinstance(value, str):
            parts.append({"s:" + key: {"$eq": value}})
        else:  # a number matches an integer or a float of the same value, exactly
            either = [{kind + ":" + key: {"$eq": v}} for kind, v in number_forms(value)]
            parts.append(either[0] if len(either) == 1 else {"$or": either})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def document_clause(wanted: list[str], unwanted: list[str]) -> dict[str, Any]:
    """A Chroma `where_document`: every wanted term present, every unwanted one absent."""
    parts = [{"$contains": f" {t} "} for t in wanted] + [{"$not_contains": f" {t} "} for t in unwanted]
    return parts[0] if len(parts) == 1 else {"$and": parts}


class ChromaDb(VectorDb):
    """A Chroma collection. Give `path` (a PersistentClient of its own) or `client`."""

    def __init__(
        self,
        collection: str,
        *,
        path: str | None = None,
        client: Any = None,
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
        keyword_candidates: int = 1000,
        hnsw: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise InvalidInputError(
                f"collection must be 3..512 letters, digits, ., _ or -, starting and ending with a letter or digit; "
                f"got {collection!r}")
        self.collection = collection
        self.search_type = check_search_type(search_type)
        self.distance = check_choice(distance, "distance", SPACES)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.keyword_candidates = check_int(keyword_candidates, "keyword_candidates", 1, 100_000)
        if hnsw is not None and not isinstance(hnsw, dict):
            raise InvalidInputError("hnsw must be a dict of Chroma HNSW settings (ef_search, max_neighbors, ...)")
        self.hnsw = dict(hnsw or {})
        self.dimensions = None if dimensions is None else check_dimensions(dimensions)
        if (path is None) == (client is None):
            raise InvalidInputError("give either path= (a PersistentClient) or client= (e.g. a chromadb.HttpClient)")
        if client is None:
            import chromadb
            from chromadb.config import Settings

            client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        self._owns_client = path is not None
        self._client = client
        self._collection: Any = None  # the opened collection, once seen to exist

    def describe(self) -> str:
        import chromadb

        return f"ChromaDb collection {self.collection} on chromadb {chromadb.__version__}"

    def close(self) -> None:
        """Closes the PersistentClient this store opened (Chroma then releases the folder);
        a client passed in stays open."""
        if self._owns_client and hasattr(self._client, "close"):
            self._client.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _missing(self) -> str:
        return f"Chroma collection {self.collection} does not exist: call create() first"

    def _open(self) -> Any | None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        try:
            # embedding_function=None: never the default model, which Chroma would download
            return self._client.get_collection(self.collection, embedding_function=None)
        except (ChromaNotFound, ValueError):
            return None

    def _adopt(self, col: Any, wanted: int | None) -> None:
        dims = (col.metadata or {}).get(DIMENSIONS_KEY)
        space = ((col.configuration_json or {}).get("hnsw") or {}).get("space", "l2")
        if not isinstance(dims, int):
            raise InvalidInputError(
                f"Chroma collection {self.collection} was not made by agentkeep (no {DIMENSIONS_KEY})")
        if wanted is not None and wanted != dims:
            raise dimension_mismatch(f"Chroma collection {self.collection}", dims, wanted)
        if space != SPACES[self.distance]:
            raise InvalidInputError(
                f"Chroma collection {self.collection} uses the {space!r} space, not {SPACES[self.distance]!r}")
        self.dimensions = dims
        self._collection = col

    def _col(self) -> Any:
        if self._collection is None:
            col = self._open()
            if col is None:
                raise NotFoundError(self._missing())
            self._adopt(col, self.dimensions)
        return self._collection

    def _run(self, fn):
        """Run fn(collection). If the collection was dropped meanwhile: NotFoundError, or,
        when it was made again (a new collection id), one more try on the new one."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        col = self._col()
        try:
            return fn(col)
        except ChromaNotFound:
            self._collection = None
        try:
            return fn(self._col())
        except ChromaNotFound:
            self._collection = None
            raise NotFoundError(self._missing()) from None

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, dimensions: int | None = None) -> None:
        if dimensions is not None:
            check_dimensions(dimensions)
        wanted = dimensions or self.dimensions
        col = self._open()
        if col is None:
            if wanted is None:
                raise InvalidInputError("create() needs dimensions= (or ChromaDb(dimensions=...)) the first time")
            col = self._client.get_or_create_collection(  # get_or_create: another process may win
                self.collection, embedding_function=None, metadata={DIMENSIONS_KEY: wanted},
                configuration={"hnsw": {**self.hnsw, "space": SPACES[self.distance]}},
            )
        self._adopt(col, wanted)

    def exists(self) -> bool:
        return self._open() is not None

    def drop(self) -> None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        try:
            self._client.delete_collection(self.collection)
        except (ChromaNotFound, ValueError):
            pass
        self._collection = None

    # -- writes -----------------------------------------------------------------------------

    def _record(self, c: Chunk) -> tuple[str, list[float], str, dict[str, Any]]:
        meta: dict[str, Any] = {
            "_content": c.content, "_pos": c.position, "_meta": json.dumps(c.metadata),
            "_v": c.embedding is not None, **typed_metadata(c.metadata),
        }
        if c.content_id is not None:
            meta["_cid"] = c.content_id
        placeholder = [1.0] + [0.0] * (self.dimensions - 1)
        document = " " + " ".join(terms(c.content)) + " "
        return c.id, c.embedding if c.embedding is not None else placeholder, document, meta

    def _write(self, col: Any, checked: list[Chunk]) -> None:
        records = [self._record(c) for c in checked]
        step = self._client.get_max_batch_size()
        for i in range(0, len(records), step):
            ids, embeddings, documents, metadatas = zip(*records[i:i + step])
            col.upsert(ids=list(ids), embeddings=list(embeddings), documents=list(documents),
                       metadatas=list(metadatas))

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._col()
        checked = check_chunks(chunks, self.dimensions)
        if checked:
            self._run(lambda col: self._write(col, checked))
        return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """Upserts the new chunks, then deletes the content's other chunks. Chroma has no
        transactions: a reader may see old and new chunks side by side for a moment, and a
        failure between the two steps leaves stale chunks (never a content without its new ones)."""
        check_id(content_id, "content_id")
        self._col()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        keep = {c.id for c in checked}

        def write(col):
            if checked:
                self._write(col, checked)
            old = col.get(where={"_cid": {"$eq": content_id}}, include=[])["ids"]
            stale = [i for i in old if i not in keep]
            if stale:
                col.delete(ids=stale)

        self._run(write)
        return len(checked)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._col()
        if ids == []:
            return 0
        where = where_clause(filters, *([{"_cid": {"$eq": content_id}}] if content_id is not None else []))

        return self._run(lambda col: col.delete(ids=ids, where=where)["deleted"])  # Chroma counts them

    # -- reads ------------------------------------------------------------------------------

    @staticmethod
    def _chunk(id_: str, meta: dict[str, Any], embedding: Any = None) -> Chunk:
        return Chunk(id=id_, content=meta["_content"], content_id=meta.get("_cid"), position=meta.get("_pos", 0),
                     metadata=json.loads(meta.get("_meta") or "{}"),
                     embedding=None if embedding is None or not meta.get("_v") else [float(x) for x in embedding])

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._col()
        if not ids:
            return []
        got = self._run(lambda col: col.get(ids=ids, include=["metadatas", "embeddings"]))
        found = {i: self._chunk(i, m, e) for i, m, e in zip(got["ids"], got["metadatas"], got["embeddings"])}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        """The whole collection's count is Chroma's; with conditions, the matching ids are
        fetched (Chroma has no filtered count) and counted."""
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        where = where_clause(filters, *([{"_cid": {"$eq": content_id}}] if content_id is not None else []))
        if where is None:
            return self._run(lambda col: col.count())
        return self._run(lambda col: len(col.get(where=where, include=[])["ids"]))

    def _score(self, distance: float) -> float:
        if self.distance == "l2":  # Chroma's l2 is the squared distance
            return 1.0 / (1.0 + math.sqrt(max(distance, 0.0)))
        return 1.0 - distance  # cosine: 1 - cos; ip: 1 - dot

    def _vector_ranking(self, col: Any, embedding: list[float], n: int, filters: dict,
                        metas: dict[str, dict]) -> list[tuple[str, float]]:
        # Chroma evaluates a `where` over every record before its HNSW search, so the `_v`
        # condition is added only when a placeholder vector made it into the answer: without
        # one, the nearest n records are also the nearest n with a real embedding.
        got = col.query(query_embeddings=[embedding], n_results=n, where=where_clause(filters),
                        include=["distances", "metadatas"])
        if not all(m.get("_v") for m in got["metadatas"][0]):
            got = col.query(query_embeddings=[embedding], n_results=n,
                            where=where_clause(filters, {"_v": {"$eq": True}}), include=["distances", "metadatas"])
        metas.update(zip(got["ids"][0], got["metadatas"][0]))
        ranked = [(i, self._score(d)) for i, d in zip(got["ids"][0], got["distances"][0])]
        return sorted(ranked, key=lambda item: (-item[1], item[0]))

    def _keyword_ranking(self, col: Any, query: str, n: int, filters: dict) -> list[tuple[str, float]]:
        wanted, unwanted = query_terms(query)
        if not wanted:
            return []
        bound = self.keyword_candidates
        got = col.get(where=where_clause(filters), where_document=document_clause(wanted, unwanted), limit=bound,
                      include=["documents"])
        if not got["ids"]:
            return []
        total = col.count()
        df = {}
        for t in wanted:
            df[t] = len(col.get(where_document={"$contains": f" {t} "}, limit=bound, include=[])["ids"])
        docs = [(i, Counter(doc.split())) for i, doc in zip(got["ids"], got["documents"])]
        lengths = {i: sum(tf.values()) for i, tf in docs}
        avg_len = sum(lengths.values()) / len(docs) or 1.0
        ranked = []
        for i, tf in docs:
            score = 0.0
            for t in wanted:
                idf = math.log(1 + (total - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * lengths[i] / avg_len))
            ranked.append((i, score))
        ranked.sort(key=lambda item: (-item[1], item[0]))
        return ranked[:n]

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._col()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)

        def run(col):
            metas: dict[str, dict] = {}
            if kind == "vector":
                ranked = self._vector_ranking(col, embedding, limit, filters, metas)
            elif kind == "keyword":
                ranked = self._keyword_ranking(col, query, limit, filters)
            else:
                n = max(limit, self.hybrid_candidates)
                ranked = rrf_fuse(
                    [i for i, _ in self._vector_ranking(col, embedding, n, filters, metas)],
                    [i for i, _ in self._keyword_ranking(col, query, n, filters)],
                    vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k,
                )[:limit]
            missing = [i for i, _ in ranked if i not in metas]
            if missing:  # keyword candidates were fetched without their metadata: only the winners' now
                got = col.get(ids=missing, include=["metadatas"])
                metas.update(zip(got["ids"], got["metadatas"]))
            return [(i, score, metas[i]) for i, score in ranked if i in metas]

        return [
            SearchHit(**self._chunk(i, meta).model_dump(exclude={"embedding"}), score=score)
            for i, score, meta in self._run(run)
        ]
