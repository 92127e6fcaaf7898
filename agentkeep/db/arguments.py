"""The one gate every public db method's arguments pass, before the method or any backend
sees them.

`@api` wraps each public method of the domain layer (`_async/domain.py` and its generated
sync twin). Each parameter is checked by the rule its name selects in `RULES`, and replaced
by the normalized value (a record checked and turned into the columns it is stored as, a
time in UTC, ids de-duplicated). A
parameter without a rule is a TypeError when the module is imported, so a new method cannot
skip the gate. Rules that depend on the method (the choices of `order` or `status`, the model
of `run`) are given to `@api` itself.

The wrapper also makes the schema ready on first use, and turns a driver's "cannot connect"
into `ConnectionFailedError` (the kernel's `translate_error`), so that no driver exception
about reachability escapes a public method.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
import typing
from typing import Any, Callable

from agentkeep.db import models as m
from agentkeep.db import validate as v
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.tables import EXPORT_TABLES, default_specs

Rule = Callable[[Any], Any]
MAX_CURSOR = 4096  # far above any cursor the db hands out
MAX_LEASE_SECONDS = 10 * 366 * 86400


# -- records ------------------------------------------------------------------------------

_SPECS = {spec.model: spec for spec in default_specs().values() if spec.model is not None}
# per model: the columns a record is stored as, its time, integer and nested-record columns
_STORED = {model: tuple(c.name for c in spec.columns if c.name not in spec.internal) for model, spec in _SPECS.items()}
_TIME_COLUMNS = {model: {c.name for c in spec.columns if c.kind in ("time", "date")} for model, spec in _SPECS.items()}
_INTS = {model: tuple(c.name for c in spec.columns if c.kind == "int" and c.name not in spec.internal)
         for model, spec in _SPECS.items()}
_NESTED = {model: tuple(name for name, f in model.model_fields.items()
                        if isinstance(f.annotation, type) and issubclass(f.annotation, m.Record))
           for model in _SPECS}
# ids a record refers to its parent by, and a job's kind: looked up like keys, so held to
# the same rules
_PARENT_IDS = {m.Run: ("session_id",), m.Span: ("trace_id",), m.ScheduleRun: ("schedule_id",), m.Job: ("kind",)}


def check_record(model: type[m.Record], value: Any, what: str) -> dict:
    """A record of `model` from a model or a dict, checked as the store will hold it, and
    returned as the columns it is stored as (nested records as dicts): the field types
    (pydantic), ids, 64-bit integer columns, indexed string lengths, JSON values only, valid
    unicode, the nesting and size limits."""
    fields = v.coerce(model, value, what).__dict__
    spec = _SPECS[model]
    for name in spec.key + _PARENT_IDS.get(model, ()):
        if spec.kind(name) == "str" and name != "user_id":
            v.check_id(fields[name], f"{what}.{name}")
    if model is m.MetricsDay:  # "" is the all-users row there
        all_users_or_id(fields["user_id"])
    elif "user_id" in fields:
        v.check_opt_id(fields["user_id"], f"{what}.user_id")
    row = {name: fields[name] for name in _STORED[model]}
    for name in _NESTED[model]:
        if row[name] is not None:
            row[name] = row[name].model_dump()
    for name in _INTS[model]:
        if row[name] is not None:
            v.check_int(row[name], f"{what}.{name}")
    for name in spec.multi:  # each element is indexed on its own
        for item in row[name]:
            if len(item) > v.MAX_ID_LENGTH:
                raise InvalidInputError(f"{what}.{name} holds an item longer than {v.MAX_ID_LENGTH} characters")
    v.check_payload(row, what, spec.short, _TIME_COLUMNS[model])
    return row


def _record(model: type[m.Record], what: str) -> Rule:
    return lambda value: check_record(model, value, what)


def _records(model: type[m.Record], what: str) -> Rule:
    def rule(values: Any) -> list[dict]:
        if isinstance(values, (str, bytes, dict, m.Record)) or not hasattr(values, "__iter__"):
            raise InvalidInputError(f"{what}s must be a list of {model.__name__}")
        return [check_record(model, item, f"{what} {i}") for i, item in enumerate(values)]

    return rule


def _job(value: Any) -> dict:
    row = check_record(m.Job, value, "job")
    v.check_int(row["max_attempts"], "job.max_attempts", 1)
    return row


# -- scalars ------------------------------------------------------------------------------


def _id(name: str, required: bool) -> Rule:
    if required:
        return lambda value: v.check_id(value, name)
    return lambda value: None if value is None else v.check_id(value, name)


def _ids(name: str) -> Rule:
    return lambda values: v.check_ids(values, name)


def _optional(check: Callable[[Any, str], Any], name: str) -> Rule:
    return lambda value: None if value is None else check(value, name)


def _choice(options: Any, name: str) -> Rule:
    if typing.get_origin(options) is typing.Literal:
        options = typing.get_args(options)
    options = tuple(options)

    def rule(value: Any) -> Any:
        if value is None or isinstance(value, str):
            return v.check_choice(value, options, name)
        raise InvalidInputError(f"{name} must be one of {list(options)}, got {type(value).__name__}")

    return rule


def _opt_choice(options: Any, name: str) -> Rule:
    rule = _choice(options, name)
    return lambda value: None if value is None else rule(value)


def _limit(value: Any) -> int:
    return v.check_limit(value)


def _last(value: Any) -> int | None:
    return None if value is None else v.check_int(value, "last", 1, v.MAX_LIMIT)


def _runs(value: Any) -> int | None:
    return None if value is None else v.check_int(value, "runs (None, -1 for all, or a count >= 0)", -1)


def _cursor(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CURSOR or not value.isascii():
        raise InvalidInputError("invalid cursor: pass next_cursor from a previous page of the same call")
    return value


def _lease(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"lease_seconds must be a number, got {type(value).__name__}")
    if not 0 < value <= MAX_LEASE_SECONDS:  # NaN fails this too
        raise InvalidInputError(f"lease_seconds must be in (0, {MAX_LEASE_SECONDS}], got {v.shown(value)}")
    return value


def _bool(name: str) -> Rule:
    def rule(value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidInputError(f"{name} must be a bool, got {type(value).__name__}")
        return value

    return rule


def _search(name: str) -> Rule:
    return lambda value: None if value is None else v.check_text(value, name, v.MAX_ID_LENGTH * 4)


def _topics(values: Any) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidInputError("topics must be a list of strings")
    return list(dict.fromkeys(v.check_text(t, "a topic", v.MAX_ID_LENGTH) for t in values))


def _json_dict(name: str) -> Rule:
    def rule(value: Any) -> dict | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidInputError(f"{name} must be a dict, got {type(value).__name__}")
        v.check_payload({name: value}, name)
        return value

    return rule


def _kinds(values: Any) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidInputError("kinds must be a list of job kinds")
    kinds = list(dict.fromkeys(v.check_id(k, "a job kind") for k in values))
    if not kinds:
        raise InvalidInputError("kinds must name at least one job kind (None: every kind)")
    return kinds


def _tables(values: Any) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidInputError(f"tables must be a list of table names from {list(EXPORT_TABLES)}")
    return [v.check_choice(t, EXPORT_TABLES, "table") for t in values]


def all_users_or_id(value: Any) -> str | None:
    """A user id, or None / "" for the all-users rows (metrics)."""
    return None if value in (None, "") else v.check_id(value, "user_id")


def _file(value: Any) -> Any:
    """A path (checked here) or a file object (checked when it is opened)."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str):
            v.check_unicode(path, "path")
        if not path or "\x00" in (path if isinstance(path, str) else path.decode("latin-1")):
            raise InvalidInputError(f"not a usable path: {v.shown(path)}")
    return value


# parameter name -> (parameter, the method's own rules) -> rule
RULES: dict[str, Callable[[inspect.Parameter, dict], Rule]] = {
    **{name: (lambda n: lambda p, own: _id(n, p.default is inspect.Parameter.empty))(name) for name in (
        "session_id", "run_id", "memory_id", "content_id", "trace_id", "approval_id", "schedule_id",
        "eval_run_id", "schedule_run_id", "job_id", "worker_id", "user_id", "agent_id", "team_id", "workflow_id",
        "linked_to", "kind")},
    **{name: (lambda n: lambda p, own: _ids(n))(name) for name in ("session_ids", "memory_ids", "eval_run_ids",
                                                                              "job_ids", "alive")},
    "session": lambda p, own: _record(m.Session, "session"),
    "run": lambda p, own: _record(own.get("run", m.Run), "run"),
    "memory": lambda p, own: _record(m.UserMemory, "memory"),
    "memories": lambda p, own: _records(m.UserMemory, "memory"),
    "content": lambda p, own: _record(m.KnowledgeContent, "knowledge content"),
    "spans": lambda p, own: _records(m.Span, "span"),
    "approval": lambda p, own: _record(m.Approval, "approval"),
    "schedule": lambda p, own: _record(m.Schedule, "schedule"),
    "eval_run": lambda p, own: _record(m.EvalRun, "eval run"),
    "job": lambda p, own: _job,
    "kinds": lambda p, own: _kinds,
    "expected_revision": lambda p, own: _optional(lambda x, n: v.check_int(x, n, 0), "expected_revision"),
    "after_seq": lambda p, own: _optional(v.check_int, "after_seq"),
    "limit": lambda p, own: _limit,
    "offset": lambda p, own: v.check_offset,
    "last": lambda p, own: _last,
    "runs": lambda p, own: _runs,
    "cursor": lambda p, own: _cursor,
    "lease_seconds": lambda p, own: _lease,
    "order": lambda p, own: _choice(own["order"], "order"),
    "status": lambda p, own: (_choice if p.default is inspect.Parameter.empty else _opt_choice)(own["status"], "status"),
    "expected_status": lambda p, own: _opt_choice(m.RunStatus, "expected_status"),
    "session_type": lambda p, own: _opt_choice(m.SessionType, "session_type"),
    "eval_type": lambda p, own: _opt_choice(m.EvalType, "eval_type"),
    "group_by": lambda p, own: _choice(own["group_by"], "group_by"),
    "on_conflict": lambda p, own: _choice(("skip", "replace", "error"), "on_conflict"),
    "name": lambda p, own: lambda value: v.check_text(value, "name"),
    "name_contains": lambda p, own: _search("name_contains"),
    "search": lambda p, own: _search("search"),
    "topics": lambda p, own: _topics,
    "resolved_by": lambda p, own: _optional(lambda x, n: v.check_text(x, n, v.MAX_ID_LENGTH), "resolved_by"),
    "resolution": lambda p, own: _json_dict("resolution"),
    "result": lambda p, own: _json_dict("result"),
    "error": lambda p, own: _optional(v.check_text, "error"),
    **{name: (lambda n: lambda p, own: lambda value: v.check_time(value, n))(name) for name in (
        "updated_after", "updated_before", "started_after", "started_before", "now", "next_run_at",
        "retry_at")},
    "start_date": lambda p, own: lambda value: v.check_date(value, "start_date"),
    "end_date": lambda p, own: lambda value: v.check_date(value, "end_date"),
    "with_total": lambda p, own: _bool("with_total"),
    "dry_run": lambda p, own: _bool("dry_run"),
    "enabled": lambda p, own: lambda value: v.check_bool(value, "enabled"),
    "tables": lambda p, own: _tables,
    "fp_or_path": lambda p, own: _file,
}


def _rules_for(fn: Callable, own: dict) -> tuple[tuple[Rule, ...], dict[str, Rule]]:
    positional: list[Rule] = []
    by_name: dict[str, Rule] = {}
    for p in list(inspect.signature(fn).parameters.values())[1:]:  # after self
        if isinstance(own.get(p.name), types.FunctionType):  # the method's own rule
            rule = own[p.name]
        elif p.name in RULES:
            rule = RULES[p.name](p, own)
        else:
            raise TypeError(f"{fn.__qualname__}: no argument rule for parameter {p.name!r} (add one to RULES)")
        by_name[p.name] = rule
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(rule)
    return tuple(positional), by_name


def _check(positional: tuple, by_name: dict, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if args:
        args = tuple(rule(a) for rule, a in zip(positional, args)) + args[len(positional):]
    for name, value in kwargs.items():
        rule = by_name.get(name)
        if rule is not None:  # an unknown keyword is the method's own TypeError
            kwargs[name] = rule(value)
    return args, kwargs


def api(fn: Callable | None = None, *, ready: bool = True, **own: Any) -> Any:
    """Mark a public db method: its arguments pass `RULES` first (a record argument reaches
    the method as the dict of its stored columns); then the schema is made ready (unless
    `ready=False`) and the method runs. `own` gives the method's own rules:
    `order=` / `status=` / `group_by=` choices (a Literal or a collection), `run=` a model."""
    if fn is None:
        return lambda f: api(f, ready=ready, **own)
    positional, by_name = _rules_for(fn, own)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            args, kwargs = _check(positional, by_name, args, kwargs)
            try:
                if ready and not self._schema_checked:
                    await self._ready()
                return await fn(self, *args, **kwargs)
            except DbError:
                raise
            except Exception as exc:
                error = self.kernel.translate_error(exc)
                if error is None:
                    raise
                raise error from exc

        async_method.checked_arguments = True
        return async_method

    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _check(positional, by_name, args, kwargs)
        try:
            if ready and not self._schema_checked:
                self._ready()
            return fn(self, *args, **kwargs)
        except DbError:
            raise
        except Exception as exc:
            error = self.kernel.translate_error(exc)
            if error is None:
                raise
            raise error from exc

    method.checked_arguments = True
    return method
