"""The SQL family kernel on SQLAlchemy Core: tables, indexes and statements derived from the
table specs; dialect differences (types, upsert, RETURNING, locking) in small hooks that
`SqliteDb`, and later PostgreSQL and MySQL, fill in."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.tables import TableSpec

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)


class EpochMicros(sa.types.TypeDecorator):
    """UTC datetime stored as integer microseconds since the epoch: sorts correctly, compact."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else (value - EPOCH) // MICRO

    def process_result_value(self, value, dialect):
        return None if value is None else EPOCH + dt.timedelta(microseconds=value)


class JsonText(sa.types.TypeDecorator):
    """Any JSON value as compact text (NUL and every unicode character survive as escapes)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


def _name(*parts: str) -> str:
    """An identifier under 60 characters (PostgreSQL truncates at 63, MySQL refuses 65)."""
    name = "_".join(parts)
    if len(name) <= 60:
        return name
    return name[:51] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


class SqlKernel:
    """Shared by every SQL backend. Subclasses set the engine and the dialect hooks."""

    capabilities = frozenset({"transactions", "multi_process", "persistent"})
    supports_returning = True
    savepoint_inserts = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()
        self.metadata = sa.MetaData()
        self.tables: dict[str, sa.Table] = {}
        self.side: dict[tuple[str, str], sa.Table] = {}
        self.specs: dict[str, TableSpec] = {}
        self.serial: threading.RLock | None = None  # set when every thread shares one connection

    # -- dialect hooks ---------------------------------------------------------------------

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        return {
            "str": sa.String(255), "text": sa.Text(), "int": sa.BigInteger(), "float": sa.Float(),
            "bool": sa.Boolean(), "time": EpochMicros(), "date": sa.Date(), "json": JsonText(),
        }[kind]

    def icontains(self, column: sa.ColumnElement, needle: str) -> sa.ColumnElement:
        return sa.func.strpos(sa.func.lower(column), needle.lower()) > 0

    def insert_stmt(self, table: sa.Table):
        raise NotImplementedError  # per dialect: an insert with on_conflict support

    def upsert(self, table: sa.Table, key: tuple[str, ...], replace: bool):
        raise NotImplementedError

    def begin_write(self, conn: Connection) -> None:
        conn.begin()

    def lock_schema(self, conn: Connection) -> None:
        """Serialise schema changes across processes (inside the schema transaction)."""

    def is_duplicate(self, exc: sa.exc.IntegrityError) -> bool:
        return True

    # -- setup -----------------------------------------------------------------------------

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.specs = specs
        for name, spec in specs.items():
            cols = [
                sa.Column(c.name, self.column_type(c.kind), primary_key=c.name in spec.key,
                          nullable=c.nullable and c.name not in spec.key)
                for c in spec.columns
            ]
            table = sa.Table(spec.physical, self.metadata, *cols)
            for idx in spec.indexes:
                sa.Index(_name("ix", spec.physical, *idx.fields), *[table.c[f] for f in idx.fields], unique=idx.unique)
            self.tables[name] = table
            for field in spec.multi:
                # list values live in a side table so "contains all" is an indexed lookup
                side = sa.Table(
                    _name(spec.physical, field), self.metadata,
                    *[sa.Column(k, self.column_type(spec.kind(k)), primary_key=True) for k in spec.key],
                    sa.Column("value", sa.String(255), primary_key=True),
                    sa.Column("user_id", sa.String(255)),
                    sa.ForeignKeyConstraint(list(spec.key), [table.c[k] for k in spec.key], ondelete="CASCADE"),
                )
                sa.Index(_name("ix", side.name, "user_id", "value"), side.c.user_id, side.c.value)
                sa.Index(_name("ix", side.name, "value"), side.c.value)
                self.side[(name, field)] = side

    def default_id(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def describe(self) -> str:
        return f"{self.engine.dialect.name} at {self.default_id()}"

    # -- connections and transactions --------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # join the enclosing transaction
            yield conn
            return
        with self.serial or nullcontext(), self.engine.connect() as conn:
            self.begin_write(conn)
            self._local.conn = conn
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                self._local.conn = None

    @contextmanager
    def schema_lock(self) -> Iterator[Connection]:
        with self.transaction() as conn:
            self.lock_schema(conn)
            yield conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.serial or nullcontext(), self.engine.connect() as conn:
            yield conn
            conn.rollback()

    # -- schema ------------------------------------------------------------------------------

    def has_table(self, table: str) -> bool:
        with self._reading() as conn:
            return sa.inspect(conn).has_table(self.tables[table].name)

    def _all_tables(self) -> list[sa.Table]:
        return [*self.tables.values(), *self.side.values()]

    def plan_schema(self) -> list[Step]:
        with self._reading() as conn:
            inspector = sa.inspect(conn)
            existing = set(inspector.get_table_names())
            steps = []
            for table in self._all_tables():
                if table.name not in existing:
                    steps.append(Step(f"create table {table.name}", "create_table", table.name, table))
                    continue
                have = {c["name"] for c in inspector.get_columns(table.name)}
                for col in table.columns:
                    if col.name not in have:
                        steps.append(Step(f"add column {table.name}.{col.name}", "add_column", table.name, col))
                indexes = {i["name"] for i in inspector.get_indexes(table.name)}
                for idx in table.indexes:
                    if idx.name not in indexes:
                        steps.append(Step(f"create index {idx.name}", "add_index", table.name, idx))
            return steps

    def apply_step(self, step: Step) -> None:
        with self.transaction() as conn:
            if step.action == "create_table":
                step.detail.create(conn, checkfirst=True)
            elif step.action == "add_index":
                step.detail.create(conn, checkfirst=True)
            elif step.action == "add_column":
                col = step.detail.copy()
                if not col.nullable and col.server_default is None:
                    col.server_default = sa.text("0")
                ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
                prep = conn.dialect.identifier_preparer
                conn.exec_driver_sql(f"ALTER TABLE {prep.quote(step.table)} ADD COLUMN {ddl}")

    # -- statements --------------------------------------------------------------------------

    def _cond(self, table_name: str, t: sa.Table, c: Cond) -> sa.ColumnElement:
        if c.op == "contains_all":
            side = self.side[(table_name, c.field)]
            keys = self.specs[table_name].key
            return sa.and_(*[
                sa.exists().where(*[side.c[k] == t.c[k] for k in keys], side.c.value == value)
                for value in c.value
            ])
        col = t.c[c.field]
        if c.op == "eq":
            return col.is_(None) if c.value is None else col == c.value
        if c.op == "in":
            values = [x for x in c.value if x is not None]
            expr = col.in_(values)
            return sa.or_(expr, col.is_(None)) if len(values) < len(c.value) else expr
        if c.op == "icontains":
            return self.icontains(col, c.value)
        return {"lt": col < c.value, "lte": col <= c.value, "gt": col > c.value, "gte": col >= c.value}[c.op]

    def _where(self, table_name: str, where: tuple[Cond, ...]) -> list[sa.ColumnElement]:
        t = self.tables[table_name]
        return [self._cond(table_name, t, c) for c in where]

    def keyset(self, cols: list[sa.Column], values: tuple, desc: bool) -> sa.ColumnElement:
        left = sa.tuple_(*cols)
        right = sa.tuple_(*[sa.bindparam(None, v, type_=c.type) for c, v in zip(cols, values)])
        return left < right if desc else left > right

    def _select(self, q: Query) -> sa.Select:
        t = self.tables[q.table]
        cols = [t.c[f] for f in q.fields] if q.fields else [t]
        stmt = sa.select(*cols).where(*self._where(q.table, q.where))
        if q.after is not None:
            stmt = stmt.where(self.keyset([t.c[f] for f in q.order], q.after, q.desc))
        if q.order:
            stmt = stmt.order_by(*[t.c[f].desc() if q.desc else t.c[f].asc() for f in q.order])
        if q.limit is not None:
            stmt = stmt.limit(q.limit)
        return stmt

    # -- the kernel primitives -----------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        t = self.tables[table]
        stmt = sa.select(t).where(*[t.c[k] == v for k, v in zip(self.specs[table].key, key)])
        with self._reading() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    def find(self, q: Query) -> list[dict]:
        with self._reading() as conn:
            return [dict(r._mapping) for r in conn.execute(self._select(q))]

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.tables[table]
        stmt = sa.select(sa.func.count()).select_from(t).where(*self._where(table, where))
        with self._reading() as conn:
            return conn.execute(stmt).scalar_one()

    def _write_side(self, conn: Connection, table: str, rows: list[dict], replace: bool) -> None:
        spec = self.specs[table]
        for field in spec.multi:
            side = self.side[(table, field)]
            if replace:
                keys = [spec.key_of(r) for r in rows]
                conn.execute(sa.delete(side).where(sa.tuple_(*[side.c[k] for k in spec.key]).in_(keys)))
            values = [
                {**{k: r[k] for k in spec.key}, "value": v, "user_id": r.get("user_id")}
                for r in rows for v in dict.fromkeys(r.get(field) or ())
            ]
            if values:
                conn.execute(sa.insert(side), values)

    def insert(self, table: str, row: dict) -> None:
        with self.transaction() as conn:
            try:
                # PostgreSQL aborts the whole transaction on a failed statement: fence it
                with conn.begin_nested() if self.savepoint_inserts else nullcontext():
                    conn.execute(sa.insert(self.tables[table]), row)
            except sa.exc.IntegrityError as exc:
                if self.is_duplicate(exc):
                    raise DuplicateKey(table) from None
                raise
            self._write_side(conn, table, [row], replace=False)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        spec = self.specs[table]
        with self.transaction() as conn:
            if not replace and spec.multi:
                known = {spec.key_of(r) for r in self.find(Query(table, (Cond(spec.key[0], "in", [r[spec.key[0]] for r in rows]),), fields=spec.key))}
                rows = [r for r in rows if spec.key_of(r) not in known]
                if not rows:
                    return 0
            result = conn.execute(self.upsert(self.tables[table], spec.key, replace), rows)
            if spec.multi:
                self._write_side(conn, table, rows, replace)
            return result.rowcount if result.rowcount >= 0 else len(rows)

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        spec, t = self.specs[table], self.tables[table]
        values: dict[str, Any] = dict(set or {})
        values.update({f: t.c[f] + n for f, n in (incr or {}).items()})
        match = [*[t.c[k] == v for k, v in zip(spec.key, key)], *self._where(table, where)]
        stmt = sa.update(t).where(*match).values(values)
        with self.transaction() as conn:
            if self.supports_returning:
                row = conn.execute(stmt.returning(*[t.c[f] for f in (returning or spec.key)])).first()
                if row is None:
                    return None
                out = dict(row._mapping) if returning else {}
            else:
                if conn.execute(stmt).rowcount == 0:
                    return None
                out = {}
                if returning:
                    got = conn.execute(sa.select(*[t.c[f] for f in returning]).where(*[t.c[k] == v for k, v in zip(spec.key, key)])).first()
                    out = dict(got._mapping)
            for field in spec.multi:
                if field in values:
                    self._write_side(conn, table, [{**dict(zip(spec.key, key)), **values}], replace=True)
            return out

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        stmt = sa.delete(self.tables[table]).where(*self._where(table, where))
        with self.transaction() as conn:
            return conn.execute(stmt).rowcount

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        side = self.side.get((table, field))
        if side is not None and all(c.field == "user_id" and c.op == "eq" for c in where):
            stmt = sa.select(side.c.value).distinct().where(*[side.c.user_id == c.value for c in where])
        elif side is not None:
            t, keys = self.tables[table], self.specs[table].key
            stmt = (sa.select(side.c.value).distinct()
                    .join_from(side, t, sa.and_(*[side.c[k] == t.c[k] for k in keys]))
                    .where(*self._where(table, where)))
        else:
            col = self.tables[table].c[field]
            stmt = sa.select(col).distinct().where(col.is_not(None), *self._where(table, where))
        with self._reading() as conn:
            return [r[0] for r in conn.execute(stmt)]

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        t = self.tables[table]
        stmt = (sa.select(t.c[by], sa.func.count(), sa.func.max(t.c[max_field]))
                .where(*self._where(table, where)).group_by(t.c[by]).order_by(t.c[by]).limit(limit))
        with self._reading() as conn:
            rows = conn.execute(stmt).all()
        decode = t.c[max_field].type
        if isinstance(decode, sa.types.TypeDecorator):  # max() loses the column type on some dialects
            return [(k, n, last if not isinstance(last, int) else decode.process_result_value(last, None)) for k, n, last in rows]
        return [tuple(r) for r in rows]

    def close(self) -> None:
        self.engine.dispose()

