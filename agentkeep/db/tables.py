"""One declarative spec per table. Every backend derives its layout from these specs, and
the specs derive their columns from the models: adding a field to a record is a change to
models.py and the table's version number here, nothing else.

Column kinds: "str" (short, indexable text), "text" (unbounded text: a `LongText` field),
"int", "float", "bool", "time" (UTC datetime), "date", "json" (any JSON value). List-valued
columns named in `multi` can be filtered with "contains all" (SQL keeps them in a side table,
document stores in a multikey index).

Relations between tables are declared here too: a child table's `parent` link (runs belong
to their session), from which follow what a delete cascades to, what expires with its
parent (tables with `expires_at` expire, their children with them) and which tables
`delete_user` clears (those with a `user_id` and no parent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass, field

from pydantic import AwareDatetime, BaseModel

from agentkeep.db import models as m


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = True


@dataclass(frozen=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False
    sparse: bool = False  # index only rows where the first field is set (expiry times)


@dataclass(frozen=True)
class Link:
    """A child table's parent: `field` of the child holds the parent's key."""

    table: str
    field: str


@dataclass(frozen=True)
class TableSpec:
    name: str  # logical name, used in code, exports and results
    physical: str  # the name in the store
    model: type[BaseModel] | None
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    multi: tuple[str, ...] = ()
    version: int = 1
    internal: tuple[str, ...] = ()  # columns kept by the db but not part of the record
    parent: Link | None = None  # a child's records go with their parent's
    column_map: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)
    short: tuple[str, ...] = field(default=(), compare=False, repr=False)  # indexed str columns

    def __post_init__(self) -> None:
        self.column_map.update({c.name: c for c in self.columns})
        object.__setattr__(self, "short", tuple(c.name for c in self.columns if c.kind == "str"))

    def kind(self, name: str) -> str:
        return self.column_map[name].kind

    def key_of(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.key)

    @property
    def expires(self) -> bool:
        """Its records expire (purge_expired, native TTL) at their `expires_at`."""
        return "expires_at" in self.column_map


def children(specs: dict[str, TableSpec], table: str) -> tuple[tuple[str, str], ...]:
    """(child table, its field holding the parent's key) of every child of `table`."""
    return tuple((name, s.parent.field) for name, s in specs.items() if s.parent and s.parent.table == table)


def owned_tables(specs: dict[str, TableSpec]) -> tuple[str, ...]:
    """The tables `delete_user` clears: those whose records have an owner and no parent (a
    child goes with its parent, whose owner it has)."""
    return tuple(name for name, s in specs.items() if "user_id" in s.column_map and s.parent is None)


_SCALAR_KINDS = {str: "str", int: "int", float: "float", bool: "bool", dt.datetime: "time", dt.date: "date"}


def _kind_of(annotation: typing.Any) -> tuple[str, bool]:
    origin = typing.get_origin(annotation)
    nullable = False
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            annotation, origin = args[0], typing.get_origin(args[0])
        else:
            return "json", True
    if origin is typing.Literal:
        return "str", nullable
    if origin is typing.Annotated and m.LONG_TEXT in typing.get_args(annotation)[1:]:
        return "text", nullable
    if annotation is typing.Any:
        return "json", True
    if annotation is AwareDatetime or (
        typing.get_origin(annotation) is typing.Annotated and typing.get_args(annotation)[0] is AwareDatetime
    ):
        return "time", nullable
    # AwareDatetime is an Annotated datetime
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return _SCALAR_KINDS.get(annotation, "json"), nullable


def _columns(model: type[BaseModel], skip: tuple[str, ...] = (), extra: tuple[Column, ...] = ()) -> tuple[Column, ...]:
    cols = []
    hints = typing.get_type_hints(model, include_extras=True)
    for name in model.model_fields:
        if name in skip:
            continue
        kind, nullable = _kind_of(hints[name])
        cols.append(Column(name, kind, nullable))
    return tuple(cols) + extra


def _spec(name, model, key, indexes, *, skip=(), extra=(), multi=(), version=1, parent=None) -> TableSpec:
    return TableSpec(
        name=name,
        physical=name,
        model=model,
        key=key,
        columns=_columns(model, skip, extra) if model else extra,
        indexes=tuple(Index(tuple(f)) if not isinstance(f, Index) else f for f in indexes),
        multi=multi,
        version=version,
        internal=tuple(c.name for c in extra),
        parent=Link(*parent) if parent else None,
    )


EXPIRES = Index(("expires_at",), sparse=True)  # most records never expire


def default_specs() -> dict[str, TableSpec]:
    """The tables of the current schema, by logical name, with unprefixed physical names."""
    rev = Column("revision", "int", False)
    specs = [
        _spec(
            "sessions", m.Session, ("session_id",),
            [("user_id", "updated_at"), ("user_id", "created_at"), ("updated_at",), ("created_at",),
             ("session_type", "updated_at"), EXPIRES],  # AgentOS lists (and counts) by type
            skip=("runs",), extra=(Column("last_seq", "int", False),), version=2,
        ),
        _spec(
            "runs", m.Run, ("run_id",),
            [Index(("session_id", "seq"), unique=True), ("created_at",), ("updated_at",),
             ("status", "lease_until")],
            parent=("sessions", "session_id"), version=2,
        ),
        _spec(
            "memories", m.UserMemory, ("memory_id",),
            [("user_id", "updated_at"), ("updated_at",), EXPIRES],
            multi=("topics",),
        ),
        _spec("knowledge", m.KnowledgeContent, ("id",), [("user_id", "updated_at"), ("updated_at",), ("linked_to",)]),
        _spec(
            "traces", m.Trace, ("trace_id",),
            [("start_time",), ("user_id", "start_time"), ("session_id", "start_time"), ("run_id",),
             ("agent_id", "start_time"), ("status", "start_time"), ("duration_ms",)],
            extra=(rev,), multi=("models", "tools"), version=3,
        ),
        _spec("spans", m.Span, ("span_id",), [("trace_id", "start_time")], parent=("traces", "trace_id")),
        _spec(
            "approvals", m.Approval, ("id",),
            [("status", "created_at"), ("user_id", "created_at"), ("session_id", "created_at"),
             ("created_at",), EXPIRES],
        ),
        _spec("schedules", m.Schedule, ("id",), [("enabled", "next_run_at"), ("user_id", "created_at"), ("created_at",)],
              version=2),
        _spec("schedule_runs", m.ScheduleRun, ("id",), [("schedule_id", "started_at")],
              parent=("schedules", "schedule_id"), version=2),
        _spec("metrics", m.MetricsDay, ("date", "user_id"), [("user_id", "date")], version=2),
        _spec("eval_runs", m.EvalRun, ("id",), [("user_id", "created_at"), ("created_at",)], version=2),
        _spec(
            "jobs", m.Job, ("id",),
            # claims read (status, run_after) or, for some kinds, (kind, status, run_after);
            # leases that ran out are found on (status, locked_until)
            [("status", "run_after"), ("kind", "status", "run_after"), ("status", "locked_until"),
             ("user_id", "created_at"), ("created_at",)],
        ),
        _spec(
            "meta", None, ("key",), [],
            extra=(Column("key", "str", False), Column("value", "json"), Column("updated_at", "time")),
        ),
    ]
    return {s.name: s for s in specs}


TABLES = tuple(default_specs())
# Export order: parents before children, so an import never meets an orphan.
EXPORT_TABLES = tuple(t for t in TABLES if t != "meta")


def build_specs(table_prefix: str = "agentkeep_", overrides: dict[str, str] | None = None) -> dict[str, TableSpec]:
    """Specs with their physical names: `table_prefix` + name, or an explicit override."""
    overrides = overrides or {}
    unknown = set(overrides) - set(TABLES)
    if unknown:
        from agentkeep.db.errors import InvalidInputError

        raise InvalidInputError(f"unknown table override(s): {sorted(unknown)}; tables are {list(TABLES)}")
    return {
        name: dataclasses.replace(spec, physical=overrides.get(name) or f"{table_prefix}{name}", column_map={})
        for name, spec in default_specs().items()
    }


# `session_table="x"` style keyword arguments: the singular names, and each table's own
TABLE_ALIASES = {
    "session": "sessions", "run": "runs", "memory": "memories", "knowledge": "knowledge", "trace": "traces",
    "span": "spans", "approval": "approvals", "schedule": "schedules", "schedule_run": "schedule_runs",
    "metrics": "metrics", "eval": "eval_runs", "eval_run": "eval_runs", "job": "jobs", "meta": "meta",
    "versions": "meta",
    **{t: t for t in TABLES},
}
TABLE_KEYWORDS = tuple(f"{alias}_table" for alias in TABLE_ALIASES)


def table_overrides(kwargs: dict[str, typing.Any]) -> dict[str, str]:
    """`session_table="x"` style keyword arguments -> {"sessions": "x"}."""
    from agentkeep.db.errors import InvalidInputError

    out = {}
    for name, value in kwargs.items():
        table = TABLE_ALIASES.get(name[: -len("_table")]) if name.endswith("_table") else None
        if table is None:
            raise InvalidInputError(f"unexpected keyword argument {name!r}")
        out[table] = value
    return out
