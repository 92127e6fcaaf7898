"""Which index a query reads: one rule for every store that keeps sorted indexes of its own
(the in-process RowTable, Redis sorted sets, DynamoDB GSIs, Firestore composite indexes).

An index is a sequence of fields its entries are sorted by (the table key last, so entries
are distinct). A read of it is a run of entries: the leading fields bound by equality
(the *prefix*; an `in` expands into one prefix per value where the store merges several
runs), then optionally a range on the next field. The run yields a wanted order when the
fields right after the prefix are that order's fields.

The rule: the narrowest read wins, that is the longest prefix, then a range on the next
field; between reads equally narrow, one that yields the order (it stops at the limit); then
the index listed first. Fields bound to one value by equality are left out of the order (every
row read has that value). Reading either direction costs the same on every store, so the
direction of the order plays no part in the choice. No I/O: stores turn a `Plan` into
their own ranges, key conditions or native queries.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentkeep.db.query import Cond, matches

RANGE_OPS = ("lt", "lte", "gt", "gte")


@dataclass(frozen=True)
class Shape:
    """An index as the planner sees it."""

    fields: tuple[str, ...]
    sparse: bool = False  # holds only the rows whose first field is set (expiry times)
    # A hashed partition (a DynamoDB GSI's partition key): a read needs its first
    # `partition` fields bound by equality (one read per combination of values), and the
    # fields past them can take one value each (one key condition per read).
    partition: int | None = None


@dataclass(frozen=True)
class Plan:
    index: int  # the chosen index's position in the list given
    fields: tuple[str, ...]  # its fields
    prefix: tuple[str, ...]  # its leading fields bound by equality
    prefix_values: tuple[tuple, ...]  # for each prefix field, its values (several: an `in`)
    range_field: str | None  # the field after the prefix, when range conditions bound it
    ranges: tuple[Cond, ...]  # those range conditions (a range holds no None: the read starts past it)
    ordered: bool  # the read (its prefixes' runs merged) yields the wanted order
    order: tuple[str, ...]  # that order as the index yields it: the fields after the prefix
    covered: bool  # the prefix and the range answer every condition: nothing to check again

    @property
    def prefixes(self) -> list[tuple]:
        """Every equality prefix: one tuple of values per combination of `in` values."""
        return list(itertools.product(*self.prefix_values))

    def answers(self, c: Cond, where: Sequence[Cond]) -> bool:
        """Whether the read itself answers condition `c` of `where`."""
        return answered(c, where, dict(zip(self.prefix, self.prefix_values)), self.range_field)

    def position(self, order: Sequence[str], after: Sequence[Any]) -> tuple:
        """A keyset position (`after`: the values of `order` of the last row read) as values
        of the index fields after the prefix, for an ordered plan."""
        known = dict(zip(order, after))
        return tuple(known[f] for f in self.order)


def equalities(where: Iterable[Cond], usable: Callable[[str], bool] | None = None) -> dict[str, tuple]:
    """The values of each field's first `eq` or `in` condition (an `in` without values is
    left out: it matches nothing, which the rows' own check finds)."""
    out: dict[str, tuple] = {}
    for c in where:
        if c.op in ("eq", "in") and c.field not in out and (usable is None or usable(c.field)):
            values = (c.value,) if c.op == "eq" else tuple(dict.fromkeys(c.value))
            if values:
                out[c.field] = values
    return out


def bounds(where: Iterable[Cond], usable: Callable[[str], bool] | None = None) -> dict[str, list[Cond]]:
    """The range conditions on each field (a bound of None bounds nothing: left out)."""
    out: dict[str, list[Cond]] = {}
    for c in where:
        if c.op in RANGE_OPS and c.value is not None and (usable is None or usable(c.field)):
            out.setdefault(c.field, []).append(c)
    return out


def key_values(key: Sequence[str], where: Iterable[Cond]) -> list[tuple] | None:
    """The keys a query names outright (every key field bound by `eq` or `in`), or None. A
    key never holds None, so a None value names no key."""
    values: dict[str, list] = {}
    for c in where:
        if c.field in key and c.field not in values and c.op in ("eq", "in"):
            values[c.field] = [c.value] if c.op == "eq" else list(dict.fromkeys(c.value))
    if len(values) < len(key):
        return None
    return [k for k in itertools.product(*(values[f] for f in key)) if None not in k]


def plan(
    indexes: Sequence[Shape | tuple[str, ...]],
    where: Sequence[Cond],
    order: Sequence[str] = (),
    *,
    ordered_only: bool = False,
    max_prefixes: int = 1,
    usable: Callable[[str], bool] | None = None,
) -> Plan | None:
    """The read that serves `where` (and `order`) best, or None when no index narrows the
    read or yields the order (then the store reads everything).

    `max_prefixes`: how many prefixes `in` values may expand into (1: the store reads one
    run). `usable`: the fields the store can bound natively (the others are checked on the
    rows). `ordered_only`: only reads that yield the order."""
    eqs = equalities(where, usable)
    rng = bounds(where, usable)
    fixed = {f for f, values in eqs.items() if len(values) == 1}
    wanted = tuple(f for f in order if f not in fixed)
    best: tuple | None = None
    for i, index in enumerate(indexes):
        shape = index if isinstance(index, Shape) else Shape(tuple(index))
        fields = shape.fields
        n = _prefix_length(shape, eqs, max_prefixes)
        low = shape.partition or 0
        if n < low:
            continue
        variants = [] if ordered_only else [(n, False)]
        if wanted:  # the longest prefix after which the index lists the order's fields
            m = next((m for m in range(n, low - 1, -1) if fields[m : m + len(wanted)] == wanted), None)
            if m is not None:
                variants.append((m, True))
        for m, ordered in variants:
            if shape.sparse and not _reads_only_set_rows(fields[0], m, eqs, rng):
                continue
            ranged = m < len(fields) and fields[m] in rng
            score = (m, ranged, ordered)
            if score == (0, False, False):
                continue  # neither narrows nor orders: no better than reading everything
            if best is None or score > best[0]:
                best = (score, i, fields, m)
    if best is None:
        return None
    (_, ranged, ordered), i, fields, m = best
    prefix = fields[:m]
    prefix_values = tuple(eqs[f] for f in prefix)
    range_field = fields[m] if ranged else None
    return Plan(
        index=i, fields=fields, prefix=prefix, prefix_values=prefix_values, range_field=range_field,
        ranges=tuple(rng[range_field]) if ranged else (), ordered=ordered,
        order=fields[m : m + len(wanted)] if ordered else (),
        covered=all(answered(c, where, dict(zip(prefix, prefix_values)), range_field) for c in where),
    )


def _prefix_length(shape: Shape, eqs: dict[str, tuple], max_prefixes: int) -> int:
    n, width = 0, 1
    for f in shape.fields:
        values = eqs.get(f)
        if values is None:
            break
        if shape.partition is not None and n >= shape.partition and len(values) > 1:
            break  # past a hashed partition, one key condition per read: one value
        if width * len(values) > max_prefixes:
            break
        width *= len(values)
        n += 1
    return n


def _reads_only_set_rows(first: str, m: int, eqs: dict[str, tuple], rng: dict[str, list]) -> bool:
    """Whether a sparse index (rows whose first field is None left out) holds every row the
    read wants: the first field is bound to values that are not None, or by a range."""
    if m > 0:
        return None not in eqs[first]
    return first in rng


def answered(c: Cond, where: Sequence[Cond], bound: dict[str, tuple], range_field: str | None = None) -> bool:
    """Whether a read that binds the fields of `bound` to their values (and bounds
    `range_field` by its range conditions) answers condition `c` of `where` itself: no row
    it returns can fail it."""
    if c.op in ("eq", "in"):
        # the read took the field's first equality; a second one must be checked
        return c.field in bound and sum(1 for x in where if x.field == c.field and x.op in ("eq", "in")) == 1
    if c.op in RANGE_OPS:
        if c.field == range_field:
            return c.value is not None
        if c.field in bound:  # implied by the field's values
            return all(v is not None and matches({c.field: v}, c) for v in bound[c.field])
    return False
