"""What every SQL backend shares, sync or async: the tables and indexes built from the table
specs, the dialect hooks, and every statement the kernel runs. SQLAlchemy Core builds each
statement; each statement shape is compiled once and cached, then run on the driver's own
cursor with agentkeep's value codecs. That keeps SQLAlchemy's portability and drops its
per-execution overhead, which measured at several times the cost of the statement itself
on SQLite.

The kernels that run these statements (`_async/kernel.py`, and the sync twin generated
from it) do I/O only. A dialect (`sqlite.py`, `postgres.py`, `mysql.py`, `singlestore.py`)
is a subclass of `SqlBase` overriding a few hooks; its sync and async kernels mix it with
the kernel of their kind, so a dialect is written once for both.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import select
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa

from agentkeep.db.connection import connection_failed
from agentkeep.db.errors import DbError
from agentkeep.db.kernel import Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.tables import TableSpec

CACHE_SIZE = 512


def _name(*parts: str) -> str:
    """An identifier under 60 characters (PostgreSQL truncates at 63, MySQL refuses 65)."""
    name = "_".join(parts)
    if len(name) <= 60:
        return name
    return name[:51] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


def peer_closed(fileno: int) -> bool:
    """An idle connection's socket is readable only when the server closed it (a restart,
    an idle timeout) or left a notice: either way, take a fresh connection. One system call
    instead of a pre-ping's round trip."""
    try:
        if hasattr(select, "poll"):  # select.select refuses descriptors above 1023
            poller = select.poll()
            poller.register(fileno, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fileno], [], [], 0)[0])
    except (OSError, ValueError):
        return True


@dataclass(frozen=True)
class Compiled:
    sql: str
    binds: tuple[str, ...]  # bind names in placeholder order (positional) or all names (named)
    positional: bool
    constants: dict  # values SQLAlchemy bound itself (LIMIT ...)
    kinds: dict  # bind name -> column kind, for encoding
    result: tuple[tuple[str, str], ...]  # (column name, kind) of the rows it returns
    encoders: tuple = ()  # per bind: (name, encoder or None, is_constant)
    decoders: tuple = ()  # per result column: (name, decoder or None)


class SqlBase(abc.ABC):
    """Tables, dialect hooks and statement builders. No I/O."""

    # a dialect adds "atomic_append" where UPDATE ... RETURNING runs inside WITH (`append` is
    # one statement) and "atomic_claim" where FOR UPDATE SKIP LOCKED claims due schedules in
    # one transaction (agentkeep/db/kernel.py)
    capabilities = frozenset({"transactions", "multi_process", "persistent"})
    supports_returning = True  # UPDATE ... RETURNING
    begin_sql: str | None = "BEGIN"  # opens a write transaction on an autocommit connection
    # a write that is one statement runs on its own, committed by the server (one round trip
    # fewer than BEGIN ... COMMIT); SQLite keeps BEGIN IMMEDIATE for its lock order
    single_statement_autocommit = True
    # how the ignore-duplicates insert behind `insert` is spelled: "ignore" reports a
    # duplicate as rowcount 0 (ON CONFLICT DO NOTHING), "insert" as the dialect's error
    insert_how = "ignore"
    foreign_keys = True  # False: the side tables' rows are deleted in code
    # the dialect binds arrays: put_many inserts its rows as one statement over one array
    # per column (`insert_rows_stmt`, not the driver's executemany), and `in` binds one array
    # (`= ANY(...)`: one statement shape whatever the list's length)
    arrays = False
    # value codecs by column kind (agentkeep value <-> driver value)
    encode: dict[str, Callable[[Any], Any]] = {}
    decode: dict[str, Callable[[Any], Any]] = {}

    def __init__(self, url: sa.URL, dialect: sa.engine.Dialect, schema: str | None = None) -> None:
        self.url = url
        self.dialect = dialect
        self.schema = schema  # tables live in this schema (PostgreSQL), else the default one
        self.metadata = sa.MetaData(schema=schema)
        self.tables: dict[str, sa.Table] = {}
        self.side: dict[tuple[str, str], sa.Table] = {}
        self.specs: dict[str, TableSpec] = {}
        self.kinds: dict[str, dict[str, str]] = {}
        self._cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- dialect hooks ---------------------------------------------------------------------

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        return {
            "str": sa.String(255), "text": sa.Text(), "int": sa.BigInteger(), "float": sa.Float(),
            "bool": sa.Boolean(), "time": sa.BigInteger(), "date": sa.String(10), "json": sa.Text(),
        }[kind]

    def icontains(self, column: sa.ColumnElement, needle: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.strpos(sa.func.lower(column), needle) > 0

    def table_options(self) -> dict:
        """Dialect keyword arguments for every data table."""
        return {}

    def sparse_index(self, column: sa.Column) -> dict:
        """Keyword arguments making an index partial (only rows where `column` is set)."""
        return {}

    @abc.abstractmethod
    def dialect_insert(self, table: sa.Table) -> Any:
        """The dialect's insert construct (it carries the dialect's conflict clause)."""

    def upsert(self, table: sa.Table, key: tuple[str, ...], replace: bool) -> sa.Insert:
        """An insert that replaces (`replace`) or keeps an existing row with the same key:
        ON CONFLICT, as SQLite and PostgreSQL spell it; MySQL overrides this."""
        stmt = self.dialect_insert(table)
        if not replace:
            return stmt.on_conflict_do_nothing(index_elements=list(key))
        return stmt.on_conflict_do_update(
            index_elements=list(key), set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
        )

    def keyset(self, cols: list[sa.Column], binds: list[sa.BindParameter], desc: bool) -> sa.ColumnElement:
        left, right = sa.tuple_(*cols), sa.tuple_(*binds)
        return left < right if desc else left > right

    def schema_lock_sql(self) -> tuple[str, tuple] | None:
        """A statement serialising schema changes across processes, held until commit."""
        return None

    def schema_unlock_sql(self) -> tuple[str, tuple] | None:
        """Releases what `schema_lock_sql` took, when a commit does not."""
        return None

    def duplicate(self, exc: Exception) -> bool:
        """Whether a driver error is a duplicate key (for insert_how="insert")."""
        return False

    def exists(self, exc: Exception) -> bool:
        """Whether a DDL error says the object is already there (a concurrent migration)."""
        return False

    def busy(self, exc: Exception) -> bool:
        """Whether opening a write transaction failed on a lock worth waiting out."""
        return False

    server = "the database"  # what `translate_error` says it could not connect to

    def unreachable(self, exc: BaseException) -> bool:
        """Whether a driver error means the server cannot be reached, refused the login or
        has no such database."""
        return False

    def translate_error(self, exc: BaseException) -> DbError | None:
        """ConnectionFailedError for an error `unreachable` recognises (the driver's own, or
        SQLAlchemy's wrapper of it), else None."""
        driver_error = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
        if not self.unreachable(driver_error):
            return None
        where = self.url.render_as_string(hide_password=True)
        return connection_failed(self.server, where, driver_error, secret=self.url.password)

    # -- setup -----------------------------------------------------------------------------

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.specs = specs
        for name, spec in specs.items():
            cols = [
                sa.Column(c.name, self.column_type(c.kind), primary_key=c.name in spec.key,
                          nullable=c.nullable and c.name not in spec.key)
                for c in spec.columns
            ]
            table = sa.Table(spec.physical, self.metadata, *cols, **self.table_options())
            for idx in spec.indexes:
                # a non-unique index ends with the key: list orders end with it (a total order
                # for keyset pages), so the index yields rows in exactly that order
                cols = idx.fields if idx.unique else idx.fields + tuple(k for k in spec.key if k not in idx.fields)
                sa.Index(_name("ix", spec.physical, *idx.fields), *[table.c[f] for f in cols], unique=idx.unique,
                         **self.sparse_index(table.c[idx.fields[0]]) if idx.sparse else {})
            self.tables[name] = table
            self.kinds[name] = {c.name: c.kind for c in spec.columns}
            for field in spec.multi:
                # list values live in a side table so "contains all" is an indexed lookup
                fk = [sa.ForeignKeyConstraint(list(spec.key), [table.c[k] for k in spec.key], ondelete="CASCADE")]
                side = sa.Table(
                    _name(spec.physical, field), self.metadata,
                    *[sa.Column(k, self.column_type(spec.kind(k)), primary_key=True) for k in spec.key],
                    sa.Column("value", self.column_type("str"), primary_key=True),
                    sa.Column("user_id", self.column_type("str")),
                    *(fk if self.foreign_keys else ()),
                    **self.table_options(),
                )
                sa.Index(_name("ix", side.name, "user_id", "value"), side.c.user_id, side.c.value)
                sa.Index(_name("ix", side.name, "value"), side.c.value)
                self.side[(name, field)] = side
                self.kinds[side.name] = {**{k: spec.kind(k) for k in spec.key}, "value": "str", "user_id": "str"}

    def default_id(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def describe(self) -> str:
        return f"{self.dialect.name} at {self.default_id()}"

    def all_tables(self) -> list[sa.Table]:
        return [*self.tables.values(), *self.side.values()]

    def plan_from(self, inspector: Any) -> list[Step]:
        """The additive steps that bring what `inspector` sees to the table specs."""
        steps = []
        if self.schema is not None and self.schema not in inspector.get_schema_names():
            steps.append(Step(f"create schema {self.schema}", "create_schema", self.schema))
            existing: set[str] = set()
        else:
            existing = set(inspector.get_table_names(schema=self.schema))
        for table in self.all_tables():
            if table.name not in existing:
                steps.append(Step(f"create table {table.name}", "create_table", table.name, table))
                for idx in table.indexes:
                    steps.append(Step(f"create index {idx.name}", "add_index", table.name, idx))
                continue
            have = {c["name"] for c in inspector.get_columns(table.name, schema=self.schema)}
            for col in table.columns:
                if col.name not in have:
                    steps.append(Step(f"add column {table.name}.{col.name}", "add_column", table.name, col))
            indexes = {i["name"] for i in inspector.get_indexes(table.name, schema=self.schema)}
            for idx in table.indexes:
                if idx.name not in indexes:
                    steps.append(Step(f"create index {idx.name}", "add_index", table.name, idx))
        return steps

    def ddl(self, step: Step) -> str:
        if step.action == "create_schema":
            return f"CREATE SCHEMA IF NOT EXISTS {self.dialect.identifier_preparer.quote_schema(step.table)}"
        if step.action == "create_table":
            return str(sa.schema.CreateTable(step.detail, if_not_exists=True).compile(dialect=self.dialect))
        if step.action == "add_index":
            return str(sa.schema.CreateIndex(step.detail, if_not_exists=True).compile(dialect=self.dialect))
        old = step.detail
        # an added NOT NULL column needs a value for the rows already there
        default = sa.text("0") if not old.nullable and old.server_default is None else old.server_default
        col = sa.Column(old.name, old.type, nullable=old.nullable, server_default=default)
        spec = sa.schema.CreateColumn(col).compile(dialect=self.dialect)
        table = self.metadata.tables[f"{self.schema}.{step.table}" if self.schema else step.table]
        return f"ALTER TABLE {self.dialect.identifier_preparer.format_table(table)} ADD COLUMN {spec}"

    # -- compiling ---------------------------------------------------------------------------

    def finish_sql(self, sql: str, kinds: dict) -> str:
        """The compiled statement as it is sent (a dialect may mark its array binds)."""
        return sql

    def _compiled(self, shape: tuple, build: Callable[[], tuple[Any, dict, tuple]]) -> Compiled:
        with self._cache_lock:
            hit = self._cache.get(shape)
            if hit is not None:
                self._cache.move_to_end(shape)
                return hit
        stmt, kinds, result = build()
        c = stmt.compile(dialect=self.dialect, compile_kwargs={"render_postcompile": True})
        binds = tuple(c.positiontup) if c.positional else tuple(c.params)  # rendered names
        compiled = Compiled(
            self.finish_sql(c.string, kinds), binds, bool(c.positional),
            {k: v for k, v in c.params.items() if k not in kinds}, kinds, result,
            tuple((n, self._encoder(kinds[n]) if n in kinds else None, n not in kinds) for n in binds),
            tuple((name, self.decode.get(kind)) for name, kind in result),
        )
        with self._cache_lock:
            self._cache[shape] = compiled
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def _encoder(self, kind: str) -> Callable[[Any], Any] | None:
        if not kind.endswith("[]"):
            return self.encode.get(kind)
        # an array of a column's values (`arrays`): each element encoded; floats made
        # floats, since the driver types a list by its first element
        f = self.encode.get(kind[:-2]) or (float if kind == "float[]" else None)
        if f is None:
            return None
        return lambda values: [None if v is None else f(v) for v in values]

    def _params(self, c: Compiled, values: dict) -> Any:
        out = []
        for name, f, constant in c.encoders:
            if constant:
                out.append(c.constants[name])
            else:
                value = values[name]
                out.append(value if f is None or value is None else f(value))
        return tuple(out) if c.positional else dict(zip(c.binds, out))

    def _decode(self, c: Compiled, raw_rows: list) -> list[dict]:
        cols = c.decoders
        return [
            {name: (v if f is None or v is None else f(v)) for (name, f), v in zip(cols, raw)}
            for raw in raw_rows
        ]

    # -- statement builders (one per shape, cached) ----------------------------------------------

    # Every statement is described twice by the same walk over its conditions: `_binds`
    # yields its shape and bind values on every call (cheap, no SQLAlchemy), `_exprs` builds
    # the SQLAlchemy expressions only when a shape is compiled for the first time.

    def _binds(self, table: str, where: tuple[Cond, ...], kinds: dict, values: dict) -> tuple:
        col_kinds = self.kinds[table]
        shape = []
        for i, c in enumerate(where):
            if c.op == "contains_all":
                shape.append((c.field, c.op, len(c.value)))
                for j, value in enumerate(c.value):
                    kinds[f"w{i}_{j}"], values[f"w{i}_{j}"] = "str", value
            elif c.op == "eq" and c.value is None:
                shape.append((c.field, "is_null"))
            elif c.op == "in":
                present = [x for x in c.value if x is not None]
                has_null = len(present) < len(c.value)
                if self.arrays:
                    shape.append((c.field, "any", has_null))
                    kinds[f"w{i}"], values[f"w{i}"] = col_kinds[c.field] + "[]", present
                    continue
                shape.append((c.field, "in", len(present), has_null))
                for j, value in enumerate(present):
                    kinds[f"w{i}_{j}"], values[f"w{i}_{j}"] = col_kinds[c.field], value
            elif c.op == "icontains":
                shape.append((c.field, c.op))
                kinds[f"w{i}"], values[f"w{i}"] = "str", c.value.lower()
            else:
                shape.append((c.field, c.op))
                kinds[f"w{i}"], values[f"w{i}"] = col_kinds[c.field], c.value
        return tuple(shape)

    def _exprs(self, table: str, where: tuple[Cond, ...]) -> list:
        t = self.tables[table]
        out = []
        for i, c in enumerate(where):
            if c.op == "contains_all":
                side = self.side[(table, c.field)]
                keys = self.specs[table].key
                out.append(sa.and_(*[
                    sa.exists().where(*[side.c[k] == t.c[k] for k in keys], side.c.value == sa.bindparam(f"w{i}_{j}"))
                    for j in range(len(c.value))
                ]))
                continue
            col = t.c[c.field]
            if c.op == "eq" and c.value is None:
                out.append(col.is_(None))
            elif c.op == "in":
                present = [x for x in c.value if x is not None]
                if self.arrays:
                    expr = col == sa.any_(sa.cast(sa.bindparam(f"w{i}"), sa.ARRAY(col.type)))
                else:
                    binds = [sa.bindparam(f"w{i}_{j}") for j in range(len(present))]
                    expr = col.in_(binds) if binds else sa.false()
                out.append(sa.or_(expr, col.is_(None)) if len(present) < len(c.value) else expr)
            elif c.op == "icontains":
                out.append(self.icontains(col, sa.bindparam(f"w{i}")))
            else:
                b = sa.bindparam(f"w{i}")
                out.append({"eq": col == b, "lt": col < b, "lte": col <= b, "gt": col > b, "gte": col >= b}[c.op])
        return out

    def _key_binds(self, table: str, key: tuple, kinds: dict, values: dict) -> None:
        spec = self.specs[table]
        for j, (k, v) in enumerate(zip(spec.key, key)):
            kinds[f"k{j}"], values[f"k{j}"] = spec.kind(k), v

    def _key_exprs(self, table: str) -> list:
        t = self.tables[table]
        return [t.c[k] == sa.bindparam(f"k{j}") for j, k in enumerate(self.specs[table].key)]

    def _result(self, table: str, fields: tuple[str, ...] | None) -> tuple:
        kinds = self.kinds[table]
        return tuple((f, kinds[f]) for f in (fields or tuple(kinds)))

    def get_stmt(self, table: str, key: tuple) -> tuple[Compiled, dict]:
        kinds: dict = {}
        values: dict = {}
        self._key_binds(table, key, kinds, values)
        t = self.tables[table]
        c = self._compiled(("get", table), lambda: (sa.select(t).where(*self._key_exprs(table)), kinds, self._result(table, None)))
        return c, values

    def find_stmt(self, q: Query) -> tuple[Compiled, dict]:
        if q.after is not None and q.order:
            q = dataclasses.replace(q, where=tuple(_from_page(c, q) for c in q.where))
        kinds: dict = {}
        values: dict = {}
        shape = self._binds(q.table, q.where, kinds, values)
        if q.after is not None:
            for j, (f, v) in enumerate(zip(q.order, q.after)):
                kinds[f"a{j}"], values[f"a{j}"] = self.kinds[q.table][f], v
        if q.offset:  # a bound value, so that every page number shares one statement
            kinds["skip"], values["skip"] = "int", q.offset

        def build():
            t = self.tables[q.table]
            cols = [t.c[f] for f in q.fields] if q.fields else [t]
            stmt = sa.select(*cols).where(*self._exprs(q.table, q.where))
            if q.after is not None:
                binds = [sa.bindparam(f"a{j}") for j in range(len(q.order))]
                stmt = stmt.where(self.keyset([t.c[f] for f in q.order], binds, q.desc))
            if q.order:
                stmt = stmt.order_by(*[t.c[f].desc() if q.desc else t.c[f].asc() for f in q.order])
            if q.limit is not None:
                stmt = stmt.limit(q.limit)
            if q.offset:
                stmt = stmt.offset(sa.bindparam("skip"))
            return stmt, kinds, self._result(q.table, q.fields)

        key = ("find", q.table, shape, q.order, q.desc, q.limit, q.after is not None, q.fields, q.offset > 0)
        return self._compiled(key, build), values

    def count_stmt(self, table: str, where: tuple[Cond, ...]) -> tuple[Compiled, dict]:
        kinds: dict = {}
        values: dict = {}
        shape = self._binds(table, where, kinds, values)
        t = self.tables[table]
        c = self._compiled(("count", table, shape), lambda: (
            sa.select(sa.func.count()).select_from(t).where(*self._exprs(table, where)), kinds, (("n", "int"),)))
        return c, values

    def insert_stmt(self, table: str, how: str) -> Compiled:
        """how: "insert" (plain), "ignore" (keep an existing row) or "replace"."""
        t, spec = self.tables[table], self.specs[table]
        kinds = dict(self.kinds[table])

        def build():
            stmt = sa.insert(t) if how == "insert" else self.upsert(t, spec.key, how == "replace")
            return stmt.values({c: sa.bindparam(c) for c in kinds}), kinds, ()

        return self._compiled(("insert", table, how), build)

    def insert_rows_stmt(self, table: str, how: str) -> Compiled:
        """Any number of rows as one statement, INSERT ... SELECT FROM unnest(one array per
        column), where the dialect has `arrays`: one round trip and one plan, where
        executemany sends a statement per row. Binds one array per column, named as it."""
        t, spec = self.tables[table], self.specs[table]
        kinds = {c: f"{kind}[]" for c, kind in self.kinds[table].items()}

        def build():
            cols = list(kinds)
            arrays = [sa.cast(sa.bindparam(c), sa.ARRAY(t.c[c].type)) for c in cols]
            rows = sa.func.unnest(*arrays).table_valued(*cols).render_derived()
            stmt = sa.insert(t) if how == "insert" else self.upsert(t, spec.key, how == "replace")
            return stmt.from_select(cols, sa.select(*[rows.c[c] for c in cols])), kinds, ()

        return self._compiled(("insert_rows", table, how), build)

    def side_delete_stmt(self, table: str, field: str, n: int | None = None) -> Compiled:
        """Delete the side rows of one record (binds k0.., its key), or of `n` records by
        the first key column (binds k0_0..)."""
        side, spec = self.side[(table, field)], self.specs[table]

        def build():
            if n is None:
                where = [side.c[k] == sa.bindparam(f"k{j}") for j, k in enumerate(spec.key)]
                return sa.delete(side).where(*where), {f"k{j}": spec.kind(k) for j, k in enumerate(spec.key)}, ()
            binds = [sa.bindparam(f"k0_{j}") for j in range(n)]
            kind = spec.kind(spec.key[0])
            return sa.delete(side).where(side.c[spec.key[0]].in_(binds)), {f"k0_{j}": kind for j in range(n)}, ()

        return self._compiled(("delete_side", side.name, n), build)

    def side_insert_stmt(self, table: str, field: str) -> Compiled:
        side = self.side[(table, field)]
        side_kinds = self.kinds[side.name]
        return self._compiled(("insert_side", side.name), lambda: (
            sa.insert(side).values({k: sa.bindparam(k) for k in side_kinds}), side_kinds, ()))

    def update_stmt(self, table: str, key: tuple, set: dict, incr: dict, where: tuple[Cond, ...],
                    returning: tuple[str, ...]) -> tuple[Compiled, dict]:
        spec, t = self.specs[table], self.tables[table]
        kinds: dict = {}
        values: dict = {}
        self._key_binds(table, key, kinds, values)
        shape = self._binds(table, where, kinds, values)
        for f, v in set.items():
            kinds[f"s_{f}"], values[f"s_{f}"] = self.kinds[table][f], v
        for f, n in incr.items():
            kinds[f"i_{f}"], values[f"i_{f}"] = "int", n
        back = returning or spec.key

        def build():
            assign = {f: sa.bindparam(f"s_{f}") for f in set}
            assign.update({f: t.c[f] + sa.bindparam(f"i_{f}") for f in incr})
            stmt = sa.update(t).where(*self._key_exprs(table), *self._exprs(table, where)).values(assign)
            if self.supports_returning:
                return stmt.returning(*[t.c[f] for f in back]), kinds, self._result(table, back)
            return stmt, kinds, ()

        return self._compiled(("update", table, tuple(set), tuple(incr), shape, back), build), values

    def delete_stmt(self, table: str, where: tuple[Cond, ...]) -> tuple[Compiled, dict]:
        kinds: dict = {}
        values: dict = {}
        shape = self._binds(table, where, kinds, values)
        c = self._compiled(("delete", table, shape), lambda: (
            sa.delete(self.tables[table]).where(*self._exprs(table, where)), kinds, ()))
        return c, values

    def distinct_stmt(self, table: str, field: str, where: tuple[Cond, ...]) -> tuple[Compiled, dict]:
        kinds: dict = {}
        values: dict = {}
        side = self.side.get((table, field))
        by_user = side is not None and all(c.field == "user_id" and c.op == "eq" and c.value is not None for c in where)
        shape = self._binds(table, where, kinds, values)

        def build():
            if by_user:  # the side table carries user_id: no join needed
                stmt = sa.select(side.c.value).distinct().where(
                    *[side.c.user_id == sa.bindparam(f"w{i}") for i in range(len(where))])
            elif side is not None:
                t, keys = self.tables[table], self.specs[table].key
                stmt = (sa.select(side.c.value).distinct()
                        .join_from(side, t, sa.and_(*[side.c[k] == t.c[k] for k in keys]))
                        .where(*self._exprs(table, where)))
            else:
                col = self.tables[table].c[field]
                stmt = sa.select(col).distinct().where(col.is_not(None), *self._exprs(table, where))
            kind = "str" if side is not None else self.kinds[table][field]
            return stmt, kinds, (("value", kind),)

        return self._compiled(("distinct", table, field, shape, by_user), build), values

    def group_count_stmt(self, table: str, by: str, max_field: str, where: tuple[Cond, ...],
                         limit: int) -> tuple[Compiled, dict]:
        kinds: dict = {}
        values: dict = {}
        shape = self._binds(table, where, kinds, values)
        t = self.tables[table]
        result = ((by, self.kinds[table][by]), ("n", "int"), ("last", self.kinds[table][max_field]))
        c = self._compiled(("group", table, by, max_field, shape, limit), lambda: (
            sa.select(t.c[by], sa.func.count(), sa.func.max(t.c[max_field]))
            .where(*self._exprs(table, where)).group_by(t.c[by]).order_by(t.c[by]).limit(limit), kinds, result))
        return c, values

    def append_stmt(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str,
                    set: dict, where: tuple[Cond, ...], inherit: tuple[str, ...]) -> tuple[Compiled, dict]:
        """WITH p AS (UPDATE parent SET counter = counter + 1, ... RETURNING counter, inherit)
        INSERT INTO child SELECT ... FROM p RETURNING seq, inherit: one statement, so one
        round trip, and atomic on its own."""
        kinds: dict = {}
        values: dict = {}
        self._key_binds(parent, key, kinds, values)
        shape = self._binds(parent, where, kinds, values)
        for f, v in set.items():
            kinds[f"s_{f}"], values[f"s_{f}"] = self.kinds[parent][f], v
        pt, ct = self.tables[parent], self.tables[child]
        for col in ct.columns:
            if col.name != seq and col.name not in inherit:
                kinds[f"c_{col.name}"], values[f"c_{col.name}"] = self.kinds[child][col.name], row.get(col.name)

        def build():
            assign = {f: sa.bindparam(f"s_{f}") for f in set}
            assign[counter] = pt.c[counter] + 1
            p = (sa.update(pt).where(*self._key_exprs(parent), *self._exprs(parent, where)).values(assign)
                 .returning(pt.c[counter], *[pt.c[f] for f in inherit]).cte("p"))
            # each value cast to its column's type: in a SELECT list a parameter has no type
            # of its own, and a NULL would be taken for text
            out = [p.c[counter] if c.name == seq else p.c[c.name] if c.name in inherit
                   else sa.cast(sa.bindparam(f"c_{c.name}"), c.type) for c in ct.columns]
            stmt = (sa.insert(ct).from_select([c.name for c in ct.columns], sa.select(*out))
                    .returning(ct.c[seq], *[ct.c[f] for f in inherit]))
            return stmt, kinds, tuple((f, self.kinds[child][f]) for f in (seq, *inherit))

        shape_key = ("append", child, parent, counter, seq, tuple(set), shape, inherit)
        return self._compiled(shape_key, build), values

    def due_stmt(self, limit: int) -> Compiled:
        """The ids of due, unleased schedules, locked for this transaction; rows another
        worker is claiming right now are skipped, not waited for."""
        t = self.tables["schedules"]

        def build():
            stmt = (
                sa.select(t.c.id)
                .where(t.c.enabled == sa.bindparam("yes"), t.c.next_run_at <= sa.bindparam("now"),
                       sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= sa.bindparam("now")))
                .order_by(t.c.next_run_at, t.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            return stmt, {"yes": "bool", "now": "time"}, (("id", "str"),)

        return self._compiled(("due", limit), build)


def _from_page(cond: Cond, q: Query) -> Cond:
    """A range's start on the first order column, moved up to the page's key when that is
    further on: a planner that seeks on one bound (SQLite) would otherwise walk every row
    before the page, on every page."""
    first = q.after[0]
    if cond.field != q.order[0] or first is None or cond.op not in (("lt", "lte") if q.desc else ("gt", "gte")):
        return cond
    try:
        further = first < cond.value if q.desc else first > cond.value
    except TypeError:
        return cond
    return Cond(cond.field, "lte" if q.desc else "gte", first) if further else cond
