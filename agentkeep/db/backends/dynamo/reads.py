"""The DynamoDB kernel's reads: conditions as expressions, query plans (by key, by markers,
a GSI range through agentkeep/db/planner.py, or a scan), and the reads built on them."""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterable, Iterator

from agentkeep.db import planner
from agentkeep.db.backends.dynamo.codec import component, decode_value, encode_value
from agentkeep.db.backends.dynamo.layout import (
    ALL,
    CHUNKS,
    LOWER,
    MAX_PARTITIONS,
    MOVED,
    PK,
    TAGS,
    TOKEN,
    Gsi,
    Side,
    Table,
    _Expr,
    _Plan,
    set_of,
)
from agentkeep.db.planner import key_values
from agentkeep.db.query import Cond, Query, matches_all, row_key, sort_key, window


class Reads:
    """DynamoKernel's reads (a part of the class, in a module of its own)."""

    # -- conditions ----------------------------------------------------------------------------

    def _cond(self, t: Table, c: Cond, e: _Expr, write: bool = False) -> str | None:
        """A condition as expression text, or None when the kernel checks it itself (a filter
        lets more through, never less). `write`: for a write's condition, which must be exact."""
        kind = t.kinds[c.field]
        values = [x for x in c.value if x is not None] if c.op == "in" else []
        if (c.op in ("lt", "lte", "gt", "gte") and c.value is None) or (c.op == "in" and len(values) > 50) or \
                c.op == "contains_all" or (c.op == "icontains" and kind not in ("str", "text")) or \
                (write and c.field in t.movable):
            return None
        n = e.n(c.field)
        if c.op == "eq":
            expr = f"attribute_not_exists({n})" if c.value is None else f"{n} = {e.v(encode_value(kind, c.value))}"
        elif c.op == "in":
            parts = [f"{n} IN ({', '.join(e.v(encode_value(kind, x)) for x in values)})"] if values else []
            if len(values) < len(c.value):
                parts.append(f"attribute_not_exists({n})")
            # an empty list matches nothing: every record has a token
            expr = "(" + " OR ".join(parts) + ")" if parts else f"attribute_not_exists({e.n(TOKEN)})"
        elif c.op == "icontains":
            low, needle = e.n(LOWER + c.field), e.v({"S": c.value.lower()})
            expr = f"(contains({low}, {needle}) OR (attribute_not_exists({low}) AND contains({n}, {needle})))"
        else:
            op = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[c.op]
            expr = f"{n} {op} {e.v(encode_value(kind, c.value))}"
        if c.field in t.movable:  # the column may live in chunks: let the item through, re-checked
            expr = f"({expr} OR contains({e.n(MOVED)}, {e.v({'S': c.field})}))"
        return expr

    def _conds(self, t: Table, where: Iterable[Cond], e: _Expr, skip: Iterable[str] = (),
               write: bool = False) -> list[str]:
        skip = set(skip)
        return [x for c in where if c.field not in skip and (x := self._cond(t, c, e, write)) is not None]

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, t: Table, where: tuple[Cond, ...], order: tuple[str, ...], desc: bool,
              after: tuple | None) -> _Plan:
        keys = key_values(t.spec.key, where)
        if keys is not None:
            return _Plan("keys", keys=keys)
        for c in where:
            if c.op == "contains_all" and c.field in t.sides:
                return _Plan("markers")
        read = planner.plan(t.shapes, where, order, max_prefixes=MAX_PARTITIONS)
        if read is None:
            return _Plan("scan")
        g = t.planned[read.index]
        p = len(g.part)
        parts = list(dict.fromkeys(g.part_value(combo[:p]) for combo in read.prefixes))
        # items come in the order wanted (or any order does): read them as they come
        plan = _Plan("index", gsi=g, parts=parts, served=read.ordered or not order)
        position = list(read.position(order, after)) if read.ordered and after is not None else None
        plan.key_cond = self._key_cond(g, [values[0] for values in read.prefix_values[p:]], read.ranges, position, desc)
        if plan.key_cond is not None:
            lo, lo_inc, hi, hi_inc = plan.key_cond
            if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_inc and hi_inc))):
                plan.empty = True
        return plan

    @staticmethod
    def _key_cond(g: Gsi, prefix: list, ranges: Iterable[Cond], after: list | None, desc: bool) -> tuple | None:
        """Bounds on the GSI's sort key: its leading fields' values (`prefix`), the range on
        the next field, and a keyset position (`after`: values of the fields after the
        prefix). Each bound is exact or looser than the conditions (rows are re-checked),
        never tighter. Every encoded component starts with "0" or "1", so prefix + "2" is
        above every sort value that starts with prefix."""
        if not g.sort:
            return None
        n = len(g.sort)
        lo: tuple | None = None  # (value, inclusive)
        hi: tuple | None = None

        def raise_lo(value: str, inclusive: bool) -> None:
            nonlocal lo
            if lo is None or value > lo[0] or (value == lo[0] and not inclusive):
                lo = (value, inclusive)

        def lower_hi(value: str, inclusive: bool) -> None:
            nonlocal hi
            if hi is None or value < hi[0] or (value == hi[0] and not inclusive):
                hi = (value, inclusive)

        if prefix:
            text, clipped = g.sort_value(prefix)
            raise_lo(text, True)
            if len(prefix) == n and not clipped:
                lower_hi(text, True)
            elif not clipped:
                lower_hi(text + "2", False)
        last = len(prefix) == n - 1
        for c in ranges:
            text, clipped = g.sort_value(prefix + [c.value])
            if clipped:
                continue
            if c.op == "gte":
                raise_lo(text, True)
            elif c.op == "gt":
                raise_lo(text, False) if last else raise_lo(text + "2", True)
            elif c.op == "lt":
                lower_hi(text, False)
            else:  # lte
                lower_hi(text, True) if last else lower_hi(text + "2", False)
        if after is not None:
            values = prefix + after
            text, clipped = g.sort_value(values)
            full = len(values) == n and not clipped
            if not desc:
                raise_lo(text, True) if clipped else raise_lo(text, False) if full else raise_lo(text + "2", True)
            elif not clipped:
                lower_hi(text, False)
        if lo is None and hi is None:
            return None
        return (lo[0] if lo else None, lo[1] if lo else True, hi[0] if hi else None, hi[1] if hi else True)

    def _query(self, t: Table, g: Gsi, part: str, key_cond: tuple | None, desc: bool, filters: list[str],
               e: _Expr, projection: list[str] | None, page: int | None, count: bool = False) -> Iterator[dict]:
        """Items of one GSI partition in sort order, a page at a time (or, with `count`, one
        {"Count": n} per page)."""
        ke = _Expr()
        ke.names, ke.values = dict(e.names), dict(e.values)
        cond = f"{ke.n(g.part_attr)} = {ke.v({'S': part})}"
        if key_cond is not None:
            lo, lo_inc, hi, hi_inc = key_cond
            s = ke.n(g.sort_attr)
            if lo is not None and hi is not None:
                cond += f" AND {s} BETWEEN {ke.v({'S': lo})} AND {ke.v({'S': hi})}"
            elif lo is not None:
                cond += f" AND {s} {'>=' if lo_inc else '>'} {ke.v({'S': lo})}"
            else:
                cond += f" AND {s} {'<=' if hi_inc else '<'} {ke.v({'S': hi})}"
        args: dict = {"TableName": t.name, "IndexName": g.name, "KeyConditionExpression": cond,
                      "ScanIndexForward": not desc}
        if filters:
            args["FilterExpression"] = " AND ".join(filters)
        if count:
            args["Select"] = "COUNT"
        elif projection is not None:
            args["ProjectionExpression"] = ", ".join(ke.n(a) for a in projection)
        args.update(ke.kwargs())
        yield from self._pages(self.client.query, args, count, page)

    def _scan(self, t: Table, filters: list[str], e: _Expr, projection: list[str] | None,
              count: bool = False) -> Iterator[dict]:
        args: dict = {"TableName": t.name}
        filters = [f"attribute_exists({e.n(TOKEN)})", *filters]  # records, not chunk items
        args["FilterExpression"] = " AND ".join(filters)
        if count:
            args["Select"] = "COUNT"
        elif projection is not None:
            args["ProjectionExpression"] = ", ".join(e.n(a) for a in projection)
        args.update(e.kwargs())
        yield from self._pages(self.client.scan, args, count)

    @staticmethod
    def _pages(request: Any, args: dict, count: bool, page: int | None = None) -> Iterator[dict]:
        """The items of every page of a Query or Scan ({"Count": n} per page with `count`);
        a `page` size doubles from page to page, up to 1,000."""
        while True:
            if page is not None:
                args["Limit"] = page
                page = min(page * 2, 1000)
            resp = request(**args)
            if count:
                yield {"Count": resp["Count"]}
            else:
                yield from resp["Items"]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return
            args["ExclusiveStartKey"] = start

    # -- reads ---------------------------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        return self._read(self.t[table], key)[1]

    def find(self, q: Query) -> list[dict]:
        return list(self._find(q))

    def _find(self, q: Query) -> Iterator[dict]:
        t = self.t[q.table]
        spec = t.spec
        if q.limit == 0:
            return
        fields = None
        if q.fields is not None:  # what the rows must carry to be checked, ordered and returned
            need = dict.fromkeys((*q.fields, *spec.key, *q.order, *(c.field for c in q.where)))
            fields = list(need)
        plan = self._plan(t, q.where, q.order, q.desc, q.after)
        if plan.kind in ("keys", "markers", "scan"):
            if plan.kind == "keys":
                rows = self._rows_by_pk(t, [t.pk(k) for k in plan.keys], fields)
            elif plan.kind == "markers":
                rows = self._rows_by_pk(t, self._marker_pks(t, q.where), fields)
            else:
                e = _Expr()
                filters = self._conds(t, q.where, e)
                projection = None if fields is None else [PK, CHUNKS, MOVED, *fields]
                rows = self._complete(t, self._scan(t, filters, e, projection), fields)
            yield from self._finish(rows, q)
            return
        if plan.empty:
            return
        g = plan.gsi
        e = _Expr()
        filters = [] if g.projection != "ALL" else self._conds(t, q.where, e, skip=g.part)
        projection = None
        if fields is not None and g.projection == "ALL":
            projection = list(dict.fromkeys([PK, CHUNKS, MOVED, g.part_attr, *([g.sort_attr] if g.sort else []), *fields]))
        page = None
        if plan.served and q.limit is not None:
            page = min(1000, q.offset + q.limit)
        streams = [self._query(t, g, p, plan.key_cond, q.desc, filters, e, projection, page) for p in plan.parts]
        if len(streams) == 1:
            items: Iterable[dict] = streams[0]
        elif plan.served and g.sort:
            items = heapq.merge(*streams, key=lambda i: i[g.sort_attr]["S"], reverse=q.desc)
        else:
            items = itertools.chain(*streams)
        if g.projection != "ALL":
            rows = self._fetching(t, items, fields)
        else:
            rows = self._complete(t, items, fields)
        if not plan.served:
            yield from self._finish(rows, q)
            return
        pos = None if q.after is None else tuple(sort_key(v) for v in q.after)
        n, skip = 0, q.offset  # a Query has no offset: the rows skipped are read and passed over
        for row in rows:
            if not matches_all(row, q.where):
                continue
            if pos is not None:
                k = row_key(row, q.order)
                if (k >= pos) if q.desc else (k <= pos):
                    continue
            if skip:
                skip -= 1
                continue
            yield self._project(row, q.fields)
            n += 1
            if q.limit is not None and n >= q.limit:
                return

    @staticmethod
    def _project(row: dict, fields: tuple | None) -> dict:
        return row if fields is None else {f: row.get(f) for f in fields}

    def _finish(self, rows: Iterable[dict], q: Query) -> Iterator[dict]:
        """Filter, order, position, offset and limit rows that came in no useful order."""
        rows = [r for r in rows if matches_all(r, q.where)]
        if q.order:
            rows.sort(key=lambda r: row_key(r, q.order), reverse=q.desc)
            if q.after is not None:
                pos = tuple(sort_key(v) for v in q.after)
                rows = [r for r in rows if (row_key(r, q.order) < pos if q.desc else row_key(r, q.order) > pos)]
        return (self._project(r, q.fields) for r in window(rows, q))

    def _complete(self, t: Table, items: Iterable[dict], fields: list | None) -> Iterator[dict]:
        """Rows of items read from the table or an ALL index; items with chunks are read again,
        whole and consistently."""
        for item in items:
            if CHUNKS in item and (fields is None or set(item.get(MOVED, {}).get("SS", ())) & set(fields)):
                key = tuple(decode_value(t.kinds[k], item[k]) for k in t.spec.key)
                row = self._read(t, key)[1]
                if row is not None:
                    yield row if fields is None else {f: row.get(f) for f in fields}
            else:
                yield self._decode(t, item, fields)

    def _fetching(self, t: Table, items: Iterable[dict], fields: list | None) -> Iterator[dict]:
        """Rows for the keys a KEYS_ONLY index gave, fetched 100 at a time, in index order."""
        batch: list[str] = []
        for item in items:
            batch.append(item[PK]["S"])
            if len(batch) >= 100:
                yield from self._rows_by_pk(t, batch, fields)
                batch = []
        if batch:
            yield from self._rows_by_pk(t, batch, fields)

    def _rows_by_pk(self, t: Table, pks: list[str], fields: list | None) -> list[dict]:
        projection = None if fields is None else list(dict.fromkeys([PK, CHUNKS, MOVED, *fields]))
        got = {i[PK]["S"]: i for i in self._batch_get(t.name, [{PK: {"S": p}} for p in pks], projection)}
        return list(self._complete(t, (got[p] for p in dict.fromkeys(pks) if p in got), fields))

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.t[table]
        plan = self._plan(t, where, (), False, None)
        exact = all(c.op not in ("contains_all",) and c.field not in t.movable for c in where) and all(
            self._cond(t, c, _Expr()) is not None for c in where)
        if plan.kind == "index" and plan.gsi.projection == "ALL" and exact:
            if plan.empty:
                return 0
            e = _Expr()
            filters = self._conds(t, where, e, skip=plan.gsi.part)
            return sum(page["Count"] for p in plan.parts
                       for page in self._query(t, plan.gsi, p, plan.key_cond, False, filters, e, None, None, count=True))
        if plan.kind == "scan" and exact:
            e = _Expr()
            return sum(page["Count"] for page in self._scan(t, self._conds(t, where, e), e, None, count=True))
        return sum(1 for _ in self._find(Query(table, where, fields=t.spec.key)))

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        t = self.t[table]
        side = t.sides.get(field)
        users = [c.value for c in where if c.field == "user_id" and c.op == "eq" and c.value is not None]
        if side is None or len(where) != len(users) or len(users) > 1:
            values: set = set()
            for row in self._find(Query(table, where, fields=(field,))):
                v = row.get(field)
                values.update(v if isinstance(v, list) else [v])
            values.discard(None)
            return list(values)
        user = users[0] if users else None
        candidates: dict[str, list[str]] = {}
        if user is not None:  # the user's distinct values: one Query each, skipping to the next
            u = component("str", user)
            last = None
            while True:
                e = _Expr()
                cond = f"{e.n('u')} = {e.v({'S': u})}"
                if last is not None:
                    cond += f" AND {e.n('sk')} > {e.v({'S': last})}"
                items = self.client.query(TableName=side.name, IndexName="by_user", KeyConditionExpression=cond,
                                          Limit=1, **e.kwargs())["Items"]
                if not items:
                    break
                last = items[0]["sk"]["S"]
                candidates[last] = [items[0][PK]["S"]]
        else:  # every value of every user: the marker table is read whole
            for item in self._scan_side(side):
                candidates.setdefault(item["sk"]["S"], []).append(item[PK]["S"])
        out = []
        for sk, pks in candidates.items():
            if self._marker_holds(t, side, sk, pks, user) or (
                    user is not None and self._marker_holds(
                        t, side, sk, self._marker_pks_for(side, sk, component("str", user)), user)):
                out.append(sk[1:])
        return out

    def _scan_side(self, side: Side) -> Iterator[dict]:
        args: dict = {"TableName": side.name}
        while True:
            resp = self.client.scan(**args)
            yield from resp["Items"]
            if not resp.get("LastEvaluatedKey"):
                return
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _marker_holds(self, t: Table, side: Side, sk: str, pks: list[str], user: str | None) -> bool:
        """Whether a record behind one of these markers still has the value (a marker outlives
        its value until its clean-up ran)."""
        for i in range(0, len(pks), 100):
            keys = [{PK: {"S": p}} for p in pks[i : i + 100]]
            for item in self._batch_get(t.name, keys, [TAGS + side.field, "user_id"]):
                if sk in set_of(item.get(TAGS + side.field)) and (
                        user is None or item.get("user_id", {}).get("S") == user):
                    return True
        return False

    def _marker_pks_for(self, side: Side, sk: str, u: str | None) -> list[str]:
        e = _Expr()
        cond = f"{e.n('sk')} = {e.v({'S': sk})}"
        if u is not None:
            cond += f" AND {e.n('u')} = {e.v({'S': u})}"
        args = {"TableName": side.name, "IndexName": "by_value", "KeyConditionExpression": cond, **e.kwargs()}
        out = []
        while True:
            resp = self.client.query(**args)
            out += [i[PK]["S"] for i in resp["Items"]]
            if not resp.get("LastEvaluatedKey"):
                return out
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _marker_pks(self, t: Table, where: tuple[Cond, ...]) -> list[str]:
        """Records holding every value asked for (by marker; rows are re-checked)."""
        users = [c.value for c in where if c.field == "user_id" and c.op == "eq"]
        u = component("str", users[0]) if users else None
        found: set[str] | None = None
        for c in where:
            if c.op != "contains_all" or c.field not in t.sides:
                continue
            for value in c.value:
                pks = set(self._marker_pks_for(t.sides[c.field], "t" + value, u))
                found = pks if found is None else found & pks
                if not found:
                    return []
        return sorted(found or ())

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        t = self.t[table]
        g = next((x for x in t.gsis if x.role == "group" and x.sort == (by,)), None)
        if g is None:  # no index to walk the distinct values: read the matching rows
            groups: dict = {}
            for row in self._find(Query(table, where, (by, *t.spec.key), fields=(by, max_field))):
                n, last = groups.get(row[by], (0, None))
                value = row[max_field]
                groups[row[by]] = (n + 1, value if last is None or (value is not None and value > last) else last)
            return [(k, n, last) for k, (n, last) in list(groups.items())[:limit]]
        # one Query per distinct value (skipping to the next), then its count and its maximum
        rest = tuple(c for c in where if c.field != by)
        bounds = tuple(c for c in where if c.field == by)
        key_cond = self._key_cond(g, [], planner.bounds(bounds).get(by, ()), None, False)
        out = []
        last_seen: str | None = None
        while len(out) < limit:
            kc = key_cond
            if last_seen is not None:  # past every item of the value seen last (they share its sort value);
                # no upper bound then, as BETWEEN would take that value again: it is checked below
                kc = (last_seen, False, None, True)
            items = list(itertools.islice(self._query(t, g, ALL, kc, False, [], _Expr(), None, 1), 1))
            if not items:
                break
            last_seen = items[0][g.sort_attr]["S"]
            value = None if by not in items[0] else decode_value(t.kinds[by], items[0][by])
            if not all(matches_all({by: value}, [c]) for c in bounds):
                if value is not None and any(c.op in ("lt", "lte") and not matches_all({by: value}, [c])
                                             for c in bounds):
                    break  # past the upper bound: so is every value after it
                continue
            scope = (*rest, Cond(by, "eq", value))
            n = self.count(table, scope)
            if n == 0:
                continue
            top = self.find(Query(table, scope, (max_field, *t.spec.key), True, 1, fields=(max_field,)))
            out.append((value, n, top[0][max_field] if top else None))
        return out
