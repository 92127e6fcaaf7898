"""The Redis kernel: every read and write is one Lua script call (one round trip, atomic on
the server); the layout, the value encoding and the query planning live in
`agentkeep/db/backends/redis/` (codec.py, layout.py, lua/).

GENERATED from agentkeep/db/backends/redis/_async/kernel.py by scripts/unasync.py: do not edit.
"""


from __future__ import annotations

import time
import hashlib
import json
import uuid
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import redis as redis_lib
from redis import exceptions as redis_errors
from redis.exceptions import NoScriptError

from agentkeep.db.backends.redis.codec import decode, encode
from agentkeep.db.backends.redis.layout import (
    Ix,
    Plan,
    Table,
    check_prefix,
    finish,
    parse_url,
)
from agentkeep.db.backends.redis.scripts import SCRIPTS
from agentkeep.db.connection import CONNECT_TIMEOUT_S, connection_failed
from agentkeep.db.errors import DbError
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.planner import key_values
from agentkeep.db.query import Cond, Query, matches_all, row_key
from agentkeep.db.tables import TableSpec

BATCH = 500  # members read per script call when a walk cannot stop at a limit
MAX_READ = 1000
PUT_BYTES = 8 * 2**20  # rows per put_many call: up to this many bytes of arguments
LOCK_MS = 30_000


try:  # redis-py 7+: with maintenance notifications on ("auto", even on RESP2), a pooled
    # connection the server closed is handed out unchecked; they only matter on RESP3 anyway
    from redis.maint_notifications import MaintNotificationsConfig

    _DEFAULT_OPTIONS: dict = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
except ImportError:  # pragma: no cover - older redis-py
    _DEFAULT_OPTIONS = {}


class _Range:
    __slots__ = ("lo", "hi", "rows", "done")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.lo, self.hi, self.rows, self.done = lo, hi, deque(), False


class RedisKernel:
    capabilities = frozenset({"multi_process", "persistent", "atomic_append", "atomic_claim"})

    def __init__(self, db_url: str, prefix: str, client_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.url, self.location = parse_url(db_url)
        self.prefix = check_prefix(prefix)
        # redis-py waits for the OS's connect timeout by default; the URL's own
        # ?socket_connect_timeout= still wins (redis-py lets URL options override these)
        options = {**_DEFAULT_OPTIONS, "socket_connect_timeout": connect_timeout, **(client_options or {}),
                   "decode_responses": False}
        self.r = redis_lib.Redis.from_url(db_url, **options)
        self.tables: dict[str, Table] = {}
        self._sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
        self._built = self.prefix + b":_:indexes"
        self._lock = self.prefix + b":_:lock"

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.tables = {name: Table(spec, self.prefix) for name, spec in specs.items()}

    def default_id(self) -> str:
        return f"{self.location}?prefix={self.prefix.decode()}"

    def describe(self) -> str:
        return f"Redis at {self.location}, key prefix {self.prefix.decode()!r}"

    def translate_error(self, exc: BaseException) -> DbError | None:
        """ConnectionFailedError for a refused or timed-out connection, a refused login
        (redis-py's AuthenticationError is a ConnectionError) or a database number the
        server does not have; else None."""
        if (isinstance(exc, redis_errors.ConnectionError)
                or (isinstance(exc, redis_errors.TimeoutError) and "connecting" in str(exc))
                or (isinstance(exc, redis_errors.ResponseError) and "DB index is out of range" in str(exc))):
            return connection_failed("Redis", self.location, exc)
        return None

    def _script(self, name: str, *args: Any) -> Any:
        try:
            return self.r.evalsha(self._sha[name], 0, *args)
        except NoScriptError:  # a new or restarted server: load it once
            self.r.script_load(SCRIPTS[name])
            return self.r.evalsha(self._sha[name], 0, *args)

    # -- schema: hashes need nothing; an index added to a spec is built from the key index --

    def has_table(self, table: str) -> bool:
        return True

    def plan_schema(self) -> list[Step]:
        built = self.r.smembers(self._built)
        return [
            Step(f"create index {ix.zkey.decode()}", "add_index", name, ix.name)
            for name, t in self.tables.items() for ix in t.indexes if ix.zkey not in built
        ]

    def apply_step(self, step: Step) -> None:
        t = self.tables[step.table]
        ix = next(i for i in t.indexes if i.name == step.detail)
        if ix is not t.key_index:  # every record is in the key index from its first write
            layout = json.dumps([ix.lua()], ensure_ascii=False)
            lo = b"-"
            while True:
                members = self.r.zrangebylex(t.key_index.zkey, lo, b"+", start=0, num=BATCH)
                if not members:
                    break
                self._script("reindex", layout, *[t.rprefix + m for m in members])
                lo = b"(" + members[-1]
        self.r.sadd(self._built, ix.zkey)

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        token = uuid.uuid4().hex.encode()
        for _ in range(3000):  # a holder that died frees it after LOCK_MS
            if self.r.set(self._lock, token, nx=True, px=LOCK_MS):
                break
            time.sleep(0.02)
        else:
            raise DbError("timed out waiting for the schema lock")
        try:
            yield
        finally:
            self._script("unlock", self._lock, token)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # groups nothing: each primitive is atomic on its own (one script), and the domain
        # keeps its promises without more (no "transactions" capability)
        yield

    # -- reads -------------------------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        t = self.tables[table]
        rows = self._get_many(t, [key], t.columns)
        return rows[0] if rows else None

    def _get_many(self, t: Table, keys: Sequence[tuple], fields: Sequence[str]) -> list[dict]:
        blob = self._script("get", t.arg(fields), *[t.rkey(k) for k in keys])
        return t.decode_rows(fields, blob)

    def _fill(
        self, t: Table, ix: Ix, ranges: list[_Range], fields: Sequence[str], desc: bool, count: int, skip: int = 0
    ) -> None:
        """Read the next `count` members of each range, with their records (`skip` members
        passed over first, their records not read)."""
        args: list = [ix.zkey, t.rprefix, ix.kp_arg, t.arg(fields), int(desc), len(ranges)]
        for r in ranges:
            args += [r.lo, r.hi, skip, count]
        res = self._script("find", *args)
        for i, r in enumerate(ranges):
            n, last, blob = res[3 * i : 3 * i + 3]
            r.rows.extend(t.decode_rows(fields, blob))
            if n < count:
                r.done = True
            elif desc:
                r.hi = b"(" + last
            else:
                r.lo = b"(" + last

    def _ordered(self, t: Table, plan: Plan, q: Query, fields: Sequence[str]) -> list[dict]:
        """Walk the plan's ranges in index order (merged when `in` made several), stopping at
        the limit; conditions the ranges do not answer are checked on the rows read. The
        offset's members are passed over by the sorted set itself when one range answers
        every condition, else counted off here as they come."""
        ranges = [_Range(lo, hi) for lo, hi in plan.ranges]
        out: list[dict] = []
        skip = q.offset
        if skip and plan.served and len(ranges) == 1:
            count = q.limit if q.limit is not None else BATCH
            self._fill(t, plan.ix, ranges, fields, q.desc, min(count, MAX_READ), skip)
            skip = 0
        while q.limit is None or len(out) < q.limit:
            empty = [r for r in ranges if not r.rows and not r.done]
            if empty:
                left = (q.limit - len(out) if q.limit is not None else BATCH) + skip
                count = left if plan.served else max(2 * left, 32)
                self._fill(t, plan.ix, empty, fields, q.desc, min(count, MAX_READ))
            live = [r for r in ranges if r.rows]
            if not live:
                if all(r.done for r in ranges):
                    break
                continue
            if len(live) == 1:
                pick = live[0]
            else:
                heads = [(row_key(r.rows[0], q.order), i) for i, r in enumerate(live)]
                pick = live[(max(heads) if q.desc else min(heads))[1]]
            row = pick.rows.popleft()
            if not (plan.served or matches_all(row, q.where)):
                continue
            if skip:
                skip -= 1
            else:
                out.append(row)
        return out

    def _collect(self, t: Table, ix: Ix, ranges: list[tuple[bytes, bytes]], fields: Sequence[str],
                       where: Sequence[Cond], served: bool, limit: int | None = None) -> list[dict]:
        """Every matching row in the ranges (up to `limit`), in no particular order."""
        todo = [_Range(lo, hi) for lo, hi in ranges]
        out: list[dict] = []
        while todo:
            count = min(limit - len(out), MAX_READ) if served and limit is not None else BATCH
            self._fill(t, ix, todo, fields, False, count)
            for r in todo:
                out += r.rows if served else [row for row in r.rows if matches_all(row, where)]
                r.rows.clear()
            if limit is not None and len(out) >= limit:
                return out[:limit]
            todo = [r for r in todo if not r.done]
        return out

    def _everything(self, t: Table) -> tuple[Ix, list[tuple[bytes, bytes]]]:
        # no index serves the conditions: the whole table, through its key index
        return t.key_index, [(b"-", b"+")]

    def find(self, q: Query) -> list[dict]:
        t = self.tables[q.table]
        fields = t.fetch_fields(q.fields, (c.field for c in q.where), q.order)
        rows = self._find(t, q, fields)
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in rows]
        return rows

    def _find(self, t: Table, q: Query, fields: Sequence[str]) -> list[dict]:
        keys = key_values(t.spec.key, q.where)
        if keys is not None:
            rows = self._get_many(t, keys, fields)
            return finish(rows, q)
        multi = t.multi_plan(q.where)
        if multi is not None:
            rows = self._multi(t, multi, fields, q.where)
            return finish(rows, q, filtered=True)
        plan = t.plan(q.where, q.order, q.desc, q.after)
        if plan is not None and plan.read.ordered:
            return self._ordered(t, plan, q, fields)
        # a range that does not yield the order: read it whole, then sort
        ix, ranges = (plan.ix, plan.ranges) if plan is not None else self._everything(t)
        served = plan is not None and plan.served
        if not q.order:
            stop = None if q.limit is None else q.offset + q.limit
            rows = self._collect(t, ix, ranges, fields, q.where, served, stop)
            return rows[q.offset :]
        rows = self._collect(t, ix, ranges, fields, q.where, served)
        return finish(rows, q, filtered=True)

    def _multi(self, t: Table, multi: tuple[Ix, list], fields: Sequence[str], where: Sequence[Cond]) -> list[dict]:
        """"Contains all": read the records of the rarest wanted value, check the rest."""
        ix, ranges = multi
        counts = self._script("count", ix.zkey, len(ranges), *[b for r in ranges for b in r])
        if min(counts) == 0:
            return []
        rarest = ranges[counts.index(min(counts))]
        return self._collect(t, ix, [rarest], fields, where, False)

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.tables[table]
        fields = t.fetch_fields((), (c.field for c in where))
        if key_values(t.spec.key, where) is not None or t.multi_plan(where) is not None:
            return len(self._find(t, Query(table, where), fields))
        plan = t.plan(where)
        if plan is None and not where:
            return self.r.zcard(t.key_index.zkey)
        if plan is not None and plan.served:  # counted by the server, no record read
            counts = self._script("count", plan.ix.zkey, len(plan.ranges), *[b for r in plan.ranges for b in r])
            return sum(counts)
        ix, ranges = (plan.ix, plan.ranges) if plan is not None else self._everything(t)
        return len(self._collect(t, ix, ranges, fields, where, False))

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        t = self.tables[table]
        hop = t.distinct_plan(field, where)
        if hop is not None:
            ix, pos, ranges = hop
            raw = self._script("distinct", ix.zkey, pos, len(ranges), *[b for r in ranges for b in r])
            kind = "str" if field == ix.multi else t.kinds[field]
            return list({decode(kind, v[:-1]) for v in raw})
        values: set = set()
        for row in self.find(Query(table, where, fields=(field,))):
            v = row.get(field)
            values.update(v if isinstance(v, list) else [v])
        values.discard(None)
        return list(values)

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        t = self.tables[table]
        plan = t.group_plan(by, max_field, where)
        if plan is not None:
            ix, pos, lo, hi = plan
            res = self._script("group", ix.zkey, pos, lo, hi, limit)
            return [(decode(t.kinds[by], res[i][:-1]), int(res[i + 1]), decode(t.kinds[max_field], res[i + 2][:-1]))
                    for i in range(0, len(res), 3)]
        groups: dict[Any, list] = {}
        rows = self.find(Query(table, where, (by, max_field) + t.spec.key, fields=(by, max_field)))
        for row in rows:
            g = groups.get(row[by])
            if g is None:
                if len(groups) == limit:
                    break
                g = groups[row[by]] = [0, None]
            g[0] += 1
            if row[max_field] is not None and (g[1] is None or row[max_field] > g[1]):
                g[1] = row[max_field]
        return [(k, n, last) for k, (n, last) in groups.items()]

    # -- writes --------------------------------------------------------------------------------

    def _row_args(self, t: Table, row: dict) -> list:
        pairs = t.pairs(row)
        return [t.rkey(t.spec.key_of(row)), len(pairs) // 2, *pairs]

    def insert(self, table: str, row: dict) -> None:
        t = self.tables[table]
        if self._script("put", t.layout, "i", *self._row_args(t, row)) == 0:
            raise DuplicateKey(table)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        t = self.tables[table]
        rows = list({t.spec.key_of(r): r for r in rows}.values())
        written = 0
        args: list = []
        size = 0
        for i, row in enumerate(rows):
            part = self._row_args(t, row)
            args += part
            size += sum(len(a) for a in part if isinstance(a, bytes))
            if size >= PUT_BYTES or i == len(rows) - 1:
                written += self._script("put", t.layout, "r" if replace else "k", *args)
                args, size = [], 0
        return written

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
                     where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        t = self.tables[table]
        pairs = t.pairs(set or {}, (set or {}).keys())
        steps = [x for f, n in (incr or {}).items() for x in (f, int(n))]
        args = [t.layout, t.rkey(key), *t.cond_args(where, strict=True), len(pairs) // 2, *pairs,
                len(steps) // 2, *steps, t.arg(returning)]
        res = self._script("update", *args)
        if res is None:
            return None
        return t.decode_rows(returning, res)[0] if returning else {}

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.tables[table]
        rows = self.find(Query(table, where, fields=t.spec.key))
        conds = t.cond_args(where)  # checked again on the server, as each record is deleted
        deleted = 0
        for i in range(0, len(rows), BATCH):
            rkeys = [t.rkey(t.spec.key_of(r)) for r in rows[i : i + BATCH]]
            deleted += self._script("delete", t.layout, *conds, *rkeys)
        return deleted

    def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str,
                     set: dict, where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Bump the parent's `counter`, set `set` on it and insert `row` with `seq` = the new
        counter and `inherit` copied from the parent, in one script. None when no parent has
        `key` and meets `where`; DuplicateKey when the child's key exists (nothing changed)."""
        pt, ct = self.tables[parent], self.tables[child]
        set_pairs = pt.pairs(set, set.keys())
        child_pairs = ct.pairs(row, [c for c in ct.columns if c != seq and c not in inherit])
        res = self._script(
            "append", pt.layout, ct.layout, pt.rkey(key), ct.rkey(ct.spec.key_of(row)),
            *pt.cond_args(where, strict=True), len(set_pairs) // 2, *set_pairs, counter, seq,
            ct.arg(inherit), len(child_pairs) // 2, *child_pairs,
        )
        if res is None:
            return None
        if res == 0:
            raise DuplicateKey(child)
        return ct.decode_rows((seq, *inherit), res)[0]

    def claim_due(self, *, now: Any, until: Any, worker_id: str, limit: int) -> list[dict]:
        """Lease up to `limit` due schedules in one script: a schedule is claimed by exactly
        one caller, in (next_run_at, id) order."""
        t = self.tables["schedules"]
        plan = t.plan((Cond("enabled", "eq", True), Cond("next_run_at", "lte", now)), ("next_run_at", "id"),
                      ordered_only=True)
        assert plan is not None and plan.served and len(plan.ranges) == 1, "schedules need an (enabled, next_run_at) index"
        lo, hi = plan.ranges[0]
        pairs = t.pairs({"locked_by": worker_id, "locked_until": until}, ("locked_by", "locked_until"))
        res = self._script(
            "claim", t.layout, plan.ix.zkey, t.rprefix, plan.ix.kp_arg, lo, hi,
            encode("time", now), "locked_until", "revision", limit, len(pairs) // 2, *pairs, t.columns_arg,
        )
        return t.decode_rows(t.columns, res)

    def close(self) -> None:
        self.r.close()
