"""Redis's layout and query planning (no I/O).

Layout (P = prefix, t = the table's physical name, K = the record's encoded key):
- `P:t:r:K` a hash, one field per column. Scalar columns hold the order-preserving byte
  encoding of codec.py, JSON columns their JSON text; list columns named in `multi` also keep
  `#field`, the encodings of their values, for the scripts that maintain the indexes.
- `P:t:k` the table's key index; `P:t:i:f1,f2` one per spec index; `P:t:m:f` and
  `P:t:m:user_id,f` for each `multi` field. All are sorted sets whose members (score 0)
  are the encodings of (index fields..., key fields...) concatenated, so ZRANGEBYLEX with
  LIMIT serves an equality prefix, a range on the next field, the order, the keyset
  position and the limit, as `rowstore.RowTable` does in memory.
- `P:_:indexes` the names of the sorted sets that are complete; `P:_:lock` the schema lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentkeep.db import planner
from agentkeep.db.backends.redis.codec import COLUMN_DECODERS, HIGH, NONE, encode
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.query import Cond, Query, after_filter, matches_all, row_key, window
from agentkeep.db.tables import TableSpec

MAX_PREFIXES = 32  # `in` values on index fields expand into at most this many ranges


@dataclass
class Ix:
    """One sorted set: members are the encodings of `order` (its fields, then the rest of
    the key) concatenated."""

    name: str
    zkey: bytes
    fields: tuple[str, ...]
    order: tuple[str, ...]
    sparse: bool = False
    multi: str | None = None  # the list field this index expands (one member per value)
    key_pos: tuple[int, ...] = ()  # 1-based component positions of the key fields

    @property
    def kp_arg(self) -> bytes:
        """Where the key is in a member: "=n" when it is the tail after n components."""
        n = len(self.order) - len(self.key_pos)
        if self.key_pos == tuple(range(n + 1, len(self.order) + 1)):
            return b"=%d" % n
        return ",".join(map(str, self.key_pos)).encode()

    def lua(self) -> list:
        return [self.zkey.decode(), int(self.sparse), *(("#" + f) if f == self.multi else f for f in self.order)]


@dataclass
class Plan:
    ix: Ix
    ranges: list[tuple[bytes, bytes]]  # (min, max) in ZRANGEBYLEX syntax, one per equality prefix
    read: planner.Plan  # what the ranges read: prefix, range, order, whether they answer everything

    @property
    def served(self) -> bool:
        return self.read.covered


@dataclass
class Table:
    spec: TableSpec
    prefix: bytes
    rprefix: bytes = b""
    key_index: Ix | None = None
    indexes: list[Ix] = field(default_factory=list)  # key index first, then spec, then multi
    kinds: dict[str, str] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    layout: str = ""  # the indexes as the scripts take them
    columns_arg: bytes = b""
    shapes: list[planner.Shape] = field(default_factory=list)  # the indexes as the planner sees them

    def __post_init__(self) -> None:
        spec = self.spec
        base = self.prefix + b":" + spec.physical.encode() + b":"
        self.rprefix = base + b"r:"
        self.kinds = {c.name: c.kind for c in spec.columns}
        # the key first: a script tells a missing record by its missing first field
        self.columns = spec.key + tuple(c.name for c in spec.columns if c.name not in spec.key)
        self.columns_arg = ",".join(self.columns).encode()
        self.key_index = self._ix("key", base + b"k", spec.key)
        self.indexes = [self.key_index]
        seen = {spec.key}
        for idx in spec.indexes:
            if idx.fields not in seen:
                seen.add(idx.fields)
                self.indexes.append(self._ix(",".join(idx.fields), base + b"i:" + ",".join(idx.fields).encode(),
                                             idx.fields, sparse=idx.sparse))
        for f in spec.multi:
            self.indexes.append(self._ix(f, base + b"m:" + f.encode(), (f,), multi=f))
            if "user_id" in self.kinds:  # as SQL's side table: a user's values without a join
                self.indexes.append(self._ix(f"user_id,{f}", base + b"m:user_id," + f.encode(), ("user_id", f), multi=f))
        self.layout = json.dumps([ix.lua() for ix in self.indexes], ensure_ascii=False)
        self.shapes = [planner.Shape(ix.order, sparse=ix.sparse) for ix in self.indexes]

    def _ix(self, name: str, zkey: bytes, fields: tuple[str, ...], *, sparse: bool = False, multi: str | None = None) -> Ix:
        order = fields + tuple(k for k in self.spec.key if k not in fields)
        return Ix(name, zkey, fields, order, sparse, multi, tuple(order.index(k) + 1 for k in self.spec.key))

    # -- records ---------------------------------------------------------------------------

    def rkey(self, key: Sequence[Any]) -> bytes:
        return self.rprefix + b"".join(encode(self.kinds[k], v) for k, v in zip(self.spec.key, key))

    def pairs(self, row: dict, names: Iterable[str] | None = None) -> list[bytes | str]:
        """hash field, value, ... for `names` (default: every column) of `row`."""
        out: list[bytes | str] = []
        for name in self.columns if names is None else names:
            out += (name, encode(self.kinds[name], row.get(name)))
            if name in self.spec.multi:
                values = row.get(name) or ()
                out += ("#" + name, b"".join(encode("str", v) for v in dict.fromkeys(values)))
        return out

    def decode_rows(self, fields: Sequence[str], blob: bytes) -> list[dict]:
        """Rows from a script's reply: each row's fields concatenated, each ends with \\x00.
        Decoded a column at a time (one comprehension per column, one parse per JSON column)."""
        if not blob:
            return []
        parts = blob.split(b"\x00")
        width = len(fields)
        end = (len(parts) - 1) // width * width
        cols = [COLUMN_DECODERS[self.kinds[f]](parts[j:end:width]) for j, f in enumerate(fields)]
        return [dict(zip(fields, values)) for values in zip(*cols)]

    def arg(self, fields: Sequence[str]) -> bytes:
        """A list of field names as one script argument."""
        if fields is self.columns:
            return self.columns_arg
        return ",".join(fields).encode()

    def cond_args(self, where: Iterable[Cond], strict: bool = False) -> list:
        """The conditions a script checks itself (on scalar columns), as its arguments;
        with `strict`, any other condition is refused rather than left unchecked."""
        conds = []
        for c in where:
            if c.op in ("eq", "in", *planner.RANGE_OPS) and self.kinds[c.field] != "json":
                conds.append(c)
            elif strict:
                raise ValueError(f"a conditional write cannot check {c}")
        out: list = [len(conds)]
        for c in conds:
            values = c.value if c.op == "in" else [c.value]
            out += [c.field, c.op, len(values), *(encode(self.kinds[c.field], v) for v in values)]
        return out

    def fetch_fields(self, wanted: Sequence[str] | None, *extra: Iterable[str]) -> tuple[str, ...]:
        """The fields to read: the key first (a missing record shows as a missing key)."""
        if wanted is None:
            return self.columns
        names = list(self.spec.key) + list(self.columns if wanted is None else wanted)
        for more in extra:
            names += list(more)
        return tuple(dict.fromkeys(names))

    # -- planning ---------------------------------------------------------------------------

    def usable(self, f: str) -> bool:
        """Whether an index can bound `f` (a JSON column is in none)."""
        return self.kinds.get(f) not in (None, "json")

    def plan(self, where: Sequence[Cond], order: tuple[str, ...] = (), desc: bool = False,
             after: tuple | None = None, *, ordered_only: bool = False) -> Plan | None:
        """The index and ranges serving `where` (and `order`): see agentkeep/db/planner.py.
        The list indexes (`multi`) serve "contains all" only."""
        read = planner.plan([s for s, ix in zip(self.shapes, self.indexes) if not ix.multi], where, order,
                            ordered_only=ordered_only, max_prefixes=MAX_PREFIXES, usable=self.usable)
        if read is None:
            return None
        ix = [ix for ix in self.indexes if not ix.multi][read.index]
        return Plan(ix, self._ranges(read, order, desc, after), read)

    def _ranges(self, read: planner.Plan, order: Sequence[str], desc: bool, after: tuple | None) -> list[tuple[bytes, bytes]]:
        out = []
        for combo in read.prefixes:
            p = b"".join(encode(self.kinds[f], v) for f, v in zip(read.prefix, combo))
            lo, hi = (p, False), (p + HIGH, True)  # (bound, exclusive)
            if read.range_field is not None:
                f = read.range_field
                lo = _tighter_lo(lo, (p + NONE + HIGH, True))  # a range never holds None
                for c in read.ranges:
                    v = encode(self.kinds[f], c.value)
                    if c.op == "gte":
                        lo = _tighter_lo(lo, (p + v, False))
                    elif c.op == "gt":
                        lo = _tighter_lo(lo, (p + v + HIGH, True))
                    elif c.op == "lte":
                        hi = _tighter_hi(hi, (p + v + HIGH, True))
                    else:
                        hi = _tighter_hi(hi, (p + v, True))
            if read.ordered and after is not None:
                pos = p + b"".join(encode(self.kinds[f], v) for f, v in zip(read.order, read.position(order, after)))
                if desc:
                    hi = _tighter_hi(hi, (pos, True))
                else:  # past every member that starts with pos
                    lo = _tighter_lo(lo, (pos + HIGH, True))
            out.append(((b"(" if lo[1] else b"[") + lo[0], (b"(" if hi[1] else b"[") + hi[0]))
        return out

    def multi_plan(self, where: Sequence[Cond]) -> tuple[Ix, list[tuple[bytes, bytes]]] | None:
        """For "contains all" on a list field: one range per wanted value (in the user's
        own index when the query names one user)."""
        for c in where:
            if c.op == "contains_all" and c.field in self.spec.multi and c.value:
                user = [x for x in where if x.field == "user_id" and x.op == "eq"]
                name = f"user_id,{c.field}" if user else c.field
                ix = next(i for i in self.indexes if i.multi and i.name == name)
                p = encode("str", user[0].value) if user else b""
                vals = [p + encode("str", v) for v in dict.fromkeys(c.value)]
                return ix, [(b"[" + v, b"(" + v + HIGH) for v in vals]
        return None

    def distinct_plan(self, f: str, where: Sequence[Cond]) -> tuple[Ix, int, list[tuple[bytes, bytes]]] | None:
        """An index (list indexes too) that lists `f` right after a prefix answering `where`:
        its distinct values are found by hopping from one value to the next."""
        read = planner.plan(self.shapes, where, (f,), ordered_only=True, max_prefixes=MAX_PREFIXES,
                            usable=self.usable)
        if read is None or not read.covered or read.order != (f,):
            return None
        return self.indexes[read.index], len(read.prefix) + 1, self._ranges(read, (), False, None)

    def group_plan(self, by: str, max_field: str, where: Sequence[Cond]) -> tuple[Ix, int, bytes, bytes] | None:
        """An index ordered (equality fields..., by, max_field, ...) serving `where`: each
        group is one counted range whose last member holds the group's maximum."""
        plan = self.plan(where, (by, max_field), ordered_only=True)
        if (plan is None or not plan.served or len(plan.ranges) != 1 or plan.ix.sparse
                or plan.read.order != (by, max_field)):
            return None
        lo, hi = plan.ranges[0]
        return plan.ix, len(plan.read.prefix) + 1, lo, hi


def _tighter_lo(a: tuple[bytes, bool], b: tuple[bytes, bool]) -> tuple[bytes, bool]:
    return max(a, b)  # at equal bytes an exclusive bound (True) is the tighter


def _tighter_hi(a: tuple[bytes, bool], b: tuple[bytes, bool]) -> tuple[bytes, bool]:
    return min(a, b, key=lambda x: (x[0], not x[1]))


def finish(rows: list[dict], q: Query, filtered: bool = False) -> list[dict]:
    """Filter, sort, apply the keyset position, the offset and the limit to rows read in no
    useful order."""
    if not filtered:
        rows = [r for r in rows if matches_all(r, q.where)]
    if q.order:
        rows.sort(key=lambda r: row_key(r, q.order), reverse=q.desc)
        rows = list(after_filter(rows, q))
    return window(rows, q)


def parse_url(db_url: str) -> tuple[str, str]:
    """(the URL as given, a printable location without credentials)."""
    if not isinstance(db_url, str) or urlsplit(db_url).scheme not in ("redis", "rediss", "unix"):
        raise InvalidInputError(f"not a Redis URL: {db_url!r} (expected redis://host:port/db, rediss:// or unix://)")
    u = urlsplit(db_url)
    where = f"{u.hostname or ''}:{u.port or 6379}{u.path or '/0'}" if u.scheme != "unix" else u.path
    return db_url, f"{u.scheme}://{where}"


def check_prefix(prefix: Any) -> bytes:
    if not isinstance(prefix, str) or not prefix or any(ch.isspace() or ord(ch) < 32 for ch in prefix):
        raise InvalidInputError(f"prefix must be a non-empty string without spaces or control characters, got {prefix!r}")
    return prefix.encode()
