"""The SQL kernel: runs the statements `SqlBase` builds, on the driver's connections.

This is the async source; `agentkeep/db/backends/sql/_sync/kernel.py` is generated from it by
`scripts/unasync.py` (never edit the generated file).

A dialect's kernel supplies its connections (`acquire`, `release`, `cursor`, `close`);
everything else is here: transactions (the one a task or thread is inside of is joined by
every call it makes), single-statement writes committed by the server, duplicate keys,
side tables, schema steps under the dialect's lock.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import random
from contextlib import asynccontextmanager, nullcontext
from typing import Any, AsyncIterator

import sqlalchemy as sa

from agentkeep.db._async.util import to_thread
from agentkeep.db.backends.sql.base import Compiled, SqlBase
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query

BEGIN_RETRIES = 8


class AsyncSqlKernel(SqlBase):
    """Shared by every SQL backend of its kind; a dialect's kernel sets `engine` (a sync
    SQLAlchemy engine, also used to read the catalog) and supplies its connections."""

    def __init__(self, url: sa.URL, dialect: sa.engine.Dialect, schema: str | None = None) -> None:
        super().__init__(url, dialect, schema)
        # the connection of the transaction this task (thread, in the sync twin) is inside of
        self._current: contextvars.ContextVar = contextvars.ContextVar(f"agentkeep_tx_{id(self):x}", default=None)
        self.serial: Any = None  # set when every caller shares one connection

    # -- connection hooks --------------------------------------------------------------------

    engine: sa.engine.Engine

    @abc.abstractmethod
    async def acquire(self) -> Any:
        """A connection for one statement or one transaction."""

    @abc.abstractmethod
    async def release(self, raw: Any) -> None:
        """Give back what `acquire` returned."""

    async def cursor(self, raw: Any) -> Any:
        return raw.cursor()

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    # -- running statements ------------------------------------------------------------------

    async def _execute(self, raw: Any, sql: str, params: Any = ()) -> Any:
        cur = await self.cursor(raw)
        await cur.execute(sql, params)
        return cur

    async def _run(self, c: Compiled, values: dict, *, write: bool) -> "_Result":
        """Execute; return the rows (fetched) it produced. Joins the current transaction;
        otherwise a read, or a write of one statement, runs on a pooled connection."""
        raw = self._current.get()
        if raw is not None:
            cur = await self._execute(raw, c.sql, self._params(c, values))
            return _Result(await cur.fetchall() if c.result else [], cur.rowcount)
        if write and not self.single_statement_autocommit:
            async with self.transaction():
                return await self._run(c, values, write=True)
        async with self.serial or nullcontext():
            raw = await self.acquire()
            try:
                cur = await self._execute(raw, c.sql, self._params(c, values))
                return _Result(await cur.fetchall() if c.result else [], cur.rowcount)
            finally:
                await self.release(raw)

    async def _begin(self, raw: Any) -> None:
        for attempt in range(BEGIN_RETRIES):
            try:
                await self._execute(raw, self.begin_sql)
                return
            except Exception as exc:
                # a lock wait the driver already gave up on (SQLite's busy timeout): back off
                if not self.busy(exc) or attempt == BEGIN_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05) * 2**attempt)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        raw = self._current.get()
        if raw is not None:  # join the enclosing transaction
            yield raw
            return
        async with self.serial or nullcontext():
            raw = await self.acquire()
            try:
                await self._begin(raw)
                token = self._current.set(raw)
                try:
                    yield raw
                    await raw.commit()
                except BaseException:
                    await raw.rollback()
                    raise
                finally:
                    self._current.reset(token)
            finally:
                await self.release(raw)

    def current_connection(self) -> Any:
        """The connection of the transaction this task or thread is inside of, or None
        (so that a vector store sharing this db can write in the same transaction)."""
        return self._current.get()

    @asynccontextmanager
    async def schema_lock(self) -> AsyncIterator[Any]:
        async with self.transaction() as raw:
            lock = self.schema_lock_sql()
            if lock is not None:
                await self._execute(raw, *lock)
            try:
                yield raw
            finally:
                unlock = self.schema_unlock_sql()
                if unlock is not None:
                    await self._execute(raw, *unlock)

    # -- schema ------------------------------------------------------------------------------

    async def has_table(self, table: str) -> bool:
        # inspected on a second connection: it sees committed schema, which is all there is
        # while the schema lock is held
        name = self.tables[table].name
        return await to_thread(lambda: name in sa.inspect(self.engine).get_table_names(schema=self.schema))

    async def plan_schema(self) -> list[Step]:
        return await to_thread(lambda: self.plan_from(sa.inspect(self.engine)))

    async def apply_step(self, step: Step) -> None:
        async with self.transaction() as raw:
            try:
                await self._execute(raw, self.ddl(step))
            except Exception as exc:
                if not self.exists(exc):  # else another process made it first: the same end
                    raise

    # -- the kernel primitives -----------------------------------------------------------------

    async def get(self, table: str, key: tuple) -> dict | None:
        c, values = self.get_stmt(table, key)
        rows = self._decode(c, (await self._run(c, values, write=False)).rows)
        return rows[0] if rows else None

    async def find(self, q: Query) -> list[dict]:
        c, values = self.find_stmt(q)
        return self._decode(c, (await self._run(c, values, write=False)).rows)

    async def count(self, table: str, where: tuple[Cond, ...]) -> int:
        c, values = self.count_stmt(table, where)
        return (await self._run(c, values, write=False)).rows[0][0]

    async def _write_side(self, table: str, rows: list[dict], replace: bool) -> None:
        spec = self.specs[table]
        raw = self._current.get()
        for field in spec.multi:
            if replace:
                c = self.side_delete_stmt(table, field)
                for r in rows:
                    values = {f"k{j}": r[k] for j, k in enumerate(spec.key)}
                    await self._execute(raw, c.sql, self._params(c, values))
            values_list = [
                {**{k: r[k] for k in spec.key}, "value": v, "user_id": r.get("user_id")}
                for r in rows for v in dict.fromkeys(r.get(field) or ())
            ]
            if values_list:
                c = self.side_insert_stmt(table, field)
                cur = await self.cursor(raw)
                await cur.executemany(c.sql, [self._params(c, v) for v in values_list])

    async def _delete_side(self, table: str, where: tuple[Cond, ...]) -> None:
        """Without foreign keys: delete the side rows of the records `where` matches."""
        spec = self.specs[table]
        keyfield = spec.key[0]
        keys = [r[keyfield] for r in await self.find(Query(table, where, fields=(keyfield,)))]
        for field in spec.multi:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                c = self.side_delete_stmt(table, field, len(chunk))
                await self._run(c, {f"k0_{j}": k for j, k in enumerate(chunk)}, write=True)

    async def insert(self, table: str, row: dict) -> None:
        # a duplicate key is an answer, not an error: ON CONFLICT DO NOTHING + rowcount where
        # the dialect has it (so no savepoint is needed to survive it), else the driver's error
        # (MySQL rolls back only the failed statement)
        c = self.insert_stmt(table, self.insert_how)
        values = {k: row.get(k) for k in c.kinds}
        side = bool(self.specs[table].multi)
        async with self.transaction() if side else nullcontext():
            try:
                result = await self._run(c, values, write=True)
            except Exception as exc:
                if self.duplicate(exc):
                    raise DuplicateKey(table) from None
                raise
            if result.rowcount == 0:
                raise DuplicateKey(table)
            if side:
                await self._write_side(table, [row], replace=False)

    async def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        spec = self.specs[table]
        async with self.transaction() as raw:
            rows = list({spec.key_of(r): r for r in rows}.values())
            if not replace:
                keyfield = spec.key[0]
                query = Query(table, (Cond(keyfield, "in", [r[keyfield] for r in rows]),), fields=spec.key)
                known = {spec.key_of(r) for r in await self.find(query)}
                rows = [r for r in rows if spec.key_of(r) not in known]
                if not rows:
                    return 0
            how = "replace" if replace else "ignore"
            if self.arrays:
                c = self.insert_rows_stmt(table, how)
                await self._execute(raw, c.sql, self._params(c, {k: [r.get(k) for r in rows] for k in c.kinds}))
            else:
                c = self.insert_stmt(table, how)
                cur = await self.cursor(raw)
                await cur.executemany(c.sql, [self._params(c, {k: r.get(k) for k in c.kinds}) for r in rows])
            if spec.multi:
                await self._write_side(table, rows, replace)
            return len(rows)

    async def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
                     where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        spec = self.specs[table]
        set = set or {}
        incr = incr or {}
        c, values = self.update_stmt(table, key, set, incr, where, returning)
        side = any(f in set for f in spec.multi)
        # without RETURNING, the values read back must be this update's: one transaction
        one = side or (returning and not self.supports_returning)
        async with self.transaction() if one else nullcontext():
            result = await self._run(c, values, write=True)
            if self.supports_returning:
                rows = self._decode(c, result.rows)
                if not rows:
                    return None
                out = rows[0] if returning else {}
            else:
                if result.rowcount == 0:
                    return None
                out = {f: v for f, v in (await self.get(table, key)).items() if f in returning} if returning else {}
            if side:
                await self._write_side(table, [{**dict(zip(spec.key, key)), **set}], replace=True)
            return out

    async def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        c, values = self.delete_stmt(table, where)
        if self.foreign_keys or not self.specs[table].multi:
            return (await self._run(c, values, write=True)).rowcount
        async with self.transaction():
            await self._delete_side(table, where)
            return (await self._run(c, values, write=True)).rowcount

    async def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        c, values = self.distinct_stmt(table, field, where)
        return [r["value"] for r in self._decode(c, (await self._run(c, values, write=False)).rows)]

    async def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        c, values = self.group_count_stmt(table, by, max_field, where, limit)
        return [(r[by], r["n"], r["last"]) for r in self._decode(c, (await self._run(c, values, write=False)).rows)]

    async def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str,
                     set: dict, where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Bump the parent's `counter` (and set `set` on it) and insert `row` into `child` with
        `seq` = the new counter and `inherit` copied from the parent, as one atomic step.
        None when no parent has `key` and meets `where`; DuplicateKey when the child's key
        exists (then nothing changed). Only where the dialect has "atomic_append"."""
        c, values = self.append_stmt(child, row, parent=parent, key=key, counter=counter, seq=seq, set=set,
                                     where=where, inherit=inherit)
        try:
            rows = self._decode(c, (await self._run(c, values, write=True)).rows)
        except Exception as exc:
            if self.duplicate(exc):
                raise DuplicateKey(child) from None
            raise
        return rows[0] if rows else None

    async def claim_due(self, *, now: Any, until: Any, worker_id: str, limit: int) -> list[dict]:
        """Lease up to `limit` due schedules (FOR UPDATE SKIP LOCKED: claimers never wait on
        or double-claim each other). Only called where the dialect has "atomic_claim"."""
        async with self.transaction():
            c = self.due_stmt(limit)
            ids = [r["id"] for r in self._decode(c, (await self._run(c, {"yes": True, "now": now}, write=True)).rows)]
            if not ids:
                return []
            for schedule_id in ids:
                await self.update("schedules", (schedule_id,), set={"locked_by": worker_id, "locked_until": until},
                                  incr={"revision": 1})
            return await self.find(Query("schedules", (Cond("id", "in", ids),), ("next_run_at", "id")))


class _Result:
    """What a statement gave back: its rows (already fetched) and its row count."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list, rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount
