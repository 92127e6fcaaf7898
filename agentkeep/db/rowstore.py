"""An indexed in-process table: rows by key plus one sorted list per spec index.

Used by InMemoryDb as its storage and by JsonDb as its listing index. A find walks the
sorted index that serves its equality prefix and order from the keyset position and stops
at the limit, so documented list calls never scan the table.
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from typing import Any, Iterable

from agentkeep.db.query import HIGH, Cond, Query, after_filter, matches, matches_all, row_key, sort_key
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
        rows = self._candidates(q)
        out = []
        for row in rows:
            out.append(row)
            if q.limit is not None and len(out) >= q.limit:
                break
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in out]
        return [clone(r, self.json_cols) for r in out]

    def count(self, where: tuple[Cond, ...]) -> int:
        return sum(1 for _ in self._candidates(Query(self.spec.name, where)))

    def _candidates(self, q: Query) -> Iterable[dict]:
        """Matching rows in query order (lazily, so a limit stops the walk early)."""
        eqs = {c.field: c.value for c in q.where if c.op == "eq"}
        keyed = self._by_key(q.where)
        if keyed is not None:
            rows = [self.rows[k] for k in keyed if k in self.rows]
            return self._sorted(rows, q)
        plan = self._plan(eqs, q.order) if q.order else None
        if plan is not None:
            idx, prefix = plan
            return self._walk(idx, prefix, q)
        pool = self._multi_candidates(q.where)
        if pool is None:
            best = self._plan(eqs, None)
            if best is not None:
                idx, prefix = best
                pool = (self.rows[self._key_of_entry(idx, e)] for e in self._range(idx, prefix, q, None))
            else:
                pool = self.rows.values()
        return self._sorted(pool, q)

    def _by_key(self, where: Iterable[Cond]) -> list[tuple] | None:
        if len(self.spec.key) != 1:
            return None
        k = self.spec.key[0]
        for c in where:
            if c.field == k and c.op == "eq":
                return [(c.value,)]
            if c.field == k and c.op == "in":
                return [(x,) for x in c.value]
        return None

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

    def _plan(self, eqs: dict, order: tuple[str, ...] | None):
        """The index with the longest equality prefix that also yields `order` (if given)."""
        best = None
        for idx in self.indexes:
            n = 0
            while n < len(idx.fields) and idx.fields[n] in eqs:
                n += 1
            if order is not None:
                # the index must yield `order` after its equality prefix (which may stop short
                # of the order's first field); fields past the order only break its ties
                order = tuple(order)
                while n > 0 and idx.order[n : n + len(order)] != order:
                    n -= 1
                if idx.order[n : n + len(order)] != order:
                    continue
            elif n == 0:
                continue
            if best is None or n > len(best[1]):
                best = (idx, tuple(sort_key(eqs[f]) for f in idx.fields[:n]))
        return best

    def _key_of_entry(self, idx: _Index, entry: tuple) -> tuple:
        return tuple(entry[i] for i in idx.key_pos)

    def _range(self, idx: _Index, prefix: tuple, q: Query, after: tuple | None) -> list[tuple]:
        entries = idx.entries
        lo, hi = bisect_left(entries, prefix), bisect_left(entries, prefix + (HIGH,))
        if len(prefix) < len(idx.order):
            first = idx.order[len(prefix)]
            for c in q.where:
                if c.field != first or c.op not in ("lt", "lte", "gt", "gte"):
                    continue
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
            if q.desc:
                hi = min(hi, bisect_left(entries, pos))
            else:  # past every entry that starts with pos, however long the entries are
                lo = max(lo, bisect_left(entries, pos + (HIGH,)))
        return entries[lo:hi] if lo < hi else []

    def _walk(self, idx: _Index, prefix: tuple, q: Query) -> Iterable[dict]:
        after = tuple(sort_key(x) for x in q.after) if q.after is not None else None
        entries = self._range(idx, prefix, q, after)
        for e in reversed(entries) if q.desc else entries:
            row = self.rows[self._key_of_entry(idx, e)]
            if matches_all(row, q.where):
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
