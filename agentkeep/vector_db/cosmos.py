"""CosmosDb: chunks in an Azure Cosmos DB for NoSQL container with vector and full-text search.

    CosmosDb("my_kb", url="https://acct.documents.azure.com:443/", credential=key, search_type="hybrid")
    CosmosDb("my_kb", client=cosmos_client, database="agentkeep")

One item per chunk, partitioned by `/id`:

    {id, content_id, content, position, metadata_json: "{...}", embedding: [...] (absent without
     one), has_embedding, terms: "rotat api key ...", filter_terms: ["4:team=s:sec", ...]}

`create()` makes the database and the container with

- a vector embedding policy on `/embedding` (float32, `dimensions`, distanceFunction cosine |
  euclidean | dotproduct) and a vector index of `index_type` (quantizedFlat, diskANN or flat);
- a full-text policy and full-text index on `/terms`, the chunk's keyword terms
  (`in_memory.terms()`: lowercased, stopword-free, lightly stemmed) joined by spaces, so
  every store matches the same words;
- the default range indexing for everything else except `/embedding`, `/content` and
  `/metadata_json`.

Metadata is kept as JSON text (`metadata_json`) because Cosmos DB holds numbers as doubles
and would not give back an integer beyond 2**53 as it was. Filters use `filter_terms`, one
type-tagged string per top-level scalar value (see `mongodb_atlas.filter_terms`), matched
with `ARRAY_CONTAINS(c.filter_terms, @f0)`: exact filter semantics (1 == 1.0, a bool is not a
number, lists and objects never match) and no metadata key ever appears in query text.

Search types: "vector" is `SELECT TOP @n ... ORDER BY VectorDistance(c.embedding, @q)`;
"keyword" is `WHERE FullTextContainsAll(c.terms, @t0, ...)` (and `NOT FullTextContainsAny`
for `-term`s) `ORDER BY RANK FullTextScore(c.terms, @t0, ...)`; "hybrid" runs both and fuses
them with `rrf_fuse`. Cosmos DB's own `ORDER BY RANK RRF(...)` is not used: it ranks
documents that match any term rather than every term, fixes the RRF constant, and returns no
fused score. Every value travels as a query parameter.

Scores: VectorDistance's similarity for cosine and dotproduct, 1 / (1 + distance) for
euclidean. FullTextScore cannot be projected, so a keyword hit's score is 1 / its rank.

`CosmosQueries` builds every container definition, item and query (pure functions, tested
without a server); `CosmosDb` validates and executes them with azure-cosmos.
"""

from __future__ import annotations

import json
import re
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
    filter_term,
    filter_terms,
    rrf_top,
)
from agentkeep.vector_db.text import query_terms, terms

DISTANCE_FUNCTIONS = {"cosine": "cosine", "l2": "euclidean", "inner_product": "dotproduct"}
INDEX_TYPES = {"quantizedFlat": 4096, "diskANN": 4096, "flat": 505}  # type -> most dimensions it indexes
_FIELDS = "c.id, c.content_id, c.content, c.metadata_json, c.position"


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 255 or re.search(r"[/\\#?\x00-\x1f\x7f]", value) \
            or value != value.strip():
        raise InvalidInputError(f"{what} must be 1..255 characters without / \\ # ? or control characters, "
                                f"got {value!r}")
    return value


def _check_dimensions(dimensions: Any, index_type: str) -> int:
    return check_dimensions(dimensions, INDEX_TYPES[index_type], f" (a {index_type} index's limit)")


class CosmosQueries:
    """Container definition, items and parameterized queries. Pure: no client, no I/O."""

    def __init__(self, container_name: str, *, distance: str = "cosine", index_type: str = "quantizedFlat",
                 language: str = "en-US") -> None:
        self.container_name = _check_name(container_name, "container_name")
        check_choice(distance, "distance", DISTANCE_FUNCTIONS)
        check_choice(index_type, "index_type", INDEX_TYPES)
        if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2}-[A-Z]{2}", language):
            raise InvalidInputError(f"language must be a culture name such as 'en-US', got {language!r}")
        self.distance = distance
        self.index_type = index_type
        self.language = language

    # -- the container ------------------------------------------------------------------------

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

    # -- items ----------------------------------------------------------------------------------

    @staticmethod
    def item(chunk: Chunk) -> dict[str, Any]:
        out = {
            "id": chunk.id, "content_id": chunk.content_id, "content": chunk.content, "position": chunk.position,
            "metadata_json": json.dumps(chunk.metadata, ensure_ascii=False, allow_nan=False),
            "has_embedding": chunk.embedding is not None,
            "terms": " ".join(terms(chunk.content)), "filter_terms": filter_terms(chunk.metadata),
        }
        if chunk.embedding is not None:
            out["embedding"] = chunk.embedding
        return out

    @staticmethod
    def chunk(item: dict[str, Any]) -> Chunk:
        return Chunk(id=item["id"], content=item["content"], content_id=item.get("content_id"),
                     embedding=item.get("embedding"), metadata=json.loads(item.get("metadata_json") or "{}"),
                     position=item.get("position", 0))

    # -- queries --------------------------------------------------------------------------------

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
        for i, (key, value) in enumerate((filters or {}).items()):
            parts.append(f"ARRAY_CONTAINS(c.filter_terms, @f{i})")
            params.append({"name": f"@f{i}", "value": filter_term(key, value)})
        return parts, params

    @staticmethod
    def _clause(parts: list[str]) -> str:
        return " WHERE " + " AND ".join(parts) if parts else ""

    def ids_query(self, ids=None, content_id=None, filters=None) -> tuple[str, list[dict[str, Any]]]:
        parts, params = self.where(ids, content_id, filters)
        return "SELECT VALUE c.id FROM c" + self._clause(parts), params

    def count_query(self, content_id=None, filters=None) -> tuple[str, list[dict[str, Any]]]:
        parts, params = self.where(None, content_id, filters)
        return "SELECT VALUE COUNT(1) FROM c" + self._clause(parts), params

    def vector_query(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> tuple[str, list[dict]]:
        parts, params = self.where(None, None, filters)
        query = (f"SELECT TOP @n {_FIELDS}, VectorDistance(c.embedding, @q) AS score FROM c"
                 + self._clause(["c.has_embedding = true", *parts])
                 + " ORDER BY VectorDistance(c.embedding, @q)")
        return query, [{"name": "@n", "value": limit}, {"name": "@q", "value": list(embedding)}, *params]

    def keyword_query(self, query: str, limit: int, filters: dict[str, Any]) -> tuple[str, list[dict]] | None:
        """None when the query has no term that can match (only stopwords, say)."""
        wanted, unwanted = query_terms(query)
        if not wanted:
            return None
        want = ", ".join(f"@t{i}" for i in range(len(wanted)))
        conditions = [f"FullTextContainsAll(c.terms, {want})"]
        params = [{"name": "@n", "value": limit}]
        params += [{"name": f"@t{i}", "value": t} for i, t in enumerate(wanted)]
        if unwanted:
            unwant = ", ".join(f"@x{i}" for i in range(len(unwanted)))
            conditions.append(f"NOT FullTextContainsAny(c.terms, {unwant})")
            params += [{"name": f"@x{i}", "value": t} for i, t in enumerate(unwanted)]
        parts, filter_params = self.where(None, None, filters)
        text = (f"SELECT TOP @n {_FIELDS} FROM c" + self._clause(conditions + parts)
                + f" ORDER BY RANK FullTextScore(c.terms, {want})")
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

    def __init__(
        self,
        container_name: str,
        url: str | None = None,
        credential: Any = None,
        *,
        client: Any = None,
        database: str = "agentkeep",
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        index_type: str = "quantizedFlat",
        language: str = "en-US",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
    ) -> None:
        self.queries = CosmosQueries(container_name, distance=distance, index_type=index_type, language=language)
        self.container_name = container_name
        self.database = _check_name(database, "database")
        self.search_type = check_search_type(search_type)
        self.distance = distance
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else _check_dimensions(dimensions, index_type)
        if (url is None) == (client is None):
            raise InvalidInputError("give either url= (and credential=) or client= (a CosmosClient)")
        if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
            raise InvalidInputError(f"url must be the account's https:// endpoint, got {url!r}")
        self._url, self._credential = url, credential
        self._own_client = client is None
        self._given_client = client
        self._known = False

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _client(self):
        if self._given_client is None:
            from azure.cosmos import CosmosClient

            self._given_client = CosmosClient(self._url, credential=self._credential)
        return self._given_client

    @property
    def _container(self):
        return self._client.get_database_client(self.database).get_container_client(self.container_name)

    def _missing(self) -> str:
        return f"vector container {self.database}/{self.container_name} does not exist: call create() first"

    def _properties(self) -> dict[str, Any] | None:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            return self._container.read()
        except CosmosResourceNotFoundError:
            return None

    def _ready(self) -> None:
        if self._known and self.dimensions is not None:
            return
        props = self._properties()
        if props is None:
            raise NotFoundError(self._missing())
        stored = self.queries.stored_dimensions(props)
        if self.dimensions is not None and stored is not None and stored != self.dimensions:
            raise dimension_mismatch(f"vector container {self.container_name}", stored, self.dimensions)
        self.dimensions = stored or self.dimensions
        self._known = True

    def _run(self, fn):
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            return fn(self._container)
        except CosmosResourceNotFoundError:  # item-level misses are handled where they occur
            self._known = False
            raise NotFoundError(self._missing()) from None

    def _query(self, query: str, params: list[dict[str, Any]]) -> list[Any]:
        return self._run(lambda c: list(c.query_items(query=query, parameters=params,
                                                      enable_cross_partition_query=True)))

    def describe(self) -> str:
        return f"CosmosDb {self.database}/{self.container_name} ({self.queries.index_type} vector index)"

    def close(self) -> None:
        if self._own_client and self._given_client is not None:
            self._given_client.close()
            self._given_client = None

    # -- lifecycle --------------------------------------------------------------------------

    def exists(self) -> bool:
        return self._properties() is not None

    def create(self, dimensions: int | None = None) -> None:
        from azure.cosmos import PartitionKey

        if dimensions is not None:
            _check_dimensions(dimensions, self.queries.index_type)
        props = self._properties()
        stored = None if props is None else self.queries.stored_dimensions(props)
        known = stored if stored is not None else self.dimensions
        if known is not None and dimensions is not None and known != dimensions:
            raise dimension_mismatch(f"vector container {self.container_name}", known, dimensions)
        wanted = known if known is not None else dimensions
        if wanted is None:
            raise InvalidInputError("create() needs dimensions= (or CosmosDb(dimensions=...)) the first time")
        if props is None:
            spec = self.queries.container(wanted)
            database = self._client.create_database_if_not_exists(self.database)
            database.create_container_if_not_exists(
                id=spec["id"], partition_key=PartitionKey(path=spec["partition_key_path"]),
                indexing_policy=spec["indexing_policy"], vector_embedding_policy=spec["vector_embedding_policy"],
                full_text_policy=spec["full_text_policy"],
            )
        self.dimensions = wanted
        self._known = True

    def drop(self) -> None:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            self._client.get_database_client(self.database).delete_container(self.container_name)
        except CosmosResourceNotFoundError:
            pass
        self._known = False

    # -- writes -----------------------------------------------------------------------------

    def write_plan(self, chunks: Iterable[Chunk], content_id: str | None = None) -> list[dict[str, Any]]:
        """The items `upsert` (or `replace(content_id, ...)`) writes, checked as they would be."""
        if content_id is not None:
            check_id(content_id, "content_id")
        checked = check_chunks(chunks, self.dimensions)
        if content_id is not None:
            checked = [c.model_copy(update={"content_id": content_id}) for c in checked]
        return [self.queries.item(c) for c in checked]

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        items = self.write_plan(chunks)

        def write(container):
            for item in items:
                container.upsert_item(item)
            return len(items)

        return self._run(write)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """The new chunks are written first, then the content's other chunks deleted: each item
        is its own logical partition, so this is not one transaction (a reader may briefly see
        old and new chunks together, never none)."""
        check_id(content_id, "content_id")
        self._ready()
        items = self.write_plan(chunks, content_id)
        keep = {i["id"] for i in items}
        query, params = self.queries.ids_query(content_id=content_id)

        def write(container):
            old = list(container.query_items(query=query, parameters=params, enable_cross_partition_query=True))
            for item in items:
                container.upsert_item(item)
            self._delete_items(container, [i for i in old if i not in keep])
            return len(items)

        return self._run(write)

    @staticmethod
    def _delete_items(container, ids: list[str]) -> int:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        deleted = 0
        for id_ in ids:
            try:
                container.delete_item(item=id_, partition_key=id_)
                deleted += 1
            except CosmosResourceNotFoundError:
                pass  # deleted meanwhile
        return deleted

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        self._ready()
        if ids == []:
            return 0
        query, params = self.queries.ids_query(ids, content_id, filters)
        return self._run(lambda c: self._delete_items(c, list(c.query_items(
            query=query, parameters=params, enable_cross_partition_query=True))))

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        self._ready()
        if not ids:
            return []
        items = self._run(lambda c: list(c.read_items(items=self.queries.read_items(ids))))
        found = {i["id"]: self.queries.chunk(i) for i in items}
        return [found[i] for i in ids if i in found]

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        self._ready()
        rows = self._query(*self.queries.count_query(content_id, filters))
        return int(rows[0]) if rows else 0

    def search_plan(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> dict[str, Any]:
        """The queries `search` runs, by list ("vector", "keyword"; a keyword query is None when
        nothing can match), checked as `search` checks them; runs nothing."""
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        plan: dict[str, Any] = {"kind": kind, "limit": limit}
        if kind in ("vector", "hybrid"):
            plan["vector"] = self.queries.vector_query(embedding, n, filters)
        if kind in ("keyword", "hybrid"):
            plan["keyword"] = self.queries.keyword_query(query, n, filters)
        return plan

    def _ranked(self, plan: dict[str, Any], which: str) -> list[tuple[dict, float]]:
        if plan[which] is None:
            return []
        rows = self._query(*plan[which])
        if which == "vector":
            return [(r, self.queries.vector_score(r["score"])) for r in rows]
        return [(r, 1.0 / rank) for rank, r in enumerate(rows, 1)]

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        plan = self.search_plan(query, embedding=embedding, limit=limit, filters=filters, search_type=search_type)
        if plan["kind"] != "hybrid":
            ranked = self._ranked(plan, plan["kind"])
        else:
            v, k = self._ranked(plan, "vector"), self._ranked(plan, "keyword")
            ranked = rrf_top([r for r, _ in v], [r for r, _ in k], plan["limit"], key=lambda r: r["id"],
                             vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [
            SearchHit(id=r["id"], content=r["content"], content_id=r.get("content_id"),
                      metadata=json.loads(r.get("metadata_json") or "{}"), position=r.get("position", 0), score=s)
            for r, s in ranked
        ]
