"""MongoAtlasVectorDb: chunks in a MongoDB Atlas collection, searched with Atlas Vector Search
and Atlas Search.

    MongoAtlasVectorDb("my_kb", db_url="mongodb+srv://user:pass@cluster.example.net", search_type="hybrid")
    MongoAtlasVectorDb("my_kb", client=mongo_client, database="agentkeep")

One document per chunk:

    {_id: chunk id, content_id, content, embedding: [float, ...] (absent without one),
     metadata_json: "{...}", position, keywords: "rotat api key ...", filter_terms: ["4:team=s:sec", ...]}

Metadata is kept as JSON text, as agentkeep's MongoDb keeps JSON columns: BSON has no
integer beyond int64 and gives int64 back as `bson.Int64`, so only text returns every
value as it was given.

`keywords` holds the chunk's keyword terms (`in_memory.terms()`: lowercased, stopword-free,
lightly stemmed) joined by spaces, so every store matches the same words. `filter_terms`
holds one type-tagged string per top-level scalar metadata value (see `filter_terms()`):
a metadata filter becomes equality on that one array field, so no metadata key needs an index
definition of its own, keys with `.` or `$` are fine, and the filter semantics (1 == 1.0, a
bool is not a number, a list or an object never matches) hold exactly in every query form.

`create()` makes the collection, ordinary indexes on `content_id` and `filter_terms` (for
delete and count) and two Atlas search indexes through `create_search_indexes`:

- "vectorSearch" (`vector_index_name`): `embedding` as `vector` (numDimensions, similarity
  cosine | euclidean | dotProduct) plus `filter` fields `content_id` and `filter_terms`;
- "search" (`search_index_name`): `keywords` as `string` with the `lucene.whitespace`
  analyzer and `filter_terms` as `token` (for `equals` in a compound `filter`).

Search types: "vector" is a `$vectorSearch` stage (ANN with `numCandidates`, or ENN with
`exact=True`) whose `filter` pre-filters on `filter_terms`; "keyword" is a `$search` compound
query (`must` one `text` clause per term, `mustNot` per `-term`, `filter` one `equals` per
metadata condition), ranked by Atlas Search's BM25; "hybrid" runs both and fuses them with
`rrf_fuse` (MongoDB's `$rankFusion` fixes the RRF constant at 60 and orders ties its own way,
so it cannot honour `rrf_k`).

Atlas search indexes build asynchronously and are eventually consistent: `create(wait=True)`
(the default) polls `list_search_indexes` until both are queryable. With
`manage_search_indexes=False` the store creates none (you manage them, or the server is not
Atlas): then writes, reads, delete and count still work, `$vectorSearch`/`$search` do not.

The request documents are built by `AtlasRequests` (pure functions of the arguments), so they
are unit-tested without a server; `MongoAtlasVectorDb` only validates and executes them.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Iterable, Sequence

from agentkeep.db.errors import InvalidInputError, NotFoundError, UnsupportedError
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
    check_name,
    check_search_type,
    check_weights,
    dimension_mismatch,
    filter_term,
    filter_terms,
    rrf_top,
    tagged_value,  # noqa: F401  (part of this module's API)
)
from agentkeep.vector_db.text import query_terms as split_query
from agentkeep.vector_db.text import terms

SIMILARITIES = {"cosine": "cosine", "l2": "euclidean", "inner_product": "dotProduct"}
MAX_DIMENSIONS = 8192  # Atlas Vector Search's numDimensions limit
MAX_NUM_CANDIDATES = 10_000
_INDEX_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


# -- the translation layer -------------------------------------------------------------------


class AtlasRequests:
    """Builds every request document the store sends: index definitions, stored documents,
    query filters and aggregation pipelines. Pure: no client, no I/O."""

    def __init__(
        self,
        *,
        distance: str = "cosine",
        vector_index_name: str = "agentkeep_vector",
        search_index_name: str = "agentkeep_text",
        num_candidates_factor: int = 10,
        min_num_candidates: int = 100,
        exact: bool = False,
    ) -> None:
        self.distance = check_choice(distance, "distance", SIMILARITIES)
        self.vector_index_name = _index_name(vector_index_name, "vector_index_name")
        self.search_index_name = _index_name(search_index_name, "search_index_name")
        if vector_index_name == search_index_name:
            raise InvalidInputError("vector_index_name and search_index_name must differ")
        self.num_candidates_factor = check_int(num_candidates_factor, "num_candidates_factor", 1, 100)
        self.min_num_candidates = check_int(min_num_candidates, "min_num_candidates", 1, MAX_NUM_CANDIDATES)
        if not isinstance(exact, bool):
            raise InvalidInputError(f"exact must be True or False, got {exact!r}")
        self.exact = exact

    # index definitions (SearchIndexModel arguments)
    def vector_index(self, dimensions: int) -> dict[str, Any]:
        return {
            "name": self.vector_index_name,
            "type": "vectorSearch",
            "definition": {"fields": [
                {"type": "vector", "path": "embedding", "numDimensions": dimensions,
                 "similarity": SIMILARITIES[self.distance]},
                {"type": "filter", "path": "content_id"},
                {"type": "filter", "path": "filter_terms"},
            ]},
        }

    def search_index(self) -> dict[str, Any]:
        return {
            "name": self.search_index_name,
            "type": "search",
            "definition": {"mappings": {"dynamic": False, "fields": {
                "keywords": {"type": "string", "analyzer": "lucene.whitespace",
                             "searchAnalyzer": "lucene.whitespace"},
                "filter_terms": {"type": "token"},
            }}},
        }

    # documents
    @staticmethod
    def document(chunk: Chunk) -> dict[str, Any]:
        doc = {
            "_id": chunk.id, "content_id": chunk.content_id, "content": chunk.content,
            "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False, allow_nan=False),
            "position": chunk.position,
            "keywords": " ".join(terms(chunk.content)), "filter_terms": filter_terms(chunk.metadata),
        }
        if chunk.embedding is not None:
            doc["embedding"] = chunk.embedding
        return doc

    @staticmethod
    def chunk(doc: dict[str, Any]) -> Chunk:
        return Chunk(id=doc["_id"], content=doc["content"], content_id=doc.get("content_id"),
                     embedding=doc.get("embedding"), metadata=json.loads(doc.get("metadata_json") or "{}"),
                     position=doc.get("position", 0))

    # plain MQL (find, count_documents, delete_many)
    @staticmethod
    def match(ids: list[str] | None = None, content_id: str | None = None,
              filters: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ids is not None:
            out["_id"] = {"$in": ids}
        if content_id is not None:
            out["content_id"] = {"$eq": content_id}
        if filters:
            out["filter_terms"] = {"$all": [filter_term(k, v) for k, v in filters.items()]}
        return out

    # search pipelines
    @staticmethod
    def _projection(meta: str) -> dict[str, Any]:
        return {"$project": {"_id": 1, "content_id": 1, "content": 1, "metadata_json": 1, "position": 1,
                             "score": {"$meta": meta}}}

    @staticmethod
    def vector_filter(filters: dict[str, Any]) -> dict[str, Any] | None:
        """`$vectorSearch.filter` takes $eq/$in/$and/... but not $all: one equality per term."""
        conditions = [{"filter_terms": {"$eq": filter_term(k, v)}} for k, v in filters.items()]
        if not conditions:
            return None
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def num_candidates(self, limit: int) -> int:
        return min(MAX_NUM_CANDIDATES, max(limit * self.num_candidates_factor, self.min_num_candidates, limit))

    def vector_pipeline(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> list[dict]:
        stage: dict[str, Any] = {"index": self.vector_index_name, "path": "embedding",
                                 "queryVector": list(embedding), "limit": limit}
        if self.exact:
            stage["exact"] = True
        else:
            stage["numCandidates"] = self.num_candidates(limit)
        where = self.vector_filter(filters)
        if where is not None:
            stage["filter"] = where
        return [{"$vectorSearch": stage}, self._projection("vectorSearchScore")]

    def keyword_pipeline(self, query: str, limit: int, filters: dict[str, Any]) -> list[dict] | None:
        """None when the query has no term that could match (only stopwords, say)."""
        wanted, unwanted = split_query(query)
        if not wanted:
            return None
        compound: dict[str, Any] = {"must": [{"text": {"query": t, "path": "keywords"}} for t in wanted]}
        if unwanted:
            compound["mustNot"] = [{"text": {"query": t, "path": "keywords"}} for t in unwanted]
        if filters:
            compound["filter"] = [{"equals": {"path": "filter_terms", "value": filter_term(k, v)}}
                                  for k, v in filters.items()]
        return [{"$search": {"index": self.search_index_name, "compound": compound}},
                {"$limit": limit}, self._projection("searchScore")]

    def vector_score(self, raw: float) -> float:
        """Atlas normalises scores into [0, 1]: (1 + cosine) / 2, (1 + dot) / 2 and
        1 / (1 + euclidean distance); undo the first two so every store scores alike."""
        if self.distance == "l2":
            return float(raw)
        return 2.0 * float(raw) - 1.0


def _index_name(value: Any, what: str) -> str:
    return check_name(value, what, _INDEX_NAME, "1..64 letters, digits, _ or -")


def check_collection_name(value: Any, what: str = "collection_name") -> str:
    if (not isinstance(value, str) or not 0 < len(value.encode()) <= 120 or "$" in value or "\x00" in value
            or value.startswith("system.") or value.startswith(".") or value.endswith(".")):
        raise InvalidInputError(f"{what} must be a MongoDB collection name (1..120 bytes, no $ or NUL, "
                                f"not system.*), got {value!r}")
    return value


def check_database_name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) < 64 or re.search(r'[/\\. "$*<>:|?\x00]', value):
        raise InvalidInputError(f"database must be a MongoDB database name (1..63 bytes, none of /\\. \"$*<>:|?), "
                                f"got {value!r}")
    return value


def _check_dimensions(dimensions: Any) -> int:
    return check_dimensions(dimensions, MAX_DIMENSIONS, " (Atlas Vector Search's limit)")


# -- the executor ----------------------------------------------------------------------------


class MongoAtlasVectorDb(VectorDb):
    """A MongoDB Atlas collection. Give `db_url` (a client of its own) or `client` (a
    pymongo MongoClient to share)."""

    def __init__(
        self,
        collection_name: str,
        db_url: str | None = None,
        *,
        client: Any = None,
        database: str = "agentkeep",
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        vector_index_name: str = "agentkeep_vector",
        search_index_name: str = "agentkeep_text",
        num_candidates_factor: int = 10,
        min_num_candidates: int = 100,
        exact: bool = False,
        manage_search_indexes: bool = True,
        index_timeout: float = 300.0,
        transactions: bool = True,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.collection_name = check_collection_name(collection_name)
        self.database = check_database_name(database)
        self.search_type = check_search_type(search_type)
        self.requests = AtlasRequests(
            distance=distance, vector_index_name=vector_index_name, search_index_name=search_index_name,
            num_candidates_factor=num_candidates_factor, min_num_candidates=min_num_candidates, exact=exact,
        )
        self.distance = distance
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else _check_dimensions(dimensions)
        self.manage_search_indexes = bool(manage_search_indexes)
        self.index_timeout = float(index_timeout)
        self.transactions = bool(transactions)
        self._known = False  # the collection was seen to exist
        if (db_url is None) == (client is None):
            raise InvalidInputError("give either db_url= or client= (a pymongo MongoClient)")
        if db_url is not None and not isinstance(db_url, str):
            raise InvalidInputError(f"db_url must be a string, got {type(db_url).__name__}")
        self._db_url = db_url
        self._own_client = client is None
        self._given_client = client

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _client(self):
        """The MongoClient, made on first use (so building requests needs no driver)."""
        if self._given_client is None:
            from pymongo import MongoClient

            self._given_client = MongoClient(self._db_url)
        return self._given_client

    @property
    def _db(self):
        return self._client[self.database]

    @property
    def _coll(self):
        return self._db[self.collection_name]

    def _missing(self) -> str:
        return f"vector collection {self.database}.{self.collection_name} does not exist: call create() first"

    def _ready(self) -> None:
        """Check once that the collection exists (MongoDB would silently create it on a write,
        without its indexes) and learn its dimensions from the vector index."""
        if not self._known:
            if not self.exists():
                raise NotFoundError(self._missing())
            self._known = True
        if self.dimensions is None and self.manage_search_indexes:
            self.dimensions = self._indexed_dimensions()

    def _indexed_dimensions(self) -> int | None:
        for index in self._coll.list_search_indexes(self.requests.vector_index_name):
            definition = index.get("latestDefinition") or index.get("definition") or {}
            for field in definition.get("fields", []):
                if field.get("type") == "vector" and field.get("path") == "embedding":
                    return field.get("numDimensions")
        return None

    def describe(self) -> str:
        version = self._client.server_info().get("version", "?")
        return f"MongoAtlasVectorDb {self.database}.{self.collection_name} on MongoDB {version}"

    def close(self) -> None:
        if self._own_client and self._given_client is not None:
            self._given_client.close()
            self._given_client = None

    # -- lifecycle --------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self._db.list_collection_names(filter={"name": self.collection_name}))

    def create(self, dimensions: int | None = None, *, wait: bool = True) -> None:
        from pymongo.errors import CollectionInvalid

        if dimensions is not None:
            _check_dimensions(dimensions)
        existed = self.exists()
        stored = self._indexed_dimensions() if existed and self.manage_search_indexes else None
        known = stored if stored is not None else self.dimensions
        if known is not None and dimensions is not None and dimensions != known:
            raise dimension_mismatch(f"vector collection {self.collection_name}", known, dimensions)
        wanted = known if known is not None else dimensions
        if wanted is None:
            raise InvalidInputError("create() needs dimensions= (or MongoAtlasVectorDb(dimensions=...)) the first time")
        if not existed:
            try:
                self._db.create_collection(self.collection_name)
            except CollectionInvalid:
                pass  # created meanwhile by another process
        self._coll.create_index("content_id")
        self._coll.create_index("filter_terms")
        if self.manage_search_indexes:
            self._create_search_indexes(wanted, wait)
        self.dimensions = wanted
        self._known = True

    def _create_search_indexes(self, dimensions: int, wait: bool) -> None:
        from pymongo.errors import OperationFailure
        from pymongo.operations import SearchIndexModel

        present = {i["name"] for i in self._coll.list_search_indexes()}
        specs = (self.requests.vector_index(dimensions), self.requests.search_index())
        models = [SearchIndexModel(**spec) for spec in specs if spec["name"] not in present]
        if models:
            try:
                self._coll.create_search_indexes(models)
            except OperationFailure as exc:
                if "already exists" not in str(exc):
                    raise UnsupportedError(f"this server cannot create Atlas search indexes ({exc}); "
                                           "use Atlas, or manage_search_indexes=False") from None
        if wait:
            self._wait_queryable()

    def _wait_queryable(self) -> None:
        names = {self.requests.vector_index_name, self.requests.search_index_name}
        deadline = time.monotonic() + self.index_timeout
        while True:
            ready = {i["name"] for i in self._coll.list_search_indexes() if i.get("queryable")}
            if names <= ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Atlas search indexes {sorted(names - ready)} are not queryable "
                                   f"after {self.index_timeout}s")
            time.sleep(2)

    def drop(self) -> None:
        self._coll.drop()  # drops its search indexes too
        self._known = False

    # -- writes -----------------------------------------------------------------------------

    def _write(self, ops: list, session=None) -> None:
        if ops:
            self._coll.bulk_write(ops, ordered=False, session=session)

    def _replace_ops(self, chunks: list[Chunk]) -> list:
        from pymongo import ReplaceOne

        return [ReplaceOne({"_id": c.id}, self.requests.document(c), upsert=True) for c in chunks]

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        self._write(self._replace_ops(checked))
        return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        ops = self._replace_ops(checked)
        doomed = self.requests.match(content_id=content_id)

        def run(session=None):
            self._coll.delete_many(doomed, session=session)
            self._write(ops, session=session)

        if not self.transactions:
            run()
        else:
            with self._client.start_session() as session:
                session.with_transaction(run)
        return len(checked)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        return self._coll.delete_many(self.requests.match(ids, content_id, filters)).deleted_count

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        if not ids:
            return []
        found = {d["_id"]: self.requests.chunk(d) for d in self._coll.find(self.requests.match(ids=ids))}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        return self._coll.count_documents(self.requests.match(None, content_id, filters))

    def _aggregate(self, pipeline: list[dict]) -> list[dict]:
        from pymongo.errors import OperationFailure

        try:
            return list(self._coll.aggregate(pipeline))
        except OperationFailure as exc:
            stage = next(iter(pipeline[0]))
            text = str(exc)
            if exc.code in (40324, 31082) or "not supported" in text or "Unrecognized pipeline stage" in text:
                raise UnsupportedError(f"this MongoDB server does not run {stage} (Atlas only): {exc}") from None
            raise

    def search_plan(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> dict[str, Any]:
        """The aggregation pipelines `search` runs, by list ("vector", "keyword"); a keyword
        pipeline is None when the query has no term that can match. Checks the arguments as
        `search` does, against the dimensions known so far, and runs nothing."""
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        plan: dict[str, Any] = {"kind": kind, "limit": limit}
        if kind in ("vector", "hybrid"):
            plan["vector"] = self.requests.vector_pipeline(embedding, n, filters)
        if kind in ("keyword", "hybrid"):
            plan["keyword"] = self.requests.keyword_pipeline(query, n, filters)
        return plan

    def _ranked(self, plan: dict[str, Any], which: str) -> list[tuple[dict, float]]:
        pipeline = plan[which]
        rows = [] if pipeline is None else self._aggregate(pipeline)
        if which == "vector":
            scored = [(r, self.requests.vector_score(r["score"])) for r in rows]
        else:
            scored = [(r, float(r["score"])) for r in rows]
        scored.sort(key=lambda item: (-item[1], item[0]["_id"]))
        return scored

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        plan = self.search_plan(query, embedding=embedding, limit=limit, filters=filters, search_type=search_type)
        if plan["kind"] != "hybrid":
            ranked = self._ranked(plan, plan["kind"])
        else:
            v, k = self._ranked(plan, "vector"), self._ranked(plan, "keyword")
            ranked = rrf_top([r for r, _ in v], [r for r, _ in k], plan["limit"], key=lambda r: r["_id"],
                             vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [
            SearchHit(id=r["_id"], content=r["content"], content_id=r.get("content_id"),
                      metadata=json.loads(r.get("metadata_json") or "{}"), position=r.get("position", 0),
                      score=score)
            for r, score in ranked
        ]
