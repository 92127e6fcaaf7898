"""WeaviateDb: chunks and embeddings in a Weaviate collection, through `weaviate-client` 4.x.

    WeaviateDb("MyKb", url="http://localhost:8080")                  # gRPC on 50051
    WeaviateDb("MyKb", client=weaviate.connect_to_weaviate_cloud(...))

Not verified against a live service: the translation is unit-tested. The schema (a flattened,
type-tagged property per metadata key), the searches and Weaviate's own hybrid (`native_fusion=`):
docs/vector_db/weaviate.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Unpack

from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_choice, check_int
from agentkeep.vector_db.base import check_name, check_number, check_one_given, chunk_of, filter_scalar, hit_of
from agentkeep.vector_db.base import all_of, distance_score, filter_alternatives, ranked
from agentkeep.vector_db.text import Analyzer, KeywordQuery
from agentkeep.vector_db.text import analyzer as analyzer_of

DISTANCES = {"cosine": "cosine", "l2": "l2-squared", "inner_product": "dot"}
NATIVE_FUSIONS = (None, "ranked", "relative_score")  # Weaviate's own hybrid, or None: the base's fusion
UUID_NAMESPACE = uuid.UUID("6f1c1d38-3f6e-5a4e-9d0b-6167656e746b")  # fixed: ids map to the same UUIDs everywhere
NOTHING = {"op": "nothing"}  # a filter no object can match (a metadata key no object ever had)
RETURN_PROPERTIES = ["chunk_id", "content", "content_id", "position", "metadata"]
MAX_FETCH = 10_000  # Weaviate's default QUERY_MAXIMUM_RESULTS
_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{0,230}$")
_DESCRIPTION = re.compile(r"agentkeep vector store: dimensions=(\d+) distance=(\w+)")
_PROPERTY_TYPES = {"b": ("boolean", None), "n": ("number", None), "s": ("text", "field")}  # by filter_scalar kind


# -- translation: request documents (no client needed) ----------------------------------------


def object_uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, chunk_id))


# the fixed schema, as property specs: name, data_type, tokenization, filterable, searchable
BASE_PROPERTIES = [
    {"name": "chunk_id", "data_type": "text", "tokenization": "field", "filterable": True, "searchable": False},
    {"name": "content_id", "data_type": "text", "tokenization": "field", "filterable": True, "searchable": False},
    {"name": "content", "data_type": "text", "tokenization": None, "filterable": False, "searchable": False},
    {"name": "position", "data_type": "int", "tokenization": None, "filterable": False, "searchable": False},
    {"name": "metadata", "data_type": "text", "tokenization": None, "filterable": False, "searchable": False},
    {"name": "terms", "data_type": "text", "tokenization": "whitespace", "filterable": True, "searchable": True},
]


def meta_property(key: str, value: Any) -> tuple[str, dict[str, Any], Any] | None:
    """(property name, spec, stored value) of one top-level metadata value; None when it cannot
    be filtered on (a list, an object, null, a number too large for a double)."""
    typed = filter_scalar(value)
    if typed is None:
        return None
    kind, stored = typed
    data_type, tokenization = _PROPERTY_TYPES[kind]
    name = f"m{kind}_{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    spec = {"name": name, "data_type": data_type, "tokenization": tokenization, "filterable": True,
            "searchable": False}
    return name, spec, stored


def object_doc(chunk: Chunk, analyzer: Analyzer | None = None) -> dict[str, Any]:
    """The object written for a (checked) chunk: uuid, properties (its keyword terms by the
    store's analyzer), vector, and the specs of the metadata properties it needs."""
    words = (analyzer or analyzer_of("english")).terms(chunk.content)
    properties: dict[str, Any] = {
        "chunk_id": chunk.id, "content": chunk.content, "position": chunk.position,
        "metadata": json.dumps(chunk.metadata, ensure_ascii=False, separators=(",", ":")),
        "terms": " ".join(words)}
    if chunk.content_id is not None:
        properties["content_id"] = chunk.content_id
    specs = {}
    for key, value in chunk.metadata.items():
        found = meta_property(key, value)
        if found is not None:
            name, spec, stored = found
            properties[name] = stored
            specs[name] = spec
    return {"uuid": object_uuid(chunk.id), "properties": properties,
            "vector": None if chunk.embedding is None else [float(x) for x in chunk.embedding], "specs": specs}


def filter_doc(ids: list[str] | None, content_id: str | None, filters: dict[str, Any],
               known: set[str] | frozenset[str] = frozenset(), extra: Sequence[dict] = ()) -> dict | None:
    """AND of the conditions as a filter document, None for no condition, NOTHING when a
    metadata key has no property of its value's type (no object ever stored it)."""
    parts: list[dict] = []
    if ids is not None:
        parts.append({"op": "id_in", "value": [object_uuid(i) for i in ids]})
    if content_id is not None:
        parts.append({"op": "equal", "path": "content_id", "value": content_id})
    for key, values in filter_alternatives(filters):
        # a member whose property no object has can match nothing; with none left, the key cannot
        either = [{"op": "equal", "path": found[0], "value": found[2]} for v in values
                  if (found := meta_property(key, v)) is not None and found[0] in known]
        if not either:
            return NOTHING
        parts.append(all_of(either, lambda parts: {"op": "or", "filters": parts}))
    return all_of(parts + list(extra), lambda parts: {"op": "and", "filters": parts})


def keyword_filter(query: KeywordQuery) -> list[dict]:
    """The conditions a keyword query puts on the stored terms: every `must` term, no `must_not` one."""
    parts = [{"op": "contains_all", "path": "terms", "value": list(query.must)}] if query.must else []
    if query.must_not:
        parts.append({"op": "not", "filter": {"op": "contains_any", "path": "terms", "value": list(query.must_not)}})
    return parts


def search_requests(kind: str, query: KeywordQuery | None, embedding: list[float] | None, limit: int,
                    filters: dict, *, known: set[str] | frozenset[str] = frozenset(), candidates: int = 40,
                    native_fusion: str | None = None, vector_weight: float = 1.0, keyword_weight: float = 1.0,
                    phrase_depth: int = 10) -> list[dict]:
    """The queries one search sends, as documents: near_vector, bm25 and/or hybrid. BM25 takes
    any ranked term (operator OR, minimum_match 1); the filter holds the required and excluded
    terms; with a phrase it asks for `phrase_depth` times more (the store checks the order)."""
    n = limit if kind != "hybrid" else max(limit, candidates)
    base = filter_doc(None, None, filters, known)
    if base == NOTHING:
        return []
    query = query if kind != "vector" and query else None
    keyword = {} if query is None else {
        "query": " ".join(query.ranked), "properties": ["terms"], "operator": "or", "minimum_match": 1,
        "filters": filter_doc(None, None, filters, known, keyword_filter(query))}
    deep = phrase_depth if query is not None and query.positional else 1
    if kind == "hybrid" and native_fusion is not None and query is not None:
        alpha = vector_weight / (vector_weight + keyword_weight)
        return [{"kind": "hybrid", **keyword, "vector": embedding, "alpha": alpha, "fusion": native_fusion,
                 "limit": limit * deep}]
    requests = []
    if kind in ("vector", "hybrid"):
        requests.append({"kind": "near_vector", "vector": embedding, "limit": n, "filters": base})
    if query is not None:
        requests.append({"kind": "bm25", **keyword, "limit": n * deep})
    return requests


def score_from_distance(distance: str, value: float) -> float:
    """Weaviate's distance -> the suite's score: cosine 1 - d, l2 1 / (1 + sqrt(d)) (Weaviate
    reports the squared distance), inner product -d (Weaviate's dot distance is the negated dot)."""
    return -value if distance == "inner_product" else distance_score(distance, value)


def parse_description(text: str | None) -> tuple[int, str] | None:
    found = _DESCRIPTION.search(text or "")
    return (int(found.group(1)), found.group(2)) if found else None


# -- conversion of documents into weaviate-client objects --------------------------------------


def to_filter(doc: dict | None):
    if doc is None:
        return None
    from weaviate.classes.query import Filter

    op = doc["op"]
    if op == "and":
        return Filter.all_of([to_filter(d) for d in doc["filters"]])
    if op == "or":
        return Filter.any_of([to_filter(d) for d in doc["filters"]])
    if op == "not":
        return Filter.not_(to_filter(doc["filter"]))
    if op == "id_in":
        return Filter.by_id().contains_any(doc["value"])
    if op == "equal":
        return Filter.by_property(doc["path"]).equal(doc["value"])
    if op == "contains_any":
        return Filter.by_property(doc["path"]).contains_any(doc["value"])
    if op == "contains_all":
        return Filter.by_property(doc["path"]).contains_all(doc["value"])
    raise ValueError(f"no Weaviate filter for {doc!r}")


def to_property(spec: dict[str, Any]):
    from weaviate.classes.config import DataType, Property, Tokenization

    data_type = {"text": DataType.TEXT, "int": DataType.INT, "number": DataType.NUMBER, "boolean": DataType.BOOL}
    tokenization = {"field": Tokenization.FIELD, "whitespace": Tokenization.WHITESPACE, None: None}
    return Property(name=spec["name"], data_type=data_type[spec["data_type"]],
                    tokenization=tokenization[spec["tokenization"]],
                    index_filterable=spec["filterable"], index_searchable=spec["searchable"])


def collection_config(name: str, dimensions: int, distance: str, *, ef: int, ef_construction: int,
                      max_connections: int, bm25_k1: float, bm25_b: float) -> dict[str, Any]:
    """Keyword arguments of `client.collections.create` for a store."""
    from weaviate.classes.config import Configure, StopwordsPreset, VectorDistances

    return {
        "name": name,
        "description": f"agentkeep vector store: dimensions={dimensions} distance={distance}",  # _DESCRIPTION
        "vector_config": Configure.Vectors.self_provided(vector_index_config=Configure.VectorIndex.hnsw(
            distance_metric=VectorDistances(DISTANCES[distance]), ef=ef, ef_construction=ef_construction,
            max_connections=max_connections)),
        "inverted_index_config": Configure.inverted_index(bm25_b=bm25_b, bm25_k1=bm25_k1,
                                                          stopwords_preset=StopwordsPreset.NONE),
        "properties": [to_property(p) for p in BASE_PROPERTIES],
    }


# -- the store --------------------------------------------------------------------------------


class WeaviateDb(VectorDb):
    """A Weaviate collection. Give `client` (a connected `weaviate.WeaviateClient`, left open by
    close()) or `url` (and `grpc_port`, `api_key`) for a connection of its own."""

    DISTANCES = DISTANCES
    ENGINE = "Weaviate"
    GET_BATCH = 1000
    UNREACHABLE = ("weaviate.exceptions.WeaviateConnectionError",)

    def __init__(self, collection: str, url: str | None = None, *, client: Any = None, grpc_port: int = 50051,
                 api_key: str | None = None, ef: int = -1, ef_construction: int = 128, max_connections: int = 32,
                 bm25_k1: float = 1.2, bm25_b: float = 0.75, native_fusion: str | None = None,
                 **options: Unpack[StoreOptions]) -> None:
        self.collection = check_name(collection, "collection", _NAME,
                                     "a Weaviate class name (an upper-case letter, then letters, digits, _)")
        super().__init__(**options)
        self.label = f"Weaviate collection {self.collection}"
        self.native_fusion = check_choice(native_fusion, "native_fusion", NATIVE_FUSIONS)
        self.ef = check_int(ef, "ef", -1, 10_000)
        self.ef_construction = check_int(ef_construction, "ef_construction", 4, 10_000)
        self.max_connections = check_int(max_connections, "max_connections", 4, 10_000)
        self.bm25_k1 = check_number(bm25_k1, "bm25_k1", 0, 10)
        self.bm25_b = check_number(bm25_b, "bm25_b", 0, 10)
        self._properties: set[str] | None = None  # property names in the schema
        check_one_given((client, url), "give either url= or client= (a connected weaviate.WeaviateClient)")
        self._address = url
        self._owns_client = client is None
        self._client = client if client is not None else _connect(url, grpc_port, api_key)

    def _handle(self):
        return self._client.collections.get(self.collection)

    def _store_gone(self, exc: Exception) -> bool:
        from agentkeep.db.connection import raised_as

        if raised_as(exc, "weaviate.exceptions.WeaviateBaseError") and not self._exists():
            self._properties = None
            return True
        return False

    def _known_for(self, filters: dict) -> set[str]:
        """The schema's property names, reloaded when a filter names one not seen yet (another
        process may have added it)."""
        if self._properties is None or any((m := meta_property(k, v)) is not None and m[0] not in self._properties
                                           for k, values in filter_alternatives(filters) for v in values):
            self._stored_dimensions()
        return self._properties or set()

    def _add_properties(self, specs: dict[str, dict]) -> None:
        from weaviate.exceptions import WeaviateBaseError

        for name, spec in specs.items():
            if name in (self._properties or set()):
                continue
            try:
                self._handle().config.add_property(to_property(spec))
            except WeaviateBaseError as exc:  # another writer added it first
                if "already exists" not in str(exc):
                    raise
            (self._properties or set()).add(name)

    def describe(self) -> str:
        try:
            version = self._client.get_meta().get("version", "?")
        except Exception:  # noqa: BLE001 - a description must not fail
            version = "?"
        return f"WeaviateDb {self.collection} on Weaviate {version}"

    def _stored_dimensions(self) -> int | None:
        """The dimensions in the collection's description; the schema's property names too."""
        if not self._client.collections.exists(self.collection):
            return None
        config = self._handle().config.get()
        found = parse_description(config.description)
        if found is None:
            raise InvalidInputError(f"{self.label} was not created by agentkeep")
        self._properties = {p.name for p in config.properties}
        return found[0]

    def _create_store(self, dimensions: int) -> None:
        self._client.collections.create(**collection_config(
            self.collection, dimensions, self.distance, ef=self.ef, ef_construction=self.ef_construction,
            max_connections=self.max_connections, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b))

    def _exists(self) -> bool:
        return bool(self._client.collections.exists(self.collection))

    def _drop_store(self) -> None:
        self._properties = None
        if self._client.collections.exists(self.collection):
            self._client.collections.delete(self.collection)

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """Checks first that the collection exists (Weaviate's auto-schema would otherwise make
        a default one). `replace` writes the new chunks, then deletes the content's others
        (Weaviate has no transactions: a reader in between sees both)."""
        from weaviate.classes.data import DataObject

        if not self._client.collections.exists(self.collection):
            raise self._gone()
        if chunks:
            docs = [object_doc(c, self.analyzer) for c in chunks]
            self._add_properties({n: s for d in docs for n, s in d["specs"].items()})
            objects = [DataObject(properties=d["properties"], uuid=d["uuid"], vector=d["vector"]) for d in docs]
            result = self._handle().data.insert_many(objects)
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise DbError(f"Weaviate refused {len(result.errors)} of {len(objects)} objects: {first.message}")
        if content_id is not None:
            keep = [{"op": "not", "filter": {"op": "id_in", "value": [object_uuid(c.id) for c in chunks]}}] \
                if chunks else []
            self._delete_where(filter_doc(None, content_id, {}, extra=keep))

    def _delete_where(self, doc: dict) -> int:
        where, total = to_filter(doc), 0
        while True:
            result = self._handle().data.delete_many(where=where)
            total += result.successful
            if result.matches < MAX_FETCH or result.successful == 0:
                return total

    def _delete(self, ids, content_id, filters) -> int:
        if not self._client.collections.exists(self.collection):
            raise self._gone()
        doc = filter_doc(ids, content_id, filters, self._known_for(filters))
        return 0 if doc == NOTHING else self._delete_where(doc)

    def _get(self, ids: list[str]) -> list[Chunk]:
        result = self._handle().query.fetch_objects(
            filters=to_filter(filter_doc(ids, None, {})), limit=len(ids), include_vector=True,
            return_properties=RETURN_PROPERTIES)
        return [chunk_of(obj.properties, _vector(obj.vector), id_key="chunk_id") for obj in result.objects]

    def _count(self, content_id, filters) -> int:
        doc = filter_doc(None, content_id, filters, self._known_for(filters))
        if doc == NOTHING:
            return 0
        return int(self._handle().aggregate.over_all(total_count=True, filters=to_filter(doc)).total_count)

    def search_requests(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[dict]:
        """The query documents `search` sends."""
        return self._shown(self._requests, query, embedding, limit, filters, search_type)

    def _requests(self, kind, query, embedding, limit, filters):
        parsed = self.analyzer.query(query) if kind != "vector" else None
        return search_requests(kind, parsed, embedding, limit, filters, known=self._known_for(filters),
                               candidates=self.hybrid_candidates, native_fusion=self.native_fusion,
                               vector_weight=self.vector_weight, keyword_weight=self.keyword_weight,
                               phrase_depth=self.PHRASE_DEPTH)

    def _send(self, request: dict) -> list[SearchHit]:
        from weaviate.classes.query import BM25Operator, HybridFusion, MetadataQuery

        where = to_filter(request["filters"])
        if request["kind"] == "near_vector":
            result = self._handle().query.near_vector(
                near_vector=request["vector"], limit=request["limit"], filters=where,
                return_metadata=MetadataQuery(distance=True), return_properties=RETURN_PROPERTIES)
            return [hit_of(o.properties, score_from_distance(self.distance, o.metadata.distance), id_key="chunk_id")
                    for o in result.objects]
        operator = BM25Operator.or_(minimum_match=request["minimum_match"])
        if request["kind"] == "bm25":
            result = self._handle().query.bm25(
                query=request["query"], query_properties=request["properties"], operator=operator,
                limit=request["limit"], filters=where, return_metadata=MetadataQuery(score=True),
                return_properties=RETURN_PROPERTIES)
        else:
            fusion = {"ranked": HybridFusion.RANKED, "relative_score": HybridFusion.RELATIVE_SCORE}[request["fusion"]]
            result = self._handle().query.hybrid(
                query=request["query"], vector=request["vector"], alpha=request["alpha"], fusion_type=fusion,
                query_properties=request["properties"], bm25_operator=operator, limit=request["limit"],
                filters=where, return_metadata=MetadataQuery(score=True), return_properties=RETURN_PROPERTIES)
        return [hit_of(o.properties, float(o.metadata.score), id_key="chunk_id") for o in result.objects]

    def _search(self, kind, query, embedding, limit, filters):
        """With `native_fusion=`, a hybrid search is Weaviate's own (one request, its fusion);
        otherwise both lists are fused by the base (`fusion=`, weights, `rrf_k`)."""
        requests = self._requests(kind, query, embedding, limit, filters)
        if kind == "hybrid" and requests and requests[0]["kind"] == "hybrid":
            hits = self._phrase_checked(self.analyzer.query(query), self._send(requests[0]))
            return ranked(hits)[:limit]
        return super()._search(kind, query, embedding, limit, filters)

    def _candidates(self, kind, query, embedding, n, filters):
        lists = {r["kind"]: self._send(r) for r in self._requests(kind, query, embedding, n, filters)}
        keyword = lists.get("bm25", [])
        if keyword:
            keyword = self._phrase_checked(self.analyzer.query(query), keyword)[:n]
        return lists.get("near_vector", []), keyword


def _connect(url: str, grpc_port: int, api_key: str | None):
    import weaviate
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInputError(f"url must be http(s)://host[:port], got {url!r}")
    secure = parsed.scheme == "https"
    auth = None
    if api_key is not None:
        from weaviate.classes.init import Auth

        auth = Auth.api_key(api_key)
    return weaviate.connect_to_custom(
        http_host=parsed.hostname, http_port=parsed.port or (443 if secure else 80), http_secure=secure,
        grpc_host=parsed.hostname, grpc_port=grpc_port, grpc_secure=secure, auth_credentials=auth)


def _vector(value: Any) -> list[float] | None:
    """A self-provided vector as the client returns it: a list, or {"default": list}."""
    if isinstance(value, dict):
        value = value.get("default") or next(iter(value.values()), None)
    return None if not value else [float(x) for x in value]
