"""MongoDb (and AsyncMongoDb) on pymongo 4: one collection per table, every documented
filter on an index, compare-and-set through `find_one_and_update`, a run's seq from one
atomic `$inc`.

    MongoDb(db_url="mongodb://user:pass@host:27017", db_name="agentkeep")

`db_name` defaults to the database the URL names, else "agentkeep". Collections are named
`collection_prefix` + table name (`table_prefix` is accepted as the same thing), or as
given per table (`session_table="chat_sessions"`, ...). Extra keyword arguments not naming a
table go to pymongo's client (`serverSelectionTimeoutMS=...`, `tls=True`, ...).

`ttl=True` also creates TTL indexes (expireAfterSeconds=0) so that the server itself
deletes expired memories and approvals; by default expiry is `purge_expired()`'s job, as on
every other backend (see docs/mongo.md for why sessions never expire natively).
"""

from __future__ import annotations

from typing import Any

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.tables import TABLE_KEYWORDS

with driver_for("MongoDb", "mongo"):
    from pymongo.common import VALIDATORS

    from agentkeep.db.backends.mongo._async.kernel import AsyncMongoKernel
    from agentkeep.db.backends.mongo._sync.kernel import MongoKernel

DEFAULT_PREFIX = "agentkeep_"


def _split(db: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Table-name overrides (`*_table=`) apart from pymongo client options (any other
    keyword is refused, with the closest valid name)."""
    tables = {k: v for k, v in kwargs.items() if k.endswith("_table")}
    client = {k: v for k, v in kwargs.items() if k not in tables}
    for name in client:
        if name.lower() not in VALIDATORS:  # pymongo takes its options in any case
            valid = options.parameters(type(db)) + list(TABLE_KEYWORDS) + sorted(VALIDATORS)
            raise options.unknown_argument(type(db), name, valid)
    return tables, client


def _prefix(collection_prefix: str | None, table_prefix: str | None) -> str:
    if collection_prefix is not None and table_prefix is not None and collection_prefix != table_prefix:
        raise InvalidInputError("pass collection_prefix or table_prefix, not both")
    prefix = collection_prefix if collection_prefix is not None else table_prefix
    if prefix is None:
        return DEFAULT_PREFIX
    if not isinstance(prefix, str):
        raise InvalidInputError(f"collection_prefix must be a string, got {type(prefix).__name__}")
    return prefix


class MongoDb(Db):
    """MongoDB through pymongo's MongoClient."""

    def __init__(
        self,
        db_url: str = "mongodb://localhost:27017",
        *,
        db_name: str | None = None,
        collection_prefix: str | None = None,
        table_prefix: str | None = None,
        ttl: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        **kwargs: Any,
    ) -> None:
        prefix = _prefix(collection_prefix, table_prefix)
        tables, client_options = _split(self, kwargs)
        overrides = options.db_arguments(self, id=id, table_prefix=prefix, tables=tables)
        kernel = MongoKernel(db_url, db_name, ttl=options.flag(ttl, "ttl"),
                             connect_timeout=options.seconds(connect_timeout), **client_options)
        super().__init__(kernel, id=id, table_prefix=prefix, tables=overrides)


class AsyncMongoDb(AsyncDb):
    """The async twin of MongoDb, on pymongo's native AsyncMongoClient: the same
    collections, methods and guarantees; every method is a coroutine."""

    def __init__(
        self,
        db_url: str = "mongodb://localhost:27017",
        *,
        db_name: str | None = None,
        collection_prefix: str | None = None,
        table_prefix: str | None = None,
        ttl: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        **kwargs: Any,
    ) -> None:
        prefix = _prefix(collection_prefix, table_prefix)
        tables, client_options = _split(self, kwargs)
        overrides = options.db_arguments(self, id=id, table_prefix=prefix, tables=tables)
        kernel = AsyncMongoKernel(db_url, db_name, ttl=options.flag(ttl, "ttl"),
                                  connect_timeout=options.seconds(connect_timeout), **client_options)
        super().__init__(kernel, id=id, table_prefix=prefix, tables=overrides)
