"""PostgresDb (and AsyncPostgresDb) on psycopg 3: native timestamptz and JSONB, every
documented filter on an index, a connection pool that checks each connection before handing
it out, schema changes under an advisory lock.

    PostgresDb(db_url="postgresql://user:pass@host:5432/db", db_schema="agentkeep")

`postgres://`, `postgresql://` and `postgresql+psycopg://` URLs are accepted; query
parameters such as `sslmode=require` pass through to libpq. Behind a transaction pooler
(PgBouncer, Supavisor, Neon's pooler) pass `pooler=True`: no server-side prepared
statements are used then.

PostgreSQL refuses the NUL character in TEXT and JSONB, which agentkeep promises to store:
strings holding NUL (or the private-use character U+E000 that escapes it) are stored
escaped and read back exactly; every other string is stored as it is, so indexes, ordering
and search see ordinary text.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.pool import NullPool

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.sql._async.kernel import AsyncSqlKernel
from agentkeep.db.backends.sql.base import SqlBase, peer_closed
from agentkeep.db.backends.sql.pooled import PooledKernel
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.jsontext import dumps

UTC = dt.timezone.utc
ESC = "\ue000"
_ESC_BYTES = ESC.encode()


def _escape(s: str) -> str:
    if "\x00" in s or ESC in s:
        return s.replace(ESC, ESC + "1").replace("\x00", ESC + "0")
    return s


def _unescape(s: str) -> str:
    if ESC in s:
        return s.replace(ESC + "0", "\x00").replace(ESC + "1", ESC)
    return s


def _walk(value: Any, fix) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {fix(k): _walk(v, fix) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fix) for v in value]
    return value


# A JSON string, or a number in exponent form (the only numbers JSONB would turn into ints).
_EXPONENT_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE][+-]?\d+')
# how json writes such a float (1e+16, 2.5e-07); words such as "e-mail" do not match
_EXPONENT_HINT = re.compile(r"\de[+-]")


def _plain_number(match: re.Match) -> str:
    token = match.group(0)
    if token.startswith('"'):
        return token
    text = format(decimal.Decimal(token), "f")
    return text if "." in text else text + ".0"


def _json_param(value: Any):
    from psycopg.types.json import Jsonb

    text = dumps(value)
    if "\\u0000" in text or ESC in text:  # rare: escape inside the value, then dump again
        text = dumps(_walk(value, _escape))
    if ("e+" in text or "e-" in text) and _EXPONENT_HINT.search(text):
        # JSONB keeps numbers as numeric: 1e+16 would come back as the int 10000000000000000,
        # while 10000000000000000.0 comes back as a float
        text = _EXPONENT_NUMBER.sub(_plain_number, text)
    return Jsonb(text, dumps=_identity)


def _identity(text: str) -> str:
    return text


def _json_loads(data: bytes | str) -> Any:
    value = json.loads(data)
    raw = data if isinstance(data, bytes) else data.encode()
    return _walk(value, _unescape) if _ESC_BYTES in raw else value


def _normalize_url(db_url: str) -> sa.URL:
    try:
        url = sa.make_url(options.text(db_url, "db_url"))
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"invalid PostgreSQL URL {db_url!r}: {exc}") from None
    if url.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    raise InvalidInputError(
        f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)!r} "
        "(expected postgresql://, postgres:// or postgresql+psycopg://)"
    )


def unreachable(exc: BaseException) -> bool:
    """Whether a psycopg error means the server was not reached or turned the connection
    down: psycopg's own words for a connection refused, timed out, or rejected by the server
    (an unknown role or database, a wrong password, no CONNECT privilege)."""
    import psycopg

    return isinstance(exc, psycopg.errors.ConnectionTimeout) or (
        isinstance(exc, psycopg.OperationalError)
        and str(exc).startswith(("connection failed:", "failed to resolve host"))
    )


class PostgresDialect(SqlBase):
    """PostgreSQL's statements and codecs, shared by the sync and async kernels."""

    capabilities = SqlBase.capabilities | {"atomic_append", "atomic_claim"}
    arrays = True
    encode = {"json": _json_param, "str": _escape, "text": _escape}
    decode = {"time": lambda d: d.astimezone(UTC), "str": _unescape, "text": _unescape}
    server = "PostgreSQL"

    def unreachable(self, exc: BaseException) -> bool:
        return unreachable(exc)

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        return {
            "str": sa.String(255), "text": sa.Text(), "int": sa.BigInteger(), "float": sa.Float(precision=53),
            "bool": sa.Boolean(), "time": sa.TIMESTAMP(timezone=True), "date": sa.Date(), "json": pg.JSONB(),
        }[kind]

    def describe(self) -> str:
        version = ".".join(str(p) for p in (self.dialect.server_version_info or ())[:2])
        return f"PostgreSQL {version} at {self.default_id()} schema {self.schema}".replace("PostgreSQL  ", "PostgreSQL ")

    def schema_lock_sql(self):
        # one advisory lock per schema, released with the transaction
        key = int.from_bytes(hashlib.sha1(f"agentkeep:{self.schema}".encode()).digest()[:8], "big", signed=True)
        return "SELECT pg_advisory_xact_lock(%s)", (key,)

    def sparse_index(self, column) -> dict:
        return {"postgresql_where": column.is_not(None)}

    def duplicate(self, exc: Exception) -> bool:
        return getattr(exc, "sqlstate", None) == "23505"  # unique_violation

    def dialect_insert(self, table):
        return pg.insert(table)

    def finish_sql(self, sql: str, kinds: dict) -> str:
        # arrays travel in binary (`%(name)b`): psycopg's text form escapes every element
        # with a regular expression, measured at 3x the time of the insert it feeds
        for name, kind in kinds.items():
            if kind.endswith("[]"):
                sql = sql.replace(f"%({name})s", f"%({name})b")
        return sql


def _connect_args(url: sa.URL, pooler: bool, connect_timeout: float) -> dict:
    # plan_cache_mode: psycopg prepares a statement after 5 runs, and PostgreSQL would then
    # keep a generic plan made while a table was small and unanalysed (a seq scan for
    # `key IN (...)`, measured at 80 ms instead of 1 ms); plan each run with its values
    args: dict = {"options": "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan"}
    if pooler:
        args["prepare_threshold"] = None  # transaction poolers cannot keep them
    if "connect_timeout" not in url.query:  # libpq waits forever by default; whole seconds
        args["connect_timeout"] = max(1, math.ceil(connect_timeout))
    return args


class PostgresKernel(PostgresDialect, PooledKernel):
    def __init__(self, url: sa.URL, schema: str, pooler: bool, pool_size: int,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        # autocommit connections: a read is one round trip, a one-statement write too (the
        # server commits it); transactions say BEGIN themselves
        engine = sa.create_engine(
            url, pool_size=pool_size, max_overflow=pool_size * 2, isolation_level="AUTOCOMMIT",
            connect_args=_connect_args(url, pooler, connect_timeout),
        )
        super().__init__(url, engine, schema)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            from psycopg.types.json import set_json_loads

            set_json_loads(_json_loads, dbapi_conn)

    def socket_fileno(self, dbapi_conn) -> int:
        return dbapi_conn.fileno()


class AsyncPostgresKernel(PostgresDialect, AsyncSqlKernel):
    """psycopg's native async connections in a psycopg_pool pool."""

    def __init__(self, url: sa.URL, schema: str, pooler: bool, pool_size: int,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        connect_args = _connect_args(url, pooler, connect_timeout)
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        super().__init__(url, self.engine.dialect, schema)
        from psycopg_pool import AsyncConnectionPool

        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.connect_kwargs = {"autocommit": True, **connect_args}
        self.pool = AsyncConnectionPool(
            self.conninfo, min_size=1, max_size=pool_size, open=False, configure=_configure, check=_check_alive,
            kwargs=self.connect_kwargs,
        )
        self._opened = False

    async def acquire(self):
        if not self._opened:
            # one connection of our own first: the pool only logs a refused connection, login
            # or database and keeps retrying until its 30 s timeout, where this raises at once
            import psycopg

            conn = await psycopg.AsyncConnection.connect(self.conninfo, **self.connect_kwargs)
            await conn.close()
            await self.pool.open()
            self._opened = True
        return await self.pool.getconn()

    async def release(self, raw) -> None:
        await self.pool.putconn(raw)

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()
        self.engine.dispose()


async def _configure(conn) -> None:
    from psycopg.types.json import set_json_loads

    set_json_loads(_json_loads, conn)


async def _check_alive(conn) -> None:
    if peer_closed(conn.fileno()):
        await conn.close()  # closed, the pool discards it instead of offering it again
        raise ConnectionError("the server closed this connection")


def _check_schema(db_schema) -> str:
    if not isinstance(db_schema, str) or not db_schema.isidentifier():
        raise InvalidInputError(f"db_schema must be a plain identifier, got {db_schema!r}")
    return db_schema


def _kernel_args(db_url, db_schema, pooler, pool_size, connect_timeout) -> tuple:
    return (_normalize_url(db_url), _check_schema(db_schema), options.flag(pooler, "pooler"),
            options.count(pool_size, "pool_size"), options.seconds(connect_timeout))


class PostgresDb(Db):
    """PostgreSQL through psycopg 3. Tables live in `db_schema` (created if missing)."""

    def __init__(
        self,
        db_url: str = "postgresql://localhost/postgres",
        *,
        db_schema: str = "agentkeep",
        pooler: bool = False,
        pool_size: int = 5,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("PostgresDb", "postgres"):
            kernel = PostgresKernel(*_kernel_args(db_url, db_schema, pooler, pool_size, connect_timeout))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)


class AsyncPostgresDb(AsyncDb):
    """The async twin of PostgresDb, on psycopg 3's native async connections: the same
    tables, methods and guarantees; every method is a coroutine."""

    def __init__(
        self,
        db_url: str = "postgresql://localhost/postgres",
        *,
        db_schema: str = "agentkeep",
        pooler: bool = False,
        pool_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("AsyncPostgresDb", "postgres"):
            kernel = AsyncPostgresKernel(*_kernel_args(db_url, db_schema, pooler, pool_size, connect_timeout))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)
