"""ChromaDb: chunks as records of a Chroma collection, on the official `chromadb` client.

    ChromaDb("my_kb", path="/var/lib/kb")        # embedded: a PersistentClient on a folder
    ChromaDb("my_kb", client=chromadb.HttpClient(host="chroma", port=8000))

Record layout, filters and the BM25 ranking of keyword candidates: docs/vector_db/chroma.md.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, batches, check_int, check_name
from agentkeep.vector_db.base import all_of, check_one_given, chunk_of, distance_score, hit_of, number_forms
from agentkeep.vector_db.base import filter_alternatives, typed_scalar
from agentkeep.vector_db.text import bm25, idf, query_terms, terms

SPACES = {"cosine": "cosine", "l2": "l2", "inner_product": "ip"}
DIMENSIONS_KEY = "agentkeep_dimensions"
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


def document_clause(wanted: list[str], unwanted: list[str]) -> dict[str, Any]:
    """A Chroma `where_document`: every wanted term present, every unwanted one absent."""
    parts = [{"$contains": f" {t} "} for t in wanted] + [{"$not_contains": f" {t} "} for t in unwanted]
    return all_of(parts)


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

    def _exists(self) -> bool:
        return self._open() is not None

    def _drop_store(self) -> None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        self._collection = None
        with contextlib.suppress(ChromaNotFound, ValueError):
            self._client.delete_collection(self.collection)

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
        document = " " + " ".join(terms(c.content)) + " "
        return c.id, c.embedding if c.embedding is not None else placeholder, document, meta

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace`: the new chunks, then the removal of the content's others (not atomic)."""
        records = [self._record(c) for c in chunks]

        def write(col):
            for batch in batches(records, self._client.get_max_batch_size()):
                ids, embeddings, documents, metadatas = zip(*batch)
                # Chroma's upsert merges metadata: a key the stored record has and this one lacks
                # (a metadata key, the content id) is removed by giving it as None
                old = col.get(ids=list(ids), include=["metadatas"])
                stored = dict(zip(old["ids"], old["metadatas"] or []))
                metadatas = [{**dict.fromkeys(set(stored.get(i) or {}) - set(m)), **m} for i, m in zip(ids, metadatas)]
                col.upsert(ids=list(ids), embeddings=list(embeddings), documents=list(documents),
                           metadatas=metadatas)
            if content_id is not None:
                keep = {c.id for c in chunks}
                stale = [i for i in col.get(where={"_cid": {"$eq": content_id}}, include=[])["ids"] if i not in keep]
                if stale:
                    col.delete(ids=stale)

        self._run(write)

    def _delete(self, ids, content_id, filters) -> int:
        where = where_clause(filters, content_id=content_id)
        return self._run(lambda col: col.delete(ids=ids, where=where)["deleted"])  # Chroma counts them

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

    def _keyword_search(self, query: str, n: int, filters: dict) -> list[SearchHit]:
        wanted, unwanted = query_terms(query)
        bound = self.keyword_candidates

        def rank(col) -> list[tuple[str, float]]:
            got = col.get(where=where_clause(filters), where_document=document_clause(wanted, unwanted), limit=bound,
                          include=["documents"])
            if not got["ids"]:
                return []
            total = col.count()
            idfs = {t: idf(total, len(col.get(where_document={"$contains": f" {t} "}, limit=bound, include=[])["ids"]))
                    for t in wanted}
            docs = [(i, Counter(doc.split())) for i, doc in zip(got["ids"], got["documents"])]
            avg_len = sum(sum(tf.values()) for _, tf in docs) / len(docs) or 1.0
            scored = [(i, bm25(tf, sum(tf.values()), avg_len, wanted, idfs)) for i, tf in docs]
            return sorted(scored, key=lambda item: (-item[1], item[0]))[:n]

        top = self._run(rank)
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
