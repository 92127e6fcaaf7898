"""MysqlDb (and AsyncMysqlDb) for MySQL 8 and MariaDB 10.6+, on PyMySQL (aiomysql for async).

    MysqlDb(db_url="mysql+pymysql://user:pass@host:3306/agentkeep")

Tables are InnoDB, utf8mb4 throughout (emoji and every other character round-trip), with a
binary NO PAD collation (`utf8mb4_nopad_bin` on MariaDB, `utf8mb4_0900_bin` on MySQL 8), so
ids compare exactly as agentkeep compares them elsewhere: "abc", "ABC" and "abc " are three
different records, and text sorts by code point. Times are DATETIME(6) in UTC; JSON fields
are LONGTEXT (see `column_type` for why).

Writes that are one statement are committed by the server (autocommit); transactions run at
READ COMMITTED. Upserts are INSERT ... ON DUPLICATE KEY UPDATE; a duplicate key on a plain
insert is MySQL's error 1062, which rolls back only that statement. Due schedules are
claimed with FOR UPDATE SKIP LOCKED. Schema changes are serialised across processes with
GET_LOCK, and a step another process already applied is recognised and skipped.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import NullPool

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._async.util import to_thread
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.sql._async.kernel import AsyncSqlKernel
from agentkeep.db.backends.sql.base import SqlBase
from agentkeep.db.backends.sql.pooled import PooledKernel
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.jsontext import loads as json_loads
from agentkeep.db.kernel import Step

UTC = dt.timezone.utc
LOCK_TIMEOUT_S = 300
# server error codes
DUPLICATE_ENTRY = 1062
ALREADY_THERE = {1050, 1060, 1061}  # table exists, duplicate column, duplicate index name
# access denied (to the database, for the user), unknown database, host not allowed,
# can't connect, unknown host
UNREACHABLE = {1044, 1045, 1049, 1130, 1698, 2003, 2005}
URL_SCHEMES = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql", "mysql+aiomysql")


def _to_naive_utc(d: dt.datetime) -> dt.datetime:
    return d.astimezone(UTC).replace(tzinfo=None)


def session_settings(mariadb: bool) -> str:
    """Every connection's settings, in one statement (aiomysql runs a single init command):
    READ COMMITTED, and no notes, which aiomysql would raise as Python warnings ("table
    already exists" when several processes create the tables at once, an expected outcome)."""
    isolation = "tx_isolation" if mariadb else "transaction_isolation"
    return f"SET SESSION {isolation} = 'READ-COMMITTED', sql_notes = 0"


def _error_code(exc: Exception) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MysqlDialect(SqlBase):
    """MySQL's and MariaDB's statements and codecs, shared by the sync and async kernels."""

    supports_returning = False
    insert_how = "insert"
    capabilities = SqlBase.capabilities | {"atomic_claim"}  # MySQL 8, MariaDB 10.6+: SKIP LOCKED
    encode = {"time": _to_naive_utc, "json": _dumps}
    decode = {"time": lambda d: d.replace(tzinfo=UTC), "json": json_loads, "bool": bool}
    server = "MySQL"

    def unreachable(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.OperationalError) and _error_code(exc) in UNREACHABLE

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        return {
            "str": sa.String(255), "text": mysql.LONGTEXT(), "int": sa.BigInteger(), "float": mysql.DOUBLE(),
            # JSON as text: MariaDB's JSON check refuses nesting deeper than 32 and MySQL's JSON
            # type deeper than 100 (agentkeep allows 256), and text keeps key order and numbers
            # exactly; nothing queries inside these columns
            "bool": sa.Boolean(), "time": mysql.DATETIME(fsp=6), "date": sa.Date(), "json": mysql.LONGTEXT(),
        }[kind]

    def describe(self) -> str:
        version = ".".join(str(p) for p in (self.dialect.server_version_info or ())[:3])
        server = "MariaDB" if getattr(self.dialect, "is_mariadb", False) else "MySQL"
        return f"{server} {version} at {self.default_id()}"

    def table_options(self) -> dict:
        return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

    def collation(self) -> str:
        # binary and NO PAD: "a" and "a " are different keys, as on every other backend
        return "utf8mb4_nopad_bin" if getattr(self.dialect, "is_mariadb", False) else "utf8mb4_0900_bin"

    def icontains(self, column, needle):
        return sa.func.locate(needle, sa.func.lower(column)) > 0

    def keyset(self, cols, binds, desc):
        # spelled out rather than as a row comparison, which not every MySQL-family planner
        # turns into an index range
        out = None
        for i in reversed(range(len(cols))):
            step = cols[i] < binds[i] if desc else cols[i] > binds[i]
            out = step if out is None else sa.or_(step, sa.and_(cols[i] == binds[i], out))
        return out

    def dialect_insert(self, table):
        return mysql.insert(table)

    def upsert(self, table, key, replace):
        stmt = mysql.insert(table)
        if not replace:  # keep the existing row: a no-op assignment
            return stmt.on_duplicate_key_update({key[0]: table.c[key[0]]})
        return stmt.on_duplicate_key_update({c.name: stmt.inserted[c.name] for c in table.columns if c.name not in key})

    def lock_name(self) -> str:
        return f"agentkeep:{self.url.database}"[:64]

    def schema_lock_sql(self):
        # should it time out (0), the steps still converge: each is idempotent (`exists`)
        return "SELECT GET_LOCK(%s, %s)", (self.lock_name(), LOCK_TIMEOUT_S)

    def schema_unlock_sql(self):
        return "SELECT RELEASE_LOCK(%s)", (self.lock_name(),)

    def duplicate(self, exc: Exception) -> bool:
        return _error_code(exc) == DUPLICATE_ENTRY

    def exists(self, exc: Exception) -> bool:
        return _error_code(exc) in ALREADY_THERE

    def ddl(self, step: Step) -> str:
        if step.action == "create_table":
            return f"{super().ddl(step).strip()} COLLATE={self.collation()}"
        if step.action == "add_index":  # MySQL 8 has no CREATE INDEX IF NOT EXISTS
            return str(sa.schema.CreateIndex(step.detail).compile(dialect=self.dialect))
        return super().ddl(step)


def _normalize_url(db_url: str, schemes: tuple[str, ...] = URL_SCHEMES, what: str = "MySQL") -> sa.URL:
    try:
        url = sa.make_url(options.text(db_url, "db_url"))
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"invalid {what} URL {db_url!r}: {exc}") from None
    if url.drivername not in schemes:
        raise InvalidInputError(
            f"not a {what} URL: {url.render_as_string(hide_password=True)!r} (expected one of "
            + ", ".join(f"{s}://" for s in schemes) + ")"
        )
    if not url.database:
        raise InvalidInputError(f"the {what} URL names no database: {url.render_as_string(hide_password=True)!r}")
    return url.set(drivername="mysql+pymysql").update_query_dict({"charset": "utf8mb4"})


def _timeout_args(url: sa.URL, seconds: float) -> dict:
    return {} if "connect_timeout" in url.query else {"connect_timeout": seconds}  # the URL's wins


class MysqlKernel(MysqlDialect, PooledKernel):
    def __init__(self, url: sa.URL, pool_size: int, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        # autocommit connections: a read or a one-statement write is one round trip;
        # transactions say BEGIN themselves
        engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2,
                                  isolation_level="AUTOCOMMIT", pool_recycle=3600,
                                  connect_args=_timeout_args(url, connect_timeout))
        super().__init__(url, engine)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute(session_settings("MariaDB" in dbapi_conn.get_server_info()))
            cur.close()

    def socket_fileno(self, dbapi_conn) -> int | None:
        sock = getattr(dbapi_conn, "_sock", None)  # PyMySQL keeps no public handle on it
        return None if sock is None else sock.fileno()


class AsyncMysqlKernel(MysqlDialect, AsyncSqlKernel):
    """aiomysql's pool (it drops connections the server closed before handing them out)."""

    def __init__(self, url: sa.URL, pool_size: int, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        import aiomysql  # noqa: F401 - used on first connect; missing, say so now

        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args=_timeout_args(url, connect_timeout))
        super().__init__(url, self.engine.dialect)
        self.pool_size = pool_size
        self.timeout = float(url.query.get("connect_timeout", connect_timeout))  # aiomysql reads no URL
        self.pool = None

    async def acquire(self):
        if self.pool is None:
            await self._open()
        return await self.pool.acquire()

    async def _open(self) -> None:
        import aiomysql
        from pymysql.constants import CLIENT

        # the catalog connection also tells SQLAlchemy's dialect the server's version,
        # which decides how the upsert statements are spelled
        await to_thread(lambda: self.engine.connect().close())
        u = self.url
        pool = await aiomysql.create_pool(
            host=u.host or "localhost", port=u.port or 3306, user=u.username or "root", password=u.password or "",
            db=u.database, charset="utf8mb4", autocommit=True, minsize=1, maxsize=self.pool_size,
            client_flag=CLIENT.FOUND_ROWS,  # UPDATE counts the rows it matched, as elsewhere
            init_command=session_settings(getattr(self.dialect, "is_mariadb", False)), pool_recycle=3600,
            connect_timeout=self.timeout,
        )
        if self.pool is None:
            self.pool = pool
        else:  # another task opened one meanwhile
            pool.close()
            await pool.wait_closed()

    async def release(self, raw) -> None:
        self.pool.release(raw)

    async def cursor(self, raw):
        return await raw.cursor()

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()
        self.engine.dispose()


def kernel_args(db_url, pool_size, connect_timeout, schemes=URL_SCHEMES, what="MySQL") -> tuple:
    """A MySQL-family kernel's arguments, checked."""
    return (_normalize_url(db_url, schemes, what), options.count(pool_size, "pool_size"),
            options.seconds(connect_timeout))


class MysqlDb(Db):
    """MySQL 8 or MariaDB 10.6+ through PyMySQL. The database must exist; tables are created
    in it on first use."""

    def __init__(
        self,
        db_url: str = "mysql+pymysql://root@localhost:3306/agentkeep",
        *,
        pool_size: int = 5,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("MysqlDb", "mysql"):
            kernel = MysqlKernel(*kernel_args(db_url, pool_size, connect_timeout))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)


class AsyncMysqlDb(AsyncDb):
    """The async twin of MysqlDb, on aiomysql: the same tables, methods and guarantees; every
    method is a coroutine."""

    def __init__(
        self,
        db_url: str = "mysql+aiomysql://root@localhost:3306/agentkeep",
        *,
        pool_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("AsyncMysqlDb", "mysql"):
            kernel = AsyncMysqlKernel(*kernel_args(db_url, pool_size, connect_timeout))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)
