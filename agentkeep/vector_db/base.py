"""The vector-store interface: records, metadata filters, and the abstract `VectorDb`.

A vector store holds the chunks of a knowledge base: text, its embedding, the id of the
content it came from, its position in that content and a JSON metadata object. Every store
offers the same operations with the same semantics:

- `create(dimensions=None)` (idempotent), `exists()`, `drop()`
- `upsert(chunks)` (a chunk with an existing id replaces it), `replace(content_id, chunks)`
  (the content's chunks become exactly these, atomically), `get(ids)`
- `delete(ids=..., content_id=..., filters=...)` (the conditions given are AND-ed)
- `search(query, embedding=..., limit=5, filters=None, search_type=None)`: "vector"
  (nearest embeddings), "keyword" (full-text match of the query) or "hybrid"
  (reciprocal-rank fusion of both candidate lists)
- `count(content_id=None, filters=None)`

Metadata filters are a dict of top-level keys to scalar values (str, int, float, bool),
matched by equality and AND-ed: `{"team": "support", "year": 2024}`. Numbers compare by
value (1 matches 1.0), booleans only match booleans, strings match exactly; a key that is
missing, or holds a list or an object, does not match. Anything else is refused with
`InvalidInputError`, so no filter is ever silently ignored.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import math
import re
from typing import Any, Callable, Iterable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from agentkeep.db.errors import InvalidInputError

SearchType = Literal["vector", "keyword", "hybrid"]
SEARCH_TYPES = ("vector", "keyword", "hybrid")
MAX_CHUNK_ID_LENGTH = 1024
MAX_LIMIT = 1000
FLOAT32_MAX = 3.4028234663852886e38  # vectors are stored at single precision
_LONG_VALUE = 256  # longer tagged values and filter terms are replaced by their SHA-256
_LONG_TERM = 512
INT64 = 2**63  # engines with 64-bit integers hold -INT64 <= i < INT64
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Chunk(BaseModel):
    """One piece of a content, as stored in a vector store."""

    model_config = ConfigDict(extra="forbid")

    id: str
    content: str
    content_id: Optional[str] = None
    embedding: Optional[list[float]] = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    position: int = 0


class SearchHit(Chunk):
    """A chunk found by `search`, with its score (higher is closer; see each store's docs)."""

    score: float


# -- validation (shared by every store, so they refuse the same inputs) ------------------


def check_id(value: Any, what: str, max_length: int = MAX_CHUNK_ID_LENGTH) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= max_length:
        raise InvalidInputError(f"{what} must be 1..{max_length} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise InvalidInputError(f"{what} must not contain control characters: {value!r}")
    return value


def check_ids(ids: Any) -> list[str]:
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InvalidInputError("ids must be a list of chunk ids")
    return list(dict.fromkeys(check_id(i, "chunk id") for i in ids))


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be an integer in 1..{MAX_LIMIT}, got {limit!r}")
    return limit


def check_search_type(value: Any) -> str:
    if value not in SEARCH_TYPES:
        raise InvalidInputError(f"search_type must be one of {', '.join(SEARCH_TYPES)}; got {value!r}")
    return value


def check_embedding(value: Any, dimensions: int | None, what: str = "embedding") -> list[float]:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise InvalidInputError(f"{what} must be a list of numbers, got {type(value).__name__}")
    if (type(value) is list and value and all(type(x) is float for x in value) and math.isfinite(sum(value))
            and -FLOAT32_MAX <= min(value) and max(value) <= FLOAT32_MAX):
        out = value  # the common case, checked in one pass (NaN and inf make the sum non-finite)
        if dimensions is not None and len(out) != dimensions:
            raise dimension_mismatch("this store", dimensions, len(out), what)
        return out
    out = []
    for x in value:
        if isinstance(x, (bool, str, bytes)):
            raise InvalidInputError(f"{what} must hold numbers only, got {type(x).__name__}")
        if not isinstance(x, (int, float)):
            try:  # numpy scalars and the like
                x = float(x)
            except (TypeError, ValueError):
                raise InvalidInputError(f"{what} must hold numbers only, got {type(x).__name__}") from None
        x = float(x)
        if not math.isfinite(x):
            raise InvalidInputError(f"{what} must hold finite numbers, got {x}")
        if abs(x) > FLOAT32_MAX:
            raise InvalidInputError(f"{what} must hold numbers that fit single precision, got {x}")
        out.append(x)
    if not out:
        raise InvalidInputError(f"{what} must not be empty")
    if dimensions is not None and len(out) != dimensions:
        raise dimension_mismatch("this store", dimensions, len(out), what)
    return out


def dimension_mismatch(store: str, stored: int, given: int, what: str | None = None) -> InvalidInputError:
    """The error for vectors whose length is not the store's. The usual cause is an embedder
    other than the one the store was created with, so the message says so. `store` names the
    store ("vector table public.kb"), `what` the offending vector when there is one."""
    found = (f"{what} has {given} dimensions; {store} holds {stored}" if what
             else f"{store} holds {stored}-dimensional vectors, not {given}")
    return InvalidInputError(f"{found}: use the embedder (model and dimensions) the store was created with, "
                             "or another table or collection for this one")


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise InvalidInputError(f"{where} is nested deeper than 64 levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(f"{where} must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where} must hold finite numbers, got {value}")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{where} keys must be strings, got {k!r}")
            _check_json(k, f"{where} key", depth + 1)
            _check_json(v, f"{where}[{k!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_json(v, where, depth + 1)
    elif value is not None and not isinstance(value, (bool, int)):
        raise InvalidInputError(f"{where} must be JSON (str, number, bool, None, list, dict), got {type(value).__name__}")


def check_chunks(chunks: Any, dimensions: int | None, *, require_embedding: bool = False) -> list[Chunk]:
    """Validate chunks; a later chunk with the same id wins, as two upserts in a row would."""
    if isinstance(chunks, (str, bytes, dict, Chunk)) or not hasattr(chunks, "__iter__"):
        raise InvalidInputError("chunks must be a list of Chunk")
    out: dict[str, Chunk] = {}
    for c in chunks:
        if isinstance(c, dict):
            try:
                c = Chunk.model_validate(c)
            except Exception as exc:
                raise InvalidInputError(f"invalid chunk: {exc}") from None
        if not isinstance(c, Chunk):
            raise InvalidInputError(f"chunks must be Chunk records, got {type(c).__name__}")
        check_id(c.id, "chunk id")
        if c.content_id is not None:
            check_id(c.content_id, "content_id")
        if not isinstance(c.content, str) or "\x00" in c.content:
            raise InvalidInputError(f"chunk {c.id!r}: content must be a string without NUL characters")
        if isinstance(c.position, bool) or not isinstance(c.position, int) or not 0 <= c.position < 2**31:
            raise InvalidInputError(f"chunk {c.id!r}: position must be an integer in 0..2**31-1")
        _check_json(c.metadata, f"chunk {c.id!r} metadata")
        embedding = None
        if c.embedding is not None:
            embedding = check_embedding(c.embedding, dimensions, f"chunk {c.id!r} embedding")
        elif require_embedding:
            raise InvalidInputError(f"chunk {c.id!r} has no embedding")
        out[c.id] = c.model_copy(update={"embedding": embedding})
    return list(out.values())


def check_filters(filters: Any) -> dict[str, Any]:
    """A metadata filter: top-level key -> str/int/float/bool, matched by equality, AND-ed."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise InvalidInputError(f"filters must be a dict of metadata key -> value, got {type(filters).__name__}")
    for key, value in filters.items():
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidInputError(f"filter keys must be non-empty strings without NUL, got {key!r}")
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise InvalidInputError(
                f"filter {key!r}: values must be str, int, float or bool, got {type(value).__name__} "
                "(only equality on top-level keys is supported)"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"filter {key!r}: {value} cannot be matched")
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInputError(f"filter {key!r}: values must not contain NUL characters")
    return dict(filters)


def _same(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored is wanted
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    return isinstance(stored, (int, float)) and stored == wanted


def matches(metadata: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The reference semantics of a (checked) metadata filter."""
    return all(key in metadata and _same(metadata[key], value) for key, value in filters.items())


def rrf_fuse(
    vector_ids: Sequence[str],
    keyword_ids: Sequence[str],
    *,
    vector_weight: float,
    keyword_weight: float,
    k: int,
) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion: score = w_v / (k + rank_v) + w_k / (k + rank_k), ranks from 1;
    a list that misses an id adds nothing. Highest score first, ties by id."""
    scores: dict[str, float] = {}
    for i, id_ in enumerate(vector_ids, 1):
        scores[id_] = vector_weight / (k + i)
    for i, id_ in enumerate(keyword_ids, 1):
        scores[id_] = scores.get(id_, 0.0) + keyword_weight / (k + i)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def check_weights(vector_weight: Any, keyword_weight: Any, rrf_k: Any) -> tuple[float, float, int]:
    for name, w in (("vector_weight", vector_weight), ("keyword_weight", keyword_weight)):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InvalidInputError(f"{name} must be a number >= 0, got {w!r}")
    if vector_weight == 0 and keyword_weight == 0:
        raise InvalidInputError("vector_weight and keyword_weight cannot both be 0")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be an integer >= 0, got {rrf_k!r}")
    return float(vector_weight), float(keyword_weight), rrf_k


def check_candidates(value: Any) -> int:
    return check_int(value, "hybrid_candidates", 1, 10_000)


def check_int(value: Any, what: str, low: int = 1, high: int = 2**31 - 1) -> int:
    """An integer option in low..high (a bool is refused, though Python counts it an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def check_number(value: Any, what: str, low: float, high: float) -> float:
    """A numeric option in low..high, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be a number in {low}..{high}, got {value!r}")
    return float(value)


def check_dimensions(value: Any, high: int = 65_535, why: str = "") -> int:
    """A vector length in 1..high; `why` names whose limit `high` is, for the message."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidInputError(f"dimensions must be an integer in 1..{high}{why}, got {value!r}")
    return value


def check_choice(value: Any, what: str, choices: Iterable[Any]) -> Any:
    """One of `choices` (a dict's keys when given a dict)."""
    choices = list(choices)
    if value not in choices:
        raise InvalidInputError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_name(value: Any, what: str, pattern: re.Pattern, rule: str) -> str:
    """A store, table or collection name matching `pattern`; `rule` says the rule in words."""
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidInputError(f"{what} must be {rule}, got {value!r}")
    return value


def check_json_integers(value: Any, where: str, low: int, high: int, rule: str) -> None:
    """Refuse, before anything is written, an integer outside low..high anywhere in a JSON
    value, for engines whose JSON holds 64-bit integers (`rule` says so in the message)."""
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        raise InvalidInputError(f"{where}: {rule}, not {value}")
    if isinstance(value, dict):
        for v in value.values():
            check_json_integers(v, where, low, high, rule)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_json_integers(v, where, low, high, rule)


# -- filter values in a canonical form (for stores that index typed copies of the metadata) --


def filter_token(value: Any) -> str | None:
    """A scalar metadata value as a string that equals another's exactly when a filter on one
    matches the other: `b:true`/`b:false`, `n:` numbers by value (1 and 1.0 both `n:1`), `s:`
    strings. None for null, lists and objects, which no filter matches."""
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"n:{value}"
    if isinstance(value, float):
        return f"n:{int(value)}" if value.is_integer() else f"n:{value!r}"
    if isinstance(value, str):
        return f"s:{value}"
    return None


def tagged_value(value: Any) -> str:
    """`filter_token` of a scalar, kept short for an index: a long one becomes `h:<sha256>`."""
    out = filter_token(value)
    if out is None:
        raise TypeError(f"not a scalar metadata value: {type(value).__name__}")
    if len(out) > _LONG_VALUE:
        out = "h:" + hashlib.sha256(out.encode()).hexdigest()
    return out


def filter_term(key: str, value: Any) -> str:
    """One `key == value` condition as one string, for stores that index a chunk's
    `filter_terms` as one array; the key's length prefix keeps any key (with `=`, `:` or
    anything else in it) from running into its value."""
    term = f"{len(key)}:{key}={tagged_value(value)}"
    if len(term) > _LONG_TERM:
        term = "#" + hashlib.sha256(term.encode()).hexdigest()
    return term


def filter_terms(metadata: dict[str, Any]) -> list[str]:
    """The terms a chunk's metadata can be matched by: its top-level scalar values only, so a
    missing key, a null, a list or an object never matches a filter."""
    return [
        filter_term(k, v) for k, v in metadata.items() if isinstance(v, (str, bool, int, float))
    ]


def filter_scalar(value: Any) -> tuple[str, bool | float | str] | None:
    """(kind, value) for an engine that compares numbers as doubles: ("b", bool),
    ("n", float) or ("s", str); None for what no filter matches and numbers past a double."""
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, (int, float)):
        try:
            return "n", float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        return "s", value
    return None


def typed_scalar(value: Any) -> tuple[str, bool | int | float | str] | None:
    """(kind, value) for an engine with 64-bit integers and doubles: ("b", bool), ("s", str),
    ("i", int) for an integer that fits 64 bits, ("n", float) for any other number; None for
    null, lists and objects, which no filter matches."""
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, str):
        return "s", value
    if isinstance(value, int) and -INT64 <= value < INT64:
        return "i", value
    if isinstance(value, (int, float)):  # past 64 bits an integer is kept as a double
        return "n", float(value)
    return None


def number_forms(value: int | float) -> list[tuple[str, int | float]]:
    """The `typed_scalar` forms a stored number may have and equal a filter's number: an "n"
    double of the same value and/or an "i" integer of the same value."""
    fits = -INT64 <= value < INT64
    forms: list[tuple[str, int | float]] = []
    if float(value) == value or not fits:  # past 64 bits both sides are doubles
        forms.append(("n", float(value)))
    if fits and float(value).is_integer():
        forms.append(("i", int(value)))
    return forms


# -- hybrid search ------------------------------------------------------------------------


def rrf_top(vector: Sequence[Any], keyword: Sequence[Any], limit: int, *, key: Callable[[Any], str],
            vector_weight: float, keyword_weight: float, k: int) -> list[tuple[Any, float]]:
    """The best `limit` of two ranked candidate lists fused by `rrf_fuse`, as (candidate,
    fused score); `key` gives a candidate's chunk id."""
    by_id = {key(c): c for c in (*vector, *keyword)}
    fused = rrf_fuse([key(c) for c in vector], [key(c) for c in keyword],
                     vector_weight=vector_weight, keyword_weight=keyword_weight, k=k)
    return [(by_id[i], s) for i, s in fused[:limit]]


def fuse_hits(vector_hits: Sequence[SearchHit], keyword_hits: Sequence[SearchHit], limit: int, *,
              vector_weight: float, keyword_weight: float, k: int) -> list[SearchHit]:
    """Hybrid search's answer from its two candidate lists: the best `limit` hits by
    reciprocal-rank fusion, each scored by its fused score."""
    top = rrf_top(vector_hits, keyword_hits, limit, key=lambda h: h.id,
                  vector_weight=vector_weight, keyword_weight=keyword_weight, k=k)
    return [h.model_copy(update={"score": s}) for h, s in top]


# -- the interface --------------------------------------------------------------------------


class VectorDb(abc.ABC):
    """A store of chunks and their embeddings. See the module docstring for the semantics.

    Every method has an `a`-prefixed awaitable twin (`asearch`, `aupsert`, ...) that runs
    the sync method in a worker thread; stores with a native async driver may override them.
    """

    search_type: str = "vector"
    dimensions: int | None = None

    @abc.abstractmethod
    def create(self, dimensions: int | None = None) -> None:
        """Create the store if missing (idempotent). `dimensions` is required the first
        time unless given to the constructor; an existing store must agree with it."""

    @abc.abstractmethod
    def exists(self) -> bool: ...

    @abc.abstractmethod
    def drop(self) -> None:
        """Remove the store and everything in it (no error when it does not exist)."""

    @abc.abstractmethod
    def upsert(self, chunks: Iterable[Chunk]) -> int:
        """Insert or replace chunks by id; returns how many were written."""

    @abc.abstractmethod
    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        """Atomically make `chunks` the only chunks of `content_id` (their content_id is
        set to it); returns how many were written."""

    @abc.abstractmethod
    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids that exist, in the order asked."""

    @abc.abstractmethod
    def delete(
        self,
        *,
        ids: Sequence[str] | None = None,
        content_id: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> int:
        """Delete the chunks matching every condition given (at least one); returns how many."""

    @abc.abstractmethod
    def search(
        self,
        query: str | None = None,
        *,
        embedding: Sequence[float] | None = None,
        limit: int = 5,
        filters: dict[str, Any] | None = None,
        search_type: str | None = None,
    ) -> list[SearchHit]:
        """The best `limit` chunks. "vector" needs `embedding`, "keyword" needs `query`,
        "hybrid" needs both. Hits carry no embedding."""

    @abc.abstractmethod
    def count(self, *, content_id: str | None = None, filters: dict[str, Any] | None = None) -> int: ...

    def close(self) -> None:
        """Release connections (the store's data stays)."""

    def joined_transaction(self, db: Any) -> contextlib.AbstractContextManager:
        """A context whose writes to `db` and to this store commit or roll back together,
        when the store lives in `db`'s own database (PgVector given `db=` that PostgresDb);
        otherwise it joins nothing and each write commits on its own."""
        return contextlib.nullcontext()

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # awaitable twins: the sync call in a worker thread
    async def acreate(self, dimensions: int | None = None) -> None:
        await asyncio.to_thread(self.create, dimensions)

    async def aexists(self) -> bool:
        return await asyncio.to_thread(self.exists)

    async def adrop(self) -> None:
        await asyncio.to_thread(self.drop)

    async def aupsert(self, chunks: Iterable[Chunk]) -> int:
        return await asyncio.to_thread(self.upsert, list(chunks))

    async def areplace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        return await asyncio.to_thread(self.replace, content_id, list(chunks))

    async def aget(self, ids: Sequence[str]) -> list[Chunk]:
        return await asyncio.to_thread(self.get, ids)

    async def adelete(self, **conditions: Any) -> int:
        return await asyncio.to_thread(lambda: self.delete(**conditions))

    async def asearch(self, query: str | None = None, **kwargs: Any) -> list[SearchHit]:
        return await asyncio.to_thread(lambda: self.search(query, **kwargs))

    async def acount(self, **kwargs: Any) -> int:
        return await asyncio.to_thread(lambda: self.count(**kwargs))

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # shared argument handling for search
    def _search_args(
        self, query: Any, embedding: Any, limit: Any, filters: Any, search_type: Any
    ) -> tuple[str, str | None, list[float] | None, int, dict[str, Any]]:
        kind = check_search_type(self.search_type if search_type is None else search_type)
        limit = check_limit(limit)
        filters = check_filters(filters)
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
        if query is not None and "\x00" in query:
            raise InvalidInputError("query must not contain NUL characters")
        if kind in ("vector", "hybrid"):
            if embedding is None:
                raise InvalidInputError(f"{kind} search needs the query's embedding (embedding=...)")
            embedding = check_embedding(embedding, self.dimensions, "query embedding")
        if kind in ("keyword", "hybrid") and (query is None or not query.strip()):
            raise InvalidInputError(f"{kind} search needs a query text")
        return kind, query, embedding, limit, filters

    @staticmethod
    def _delete_args(ids: Any, content_id: Any, filters: Any) -> tuple[list[str] | None, str | None, dict]:
        if ids is None and content_id is None and filters is None:
            raise InvalidInputError("delete needs ids=, content_id= or filters= (use drop() to remove everything)")
        if ids is not None:
            ids = check_ids(ids)
        if content_id is not None:
            check_id(content_id, "content_id")
        filters = check_filters(filters)
        if filters == {} and ids is None and content_id is None:
            raise InvalidInputError("an empty filter would delete everything; use drop() for that")
        return ids, content_id, filters
