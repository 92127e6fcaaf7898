"""InMemoryDb: everything in this process's memory, thread-safe and indexed."""

from __future__ import annotations

import threading

from agentkeep.db import options
from agentkeep.db._sync.domain import Db
from agentkeep.db.errors import DbError
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.rowstore import RowTable, apply_update, check_where
from agentkeep.db.tables import TableSpec


class MemoryKernel:
    capabilities = frozenset({"transactions"})

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tables: dict[str, RowTable] = {}

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.tables = {name: RowTable(spec) for name, spec in specs.items()}

    def default_id(self) -> str:
        return f"memory-{id(self):x}"

    def describe(self) -> str:
        return "process memory"

    def translate_error(self, exc: BaseException) -> DbError | None:
        return None  # nothing to connect to

    # schema: nothing to create; versions are recorded like any other row
    def has_table(self, table: str) -> bool:
        return True

    def plan_schema(self) -> list[Step]:
        return []

    def apply_step(self, step: Step) -> None:  # pragma: no cover - no steps are planned
        raise AssertionError(step)

    def schema_lock(self):
        return self._lock

    def transaction(self):
        return self._lock

    def get(self, table: str, key: tuple) -> dict | None:
        with self._lock:
            return self.tables[table].get(key)

    def find(self, q: Query) -> list[dict]:
        with self._lock:
            return self.tables[q.table].find(q)

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        with self._lock:
            return self.tables[table].count(where)

    def insert(self, table: str, row: dict) -> None:
        with self._lock:
            t = self.tables[table]
            if t.spec.key_of(row) in t.rows:
                raise DuplicateKey(table)
            t.put(row)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        with self._lock:
            t = self.tables[table]
            written = 0
            for row in rows:
                if replace or t.spec.key_of(row) not in t.rows:
                    t.put(row)
                    written += 1
            return written

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        with self._lock:
            t = self.tables[table]
            row = t.rows.get(key)
            if row is None or not check_where(row, where):
                return None
            new = apply_update(row, set, incr)
            t.put(new)
            return {f: new[f] for f in returning}

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        with self._lock:
            t = self.tables[table]
            keys = [t.spec.key_of(r) for r in t.find(Query(table, where, fields=t.spec.key))]
            for k in keys:
                t.remove(k)
            return len(keys)

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        with self._lock:
            return self.tables[table].distinct(field, where)

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        with self._lock:
            return self.tables[table].group_count(by, max_field, where, limit)

    def close(self) -> None:
        pass


class InMemoryDb(Db):
    """Everything in process memory: for tests, notebooks and ephemeral agents."""

    quick_reads = True  # see SqliteDb

    def __init__(self, *, id: str | None = None, table_prefix: str = "agentkeep_", **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        super().__init__(MemoryKernel(), id=id, table_prefix=table_prefix, tables=overrides)
