"""The DynamoDB kernel's writes: conditional puts and updates, marker items, children's
TTL, and an append as one TransactWriteItems."""

from __future__ import annotations

import uuid
from typing import Any, Iterable

from agentkeep.db.backends.dynamo.codec import (
    _av_size,
    _micros,
    component,
    encode_value,
)
from agentkeep.db.backends.dynamo.layout import (
    ALL,
    CHUNKS,
    ITEM_BUDGET,
    LOWER,
    MOVED,
    PK,
    RETRIES,
    TAGS,
    TOKEN,
    TTL,
    Side,
    Table,
    _backoff,
    _code,
    _Expr,
    set_of,
)
from agentkeep.db.errors import DbError
from agentkeep.db.kernel import DuplicateKey
from agentkeep.db.query import Cond, Query, matches_all
from agentkeep.db.rowstore import apply_update


class Writes:
    """DynamoKernel's writes (a part of the class, in a module of its own)."""

    # -- writes --------------------------------------------------------------------------------

    def _inherited(self, t: Table, rows: list[dict]) -> list[dict]:
        """Per row, what a child keeps from its parent: the parent's TTL."""
        if t.ttl_parent is None:
            return [{} for _ in rows]
        parent, fk = t.ttl_parent
        pt = self.t[parent]
        pks = {r[fk]: pt.pk((r[fk],)) for r in rows if r.get(fk) is not None}
        got = {i[PK]["S"]: i for i in self._batch_get(pt.name, [{PK: {"S": p}} for p in pks.values()], [PK, TTL])}
        out = []
        for r in rows:
            item = got.get(pks.get(r.get(fk)), {})
            out.append({TTL: item[TTL]} if TTL in item else {})
        return out

    def insert(self, table: str, row: dict) -> None:
        t = self.t[table]
        self._insert(t, row, self._inherited(t, [row])[0])

    def _insert(self, t: Table, row: dict, keep: dict) -> None:
        item, chunks = self._item(t, row, keep)
        self._write_items(t.name, chunks)
        e = _Expr()
        try:
            self.client.put_item(TableName=t.name, Item=item, ConditionExpression=f"attribute_not_exists({e.n(PK)})",
                                 **e.kwargs())
        except self.client.exceptions.ConditionalCheckFailedException:
            self._write_items(t.name, deletes=[{PK: c[PK]} for c in chunks])
            raise DuplicateKey(t.spec.name) from None
        self._after_write(t, row, item, None)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        t = self.t[table]
        rows = list({t.spec.key_of(r): r for r in rows}.values())
        if not replace:  # each one conditional: a concurrent writer's record is never overwritten
            written = 0
            for row, keep in zip(rows, self._inherited(t, rows)):
                try:
                    self._insert(t, row, keep)
                    written += 1
                except DuplicateKey:
                    pass
            return written
        if len(rows) == 1:  # one PutItem, which hands back the item it replaced
            row = rows[0]
            item, chunks = self._item(t, row, self._inherited(t, rows)[0])
            self._write_items(t.name, chunks)
            old = self.client.put_item(TableName=t.name, Item=item, ReturnValues="ALL_OLD").get("Attributes")
            self._after_write(t, row, item, old)
            return 1
        olds = {i[PK]["S"]: i for i in self._batch_get(
            t.name, [{PK: {"S": t.pk_of(r)}} for r in rows], [PK, CHUNKS, TTL, *(TAGS + f for f in t.spec.multi)])}
        built = [self._item(t, r, keep) for r, keep in zip(rows, self._inherited(t, rows))]
        self._write_items(t.name, [c for _, chunks in built for c in chunks])
        self._write_items(t.name, [item for item, _ in built])
        for row, (item, _) in zip(rows, built):
            self._after_write(t, row, item, olds.get(item[PK]["S"]), markers_known=False)
        return len(rows)

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        t = self.t[table]
        set, incr = set or {}, incr or {}
        changed = {*set, *incr}
        partial = any(0 < len(changed & {*g.part}) < len(g.part) for g in t.gsis)
        derived = {f for g in t.gsis for f in g.part + g.sort} | {*t.spec.multi, *t.movable, "expires_at"}
        side_effects = bool(changed & {*t.spec.multi, "expires_at"})
        big = sum(_av_size(encode_value(t.kinds[f], v)) for f, v in set.items() if v is not None) > ITEM_BUDGET // 2
        owner_unknown = bool(changed & {*t.spec.multi}) and "user_id" in t.kinds and "user_id" not in set
        if partial or (incr.keys() & derived) or big or (returning and side_effects) or owner_unknown or \
                any(self._cond(t, c, _Expr(), write=True) is None for c in where):
            return self._rewrite(t, key, set, incr, where, returning)
        e = _Expr()
        sets, removes = [], []
        for f, value in set.items():
            if value is None:
                removes.append(e.n(f))
                if f in t.text:
                    removes.append(e.n(LOWER + f))
                continue
            av = encode_value(t.kinds[f], value)
            sets.append(f"{e.n(f)} = {e.v(av)}")
            if f in t.text:
                if value.lower() != value:
                    sets.append(f"{e.n(LOWER + f)} = {e.v({'S': value.lower()})}")
                else:
                    removes.append(e.n(LOWER + f))
            if f in t.spec.multi:
                if value:
                    sets.append(f"{e.n(TAGS + f)} = {e.v({'SS': sorted({'t' + x for x in value})})}")
                else:
                    removes.append(e.n(TAGS + f))
        for f in t.spec.multi:
            if f in set and set[f] is None:
                removes.append(e.n(TAGS + f))
        for f, n in incr.items():
            sets.append(f"{e.n(f)} = if_not_exists({e.n(f)}, {e.v({'N': '0'})}) + {e.v({'N': str(n)})}")
        known = {**dict(zip(t.spec.key, key)), **set}
        for g in t.gsis:
            if not changed & {*g.part, *g.sort}:
                continue
            if changed & {*g.part}:
                sets.append(f"{e.n(g.part_attr)} = {e.v({'S': g.part_value(known[f] for f in g.part)})}")
            if g.sort and changed & {*g.sort}:
                if g.sparse and known.get(g.sort[0]) is None:
                    removes += [e.n(g.part_attr), e.n(g.sort_attr)]
                    continue
                if g.sparse:
                    sets.append(f"{e.n(g.part_attr)} = {e.v({'S': ALL})}")
                sets.append(f"{e.n(g.sort_attr)} = {e.v({'S': g.sort_value(known[f] for f in g.sort)[0]})}")
        if t.ttl and "expires_at" in set:
            if set["expires_at"] is None:
                removes.append(e.n(TTL))
            else:
                sets.append(f"{e.n(TTL)} = {e.v({'N': str(-(-_micros(set['expires_at']) // 1_000_000))})}")
        sets.append(f"{e.n(TOKEN)} = {e.v({'S': uuid.uuid4().hex[:16]})}")
        conds = [f"attribute_exists({e.n(PK)})", *self._conds(t, where, e, write=True)]
        moved = [f for f in set if f in t.movable]
        if moved:  # a column kept in chunks is changed by a rewrite, not here
            mv = e.n(MOVED)
            kept = " OR ".join(f"contains({mv}, {e.v({'S': f})})" for f in moved)
            conds.append(f"(attribute_not_exists({mv}) OR NOT ({kept}))")
        expression = "SET " + ", ".join(dict.fromkeys(sets))
        if removes:
            expression += " REMOVE " + ", ".join(dict.fromkeys(removes))
        values = "ALL_NEW" if returning else "UPDATED_OLD" if side_effects else "NONE"
        try:
            resp = self.client.update_item(
                TableName=t.name, Key={PK: {"S": t.pk(key)}}, UpdateExpression=expression,
                ConditionExpression=" AND ".join(conds), ReturnValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD", **e.kwargs())
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")
            if old is None:
                return None
            if moved and set.keys() & set_of(old.get(MOVED)) and matches_all(self._decode(t, old), [
                    c for c in where if c.field not in t.movable]):
                return self._rewrite(t, key, set, incr, where, returning)
            return None
        except Exception as exc:
            if _code(exc) == "ValidationException" and "size" in str(exc):  # grew past the item limit
                return self._rewrite(t, key, set, incr, where, returning)
            raise
        attrs = resp.get("Attributes", {})
        if side_effects:
            self._after_write(t, {**known}, None, attrs, changed=changed)
        if returning:
            return self._decode(t, attrs, returning)
        return {}

    def _rewrite(self, t: Table, key: tuple, set: dict, incr: dict, where: tuple[Cond, ...],
                 returning: tuple[str, ...]) -> dict | None:
        """Read, change and put back the whole item, on condition that nobody wrote it meanwhile."""
        for attempt in range(RETRIES):
            old, row = self._read(t, key)
            if row is None or not matches_all(row, where):
                return None
            new = apply_update(row, set, incr)
            item, chunks = self._item(t, new, {TTL: old[TTL]} if TTL in old else None)
            self._write_items(t.name, chunks)
            e = _Expr()
            try:
                self.client.put_item(TableName=t.name, Item=item,
                                     ConditionExpression=f"{e.n(TOKEN)} = {e.v(old[TOKEN])}", **e.kwargs())
            except self.client.exceptions.ConditionalCheckFailedException:
                self._write_items(t.name, deletes=[{PK: c[PK]} for c in chunks])
                _backoff(attempt)
                continue
            self._after_write(t, new, item, old, changed={*set, *incr})
            return {f: new.get(f) for f in returning}
        raise DbError(f"{t.spec.name} {key!r}: changed too often to be updated")

    def _after_write(self, t: Table, row: dict, item: dict | None, old: dict | None, *,
                     changed: Iterable[str] | None = None, markers_known: bool = True) -> None:
        """After an item changed: drop the chunks it no longer points at, bring its marker items
        in line and let its children expire with it."""
        if old is not None and CHUNKS in old and (item is None or item.get(CHUNKS) != old[CHUNKS]):
            self._write_items(t.name, deletes=self._chunk_keys(old))
        changed = set(t.kinds) if changed is None else {*changed}
        pk = t.pk_of(row)
        for f, side in t.sides.items():
            if f not in changed:
                continue
            values = {"t" + v for v in (row.get(f) or ())}
            before = set_of((old or {}).get(TAGS + f))
            add = values if (old is None or not markers_known) else values - before
            u = {"S": component("str", row.get("user_id"))}
            self._write_items(side.name, [{PK: {"S": pk}, "sk": {"S": s}, "u": u} for s in sorted(add)])
            self._drop_markers(t, side, pk, before - values)
        if t.ttl_children and "expires_at" in changed and old is not None:
            new_ttl = None if item is None else item.get(TTL)
            if item is None:  # an update: what it set
                exp = row.get("expires_at")
                new_ttl = None if exp is None else {"N": str(-(-_micros(exp) // 1_000_000))}
            if new_ttl != old.get(TTL):
                for child, fk in t.ttl_children:
                    self._retime(self.t[child], fk, t.spec.key_of(row)[0], new_ttl)

    def _drop_markers(self, t: Table, side: Side, pk: str, stale: Iterable[str]) -> None:
        """Delete markers of values the record no longer has, unless it has them again by then."""
        stale = sorted(stale)
        for i in range(0, len(stale), 90):
            group = stale[i : i + 90]
            for attempt in range(2):
                e = _Expr()
                tags = e.n(TAGS + side.field)
                has = " OR ".join(f"contains({tags}, {e.v({'S': s})})" for s in group)
                check = {"ConditionCheck": {"TableName": t.name, "Key": {PK: {"S": pk}},
                                            "ConditionExpression": f"attribute_not_exists({e.n(PK)}) OR NOT ({has})",
                                            **e.kwargs()}}
                deletes = [{"Delete": {"TableName": side.name, "Key": {PK: {"S": pk}, "sk": {"S": s}}}} for s in group]
                try:
                    self.client.transact_write_items(TransactItems=[check, *deletes])
                    break
                except self.client.exceptions.TransactionCanceledException as exc:
                    reasons = exc.response.get("CancellationReasons") or []
                    if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                        if len(group) == 1:
                            break  # the record has the value again: the marker stays
                        for s in group:  # one of them is back: the others still go
                            self._drop_markers(t, side, pk, [s])
                        break
                    _backoff(attempt)

    def _retime(self, t: Table, fk: str, parent_key: Any, ttl: dict | None) -> None:
        """Give every child of a parent the parent's new TTL."""
        for row in self._find(Query(t.spec.name, (Cond(fk, "eq", parent_key),), fields=t.spec.key)):
            e = _Expr()
            expression = f"SET {e.n(TTL)} = {e.v(ttl)}" if ttl is not None else f"REMOVE {e.n(TTL)}"
            try:
                self.client.update_item(TableName=t.name, Key={PK: {"S": t.pk_of(row)}}, UpdateExpression=expression,
                                        ConditionExpression=f"attribute_exists({e.n(PK)})", **e.kwargs())
            except self.client.exceptions.ConditionalCheckFailedException:
                pass

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.t[table]
        keys = [t.spec.key_of(r) for r in self._find(Query(table, where, fields=t.spec.key))]
        deleted = 0
        for key in keys:
            e = _Expr()
            conds = [f"attribute_exists({e.n(PK)})", *self._conds(t, where, e, skip=t.spec.key, write=True)]
            try:
                old = self.client.delete_item(TableName=t.name, Key={PK: {"S": t.pk(key)}},
                                              ConditionExpression=" AND ".join(conds), ReturnValues="ALL_OLD",
                                              **e.kwargs()).get("Attributes")
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # gone, or changed so that it no longer matches
            deleted += 1
            if old:
                self._write_items(t.name, deletes=self._chunk_keys(old))
                for f, side in t.sides.items():
                    self._drop_markers(t, side, old[PK]["S"], set_of(old.get(TAGS + f)))
        return deleted

    def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str, set: dict,
               where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Read the parent, then one TransactWriteItems: the parent's counter moves from the
        value read to the next (and `set` is applied), the child is put if its key is free.
        The transaction's conditions re-check everything taken from the read, so the parent as
        this process last left it serves as the read while it is still true. Threads of one
        process take turns per parent rather than making each other's transactions fail."""
        pt, ct = self.t[parent], self.t[child]
        pkey = {PK: {"S": pt.pk(key)}}
        cache_key = (parent, pkey[PK]["S"])
        with self._stripes[hash(cache_key) % len(self._stripes)]:
            for attempt in range(RETRIES):
                with self._cache_lock:
                    item = self._parents.pop(cache_key, None) if attempt == 0 else None
                cached = item is not None
                if item is None:
                    item = self.client.get_item(TableName=pt.name, Key=pkey, ConsistentRead=True).get("Item")
                    if item is None:
                        return None
                prow = self._decode(pt, item, [f for f in pt.kinds if f not in pt.movable])
                if not matches_all(prow, where):
                    if cached:
                        continue
                    return None
                current = prow.get(counter) or 0
                crow = {**row, seq: current + 1, **{f: prow.get(f) for f in inherit}}
                citem, chunks = self._item(ct, crow, {TTL: item[TTL]} if TTL in item else None)
                e = _Expr()
                sets = [f"{e.n(counter)} = {e.v({'N': str(current + 1)})}"]
                conds = [f"{e.n(counter)} = {e.v({'N': str(current)})}" if counter in item
                         else f"attribute_not_exists({e.n(counter)})", *self._conds(pt, where, e, write=True)]
                conds.append(f"{e.n(TTL)} = {e.v(item[TTL])}" if TTL in item else f"attribute_not_exists({e.n(TTL)})")
                for f, value in set.items():
                    sets.append(f"{e.n(f)} = {e.v(encode_value(pt.kinds[f], value))}")
                merged = {**prow, **set}
                for g in pt.gsis:
                    if set.keys() & {*g.part, *g.sort}:
                        for attr, av in g.attrs(merged).items():
                            sets.append(f"{e.n(attr)} = {e.v(av)}")
                        for f in g.part + g.sort:  # index values computed from the read: still so
                            if f not in set and f not in pt.spec.key:
                                conds.append(self._cond(pt, Cond(f, "eq", prow.get(f)), e, write=True))
                sets.append(f"{e.n(TOKEN)} = {e.v({'S': uuid.uuid4().hex[:16]})}")
                ce = _Expr()
                self._write_items(ct.name, chunks)
                try:
                    self.client.transact_write_items(TransactItems=[
                        {"Update": {"TableName": pt.name, "Key": pkey, "UpdateExpression": "SET " + ", ".join(sets),
                                    "ConditionExpression": " AND ".join(dict.fromkeys(conds)), **e.kwargs()}},
                        {"Put": {"TableName": ct.name, "Item": citem,
                                 "ConditionExpression": f"attribute_not_exists({ce.n(PK)})", **ce.kwargs()}},
                    ])
                except self.client.exceptions.TransactionCanceledException as exc:
                    self._write_items(ct.name, deletes=[{PK: c[PK]} for c in chunks])
                    reasons = exc.response.get("CancellationReasons") or []
                    if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                        raise DuplicateKey(child) from None
                    if not cached:
                        _backoff(attempt)  # the parent moved on (or a conflict): read it again
                    continue
                with self._cache_lock:
                    self._parents[cache_key] = {**item, counter: {"N": str(current + 1)},
                                                **{f: encode_value(pt.kinds[f], v) for f, v in set.items()}}
                    while len(self._parents) > 4096:
                        self._parents.pop(next(iter(self._parents)))
                self._after_write(ct, crow, citem, None)
                return {seq: current + 1, **{f: crow[f] for f in inherit}}
        raise DbError(f"{parent} {key!r}: too many concurrent appends")
