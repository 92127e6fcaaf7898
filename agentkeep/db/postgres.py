"""PostgresDb on psycopg 3: native timestamptz and JSONB, every documented filter on an index,
a pre-pinged connection pool, schema changes under an advisory lock.

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
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg

from agentkeep.db._sync.domain import Db
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.sql.kernel import SqlKernel
from agentkeep.db.tables import table_overrides

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


def _plain_number(match: re.Match) -> str:
    token = match.group(0)
    if token.startswith('"'):
        return token
    text = format(decimal.Decimal(token), "f")
    return text if "." in text else text + ".0"


def _json_param(value: Any):
    from psycopg.types.json import Jsonb

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text or ESC in text:  # rare: escape inside the value, then dump again
        text = json.dumps(_walk(value, _escape), ensure_ascii=False, separators=(",", ":"))
    if "e+" in text or "e-" in text:
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
        url = sa.make_url(db_url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"invalid PostgreSQL URL {db_url!r}: {exc}") from None
    if url.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    raise InvalidInputError(
        f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)!r} "
        "(expected postgresql://, postgres:// or postgresql+psycopg://)"
    )


class PostgresKernel(SqlKernel):
    def __init__(self, url: sa.URL, schema: str, pooler: bool, pool_size: int) -> None:
        # plan_cache_mode: psycopg prepares a statement after 5 runs, and PostgreSQL would then
        # keep a generic plan made while a table was small and unanalysed (a seq scan for
        # `key IN (...)`, measured at 80 ms instead of 1 ms); plan each run with its values
        connect_args: dict = {"options": "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan"}
        if pooler:
            connect_args["prepare_threshold"] = None  # transaction poolers cannot keep them
        engine = sa.create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size * 2, connect_args=connect_args,
        )
        super().__init__(engine, schema=schema)
        self.encode = {"json": _json_param, "str": _escape, "text": _escape}
        self.decode = {"time": lambda d: d.astimezone(UTC), "str": _unescape, "text": _unescape}

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            from psycopg.types.json import set_json_loads

            set_json_loads(_json_loads, dbapi_conn)

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        return {
            "str": sa.String(255), "text": sa.Text(), "int": sa.BigInteger(), "float": sa.Float(precision=53),
            "bool": sa.Boolean(), "time": sa.TIMESTAMP(timezone=True), "date": sa.Date(), "json": pg.JSONB(),
        }[kind]

    def describe(self) -> str:
        version = ".".join(str(p) for p in (self.dialect.server_version_info or ())[:2])
        return f"PostgreSQL {version} at {self.default_id()} schema {self.schema}".replace("PostgreSQL  ", "PostgreSQL ")

    def lock_schema(self, cursor) -> None:
        # one advisory lock per schema, released with the transaction
        key = int.from_bytes(hashlib.sha1(f"agentkeep:{self.schema}".encode()).digest()[:8], "big", signed=True)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def sparse_index(self, column) -> dict:
        return {"postgresql_where": column.is_not(None)}

    def claim_due(self, *, now: dt.datetime, until: dt.datetime, worker_id: str, limit: int) -> list[dict]:
        """Lease up to `limit` due schedules in one statement. Rows another worker is claiming
        right now are skipped (SKIP LOCKED), not waited for, so workers never block each other."""
        t = self.tables["schedules"]

        def build():
            due = (
                sa.select(t.c.id)
                .where(t.c.enabled == sa.bindparam("yes"), t.c.next_run_at <= sa.bindparam("now"),
                       sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= sa.bindparam("now")))
                .order_by(t.c.next_run_at, t.c.id)
                .limit(sa.bindparam("lim", type_=sa.Integer))
                .with_for_update(skip_locked=True)
            )
            stmt = (
                sa.update(t).where(t.c.id.in_(due.scalar_subquery()))
                .values(locked_by=sa.bindparam("worker"), locked_until=sa.bindparam("until"), revision=t.c.revision + 1)
                .returning(*t.c)
            )
            kinds = {"yes": "bool", "now": "time", "lim": "int", "worker": "str", "until": "time"}
            return stmt, kinds, self._result("schedules", None)

        c = self._compiled(("claim_due",), build)
        values = {"yes": True, "now": now, "lim": limit, "worker": worker_id, "until": until}
        with self.transaction():
            rows = self._rows(c, self._run(c, values, write=True))
        return sorted(rows, key=lambda r: (r["next_run_at"], r["id"]))

    dialect_insert = staticmethod(pg.insert)


class PostgresDb(Db):
    """PostgreSQL through psycopg 3. Tables live in `db_schema` (created if missing)."""

    def __init__(
        self,
        db_url: str = "postgresql://localhost/postgres",
        *,
        db_schema: str = "agentkeep",
        pooler: bool = False,
        pool_size: int = 5,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        if not isinstance(db_schema, str) or not db_schema.isidentifier():
            raise InvalidInputError(f"db_schema must be a plain identifier, got {db_schema!r}")
        kernel = PostgresKernel(_normalize_url(db_url), db_schema, pooler, pool_size)
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=table_overrides(tables))
