"""The Firestore kernel's reads: documents by key and by native query, planned through
agentkeep/db/planner.py over the candidate index orders, bodies and parts attached."""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from agentkeep.db.drivers import driver_for

with driver_for("FirestoreDb", "firestore"):
    # not `from google.cloud import firestore`: with other google-cloud packages installed,
    # that says ImportError, not ModuleNotFoundError, when this one is missing
    import google.cloud.firestore as firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

from agentkeep.db import planner
from agentkeep.db.backends.firestore.codec import _dec, _enc
from agentkeep.db.backends.firestore.layout import (
    GET_CHUNK,
    IN_LIMIT,
    IN_PARENT,
    LOWEST,
    NESTED,
    SCAN_BATCH,
    _Coll,
    _Meta,
    _Plan,
)
from agentkeep.db.errors import DbError
from agentkeep.db.query import Cond, Query, after_filter, matches_all, row_key, window


class Reads:
    """FirestoreKernel's reads (a part of the class, in a module of its own)."""

    # -- reading -------------------------------------------------------------------------------------

    @staticmethod
    def _slim(coll: _Coll) -> list[str]:
        """The fields to read when the JSON body is not needed."""
        return [c.name for c in coll.native] + ["_parts", "_pt", "_t"]

    def _get_all(self, refs: list, fields: list[str] | None = None) -> dict[str, Any]:
        out = {}
        for i in range(0, len(refs), GET_CHUNK):
            for snap in self.client.get_all(refs[i : i + GET_CHUNK], field_paths=fields):
                if snap.exists:
                    out[snap.reference.path] = snap
        return out

    def _bodies(self, coll: _Coll, items: list[tuple[dict, dict, _Meta]], depth: int = 0) -> list[tuple[dict, _Meta]]:
        """Attach the JSON/text columns: inline, or from `_parts` (written with the body's
        version `_pt`: a mismatch means a newer write came in between, so read again)."""
        out = []
        split = [(row, data, meta) for row, data, meta in items if data.get("_parts")]
        parts = self._get_all([self._part(m.ref, i) for _, d, m in split for i in range(d["_parts"])]) if split else {}
        for row, data, meta in items:
            n = data.get("_parts") or 0
            if not n:
                row.update(json.loads(data["_body"]) if data.get("_body") is not None else {})
                out.append((row, meta))
                continue
            chunks = [parts.get(self._part(meta.ref, i).path) for i in range(n)]
            if all(c is not None and c.get("t") == data["_pt"] for c in chunks):
                row.update(json.loads(b"".join(c.get("d") for c in chunks).decode("utf-8")))
                out.append((row, meta))
                continue
            if depth >= 50:
                raise DbError(f"{meta.ref.path}: its parts kept changing while being read")
            out.extend(self._load_refs(coll, [meta.ref], True, {meta.ref.path: meta.pointer}, depth + 1))
        return out

    def _load_refs(self, coll: _Coll, refs: list, need_body: bool, pointers: dict | None = None,
                   depth: int = 0) -> list[tuple[dict, _Meta]]:
        snaps = self._get_all(refs, None if need_body else self._slim(coll))
        items = []
        for ref in refs:
            snap = snaps.get(ref.path)
            if snap is None:
                continue
            data = snap.to_dict()
            meta = _Meta(ref, data.get("_t"), data.get("_parts") or 0, (pointers or {}).get(ref.path))
            items.append((self._decode(coll, data), data, meta))
        if not need_body:
            return [(row, meta) for row, _, meta in items]
        return self._bodies(coll, items, depth)

    def _from_snaps(self, coll: _Coll, snaps: list, need_body: bool) -> list[tuple[dict, _Meta]]:
        if coll.pointer:  # index documents: the record itself is under its parent
            rows = [self._decode(coll, s.to_dict()) for s in snaps]
            refs = [self._nested_ref(r) for r in rows]
            if not need_body:
                return [(r, _Meta(ref, s.get("_t"), s.to_dict().get("_parts") or 0, s.reference))
                        for r, ref, s in zip(rows, refs, snaps)]
            body = self.colls[IN_PARENT]
            return self._load_refs(body, refs, True, {ref.path: s.reference for ref, s in zip(refs, snaps)})
        items = []
        for s in snaps:
            data = s.to_dict()
            items.append((self._decode(coll, data), data, _Meta(s.reference, data.get("_t"), data.get("_parts") or 0)))
        if not need_body:
            return [(row, meta) for row, _, meta in items]
        return self._bodies(coll, items)

    def _read_keys(self, table: str, keys: list[tuple], need_body: bool) -> list[tuple[dict, _Meta]]:
        if table != NESTED:
            return self._load_refs(self.colls[table], [self._ref(table, k) for k in keys], need_body)
        pointers = self._get_all([self._ref(NESTED, k) for k in keys])
        out = []
        for k in keys:
            p = pointers.get(self._ref(NESTED, k).path)
            if p is not None:
                out.append(p)
        return self._from_snaps(self.colls[NESTED], out, need_body)

    # -- query planning ------------------------------------------------------------------------------

    def _coll_for(self, table: str, where: tuple[Cond, ...]) -> tuple[_Coll, Any]:
        """The collection to query: one parent's nested records when the query names one
        parent (a session's runs)."""
        if table == NESTED:
            link = self.specs[NESTED].parent
            for c in where:
                if c.field == link.field and c.op == "eq" and isinstance(c.value, str):
                    return self.colls[IN_PARENT], self._in_parent(c.value)
        return self.colls[table], self._col(table)

    def _plan(self, coll: _Coll, where: tuple[Cond, ...], order: tuple[str, ...]) -> _Plan:
        """Which conditions a native query applies and in which index order it reads: the
        planner's read in `order` over the candidate orders (agentkeep/db/planner.py);
        without one, or for an internal walk in key order that no native filter narrows,
        an unordered read, sorted here: a range (on a candidate or any field's single-field
        index) when it narrows more than the equality filters, else those filters alone
        (Firestore merges single-field indexes for them). Conditions left out are checked in
        Python."""
        native = [c for c in where if c.field in coll.native_names]
        ranged = planner.bounds(native)
        contains = next(((c.field, c.value[0]) for c in native
                         if c.op == "contains_all" and c.value and c.field in coll.spec.multi), None)
        eqs, disjunction = {}, False  # one disjunction per query: an `in` of up to IN_LIMIT values
        for f, values in planner.equalities(native).items():
            if len(values) == 1 or (not disjunction and len(values) <= IN_LIMIT):
                eqs[f] = values
                disjunction = disjunction or len(values) > 1
        read = None
        if order:
            read = planner.plan(coll.cands, native, order, ordered_only=True, max_prefixes=IN_LIMIT)
            if read is not None and not (read.prefix or read.ranges) and read.order == coll.spec.key and (eqs or ranged):
                read = None
        if read is None:
            shapes = coll.cands + [(f,) for f in ranged]
            read = planner.plan(shapes, native, (), max_prefixes=IN_LIMIT)
            if read is not None and not (read.ranges and len(read.prefix) + 1 > len(eqs)):
                read = None
        if read is not None:
            bound = dict(zip(read.prefix, read.prefix_values))
            plan = _Plan({f: list(v) for f, v in bound.items()}, list(read.ranges), contains,
                         read.fields[len(read.prefix) :], read.ordered)
        else:
            bound = eqs
            plan = _Plan({f: list(v) for f, v in eqs.items()}, [], contains, (), False)
        answered = 0
        for c in where:
            implicit = c.field in coll.implicit and c.op == "eq"  # the collection is the session's
            contained = c.op == "contains_all" and contains and c.field == contains[0] and len(c.value) == 1
            if implicit or contained or planner.answered(c, where, bound, read and read.range_field):
                answered += 1
        plan.exact = answered == len(where)
        return plan

    def _query(self, coll: _Coll, ref: Any, eq: dict, rng: list[Cond], contains: tuple | None,
               order: tuple[str, ...] | None, desc: bool, limit: int | None, slim: bool = False) -> Any:
        kinds = {c.name: c.kind for c in coll.spec.columns}
        q = ref.select(self._slim(coll)) if slim else ref
        for f, vals in eq.items():
            vals = [_enc(kinds[f], v) for v in vals]
            # `in` also for one value: `== None` would become IS_NULL, which the emulator lacks
            if len(vals) == 1 and vals[0] is not None:
                q = q.where(filter=FieldFilter(f, "==", vals[0]))
            else:
                q = q.where(filter=FieldFilter(f, "in", vals))
        ops = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
        for c in rng:
            q = q.where(filter=FieldFilter(c.field, ops[c.op], _enc(kinds[c.field], c.value)))
        if contains is not None:
            q = q.where(filter=FieldFilter(contains[0], "array_contains", contains[1]))
        for f in order or ():
            q = q.order_by(f, direction=firestore.Query.DESCENDING if desc else firestore.Query.ASCENDING)
        if limit is not None:
            q = q.limit(limit)
        return q

    def _walk(self, coll: _Coll, ref: Any, plan: _Plan, order: tuple[str, ...], desc: bool,
              after: tuple | None, batch: int, slim: bool) -> Iterator[Any]:
        """Snapshots in `order` strictly after `after`, read natively a batch at a time. The
        keyset position becomes range filters, one query per tie level: (a == x, b > y),
        then (a > x); the emulator ignores start_after cursors, and ranges need no others."""
        fixed = {f for f, vals in plan.eq.items() if len(vals) == 1}
        kinds = {c.name: c.kind for c in coll.spec.columns}
        pos = after
        while True:
            levels = []
            if pos is None:
                levels.append(({}, [], plan.order))
            else:
                # order's fields fixed by equality are left out of the native order
                for i in reversed(range(len(order))):
                    f = order[i]
                    if f in fixed:
                        continue
                    eq = {order[j]: [pos[j]] for j in range(i) if order[j] not in fixed}
                    value = pos[i]
                    if value is None:
                        if desc:
                            continue  # nothing sorts below None
                        bound = Cond(f, "gte", LOWEST[kinds[f]])
                    else:
                        bound = Cond(f, "lt" if desc else "gt", value)
                    tail = tuple(x for x in plan.order if x not in eq)
                    levels.append((eq, [bound], tail))
            restart = None
            for eq, bounds, tail in levels:
                rng = bounds + [c for c in plan.rng if c.field not in eq]
                q = self._query(coll, ref, {**plan.eq, **eq}, rng, plan.contains, tail, desc, batch, slim)
                snaps = list(q.stream())
                yield from snaps
                if len(snaps) == batch:
                    last = snaps[-1].to_dict()
                    restart = tuple(_dec(kinds[f], last.get(f)) for f in order)
                    break
            if restart is None:
                return
            pos = restart

    def _select(self, q: Query, need_body: bool) -> list[tuple[dict, _Meta]]:
        """Rows matching `q` (in its order, after its keyset position, up to its limit), with
        where their documents are. Every condition is checked again in Python."""
        spec = self.specs[q.table]
        where = q.where
        keys = planner.key_values(spec.key, where)
        if keys is not None:
            got = self._read_keys(q.table, keys, need_body)
            return self._finish([x for x in got if matches_all(x[0], where)], q)
        coll, ref = self._coll_for(q.table, where)
        order = tuple(q.order)
        plan = self._plan(coll, where, order)
        if order and plan.ordered:
            # the offset is passed over here, not by the query's offset: the emulator ignores
            # that, and Firestore bills the documents it skips as reads all the same. When the
            # query answers every condition, the first documents are dropped unread (no body
            # or parts fetched); else the rows that match are counted off.
            if plan.exact:
                batch = min(q.limit + q.offset, SCAN_BATCH) if q.limit else SCAN_BATCH
                unread, skip = q.offset, 0
            else:
                batch = min(max(2 * ((q.limit or 0) + q.offset), 100), SCAN_BATCH)
                unread, skip = 0, q.offset
            out: list[tuple[dict, _Meta]] = []
            pending: list = []

            def flush() -> bool:
                nonlocal skip
                for item in self._from_snaps(coll, pending, need_body):
                    if matches_all(item[0], where):
                        if skip:
                            skip -= 1
                            continue
                        out.append(item)
                        if q.limit is not None and len(out) >= q.limit:
                            return True
                pending.clear()
                return False

            slim = not need_body or coll.pointer
            for snap in self._walk(coll, ref, plan, order, q.desc, q.after, batch, slim):
                if unread:
                    unread -= 1
                    continue
                pending.append(snap)
                if len(pending) >= batch and flush():
                    return out
            flush()
            return out[: q.limit] if q.limit is not None else out
        # unordered native read: everything it finds, sorted here
        native = self._query(coll, ref, plan.eq, plan.rng, plan.contains, plan.order or None, False, None,
                             not need_body or coll.pointer)
        rows = [x for x in self._from_snaps(coll, list(native.stream()), need_body) if matches_all(x[0], where)]
        return self._finish(rows, q)

    @staticmethod
    def _finish(items: list[tuple[dict, _Meta]], q: Query) -> list[tuple[dict, _Meta]]:
        if q.order:
            items.sort(key=lambda x: row_key(x[0], q.order), reverse=q.desc)
            if q.after is not None:
                keep = {id(r) for r in after_filter([x[0] for x in items], q)}
                items = [x for x in items if id(x[0]) in keep]
        return window(items, q)

    def _need_body(self, table: str, fields: Iterable[str] | None, where: Iterable[Cond]) -> bool:
        heavy = set(self.colls[table].heavy)
        if fields is None:
            return True
        return any(f in heavy for f in fields) or any(c.field in heavy for c in where)
