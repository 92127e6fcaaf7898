"""The query description every kernel compiles natively, and a reference evaluator for it.

A `Query` is a conjunction of conditions, one order (a tuple of fields, all ascending or
all descending, ending with the table key so the order is total), a limit, a keyset
position (`after`: the order values of the last row of the previous page) and an offset
(rows past that position skipped before the first row returned).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TypeVar

T = TypeVar("T")

OPS = ("eq", "in", "lt", "lte", "gt", "gte", "icontains", "contains_all")


@dataclass(frozen=True)
class Cond:
    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        assert self.op in OPS, self.op


def eq(f: str, v: Any) -> Cond:
    return Cond(f, "eq", v)


@dataclass(frozen=True)
class Query:
    table: str
    where: tuple[Cond, ...] = ()
    order: tuple[str, ...] = ()
    desc: bool = False
    limit: int | None = None
    after: tuple | None = None
    fields: tuple[str, ...] | None = None  # projection; None = every column
    offset: int = 0
    extra: dict = field(default_factory=dict, compare=False)


# -- reference semantics, used by the in-memory and JSON kernels ---------------------------

class _Bound:
    """A value below (LOW) or above (HIGH) every other value: None sorts as LOW, like NULL
    in SQLite, and index entries stay flat tuples of the row's own values."""

    __slots__ = ("high",)

    def __init__(self, high: bool) -> None:
        self.high = high

    def __lt__(self, other: Any) -> bool:
        return not self.high and other is not self

    def __gt__(self, other: Any) -> bool:
        return self.high and other is not self

    def __le__(self, other: Any) -> bool:
        return other is self or not self.high

    def __ge__(self, other: Any) -> bool:
        return other is self or self.high

    def __eq__(self, other: Any) -> bool:
        return other is self

    def __hash__(self) -> int:
        return hash(self.high)

    def __repr__(self) -> str:
        return "HIGH" if self.high else "LOW"


LOW, HIGH = _Bound(False), _Bound(True)


def sort_key(value: Any) -> Any:
    return LOW if value is None else value


def row_key(row: dict, order: Sequence[str]) -> tuple:
    return tuple(LOW if (v := row.get(f)) is None else v for f in order)


def matches(row: dict, cond: Cond) -> bool:
    value = row.get(cond.field)
    op, target = cond.op, cond.value
    if op == "eq":
        return value == target if target is not None else value is None
    if op == "in":
        return value in target
    if op == "icontains":
        return value is not None and target.lower() in value.lower()
    if op == "contains_all":
        return value is not None and all(t in value for t in target)
    if value is None:
        return False
    if op == "lt":
        return value < target
    if op == "lte":
        return value <= target
    if op == "gt":
        return value > target
    return value >= target  # gte


def matches_all(row: dict, where: Iterable[Cond]) -> bool:
    return all(matches(row, c) for c in where)


def after_filter(rows: Iterable[dict], q: Query) -> Iterable[dict]:
    if q.after is None:
        return rows
    pos = tuple(sort_key(v) for v in q.after)
    if q.desc:
        return (r for r in rows if row_key(r, q.order) < pos)
    return (r for r in rows if row_key(r, q.order) > pos)


def window(rows: Iterable[T], q: Query) -> list[T]:
    """Of rows in the query's order past its keyset position: `offset` skipped, then at
    most `limit`."""
    stop = None if q.limit is None else q.offset + q.limit
    return list(itertools.islice(rows, q.offset, stop))
