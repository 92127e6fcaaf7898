"""The records every db stores: pydantic v2 models, identical on every backend."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

UTC = dt.timezone.utc

SessionType = Literal["agent", "team", "workflow"]
RunStatus = Literal["pending", "running", "paused", "completed", "cancelled", "error"]
ContentStatus = Literal["processing", "completed", "failed"]
TraceStatus = Literal["ok", "error", "unset"]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
ScheduleRunStatus = Literal["running", "success", "failed", "skipped", "paused", "cancelled"]
# what a schedule does about ticks missed while no scheduler ran: fire none of them, the
# latest once, or each of them (at most `misfire_limit`, the latest ones)
MisfirePolicy = Literal["skip", "once", "all"]
EvalStatus = Literal["queued", "running", "completed", "failed"]
EvalType = Literal["accuracy", "performance", "reliability", "agent_as_judge"]
JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
JOB_FINISHED = ("completed", "failed", "cancelled")


def new_id() -> str:
    """A time-ordered uuid7 as 32 hex characters (keeps B-tree inserts local)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68) << 64  # 12 bits rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def _to_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:  # a ValueError is what pydantic reports as a validation error
        raise ValueError("the time is outside the years 1..9999 in UTC") from None


# Every stored time is timezone-aware and kept in UTC (other zones are converted).
Timestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class _LongText:
    """Marks a str field as unbounded text: stored as text, never indexed (tables.py)."""

    def __repr__(self) -> str:
        return "LONG_TEXT"


LONG_TEXT = _LongText()
LongText = Annotated[str, LONG_TEXT]
JsonDict = dict[str, Any]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)


class RunMetrics(Record):
    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: Optional[float] = None
    duration_ms: Optional[float] = None
    model: Optional[str] = None
    provider: Optional[str] = None


class Run(Record):
    run_id: str = Field(default_factory=new_id)
    session_id: str
    user_id: Optional[str] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    workflow_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    seq: Optional[int] = None
    status: RunStatus = "completed"
    input: Any = None
    content: Any = None
    messages: list[JsonDict] = Field(default_factory=list)
    tools: list[JsonDict] = Field(default_factory=list)
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    metadata: JsonDict = Field(default_factory=dict)
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None
    # while `running`: the time its process must renew by, or the run counts as dead
    # (`fail_expired_runs`); None for a run no process owns
    lease_until: Optional[Timestamp] = None


class Session(Record):
    session_id: str = Field(default_factory=new_id)
    session_type: SessionType = "agent"
    user_id: Optional[str] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    workflow_id: Optional[str] = None
    name: Optional[LongText] = None
    state: JsonDict = Field(default_factory=dict)
    metadata: JsonDict = Field(default_factory=dict)
    summary: Optional[JsonDict] = None
    revision: Optional[int] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None
    expires_at: Optional[Timestamp] = None
    runs: Optional[list[Run]] = None


class UserMemory(Record):
    memory_id: str = Field(default_factory=new_id)
    user_id: Optional[str] = None
    memory: LongText
    topics: list[str] = Field(default_factory=list)
    input: Optional[LongText] = None
    feedback: Optional[LongText] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None
    expires_at: Optional[Timestamp] = None


class MemoryStats(Record):
    user_id: Optional[str]
    memories: int
    last_updated: Optional[Timestamp]


class KnowledgeContent(Record):
    id: str = Field(default_factory=new_id)
    name: Optional[LongText] = None
    description: Optional[LongText] = None
    metadata: JsonDict = Field(default_factory=dict)
    type: Optional[str] = None
    size: Optional[int] = None
    linked_to: Optional[str] = None
    status: ContentStatus = "processing"
    status_message: Optional[LongText] = None
    external_id: Optional[str] = None
    user_id: Optional[str] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None


class Trace(Record):
    trace_id: str
    name: Optional[LongText] = None
    status: TraceStatus = "unset"
    start_time: Optional[Timestamp] = None
    end_time: Optional[Timestamp] = None
    duration_ms: Optional[float] = None
    run_id: Optional[str] = None
    session_id: Optional[str] = None
    user_id: Optional[str] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    workflow_id: Optional[str] = None
    span_count: int = 0
    error_count: Optional[int] = None  # spans with status ERROR (None on rows older than the count)
    # rolled up from the spans' GenAI attributes as they are written (None on older rows)
    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None
    total_tokens: Optional[int] = None
    cost: Optional[float] = None
    models: list[str] = Field(default_factory=list)  # the models its spans called
    tools: list[str] = Field(default_factory=list)  # the tools its spans ran


class Span(Record):
    span_id: str
    trace_id: str
    parent_span_id: Optional[str] = None
    name: LongText = ""
    kind: str = "INTERNAL"
    status_code: Literal["UNSET", "OK", "ERROR"] = "UNSET"
    status_message: Optional[LongText] = None
    start_time: Timestamp
    end_time: Optional[Timestamp] = None
    duration_ms: Optional[float] = None
    attributes: JsonDict = Field(default_factory=dict)
    events: list[JsonDict] = Field(default_factory=list)


class TraceStats(Record):
    key: Optional[str]
    traces: int
    errors: int
    avg_ms: Optional[float]
    p95_ms: Optional[float]
    max_ms: Optional[float]
    first_start: Optional[Timestamp] = None  # the group's first and last trace starts
    last_start: Optional[Timestamp] = None


class Approval(Record):
    id: str = Field(default_factory=new_id)
    status: ApprovalStatus = "pending"
    run_id: Optional[str] = None
    session_id: Optional[str] = None
    user_id: Optional[str] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    workflow_id: Optional[str] = None
    tool_name: Optional[str] = None
    tool_args: JsonDict = Field(default_factory=dict)
    context: JsonDict = Field(default_factory=dict)
    requested_by: Optional[str] = None
    resolved_by: Optional[str] = None
    resolution: Optional[JsonDict] = None
    created_at: Optional[Timestamp] = None
    resolved_at: Optional[Timestamp] = None
    expires_at: Optional[Timestamp] = None


class ScheduleTarget(Record):
    model_config = ConfigDict(extra="allow")

    type: Literal["agent", "team", "workflow", "http"]
    id: Optional[str] = None
    endpoint: Optional[str] = None
    payload: JsonDict = Field(default_factory=dict)


class Schedule(Record):
    id: str = Field(default_factory=new_id)
    name: LongText = ""
    cron: str
    timezone: str = "UTC"
    target: ScheduleTarget
    enabled: bool = True
    next_run_at: Optional[Timestamp] = None
    max_retries: int = 0
    timeout_seconds: Optional[float] = None
    misfire: MisfirePolicy = "once"
    misfire_limit: int = Field(default=10, ge=1)
    user_id: Optional[str] = None
    locked_by: Optional[str] = None
    locked_until: Optional[Timestamp] = None
    revision: Optional[int] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None


class ScheduleRun(Record):
    id: str = Field(default_factory=new_id)
    schedule_id: str
    tick_at: Optional[Timestamp] = None  # the tick this run fires for: its key (None on older rows)
    trigger: Literal["schedule", "manual"] = "schedule"
    attempt: int = 1
    status: ScheduleRunStatus = "running"
    started_at: Optional[Timestamp] = None
    finished_at: Optional[Timestamp] = None
    error: Optional[LongText] = None
    output: Any = None
    run_id: Optional[str] = None
    session_id: Optional[str] = None


class MetricsDay(Record):
    date: dt.date
    user_id: str = ""
    agent_runs: int = 0
    team_runs: int = 0
    workflow_runs: int = 0
    sessions: int = 0
    users: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    errors: int = 0  # runs that ended in error
    by_model: JsonDict = Field(default_factory=dict)
    # per agent: runs, errors, tokens and latency percentiles (p50_ms, p95_ms, p99_ms)
    by_agent: JsonDict = Field(default_factory=dict)
    updated_at: Optional[Timestamp] = None


class EvalRun(Record):
    id: str = Field(default_factory=new_id)
    name: Optional[LongText] = None
    eval_type: EvalType
    status: EvalStatus = "completed"
    error: Optional[LongText] = None
    agent_id: Optional[str] = None
    team_id: Optional[str] = None
    workflow_id: Optional[str] = None
    model: Optional[str] = None
    input: Any = None
    result: JsonDict = Field(default_factory=dict)
    score: Optional[float] = None
    user_id: Optional[str] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None


class Job(Record):
    """Durable background work: queued, claimed by one worker under a lease, finished."""

    id: str = Field(default_factory=new_id)
    kind: str  # what to do, e.g. "knowledge.add"
    status: JobStatus = "queued"
    user_id: Optional[str] = None
    payload: JsonDict = Field(default_factory=dict)
    result: Optional[JsonDict] = None
    error: Optional[LongText] = None
    attempts: int = 0  # claims so far
    max_attempts: int = 3
    run_after: Optional[Timestamp] = None  # not claimable before (a retry's backoff)
    locked_by: Optional[str] = None  # the worker holding the lease while running
    locked_until: Optional[Timestamp] = None
    revision: Optional[int] = None
    created_at: Optional[Timestamp] = None
    updated_at: Optional[Timestamp] = None
    finished_at: Optional[Timestamp] = None


class ImportCount(int):
    """The records `import_jsonl` wrote (it is that int), with how many it read and how many
    it skipped because they existed already (on_conflict="skip")."""

    read: int
    skipped: int

    def __new__(cls, written: int, *, read: int) -> "ImportCount":
        count = super().__new__(cls, written)
        count.read = read
        count.skipped = read - written
        return count

    def __repr__(self) -> str:
        return f"ImportCount({int(self)}, read={self.read}, skipped={self.skipped})"

    __str__ = int.__repr__  # prints as the number it is


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: Optional[str] = None
    total: Optional[int] = None
