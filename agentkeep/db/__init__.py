"""The agentkeep db: records, errors, `connect(url)` and the backend classes.

Backends live in their own modules (`agentkeep.db.sqlite`, `agentkeep.db.json`, ...) and
import only their own driver. `from agentkeep.db import SqliteDb` works for every backend
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
    "Approval", "ConflictError", "ConnectionFailedError", "DbError", "EvalRun", "ImportCount", "InvalidInputError", "KnowledgeContent",
    "MemoryStats", "MetricsDay", "NotFoundError", "OwnershipError", "Page", "Run", "RunMetrics",
    "Schedule", "ScheduleRun", "ScheduleTarget", "SchemaError", "Session", "Span", "Trace",
    "TraceStats", "UnsupportedError", "UserMemory", "connect", "new_id",
]

# backend class -> its module, imported when the name is first used
_BACKEND_MODULES = {
    "InMemoryDb": "in_memory",
    "SqliteDb": "sqlite", "AsyncSqliteDb": "sqlite",
    "JsonDb": "json", "GcsJsonDb": "gcs_json",
    "PostgresDb": "postgres", "AsyncPostgresDb": "postgres",
    "MysqlDb": "mysql", "AsyncMysqlDb": "mysql",
    "SingleStoreDb": "singlestore", "AsyncSingleStoreDb": "singlestore",
    "MongoDb": "mongo", "AsyncMongoDb": "mongo",
    "RedisDb": "redis", "AsyncRedisDb": "redis",
    "DynamoDb": "dynamo",
    "FirestoreDb": "firestore",
}


def __getattr__(name: str) -> Any:
    module = _BACKEND_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BACKEND_MODULES))
