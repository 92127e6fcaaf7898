"""The agentkeep db: records, errors and `connect(url)`.

Backends live in their own modules (`agentkeep.db.sqlite`, `agentkeep.db.json`, ...) and
import only their own driver; importing this package imports none of them.
"""

from agentkeep.db.errors import (
    ConflictError,
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
    "Approval", "ConflictError", "DbError", "EvalRun", "InvalidInputError", "KnowledgeContent",
    "MemoryStats", "MetricsDay", "NotFoundError", "OwnershipError", "Page", "Run", "RunMetrics",
    "Schedule", "ScheduleRun", "ScheduleTarget", "SchemaError", "Session", "Span", "Trace",
    "TraceStats", "UnsupportedError", "UserMemory", "connect", "new_id",
]
