"""Records and argument checks shared by every store, so that all of them refuse the same inputs."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentkeep.db.errors import InvalidInputError

__all__ = [
    "FLOAT32_MAX", "MAX_CHUNK_ID_LENGTH", "MAX_LIMIT", "SEARCH_TYPES", "Chunk", "SearchHit", "SearchType",
    "check_choice", "check_chunks", "check_dimensions", "check_embedding", "check_id", "check_ids", "check_int",
    "check_name", "check_number", "check_one_given", "check_search_type", "check_weights", "dimension_mismatch",
]

SearchType = Literal["vector", "keyword", "hybrid"]
SEARCH_TYPES = ("vector", "keyword", "hybrid")
MAX_CHUNK_ID_LENGTH = 1024
MAX_LIMIT = 1000
FLOAT32_MAX = 3.4028234663852886e38  # vectors are stored at single precision
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Chunk(BaseModel):
    """One piece of a content, as stored in a vector store."""

    model_config = ConfigDict(extra="forbid")

    id: str
    content: str
    content_id: str | None = None
    embedding: list[float] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    position: int = 0


class SearchHit(Chunk):
    """A chunk found by `search`, with its score (higher is closer; see each store's docs)."""

    score: float


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


def check_search_type(value: Any) -> str:
    return check_choice(value, "search_type", SEARCH_TYPES)


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


def _check_json(value: Any, where: str, integers: tuple[int, int, str] | None, depth: int = 0) -> None:
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
            _check_json(k, f"{where} key", integers, depth + 1)
            _check_json(v, f"{where}[{k!r}]", integers, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_json(v, where, integers, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and integers:
        low, high, rule = integers
        if not low <= value <= high:
            raise InvalidInputError(f"{where}: {rule}, not {value}")
    elif value is not None and not isinstance(value, (bool, int)):
        raise InvalidInputError(f"{where} must be JSON (str, number, bool, None, list, dict), got {type(value).__name__}")


def check_chunks(chunks: Any, dimensions: int | None,
                 integers: tuple[int, int, str] | None = None) -> list[Chunk]:
    """Validate chunks; a later chunk with the same id wins, as two upserts in a row would.
    `integers`: (low, high, why) for an engine whose JSON holds only the integers low..high."""
    if isinstance(chunks, (str, bytes, dict, Chunk)) or not hasattr(chunks, "__iter__"):
        raise InvalidInputError("chunks must be a list of Chunk")
    out: dict[str, Chunk] = {}
    for c in chunks:
        if isinstance(c, dict):
            try:
                c = Chunk.model_validate(c)
            except ValueError as exc:  # pydantic's ValidationError
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
        _check_json(c.metadata, f"chunk {c.id!r} metadata", integers)
        embedding = None
        if c.embedding is not None:
            embedding = check_embedding(c.embedding, dimensions, f"chunk {c.id!r} embedding")
        out[c.id] = c.model_copy(update={"embedding": embedding})
    return list(out.values())


def check_weights(vector_weight: Any, keyword_weight: Any, rrf_k: Any) -> tuple[float, float, int]:
    for name, w in (("vector_weight", vector_weight), ("keyword_weight", keyword_weight)):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InvalidInputError(f"{name} must be a number >= 0, got {w!r}")
    if vector_weight == 0 and keyword_weight == 0:
        raise InvalidInputError("vector_weight and keyword_weight cannot both be 0")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be an integer >= 0, got {rrf_k!r}")
    return float(vector_weight), float(keyword_weight), rrf_k


def check_int(value: Any, what: str, low: int = 1, high: int = 2**31 - 1, why: str = "") -> int:
    """An integer option in low..high (a bool is refused, though Python counts it an int);
    `why` names whose limit `high` is, for the message."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be an integer in {low}..{high}{why}, got {value!r}")
    return value


def check_number(value: Any, what: str, low: float, high: float) -> float:
    """A numeric option in low..high, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be a number in {low}..{high}, got {value!r}")
    return float(value)


def check_dimensions(value: Any, high: int = 65_535, why: str = "") -> int:
    """A vector length in 1..high."""
    return check_int(value, "dimensions", 1, high, why)


def check_one_given(values: Iterable[Any], message: str) -> None:
    """Refuse unless exactly one of `values` is given (not None): a store's ways to connect."""
    if sum(v is not None for v in values) != 1:
        raise InvalidInputError(message)


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
