"""The agentkeep db: records, errors, `connect(url)` and the backend classes.

Backends live in their own packages (`agentkeep.db.backends.sql`, `agentkeep.db.backends.json`,
...; the former paths `agentkeep.db.sqlite`, `agentkeep.db.json`, ... still work) and import
only their own driver. `from agentkeep.db import SqliteDb` works for every backend
class: the name is looked up on first use, so importing this package imports no backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from agentkeep.db.errors import (
    ConflictError,
    ConnectionFailedError,
    DbError,
    InvalidInputError,
    NotFoundError,
    OwnershipError,
    SchemaError,
    UnsupportedError,
)
from agentkeep.db.models import (
    Approval,
    EvalRun,
    ImportCount,
    Job,
    KnowledgeContent,
    MemoryStats,
    MetricsDay,
    Page,
    Run,
    RunMetrics,
    Schedule,
    ScheduleRun,
    ScheduleTarget,
    Session,
    Span,
    Trace,
    TraceStats,
    UserMemory,
    new_id,
)
from agentkeep.db.urls import connect

__all__ = [
    "Approval", "ConflictError", "ConnectionFailedError", "DbError", "EvalRun", "ImportCount", "InvalidInputError",
    "Job", "KnowledgeContent", "MemoryStats", "MetricsDay", "NotFoundError", "OwnershipError", "Page", "Run", "RunMetrics",
    "Schedule", "ScheduleRun", "ScheduleTarget", "SchemaError", "Session", "Span", "Trace",
    "TraceStats", "UnsupportedError", "UserMemory", "connect", "new_id",
]

# backend class -> its module, imported when the name is first used
_BACKEND_MODULES = {
    "InMemoryDb": "backends.in_memory.db",
    "SqliteDb": "backends.sql.sqlite", "AsyncSqliteDb": "backends.sql.sqlite",
    "JsonDb": "backends.json.db", "GcsJsonDb": "backends.json.gcs",
    "PostgresDb": "backends.sql.postgres", "AsyncPostgresDb": "backends.sql.postgres",
    "MysqlDb": "backends.sql.mysql", "AsyncMysqlDb": "backends.sql.mysql",
    "SingleStoreDb": "backends.sql.singlestore", "AsyncSingleStoreDb": "backends.sql.singlestore",
    "MongoDb": "backends.mongo.db", "AsyncMongoDb": "backends.mongo.db",
    "RedisDb": "backends.redis.db", "AsyncRedisDb": "backends.redis.db",
    "DynamoDb": "backends.dynamo.db",
    "FirestoreDb": "backends.firestore.db",
}


def __getattr__(name: str) -> Any:
    module = _BACKEND_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BACKEND_MODULES))
