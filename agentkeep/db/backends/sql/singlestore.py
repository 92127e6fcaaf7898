"""SingleStoreDb (and AsyncSingleStoreDb): the MySQL family kernel with SingleStore's DDL.

    SingleStoreDb(db_url="singlestoredb://user:pass@host:3306/agentkeep")

What differs from MysqlDb, and why:
- Tables are ROWSTORE (agent state is point reads and writes; SingleStore's default
  columnstore suits scans, not this), each with SHARD KEY on its primary key. A memory's
  topic rows are sharded by the memory's id, so they sit on the memory's partition.
- SingleStore enforces a unique index only when it contains the shard key, so the one
  secondary unique index (a run's (session_id, seq)) is an ordinary index here. Uniqueness
  still holds: a run's seq is taken from its session row inside the run's transaction.
- No foreign keys: the rows of side tables (memory topics) are deleted in code, in the same
  transaction as their record.
- Short text (ids, names of things) is VARBINARY, so keys compare byte for byte: "abc" and
  "abc " stay two records whatever the server's collation pads, and order is code point
  order as on every other backend.
- No GET_LOCK and no SKIP LOCKED are relied on: concurrent migrations converge because
  every schema step is idempotent, and schedules are claimed by compare-and-set.

Against a server that is not SingleStore (the test suite runs this on MariaDB), the same
statements run, without the ROWSTORE and SHARD KEY words MariaDB does not know.
docs/design.md says what was and was not verified against SingleStore itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.sql.mysql import (
    AsyncMysqlKernel,
    MysqlDialect,
    MysqlKernel,
    _normalize_url,
    kernel_args,
)
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for
from agentkeep.db.kernel import Step
from agentkeep.db.tables import TableSpec

URL_SCHEMES = ("singlestoredb", "singlestore", "singlestoredb+pymysql", "mysql", "mysql+pymysql", "mysql+aiomysql")


class SingleStoreDialect(MysqlDialect):
    server = "SingleStore"
    foreign_keys = False
    capabilities = MysqlDialect.capabilities - {"atomic_claim"}  # no SKIP LOCKED
    decode = {**MysqlDialect.decode, "str": bytes.decode}
    native: bool | None = None  # the server is SingleStore (found out on the first schema check)

    def column_type(self, kind: str) -> sa.types.TypeEngine:
        if kind == "str":
            return mysql.VARBINARY(1020)  # 255 characters of UTF-8
        return super().column_type(kind)

    def table_options(self) -> dict:
        return {"mysql_charset": "utf8mb4"}

    def collation(self) -> str:
        return "utf8mb4_bin"  # for long text only; short text is binary

    def schema_lock_sql(self):
        return None

    def schema_unlock_sql(self):
        return None

    def setup(self, specs: dict[str, TableSpec]) -> None:
        super().setup(specs)
        for table in self.tables.values():
            for index in table.indexes:
                index.unique = False

    def describe(self) -> str:
        what = "SingleStore" if self.native else "SingleStore statements on"
        return f"{what} {super().describe()}"

    def plan_from(self, inspector):
        if self.native is None:
            with inspector.bind.connect() as conn:
                try:
                    conn.exec_driver_sql("SELECT @@memsql_version")
                    self.native = True
                except sa.exc.DBAPIError:
                    self.native = False
        return super().plan_from(inspector)

    def ddl(self, step: Step) -> str:
        sql = super().ddl(step)
        if step.action != "create_table" or not self.native:
            return sql
        # a side table shares its record's shard key, so a record's rows sit together
        parents = {side.name: self.specs[table].key for (table, _), side in self.side.items()}
        key = parents.get(step.table) or [c.name for c in step.detail.primary_key.columns]
        return singlestore_table(sql, list(key), self.dialect)


def singlestore_table(create: str, key: list[str], dialect) -> str:
    """A CREATE TABLE statement as SingleStore takes it: a rowstore table sharded on `key`."""
    head, sep, tail = create.rpartition("\n)")
    columns = ", ".join(dialect.identifier_preparer.quote(k) for k in key)
    head = head.replace("CREATE TABLE", "CREATE ROWSTORE TABLE", 1)
    return f"{head},\n\tSHARD KEY ({columns}){sep}{tail}"


class SingleStoreKernel(SingleStoreDialect, MysqlKernel):
    pass


class AsyncSingleStoreKernel(SingleStoreDialect, AsyncMysqlKernel):
    pass


def _url(db_url: str) -> sa.URL:
    return _normalize_url(db_url, URL_SCHEMES, "SingleStore")


class SingleStoreDb(Db):
    """SingleStore through PyMySQL. The database must exist; tables are created in it on
    first use."""

    def __init__(
        self,
        db_url: str = "singlestoredb://root@localhost:3306/agentkeep",
        *,
        pool_size: int = 5,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("SingleStoreDb", "singlestore"):
            kernel = SingleStoreKernel(*kernel_args(db_url, pool_size, connect_timeout, URL_SCHEMES, "SingleStore"))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)


class AsyncSingleStoreDb(AsyncDb):
    """The async twin of SingleStoreDb, on aiomysql."""

    def __init__(
        self,
        db_url: str = "singlestoredb://root@localhost:3306/agentkeep",
        *,
        pool_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        with driver_for("AsyncSingleStoreDb", "singlestore"):
            args = kernel_args(db_url, pool_size, connect_timeout, URL_SCHEMES, "SingleStore")
            kernel = AsyncSingleStoreKernel(*args)
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)
