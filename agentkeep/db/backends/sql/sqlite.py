"""SqliteDb: the embedded default. `SqliteDb()` keeps everything in ./agentkeep.db.

WAL journal (readers never block the writer), every write transaction opened with
BEGIN IMMEDIATE (no lock-upgrade deadlocks), a busy timeout plus a bounded retry when the
database stays locked, foreign keys on, and an index for every documented filter.

Durability: `durability="normal"` (default) is WAL with synchronous=NORMAL: a committed
write survives a crash of the application; a power loss or OS crash may lose the last
transactions before a checkpoint but never corrupts the file. `durability="full"`
(synchronous=FULL) also survives power loss, at the cost of one fsync per commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
import threading
import time
import uuid
import weakref
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool, StaticPool

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.sql._async.kernel import AsyncSqlKernel
from agentkeep.db.backends.sql._sync.kernel import SqlKernel
from agentkeep.db.backends.sql.base import SqlBase
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.jsontext import loads as json_loads

BUSY_TIMEOUT_S = 30.0
BEGIN_RETRIES = 8
SYNC = {"normal": "NORMAL", "full": "FULL"}
WAL_CHECKPOINT_PAGES = 8000  # 16 MB of WAL at PAGE_SIZE
PAGE_SIZE = 2048
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)


def _lower(value):
    return value.lower() if isinstance(value, str) else value


class SqliteDialect(SqlBase):
    """SQLite's statements and codecs, shared by the sync and async kernels."""

    begin_sql = "BEGIN IMMEDIATE"
    single_statement_autocommit = False  # every write takes the write lock up front
    # times as integer microseconds since the epoch: exact, compact, and they sort
    encode = {"time": lambda d: (d - EPOCH) // MICRO, "date": dt.date.isoformat, "json": _dumps, "bool": int}
    decode = {
        "time": lambda v: EPOCH + dt.timedelta(microseconds=v), "date": dt.date.fromisoformat,
        "json": json_loads, "bool": bool,
    }

    def busy(self, exc: Exception) -> bool:
        # the busy timeout already waited; the kernel backs off and retries a few more times
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))

    server = "SQLite"

    def unreachable(self, exc: BaseException) -> bool:
        # the file cannot be opened (no permission, a directory in its place)
        return isinstance(exc, sqlite3.OperationalError) and "unable to open database file" in str(exc)

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} file {self.url.database}"

    def table_options(self) -> dict:
        # clustered on the primary key: no hidden rowid tree beside the key's index, so each
        # write touches one B-tree fewer (the keys are short text ids)
        return {"sqlite_with_rowid": False}

    def sparse_index(self, column) -> dict:
        return {"sqlite_where": column.is_not(None)}

    def icontains(self, column, needle):
        return sa.func.instr(sa.func.ak_lower(column), needle) > 0

    def dialect_insert(self, table):
        return sqlite_insert(table)


def _prepare(dbapi_conn, durability: str, wal: bool) -> None:
    """Settings for a new sqlite3 connection (aiosqlite runs this on the connection's thread)."""
    dbapi_conn.isolation_level = None  # autocommit; writes say BEGIN IMMEDIATE themselves
    cur = dbapi_conn.cursor()
    # a new file only (ignored once the file exists): 2 KiB pages write about 15% fewer
    # WAL bytes per commit than 4 KiB on this workload, and still hold a session row
    cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
    if wal:
        _enable_wal(cur)
    cur.execute(f"PRAGMA synchronous={SYNC[durability]}")
    cur.execute("PRAGMA foreign_keys=ON")
    # checkpoint every 16 MB of WAL rather than 4 MB: each checkpoint syncs the
    # database file, and fewer of them measured about 9% more commits/s
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cur.close()
    dbapi_conn.create_function("ak_lower", 1, _lower, deterministic=True)


def _is_memory(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:")


class SqliteKernel(SqliteDialect, SqlKernel):
    def __init__(self, url: sa.URL, durability: str) -> None:
        memory = _is_memory(url)
        kwargs: dict = {"connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}}
        # a file db keeps one connection per thread (opened on first use, closed when the
        # thread ends or the db closes): no pool round trip per call
        kwargs["poolclass"] = StaticPool if memory else NullPool
        self.engine = sa.create_engine(url, **kwargs)
        super().__init__(url, self.engine.dialect)
        self._local = threading.local()
        self._open: weakref.WeakSet = weakref.WeakSet()
        self._open_lock = threading.Lock()
        if memory:
            self.serial = threading.RLock()
            self.capabilities = frozenset({"transactions"})
        event.listen(self.engine, "connect", lambda conn, _record: _prepare(conn, durability, not memory))

    def acquire(self):
        holder = getattr(self._local, "holder", None)
        if holder is None or holder.raw is None:
            holder = self._local.holder = _ThreadConnection(self.engine.raw_connection())
            with self._open_lock:
                self._open.add(holder)
        holder.lock.acquire()  # held while the thread uses it, so close() waits for that
        return holder.raw

    def release(self, raw) -> None:
        self._local.holder.lock.release()  # the connection stays with its thread

    def close(self) -> None:
        with self._open_lock:
            holders, self._open = list(self._open), weakref.WeakSet()
        for holder in holders:
            # another thread may be in the middle of a statement on its connection (a
            # tracing exporter's, say): closing it under that thread's feet crashes sqlite3
            with holder.lock:
                holder.close()
        self.engine.dispose()


class AsyncSqliteKernel(SqliteDialect, AsyncSqlKernel):
    """aiosqlite connections (each runs its sqlite3 connection on a thread of its own), a
    few kept for reuse: readers run side by side under WAL; writers queue on the file lock."""

    def __init__(self, url: sa.URL, durability: str, pool_size: int) -> None:
        memory = _is_memory(url)
        if memory:
            # a named in-memory database that the catalog reader's connection shares
            url = url.set(database=f"file:agentkeep-{uuid.uuid4().hex}?mode=memory&cache=shared",
                          query={"uri": "true"})
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_S})
        super().__init__(url, self.engine.dialect)
        self.durability = durability
        self.memory = memory
        self.pool_size = 1 if memory else pool_size
        self._idle: list = []
        self._all: list = []
        self._slots: asyncio.Semaphore | None = None
        if memory:
            self.serial = asyncio.Lock()
            self.capabilities = frozenset({"transactions"})

    async def acquire(self):
        import aiosqlite

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool_size)
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()

        def connector() -> sqlite3.Connection:  # runs on the connection's own thread
            conn = sqlite3.connect(self.url.database, timeout=BUSY_TIMEOUT_S, uri=self.memory)
            _prepare(conn, self.durability, not self.memory)
            return conn

        try:
            conn = await aiosqlite.Connection(connector, 64)
        except BaseException:
            self._slots.release()
            raise
        self._all.append(conn)
        return conn

    async def release(self, raw) -> None:
        self._idle.append(raw)
        self._slots.release()

    async def cursor(self, raw):
        return await raw.cursor()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await conn.close()
        self.engine.dispose()


def _enable_wal(cur) -> None:
    """WAL is a property of the file, set once by whichever connection comes first. Changing
    the journal mode can report 'locked' without waiting on the busy handler while another
    process is creating the same file, so retry it here."""
    for attempt in range(BEGIN_RETRIES + 4):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(random.uniform(0.01, 0.05) * min(2**attempt, 32))
    raise DbError("the SQLite file stayed locked while enabling WAL; is another program holding it?")


class _ThreadConnection:
    """A thread's own connection; closed when the thread's locals go away."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.lock = threading.RLock()

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            try:
                raw.close()
            except Exception:  # already closed by its thread finishing: nothing to do
                pass

    __del__ = close


def _url(db_file, db_url, durability) -> sa.URL:
    if db_file is not None and db_url is not None:
        raise InvalidInputError("pass db_file or db_url, not both")
    if durability not in SYNC:
        raise InvalidInputError(f"durability must be 'normal' or 'full', got {durability!r}")
    if db_url is not None:
        try:
            url = sa.make_url(options.text(db_url, "db_url"))
        except sa.exc.ArgumentError as exc:
            raise InvalidInputError(f"invalid SQLite URL {db_url!r}: {exc}") from None
    else:
        url = sa.URL.create("sqlite", database=options.path("agentkeep.db" if db_file is None else db_file, "db_file"))
    if url.get_backend_name() != "sqlite":
        raise InvalidInputError(f"not a SQLite URL: {db_url!r} (expected sqlite:///path/to/file.db)")
    if url.host or url.port or url.username:
        # sqlite://agentkeep.db names a host: the path comes after a third slash
        raise InvalidInputError(
            f"not a SQLite URL: {db_url!r} names a host; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    if not _is_memory(url) and url.query.get("uri") != "true":
        options.parent_directory(url.database)
    return url.set(drivername="sqlite")


class SqliteDb(Db):
    """SQLite file (or `:memory:`) db. `SqliteDb()` uses ./agentkeep.db."""

    # reads are local and brief (WAL: readers never wait for writers), so async code may make
    # them inline rather than pay a worker thread's hand-off, which costs more than the read
    quick_reads = True

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
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        kernel = SqliteKernel(_url(db_file, db_url, durability), durability)
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)


class AsyncSqliteDb(AsyncDb):
    """The async twin of SqliteDb (aiosqlite): the same file format, methods and guarantees;
    every method is a coroutine. `sqlite+aiosqlite://` URLs are accepted too."""

    def __init__(
        self,
        db_file: str | Path | None = None,
        *,
        db_url: str | None = None,
        durability: str = "normal",
        pool_size: int = 4,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("AsyncSqliteDb", "sqlite"):
            import aiosqlite  # noqa: F401 - used on first connect; missing, say so now
        url = _url(db_file, db_url, durability)
        kernel = AsyncSqliteKernel(url, durability, options.count(pool_size, "pool_size"))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)
