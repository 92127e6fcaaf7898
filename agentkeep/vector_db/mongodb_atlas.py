"""MongoAtlasVectorDb: chunks in a MongoDB Atlas collection, searched with Atlas Vector Search
and Atlas Search.

    MongoAtlasVectorDb("my_kb", db_url="mongodb+srv://user:pass@cluster.example.net", search_type="hybrid")
    MongoAtlasVectorDb("my_kb", client=mongo_client, database="agentkeep")

Documents, the two Atlas search indexes (`create(wait=True)` polls until they are queryable),
pipelines, and why `$rankFusion` is not used: docs/vector_db/mongodb_atlas.md.
`AtlasRequests` builds every request document (pure).
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError, UnsupportedError
from agentkeep.db.messages import shorten
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_choice, check_int, check_name
from agentkeep.vector_db.base import all_of, check_one_given, chunk_of, filter_term, hit_of, json_document
from agentkeep.vector_db.base import filter_alternatives, split_filters
from agentkeep.vector_db.base import filter_terms, tagged_value  # noqa: F401  (part of this module's API)
from agentkeep.vector_db.text import Analyzer, KeywordQuery
from agentkeep.vector_db.text import analyzer as analyzer_of

SIMILARITIES = {"cosine": "cosine", "l2": "euclidean", "inner_product": "dotProduct"}
MAX_DIMENSIONS = 8192  # Atlas Vector Search's numDimensions limit
MAX_NUM_CANDIDATES = 10_000
_INDEX_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


# -- the translation layer -------------------------------------------------------------------


class AtlasRequests:
    """Builds every request document the store sends: index definitions, stored documents,
    query filters and aggregation pipelines. Pure: no client, no I/O."""

    def __init__(self, *, distance: str = "cosine", vector_index_name: str = "agentkeep_vector",
                 search_index_name: str = "agentkeep_text", num_candidates_factor: int = 10,
                 min_num_candidates: int = 100, exact: bool = False, analyzer: Analyzer | None = None) -> None:
        self.analyzer = analyzer or analyzer_of("english")  # the terms of the `keywords` field and of queries
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
    def document(self, chunk: Chunk) -> dict[str, Any]:
        return json_document(chunk, self.analyzer, id_key="_id", terms_key="keywords")

    @staticmethod
    def chunk(doc: dict[str, Any]) -> Chunk:
        return chunk_of(doc, doc.get("embedding"), id_key="_id", metadata_key="metadata_json")

    # plain MQL (find, count_documents, delete_many)
    @staticmethod
    def match(ids: list[str] | None = None, content_id: str | None = None,
              filters: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ids is not None:
            out["_id"] = {"$in": ids}
        if content_id is not None:
            out["content_id"] = {"$eq": content_id}
        equal, any_of = split_filters(filters or {})
        if equal:
            out["filter_terms"] = {"$all": [filter_term(k, v) for k, v in equal.items()]}
        if any_of:  # one `$in` per "any of" key, all on the one array field
            out["$and"] = [{"filter_terms": {"$in": [filter_term(k, v) for v in vs]}} for k, vs in any_of.items()]
        return out

    # search pipelines
    @staticmethod
    def _projection(meta: str) -> dict[str, Any]:
        return {"$project": {"_id": 1, "content_id": 1, "content": 1, "metadata_json": 1, "position": 1,
                             "score": {"$meta": meta}}}

    def num_candidates(self, limit: int) -> int:
        return min(MAX_NUM_CANDIDATES, max(limit * self.num_candidates_factor, self.min_num_candidates, limit))

    def vector_pipeline(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> list[dict]:
        stage: dict[str, Any] = {"index": self.vector_index_name, "path": "embedding",
                                 "queryVector": list(embedding), "limit": limit}
        if self.exact:
            stage["exact"] = True
        else:
            stage["numCandidates"] = self.num_candidates(limit)
        # `$vectorSearch.filter` takes $eq/$in/$and/... but not $all: one condition per key
        where = all_of([{"filter_terms": {"$eq": filter_term(k, vs[0])} if len(vs) == 1
                         else {"$in": [filter_term(k, v) for v in vs]}} for k, vs in filter_alternatives(filters)])
        if where is not None:
            stage["filter"] = where
        return [{"$vectorSearch": stage}, self._projection("vectorSearchScore")]

    def keyword_pipeline(self, query: KeywordQuery, limit: int, filters: dict[str, Any]) -> list[dict] | None:
        """Atlas Search's BM25 over the ranked terms: any `should` term may match (at least one
        when no term is required), every `must` term and phrase must, no `mustNot`; phrases and
        filters match without scoring. None when nothing can match."""
        if not query:
            return None

        def text(term: str) -> dict[str, Any]:
            return {"text": {"query": term, "path": "keywords"}}

        def phrase(words: tuple[str, ...]) -> dict[str, Any]:
            return {"phrase": {"query": " ".join(words), "path": "keywords"}}

        compound: dict[str, Any] = {}
        if query.must:
            compound["must"] = [text(t) for t in query.must]
        if query.should:
            compound["should"] = [text(t) for t in query.should]
            if not query.must:
                compound["minimumShouldMatch"] = 1
        if query.must_not or query.excluded_phrases:
            compound["mustNot"] = [text(t) for t in query.must_not] + [phrase(p) for p in query.excluded_phrases]
        scoped = [phrase(p) for p in query.phrases]
        scoped += [{"equals": {"path": "filter_terms", "value": filter_term(k, vs[0])}} if len(vs) == 1
                   else {"in": {"path": "filter_terms", "value": [filter_term(k, v) for v in vs]}}
                   for k, vs in filter_alternatives(filters)]
        if scoped:
            compound["filter"] = scoped
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
            or value.startswith(("system.", ".")) or value.endswith(".")):
        raise InvalidInputError(f"{what} must be a MongoDB collection name (1..120 bytes, no $ or NUL, "
                                f"not system.*), got {value!r}")
    return value


def check_database_name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) < 64 or re.search(r'[/\\. "$*<>:|?\x00]', value):
        raise InvalidInputError(f"database must be a MongoDB database name (1..63 bytes, none of /\\. \"$*<>:|?), "
                                f"got {value!r}")
    return value


# -- the executor ----------------------------------------------------------------------------


class MongoAtlasVectorDb(VectorDb):
    """A MongoDB Atlas collection. Give `db_url` (a client of its own) or `client` (a
    pymongo MongoClient to share)."""

    MAX_DIMENSIONS = MAX_DIMENSIONS
    DIMENSIONS_LIMIT = " (Atlas Vector Search's limit)"
    ENGINE = "MongoDB"
    UNREACHABLE = ("pymongo.errors.ServerSelectionTimeoutError",)

    def __init__(self, collection_name: str, db_url: str | None = None, *, client: Any = None,
                 database: str = "agentkeep", vector_index_name: str = "agentkeep_vector",
                 search_index_name: str = "agentkeep_text", num_candidates_factor: int = 10,
                 min_num_candidates: int = 100, exact: bool = False, manage_search_indexes: bool = True,
                 index_timeout: float = 300.0, transactions: bool = True, **options: Unpack[StoreOptions]) -> None:
        self.collection_name = check_collection_name(collection_name)
        self.database = check_database_name(database)
        self.requests = AtlasRequests(
            distance=options.get("distance", "cosine"), vector_index_name=vector_index_name,
            search_index_name=search_index_name, num_candidates_factor=num_candidates_factor,
            min_num_candidates=min_num_candidates, exact=exact,
        )
        super().__init__(**options)
        self.requests.analyzer = self.analyzer
        self.label = f"vector collection {self.database}.{self.collection_name}"
        self.manage_search_indexes = bool(manage_search_indexes)
        self.index_timeout = float(index_timeout)
        self.transactions = bool(transactions)
        self._wait = True
        check_one_given((db_url, client), "give either db_url= or client= (a pymongo MongoClient)")
        if db_url is not None and not isinstance(db_url, str):
            raise InvalidInputError(f"db_url must be a string, got {type(db_url).__name__}")
        self._db_url = db_url
        self._address = db_url and shorten(db_url.split("@")[-1], 80)  # no user or password
        self._owns_client = client is None
        self._given_client = client

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
        if self._owns_client and self._given_client is not None:
            self._given_client.close()
            self._given_client = None

    def _ready(self) -> None:
        """Check once that the collection exists (MongoDB would silently create it on a write,
        without its indexes). Without managed search indexes no index records the dimensions:
        then they are the ones this object was given, if any."""
        if not self._known and not self.manage_search_indexes:
            if not self._exists():
                raise self._gone()
            self._known = True
        super()._ready()

    def _stored_dimensions(self) -> int | None:
        if not self._exists():
            return None
        return (self._indexed_dimensions() if self.manage_search_indexes else None) or self.dimensions

    def _exists(self) -> bool:
        return bool(self._db.list_collection_names(filter={"name": self.collection_name}))

    def create(self, dimensions: int | None = None, *, wait: bool = True) -> None:
        """`wait`: poll until both Atlas search indexes are queryable."""
        self._wait = wait
        if not self.manage_search_indexes and dimensions is not None and self.dimensions is None:
            self.dimensions = self._check_dimensions(dimensions)  # no index will record them
        super().create(dimensions)

    def _create_store(self, dimensions: int) -> None:
        from pymongo.errors import CollectionInvalid

        with contextlib.suppress(CollectionInvalid):  # created meanwhile by another process
            self._db.create_collection(self.collection_name)
        if self.manage_search_indexes:
            self._create_search_indexes(dimensions)

    def _complete_store(self) -> None:
        self._coll.create_index("content_id")
        self._coll.create_index("filter_terms")
        if self.manage_search_indexes:
            self._create_search_indexes(self.dimensions)

    def _create_search_indexes(self, dimensions: int) -> None:
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
        if self._wait:
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

    def _drop_store(self) -> None:
        self._coll.drop()  # drops its search indexes too

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace` deletes the content's chunks and writes the new ones in one transaction
        (unless `transactions=False`)."""
        from pymongo import ReplaceOne

        ops = [ReplaceOne({"_id": c.id}, self.requests.document(c), upsert=True) for c in chunks]

        def run(session=None):
            if content_id is not None:
                self._coll.delete_many(self.requests.match(content_id=content_id), session=session)
            if ops:
                self._coll.bulk_write(ops, ordered=False, session=session)

        if content_id is None or not self.transactions:
            run()
        else:
            with self._client.start_session() as session:
                session.with_transaction(run)

    def _delete(self, ids, content_id, filters) -> int:
        return self._coll.delete_many(self.requests.match(ids, content_id, filters)).deleted_count

    def _get(self, ids: list[str]) -> list[Chunk]:
        return [self.requests.chunk(d) for d in self._coll.find(self.requests.match(ids=ids))]

    def _count(self, content_id, filters) -> int:
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
        """The aggregation pipelines `search` runs (a keyword pipeline is None when the query has
        no term that can match), checked against the dimensions known so far; runs nothing."""
        return self._plan(query, embedding, limit, filters, search_type, self.requests.vector_pipeline,
                          self.requests.keyword_pipeline)

    @staticmethod
    def _hits(rows: list[dict], score) -> list[SearchHit]:
        return [hit_of(r, score(r["score"]), id_key="_id", metadata_key="metadata_json") for r in rows]

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        return self._hits(self._aggregate(self.requests.vector_pipeline(embedding, n, filters)),
                          self.requests.vector_score)

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        return self._hits(self._aggregate(self.requests.keyword_pipeline(query, n, filters)), float)
