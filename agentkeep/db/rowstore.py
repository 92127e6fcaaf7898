"""An indexed in-process table: rows by key plus one sorted list per spec index.

Used by InMemoryDb as its storage and by JsonDb as its listing index. A find walks the
sorted index that serves its equality prefix and order from the keyset position and stops
at the limit, so documented list calls never scan the table.
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from typing import Any, Iterable

from agentkeep.db.planner import Plan, key_values, plan
from agentkeep.db.query import (
    HIGH,
    LOW,
    Cond,
    Query,
    after_filter,
    matches,
    matches_all,
    row_key,
    sort_key,
    window,
)
from agentkeep.db.tables import TableSpec


def clone(row: dict, json_cols: Iterable[str]) -> dict:
    """Copy a row so callers never share nested JSON values with the store."""
    out = dict(row)
    for c in json_cols:
        value = out.get(c)
        if isinstance(value, (dict, list)):
            out[c] = json.loads(json.dumps(value))
    return out


class _Index:
    def __init__(self, fields: tuple[str, ...], key: tuple[str, ...]) -> None:
        self.fields = fields
        self.order = fields + tuple(k for k in key if k not in fields)
        self.key_pos = tuple(self.order.index(k) for k in key)
        self.entries: list[tuple] = []

    def entry(self, row: dict) -> tuple:
        return row_key(row, self.order)

    def add(self, row: dict) -> None:
        insort(self.entries, self.entry(row))

    def remove(self, row: dict) -> None:
        e = self.entry(row)
        i = bisect_left(self.entries, e)
        if i < len(self.entries) and self.entries[i] == e:
            del self.entries[i]


class RowTable:
    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows: dict[tuple, dict] = {}
        self.indexes = [_Index(spec.key, spec.key)] + [_Index(i.fields, spec.key) for i in spec.indexes]
        self.shapes = [idx.order for idx in self.indexes]
        self.multi: dict[str, dict[Any, set]] = {f: {} for f in spec.multi}
        self.json_cols = [c.name for c in spec.columns if c.kind == "json"]

    # -- writes --------------------------------------------------------------------------

    def put(self, row: dict) -> None:
        key = self.spec.key_of(row)
        old = self.rows.get(key)
        if old is not None:
            self._unindex(key, old)
        row = clone(row, self.json_cols)
        self.rows[key] = row
        for idx in self.indexes:
            idx.add(row)
        for f, by_value in self.multi.items():
            for value in set(row.get(f) or ()):
                by_value.setdefault(value, set()).add(key)

    def remove(self, key: tuple) -> dict | None:
        old = self.rows.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: tuple, row: dict) -> None:
        for idx in self.indexes:
            idx.remove(row)
        for f, by_value in self.multi.items():
            for value in set(row.get(f) or ()):
                keys = by_value.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del by_value[value]

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: tuple) -> dict | None:
        row = self.rows.get(key)
        return None if row is None else clone(row, self.json_cols)

    def find(self, q: Query) -> list[dict]:
        out = window(self._candidates(q), q)
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in out]
        return [clone(r, self.json_cols) for r in out]

    def count(self, where: tuple[Cond, ...]) -> int:
        return sum(1 for _ in self._candidates(Query(self.spec.name, where)))

    def _candidates(self, q: Query) -> Iterable[dict]:
        """Matching rows in query order (lazily, so a limit stops the walk early)."""
        keys = key_values(self.spec.key, q.where)
        if keys is not None:
            return self._sorted([self.rows[k] for k in keys if k in self.rows], q)
        read = plan(self.shapes, q.where, q.order)
        if read is not None and read.ordered:
            return self._walk(read, q)
        pool = self._multi_candidates(q.where)
        if pool is None:
            if read is not None:
                idx = self.indexes[read.index]
                pool = (self.rows[self._key_of_entry(idx, e)] for e in self._range(idx, read, None, False))
            else:
                pool = self.rows.values()
        return self._sorted(pool, q)

    def _multi_candidates(self, where: Iterable[Cond]) -> Iterable[dict] | None:
        for c in where:
            if c.op == "contains_all" and c.field in self.multi:
                sets = [self.multi[c.field].get(v, set()) for v in c.value]
                keys = set.intersection(*sets) if sets else set()
                return [self.rows[k] for k in keys]
        return None

    def _sorted(self, rows: Iterable[dict], q: Query) -> Iterable[dict]:
        rows = [r for r in rows if matches_all(r, q.where)]
        if q.order:
            rows.sort(key=lambda r: row_key(r, q.order), reverse=q.desc)
            rows = list(after_filter(rows, q))
        return rows

    def _key_of_entry(self, idx: _Index, entry: tuple) -> tuple:
        return tuple(entry[i] for i in idx.key_pos)

    def _range(self, idx: _Index, read: Plan, after: tuple | None, desc: bool) -> list[tuple]:
        """The entries of the plan's one prefix, within its range, past `after` (a keyset
        position in the index's terms)."""
        entries = idx.entries
        prefix = tuple(sort_key(v) for v in read.prefixes[0])
        lo, hi = bisect_left(entries, prefix), bisect_left(entries, prefix + (HIGH,))
        if read.ranges:  # a range holds no None
            lo = max(lo, bisect_left(entries, prefix + (LOW, HIGH)))
        for c in read.ranges:
            bound = sort_key(c.value)
            if c.op == "gte":
                lo = max(lo, bisect_left(entries, prefix + (bound,)))
            elif c.op == "gt":
                lo = max(lo, bisect_left(entries, prefix + (bound, HIGH)))
            elif c.op == "lte":
                hi = min(hi, bisect_left(entries, prefix + (bound, HIGH)))
            else:
                hi = min(hi, bisect_left(entries, prefix + (bound,)))
        if after is not None:
            pos = prefix + after
            if desc:
                hi = min(hi, bisect_left(entries, pos))
            else:  # past every entry that starts with pos, however long the entries are
                lo = max(lo, bisect_left(entries, pos + (HIGH,)))
        return entries[lo:hi] if lo < hi else []

    def _walk(self, read: Plan, q: Query) -> Iterable[dict]:
        idx = self.indexes[read.index]
        after = None
        if q.after is not None:
            after = tuple(sort_key(v) for v in read.position(q.order, q.after))
        entries = self._range(idx, read, after, q.desc)
        for e in reversed(entries) if q.desc else entries:
            row = self.rows[self._key_of_entry(idx, e)]
            if read.covered or matches_all(row, q.where):
                yield row

    def distinct(self, field: str, where: tuple[Cond, ...]) -> list:
        values = set()
        for row in self._candidates(Query(self.spec.name, where)):
            v = row.get(field)
            values.update(v if isinstance(v, list) else [v])
        values.discard(None)
        return list(values)

    def group_count(self, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        groups: dict[Any, list] = {}
        rows = self._candidates(Query(self.spec.name, where, (by, max_field) + self.spec.key))
        for row in rows:
            k = row.get(by)
            g = groups.get(k)
            if g is None:
                if len(groups) == limit:
                    break
                g = groups[k] = [0, None]
            g[0] += 1
            value = row.get(max_field)
            if value is not None and (g[1] is None or value > g[1]):
                g[1] = value
        return [(k, n, last) for k, (n, last) in groups.items()]


def apply_update(row: dict, set_: dict | None, incr: dict | None) -> dict:
    new = dict(row)
    new.update(set_ or {})
    for f, n in (incr or {}).items():
        new[f] = (new.get(f) or 0) + n
    return new


def check_where(row: dict, where: Iterable[Cond]) -> bool:
    return all(matches(row, c) for c in where)
