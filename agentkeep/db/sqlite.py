"""SqliteDb: the embedded default. `SqliteDb()` keeps everything in ./agentkeep.db.

WAL journal (readers never block the writer), every write transaction opened with
BEGIN IMMEDIATE (no lock upgrade deadlocks), a busy timeout plus a bounded retry when the
database stays locked, foreign keys on, and an index for every documented filter.

Durability: `durability="normal"` (default) is WAL with synchronous=NORMAL: a committed
write survives a crash of the application; a power loss or OS crash may lose the last
transactions before a checkpoint but never corrupts the file. `durability="full"`
(synchronous=FULL) also survives power loss, at the cost of one fsync per commit.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

from agentkeep.db._sync.domain import Db
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.in_memory import _table_overrides
from agentkeep.db.sql.kernel import SqlKernel

BUSY_TIMEOUT_S = 30.0
BEGIN_RETRIES = 8


def _lower(value):
    return value.lower() if isinstance(value, str) else value


class SqliteKernel(SqlKernel):
    def __init__(self, url: sa.URL, durability: str) -> None:
        memory = url.database in (None, "", ":memory:")
        kwargs: dict = {"connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}}
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)
        super().__init__(engine)
        if memory:
            self.serial = threading.RLock()
            self.capabilities = frozenset({"transactions"})
        sync = {"normal": "NORMAL", "full": "FULL"}[durability]

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            dbapi_conn.create_function("ak_lower", 1, _lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _begin(conn):
            if conn.info.get("ak_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} file {self.engine.url.database}"

    def begin_write(self, conn) -> None:
        conn.info["ak_write"] = True
        try:
            for attempt in range(BEGIN_RETRIES):
                try:
                    conn.begin()
                    return
                except sa.exc.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc) or attempt == BEGIN_RETRIES - 1:
                        raise
                    conn.rollback()
                    time.sleep(random.uniform(0.01, 0.05) * 2**attempt)  # back off, then retry
        finally:
            conn.info["ak_write"] = False

    def icontains(self, column, needle: str):
        return sa.func.instr(sa.func.ak_lower(column), needle.lower()) > 0

    def upsert(self, table: sa.Table, key: tuple[str, ...], replace: bool):
        stmt = sqlite_insert(table)
        if not replace:
            return stmt.on_conflict_do_nothing(index_elements=list(key))
        return stmt.on_conflict_do_update(
            index_elements=list(key), set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
        )


class SqliteDb(Db):
    """SQLite file (or `:memory:`) db. `SqliteDb()` uses ./agentkeep.db."""

    def __init__(
        self,
        db_file: str | Path | None = None,
        *,
        db_url: str | None = None,
        durability: str = "normal",
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        if db_file is not None and db_url is not None:
            raise InvalidInputError("pass db_file or db_url, not both")
        if durability not in ("normal", "full"):
            raise InvalidInputError(f"durability must be 'normal' or 'full', got {durability!r}")
        try:
            url = sa.make_url(db_url) if db_url is not None else sa.URL.create("sqlite", database=str(db_file or "agentkeep.db"))
        except sa.exc.ArgumentError as exc:
            raise InvalidInputError(f"invalid SQLite URL {db_url!r}: {exc}") from None
        if url.get_backend_name() != "sqlite":
            raise InvalidInputError(f"not a SQLite URL: {db_url!r} (expected sqlite:///path/to/file.db)")
        super().__init__(SqliteKernel(url, durability), id=id, table_prefix=table_prefix, tables=_table_overrides(tables))
