"""CosmosDb: chunks in an Azure Cosmos DB for NoSQL container with vector and full-text search.

    CosmosDb("my_kb", url="https://acct.documents.azure.com:443/", credential=key, search_type="hybrid")
    CosmosDb("my_kb", client=cosmos_client, database="agentkeep")

Container layout, queries, and why Cosmos DB's own RRF ranking is not used:
docs/vector_db/cosmos.md. `CosmosQueries` builds every definition, item and query (pure).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_choice, check_dimensions
from agentkeep.vector_db.base import check_name, check_one_given, chunk_of, filter_alternatives, filter_term, hit_of
from agentkeep.vector_db.base import json_document, sql_where
from agentkeep.vector_db.text import Analyzer, KeywordQuery
from agentkeep.vector_db.text import analyzer as analyzer_of

DISTANCE_FUNCTIONS = {"cosine": "cosine", "l2": "euclidean", "inner_product": "dotproduct"}
INDEX_TYPES = {"quantizedFlat": 4096, "diskANN": 4096, "flat": 505}  # type -> most dimensions it indexes
_FIELDS = "c.id, c.content_id, c.content, c.metadata_json, c.position"
_NAME = re.compile(r"(?!\s)[^/\\#?\x00-\x1f\x7f]{1,255}(?<!\s)\Z")  # no space at either end
_LANGUAGE = re.compile(r"[a-z]{2}-[A-Z]{2}\Z")
# the full-text culture of an analyzer language; others index with en-US (the stored terms are
# already stems, so the culture only decides Cosmos DB's own second pass over them)
FULL_TEXT_LANGUAGES = {"english": "en-US", "german": "de-DE", "spanish": "es-ES", "french": "fr-FR",
                       "italian": "it-IT", "portuguese": "pt-BR"}


def _check_name(value: Any, what: str) -> str:
    return check_name(value, what, _NAME, "1..255 characters without / \\ # ? or control characters")


def _check_dimensions(dimensions: Any, index_type: str) -> int:
    return check_dimensions(dimensions, INDEX_TYPES[index_type], f" (a {index_type} index's limit)")


class CosmosQueries:
    """Container definition, items and parameterized queries. Pure: no client, no I/O."""

    def __init__(self, container_name: str, *, distance: str = "cosine", index_type: str = "quantizedFlat",
                 full_text_language: str = "en-US", analyzer: Analyzer | None = None) -> None:
        self.container_name = _check_name(container_name, "container_name")
        self.distance = check_choice(distance, "distance", DISTANCE_FUNCTIONS)
        self.index_type = check_choice(index_type, "index_type", INDEX_TYPES)
        self.language = check_name(full_text_language, "full_text_language", _LANGUAGE,
                                   "a culture name such as 'en-US'")
        self.analyzer = analyzer or analyzer_of("english")  # the terms stored and searched

    def container(self, dimensions: int) -> dict[str, Any]:
        """Keyword arguments for `create_container_if_not_exists` (partition key as a path)."""
        _check_dimensions(dimensions, self.index_type)
        return {
            "id": self.container_name,
            "partition_key_path": "/id",
            "indexing_policy": {
                "indexingMode": "consistent",
                "automatic": True,
                "includedPaths": [{"path": "/*"}],
                "excludedPaths": [{"path": '/"_etag"/?'}, {"path": "/embedding/*"}, {"path": "/content/?"},
                                  {"path": "/metadata_json/?"}],
                "vectorIndexes": [{"path": "/embedding", "type": self.index_type}],
                "fullTextIndexes": [{"path": "/terms"}],
            },
            "vector_embedding_policy": {"vectorEmbeddings": [{
                "path": "/embedding", "dataType": "float32",
                "distanceFunction": DISTANCE_FUNCTIONS[self.distance], "dimensions": dimensions,
            }]},
            "full_text_policy": {"defaultLanguage": self.language,
                                 "fullTextPaths": [{"path": "/terms", "language": self.language}]},
        }

    @staticmethod
    def stored_dimensions(properties: dict[str, Any]) -> int | None:
        """The dimensions in a container's properties (as `container.read()` returns them)."""
        for e in (properties.get("vectorEmbeddingPolicy") or {}).get("vectorEmbeddings", []):
            if e.get("path") == "/embedding":
                return e.get("dimensions")
        return None

    def item(self, chunk: Chunk) -> dict[str, Any]:
        return {**json_document(chunk, self.analyzer), "has_embedding": chunk.embedding is not None}

    @staticmethod
    def chunk(item: dict[str, Any]) -> Chunk:
        return chunk_of(item, item.get("embedding"), metadata_key="metadata_json")

    @staticmethod
    def where(ids: list[str] | None = None, content_id: str | None = None,
              filters: dict[str, Any] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
        """Conditions (AND-ed) and their parameters."""
        parts: list[str] = []
        params: list[dict[str, Any]] = []
        if ids is not None:
            parts.append("ARRAY_CONTAINS(@ids, c.id)")
            params.append({"name": "@ids", "value": ids})
        if content_id is not None:
            parts.append("c.content_id = @content_id")
            params.append({"name": "@content_id", "value": content_id})
        for i, (key, values) in enumerate(filter_alternatives(filters or {})):
            names = [f"@f{i}" if len(values) == 1 else f"@f{i}_{j}" for j in range(len(values))]
            # "any of": an OR of the indexed lookups
            either = [f"ARRAY_CONTAINS(c.filter_terms, {name})" for name in names]
            parts.append(either[0] if len(either) == 1 else "(" + " OR ".join(either) + ")")
            params += [{"name": name, "value": filter_term(key, v)} for name, v in zip(names, values)]
        return parts, params

    def ids_query(self, ids=None, content_id=None, filters=None) -> tuple[str, list[dict[str, Any]]]:
        parts, params = self.where(ids, content_id, filters)
        return "SELECT VALUE c.id FROM c" + sql_where(parts), params

    def count_query(self, content_id=None, filters=None) -> tuple[str, list[dict[str, Any]]]:
        parts, params = self.where(None, content_id, filters)
        return "SELECT VALUE COUNT(1) FROM c" + sql_where(parts), params

    def vector_query(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> tuple[str, list[dict]]:
        parts, params = self.where(None, None, filters)
        query = (f"SELECT TOP @n {_FIELDS}, VectorDistance(c.embedding, @q) AS score FROM c"
                 + sql_where(["c.has_embedding = true", *parts])
                 + " ORDER BY VectorDistance(c.embedding, @q)")
        return query, [{"name": "@n", "value": limit}, {"name": "@q", "value": list(embedding)}, *params]

    def keyword_query(self, query: KeywordQuery, limit: int, filters: dict[str, Any]) -> tuple[str, list[dict]] | None:
        """Chunks holding any ranked term (every `must` term when there are some, none of the
        `must_not` ones), ranked by FullTextScore (BM25) over the ranked terms; None when nothing
        can match. Phrases are checked by the store on the hits."""
        if not query:
            return None
        ranked = query.ranked  # the must terms first: @t0.. are those FullTextContainsAll needs
        names = [f"@t{i}" for i in range(len(ranked))]
        conditions = [f"FullTextContainsAll(c.terms, {', '.join(names[:len(query.must)])})" if query.must
                      else f"FullTextContainsAny(c.terms, {', '.join(names)})"]
        params = [{"name": "@n", "value": limit}]
        params += [{"name": name, "value": t} for name, t in zip(names, ranked)]
        if query.must_not:
            unwant = ", ".join(f"@x{i}" for i in range(len(query.must_not)))
            conditions.append(f"NOT FullTextContainsAny(c.terms, {unwant})")
            params += [{"name": f"@x{i}", "value": t} for i, t in enumerate(query.must_not)]
        parts, filter_params = self.where(None, None, filters)
        text = (f"SELECT TOP @n {_FIELDS} FROM c" + sql_where(conditions + parts)
                + f" ORDER BY RANK FullTextScore(c.terms, {', '.join(names)})")
        return text, params + filter_params

    def vector_score(self, raw: float) -> float:
        """VectorDistance gives cosine and dot-product similarity as they are and the
        euclidean distance d, which scores 1 / (1 + d) as on every store."""
        return 1.0 / (1.0 + float(raw)) if self.distance == "l2" else float(raw)

    @staticmethod
    def read_items(ids: list[str]) -> list[tuple[str, str]]:
        """`read_items` arguments: (id, partition key) pairs; the partition key is the id."""
        return [(i, i) for i in ids]


class CosmosDb(VectorDb):
    """An Azure Cosmos DB for NoSQL container. Give `url` and `credential` (a key or an
    azure-identity credential) or `client` (an azure.cosmos CosmosClient to share)."""

    ENGINE = "Azure Cosmos DB"
    UNREACHABLE = ("azure.core.exceptions.ServiceRequestError",)
    # item-level misses are handled where they occur: what is left is the container's
    GONE = ("azure.cosmos.exceptions.CosmosResourceNotFoundError",)

    def __init__(self, container_name: str, url: str | None = None, credential: Any = None, *, client: Any = None,
                 database: str = "agentkeep", index_type: str = "quantizedFlat", full_text_language: str | None = None,
                 **options: Unpack[StoreOptions]) -> None:
        language = options.get("language", "english")
        if full_text_language is None:
            full_text_language = FULL_TEXT_LANGUAGES.get(language, "en-US") if isinstance(language, str) else "en-US"
        self.queries = CosmosQueries(container_name, distance=options.get("distance", "cosine"),
                                     index_type=index_type, full_text_language=full_text_language)
        self.container_name = container_name
        self.database = _check_name(database, "database")
        super().__init__(**options)
        self.queries.analyzer = self.analyzer
        self.label = f"vector container {self.database}/{self.container_name}"
        check_one_given((url, client), "give either url= (and credential=) or client= (a CosmosClient)")
        if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
            raise InvalidInputError(f"url must be the account's https:// endpoint, got {url!r}")
        self._url, self._credential = url, credential
        self._address = url or "the client's account"
        self._owns_client = client is None
        self._given_client = client

    def _check_dimensions(self, dimensions: Any) -> int:
        return _check_dimensions(dimensions, self.queries.index_type)

    @property
    def _client(self):
        if self._given_client is None:
            from azure.cosmos import CosmosClient

            self._given_client = CosmosClient(self._url, credential=self._credential)
        return self._given_client

    @property
    def _container(self):
        return self._client.get_database_client(self.database).get_container_client(self.container_name)

    def _query(self, query: str, params: list[dict[str, Any]]) -> list[Any]:
        return list(self._container.query_items(query=query, parameters=params, enable_cross_partition_query=True))

    def describe(self) -> str:
        return f"CosmosDb {self.database}/{self.container_name} ({self.queries.index_type} vector index)"

    def close(self) -> None:
        if self._owns_client and self._given_client is not None:
            self._given_client.close()
            self._given_client = None

    def _stored_dimensions(self) -> int | None:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            props = self._container.read()
        except CosmosResourceNotFoundError:
            return None
        stored = self.queries.stored_dimensions(props)
        if stored is None:
            raise InvalidInputError(f"{self.label} has no vector embedding policy: not made by CosmosDb")
        return stored

    def _create_store(self, dimensions: int) -> None:
        from azure.cosmos import PartitionKey

        spec = self.queries.container(dimensions)
        database = self._client.create_database_if_not_exists(self.database)
        database.create_container_if_not_exists(
            id=spec["id"], partition_key=PartitionKey(path=spec["partition_key_path"]),
            indexing_policy=spec["indexing_policy"], vector_embedding_policy=spec["vector_embedding_policy"],
            full_text_policy=spec["full_text_policy"],
        )

    def _drop_store(self) -> None:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        with contextlib.suppress(CosmosResourceNotFoundError):
            self._client.get_database_client(self.database).delete_container(self.container_name)

    def write_plan(self, chunks: Iterable[Chunk], content_id: str | None = None) -> list[dict[str, Any]]:
        """The items `upsert` (or `replace(content_id, ...)`) writes, checked as they would be."""
        return [self.queries.item(c) for c in self._checked(chunks, content_id)]

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace`: the new chunks, then the removal of the content's others (each item is its
        own partition, so not one transaction)."""
        items = [self.queries.item(c) for c in chunks]
        old = [] if content_id is None else self._query(*self.queries.ids_query(content_id=content_id))
        container = self._container
        for item in items:
            container.upsert_item(item)
        keep = {i["id"] for i in items}
        self._delete_items([i for i in old if i not in keep])

    def _delete_items(self, ids: list[str]) -> int:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        container, deleted = self._container, 0
        for id_ in ids:
            with contextlib.suppress(CosmosResourceNotFoundError):  # deleted meanwhile
                container.delete_item(item=id_, partition_key=id_)
                deleted += 1
        return deleted

    def _delete(self, ids, content_id, filters) -> int:
        query, params = self.queries.ids_query(ids, content_id, filters)
        return self._delete_items(self._query(query, params))

    def _get(self, ids: list[str]) -> list[Chunk]:
        items = self._container.read_items(items=self.queries.read_items(ids))
        return [self.queries.chunk(i) for i in items]

    def _count(self, content_id, filters) -> int:
        rows = self._query(*self.queries.count_query(content_id, filters))
        return int(rows[0]) if rows else 0

    def search_plan(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> dict[str, Any]:
        """The queries `search` runs (a keyword query is None when nothing can match); runs nothing."""
        return self._plan(query, embedding, limit, filters, search_type, self.queries.vector_query,
                          self._keyword_query)

    def _keyword_query(self, query: KeywordQuery, n: int, filters: dict) -> tuple[str, list[dict]] | None:
        """With a phrase, `PHRASE_DEPTH` times more hits: Cosmos DB matches words, not their order."""
        return self.queries.keyword_query(query, n * self.PHRASE_DEPTH if query.positional else n, filters)

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        rows = self._query(*self.queries.vector_query(embedding, n, filters))
        return [hit_of(r, self.queries.vector_score(r["score"]), metadata_key="metadata_json") for r in rows]

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        """FullTextScore cannot be projected: a keyword hit's score is 1 / its rank (among the
        hits that hold the query's phrases)."""
        rows = self._query(*self._keyword_query(query, n, filters))
        hits = self._phrase_checked(query, [hit_of(r, 0.0, metadata_key="metadata_json") for r in rows])[:n]
        return [h.model_copy(update={"score": 1.0 / rank}) for rank, h in enumerate(hits, 1)]
