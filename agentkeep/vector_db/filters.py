"""Metadata filters: their check, their reference semantics (`matches`), the views of a
checked filter a store translates ("any of" keys apart, or one equality filter per
combination of members), and canonical forms of filter values for stores that index typed
copies of the metadata."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from agentkeep.db.errors import InvalidInputError

__all__ = ["ANY_OF", "INT64", "MAX_ANY_OF", "Dialect", "Params", "all_of", "any_of", "check_filters", "expand_filters",
           "filter_alternatives", "filter_scalar", "filter_term", "filter_terms", "filter_token", "matches",
           "number_forms", "split_filters", "sql_where", "tagged_value", "typed_scalar"]

ANY_OF = "$in"  # {"key": {"$in": [a, b]}}: the key holds any of these values
MAX_ANY_OF = 100  # members of one "any of"
_LONG_VALUE = 256  # longer tagged values and filter terms are replaced by their SHA-256
_LONG_TERM = 512
INT64 = 2**63  # engines with 64-bit integers hold -INT64 <= i < INT64


def check_filters(filters: Any) -> dict[str, Any]:
    """A metadata filter: top-level key -> a str/int/float/bool matched by equality, or
    `{"$in": [...]}` of such values (any of them), the keys AND-ed. An "any of" keeps its
    first member of each value (1 and 1.0 are one value); with one member it is an equality."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise InvalidInputError(f"filters must be a dict of metadata key -> value, got {type(filters).__name__}")
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidInputError(f"filter keys must be non-empty strings without NUL, got {key!r}")
        if isinstance(value, dict):
            members = _any_of_members(key, value)
            out[key] = members[0] if len(members) == 1 else {ANY_OF: members}
        else:
            out[key] = _filter_value(key, value)
    return out


def _filter_value(key: str, value: Any, where: str = "values") -> Any:
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise InvalidInputError(
            f"filter {key!r}: {where} must be str, int, float or bool, got {type(value).__name__} "
            f'(filters match top-level keys by equality, or by {{"{ANY_OF}": [...]}} of such values)'
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"filter {key!r}: {value} cannot be matched")
    if isinstance(value, str) and "\x00" in value:
        raise InvalidInputError(f"filter {key!r}: values must not contain NUL characters")
    return value


def _any_of_members(key: str, value: dict) -> list[Any]:
    if list(value) != [ANY_OF]:
        raise InvalidInputError(
            f'filter {key!r}: the only operator is {{"{ANY_OF}": [...]}} (any of these values), got {value!r}')
    members = value[ANY_OF]
    if not isinstance(members, (list, tuple)):
        raise InvalidInputError(f'filter {key!r}: "{ANY_OF}" takes a list of values, got {type(members).__name__}')
    if not 0 < len(members) <= MAX_ANY_OF:
        raise InvalidInputError(f'filter {key!r}: "{ANY_OF}" takes 1..{MAX_ANY_OF} values, got {len(members)}')
    unique: dict[str, Any] = {}
    for member in members:
        _filter_value(key, member, f'"{ANY_OF}" members')
        unique.setdefault(filter_token(member), member)
    return list(unique.values())


def any_of(value: Any) -> list[Any] | None:
    """The members of a checked filter value that is an "any of"; None for an equality."""
    return value[ANY_OF] if isinstance(value, dict) else None


def filter_alternatives(filters: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """Each key of a checked filter with the values it accepts (one for an equality)."""
    return [(key, any_of(value) or [value]) for key, value in filters.items()]


def split_filters(filters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A checked filter as (its equalities, its "any of" keys with their members)."""
    equal = {k: v for k, v in filters.items() if not isinstance(v, dict)}
    return equal, {k: v[ANY_OF] for k, v in filters.items() if isinstance(v, dict)}


def expand_filters(filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Equality-only filters whose matches, together, are the filter's, each chunk matching at
    most one of them (for an engine that cannot OR): one per combination of members."""
    out: list[dict[str, Any]] = [{}]
    for key, values in filter_alternatives(filters):
        out = [{**f, key: v} for f in out for v in values]
    return out


def _same(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored is wanted
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    return isinstance(stored, (int, float)) and stored == wanted


def matches(metadata: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The reference semantics of a (checked) metadata filter."""
    return all(key in metadata and any(_same(metadata[key], v) for v in values)
               for key, values in filter_alternatives(filters))


def all_of(parts: list[Any], join: Callable[[list[Any]], Any] = lambda parts: {"$and": parts}) -> Any:
    """The AND of filter conditions as a query document: None for none, a lone condition as it
    is, else `join(parts)` (by default MongoDB's `{"$and": parts}`, which Chroma and Pinecone read)."""
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else join(parts)


def sql_where(parts: list[str]) -> str:
    """The AND of SQL-like conditions as a WHERE clause (with its leading space); "" for none."""
    return " WHERE " + " AND ".join(parts) if parts else ""


class Params:
    """The values bound to one statement. `add(value)` keeps a value under the next name (p0,
    p1, ...) and gives its placeholder: `style` with that name and the `kind` given, such as
    "%({name})s" (psycopg), "{{{name}:{kind}}}" (ClickHouse) or "?" (CQL, bound in order).
    No value is ever written into a statement."""

    def __init__(self, style: str, **values: Any) -> None:
        self.style = style
        self.values: dict[str, Any] = values

    def add(self, value: Any, kind: str = "") -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self.style.format(name=name, kind=kind)


class Dialect(NamedTuple):
    """How a query language writes the conditions of a delete, a count or a search: `ids` and
    `content_id` are templates around their bound value's placeholder (`{}`), of the `kinds`
    given; `filter(filters, params)` gives the conditions of a (checked) metadata filter."""

    ids: str
    content_id: str
    filter: Callable[[dict[str, Any], Params], list[str]]
    kinds: tuple[str, str] = ("", "")

    def where(self, params: Params, ids: list[str] | None = None, content_id: str | None = None,
              filters: dict[str, Any] | None = None) -> list[str]:
        """The conditions (to AND) of the ids, content id and metadata filter given."""
        parts = [] if ids is None else [self.ids.format(params.add(ids, self.kinds[0]))]
        if content_id is not None:
            parts.append(self.content_id.format(params.add(content_id, self.kinds[1])))
        return parts + (self.filter(filters, params) if filters else [])


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


def number_forms(value: float) -> list[tuple[str, int | float]]:
    """The `typed_scalar` forms a stored number may have and equal a filter's number: an "n"
    double of the same value and/or an "i" integer of the same value."""
    fits = -INT64 <= value < INT64
    forms: list[tuple[str, int | float]] = []
    if float(value) == value or not fits:  # past 64 bits both sides are doubles
        forms.append(("n", float(value)))
    if fits and float(value).is_integer():
        forms.append(("i", int(value)))
    return forms
