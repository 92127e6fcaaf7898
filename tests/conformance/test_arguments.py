"""Every argument of every public method, fed hostile values: the answer is a result or one
of agentkeep's own errors, never a driver's or codec's exception. Plus the cases that once
leaked a driver error, each pinned by name."""

from __future__ import annotations

import datetime as dt
import inspect
import io
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeep.db import (
    Approval,
    DbError,
    EvalRun,
    InvalidInputError,
    Job,
    KnowledgeContent,
    Run,
    ScheduleRun,
    Session,
    Span,
    UserMemory,
    models,
)
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db

from ._helpers import T0, UTC, schedule, snapshot, span

# -- the hostile alphabet ------------------------------------------------------------------

PLUS_14 = dt.timezone(dt.timedelta(hours=14))
FIVE_MB = "x" * 5_000_000


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[Any] = [
    None, True, 0, -1, 2**63, -(2**63) - 1, 2**70, 10**5000, 1.5, float("nan"), float("inf"),
    "", "\x00", "a\x00b", "\ud800", "a\udfff", "\n", "\x1b[31m", "x" * 256, FIVE_MB, "é" * 300,
    # valid, but special to some store or language: one string holds most of them
    " ", "$where", "a.b", "%s '; DROP TABLE x; -- \u202e💥*?[\\",
    b"bytes", [], ["\ud800"], [None], {}, {"\ud800": 1}, {"$gt": ""}, {1: 2}, {"k": 10**5000}, _deep(300),
    dt.datetime(2024, 1, 1), dt.datetime(1, 1, 1, tzinfo=PLUS_14), dt.datetime.max.replace(tzinfo=UTC),
    dt.datetime.min.replace(tzinfo=UTC), dt.date.max, object(),
]

# the public interface (API.md section 3), minus close(), which ends the db
PUBLIC = sorted(
    name for name, fn in inspect.getmembers(Db, inspect.isfunction)
    if not name.startswith("_") and name != "close"
)


# methods that take arguments; export and import are left to the sweep, which runs in a
# directory of its own (a hostile path may be a valid one)
WITH_ARGUMENTS = [
    name for name in PUBLIC
    if name not in ("export_jsonl", "import_jsonl") and len(inspect.signature(getattr(Db, name)).parameters) > 1
]


# -- a db with one of each record, and a valid value for every required argument ---------------


class World:
    def __init__(self, db: Any) -> None:
        self.session = db.upsert_session(Session(user_id="u1", name="base"))
        self.run = db.append_run(Run(session_id=self.session.session_id, content="hi"))
        self.memory = db.upsert_memory(UserMemory(user_id="u1", memory="likes tea", topics=["t"]))
        self.content = db.upsert_knowledge(KnowledgeContent(user_id="u1", name="doc"))
        db.write_spans([span("tr1", "sp1", T0, name="root", attributes={"user.id": "u1"})])
        self.approval = db.create_approval(Approval(user_id="u1", tool_name="rm"))
        self.schedule = db.upsert_schedule(schedule(user_id="u1"))
        self.eval_run = db.save_eval_run(EvalRun(user_id="u1", eval_type="accuracy"))
        self.job = db.enqueue_job(Job(user_id="u1", kind="k", run_after=T0))
        db.claim_jobs(worker_id="w1", now=T0)

    def valid(self, method: str, param: str) -> Any:
        """A valid value for a required parameter (optional ones keep their defaults)."""
        sid = self.session.session_id
        values: dict[str, Callable[[], Any]] = {
            "session": lambda: Session(user_id="u1"),
            "run": lambda: (ScheduleRun(schedule_id=self.schedule.id) if method == "record_schedule_run"
                            else Run(session_id=sid) if method == "append_run"
                            else Run(run_id=self.run.run_id, session_id=sid, content="edited")),
            "memory": lambda: UserMemory(user_id="u1", memory="m"),
            "memories": lambda: [UserMemory(user_id="u1", memory="m")],
            "content": lambda: KnowledgeContent(user_id="u1"),
            "spans": lambda: [span("tr2", "sp2", T0)],
            "approval": lambda: Approval(user_id="u1"),
            "schedule": lambda: schedule(user_id="u1"),
            "eval_run": lambda: EvalRun(user_id="u1", eval_type="performance"),
            "job": lambda: Job(user_id="u1", kind="k2"),
            "session_id": lambda: sid,
            "run_id": lambda: self.run.run_id,
            "memory_id": lambda: self.memory.memory_id,
            "content_id": lambda: self.content.id,
            "trace_id": lambda: "tr1",
            "approval_id": lambda: self.approval.id,
            "schedule_id": lambda: self.schedule.id,
            "eval_run_id": lambda: self.eval_run.id,
            "schedule_run_id": lambda: "nope",
            "job_id": lambda: self.job.id,
            "session_ids": lambda: ["nope"],
            "memory_ids": lambda: ["nope"],
            "eval_run_ids": lambda: ["nope"],
            "job_ids": lambda: ["nope"],
            "worker_id": lambda: "w1",
            "user_id": lambda: "someone-else",  # required only by clear_memories and delete_user
            "name": lambda: "renamed",
            "status": lambda: "completed" if method == "finish_job" else "approved",
            "resolved_by": lambda: "ops",
            "next_run_at": lambda: T0,
            "lease_seconds": lambda: 30,
            "fp_or_path": lambda: (io.StringIO() if method == "export_jsonl"
                                   else io.StringIO('{"format": "agentkeep-export", "version": 1}\n')),
        }
        return values[param]()

    def arguments(self, method: str) -> tuple[list[str], dict[str, Any]]:
        """The parameter names of `method`, and valid keyword arguments for its required ones."""
        params = list(inspect.signature(getattr(Db, method)).parameters.values())[1:]
        required = {p.name: self.valid(method, p.name) for p in params if p.default is inspect.Parameter.empty}
        return [p.name for p in params], required


RECORD_MODELS = {
    "session": Session, "memory": UserMemory, "memories": UserMemory, "content": KnowledgeContent,
    "spans": Span, "approval": Approval, "schedule": models.Schedule, "eval_run": EvalRun, "job": Job,
}


def _hostile_record(world: World, method: str, param: str, field: str, value: Any) -> Any:
    """A valid record of `param` as a dict, with `field` set to `value` (a list for the bulk
    parameters)."""
    record = world.valid(method, param)
    one = record[0] if isinstance(record, list) else record
    data = dict(one.__dict__)
    data[field] = value
    return [data] if isinstance(record, list) else data


def _call(db: Any, method: str, kwargs: dict[str, Any]) -> None:
    try:
        getattr(db, method)(**kwargs)
    except DbError:
        pass
    # any other exception fails the test, naming the call
    except Exception as exc:  # noqa: BLE001 - reported with the call that raised it
        shown = {k: _short(v) for k, v in kwargs.items()}
        raise AssertionError(f"{method}({shown}) raised {type(exc).__name__}: {exc!s:.300}") from exc


def _short(value: Any) -> str:
    try:
        return repr(value)[:60]
    except ValueError:  # holds an int too long to print
        return f"<a {type(value).__name__} holding an integer too long to print>"


def _record_fields(world: World, method: str, param: str) -> list[str]:
    record = world.valid(method, param)
    one = record[0] if isinstance(record, list) else record
    return list(type(one).model_fields)


def test_every_argument_of_every_method_refuses_hostile_values(db: Any, tmp_path, monkeypatch) -> None:
    """A sweep: each parameter of each method takes each hostile value in turn (the others
    valid), and each field of each record argument too."""
    monkeypatch.chdir(tmp_path)  # a hostile path that happens to be valid is written here
    world = World(db)
    calls = 0
    for method in PUBLIC:
        names, required = world.arguments(method)
        for param in names:
            for value in HOSTILE:
                _call(db, method, {**required, param: value})
                calls += 1
            if param in RECORD_MODELS or (param == "run"):
                for field in _record_fields(world, method, param):
                    for value in HOSTILE:
                        _call(db, method, {**required, param: _hostile_record(world, method, param, field, value)})
                        calls += 1
    assert calls > 5_000


@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_values_in_any_combination(db: Any, data: st.DataObject) -> None:
    """Several arguments hostile at once, in combinations a sweep does not reach."""
    world = getattr(db, "_hostile_world", None)
    if world is None:
        world = World(db)
        db._hostile_world = world
    method = data.draw(st.sampled_from(WITH_ARGUMENTS))
    names, required = world.arguments(method)
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    kwargs = dict(required)
    for name in chosen:
        kwargs[name] = data.draw(st.sampled_from(HOSTILE))
    _call(db, method, kwargs)


def test_every_public_method_passes_the_argument_gate() -> None:
    for cls in (Db, AsyncDb):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                assert getattr(fn, "checked_arguments", False), f"{cls.__name__}.{name} skips the argument checks"


# -- the cases that once leaked a driver or codec error -------------------------------------------


def _cases(world: World) -> dict[str, Callable[[Any], Any]]:
    sid = world.session.session_id
    return {
        "size past 64 bits": lambda db: db.upsert_knowledge(KnowledgeContent(size=2**70)),
        "max_retries past 64 bits": lambda db: db.upsert_schedule(schedule(max_retries=2**70)),
        "after_seq past 64 bits": lambda db: db.list_runs(sid, after_seq=2**70),
        "runs past 64 bits": lambda db: db.get_session(sid, runs=2**70),
        "lone surrogate key": lambda db: db.upsert_session(Session(state={"\udfff": 1})),
        "lone surrogate id": lambda db: db.get_session("\ud800"),
        "lone surrogate name_contains": lambda db: db.list_sessions(user_id="u1", name_contains="\ud800"),
        "lone surrogate search": lambda db: db.list_memories(search="\ud800"),
        "lone surrogate topic": lambda db: db.list_memories(topics=["\ud800"]),
        "int of 5,000 digits": lambda db: db.upsert_session(Session(state={"n": 10**5000})),
        "eval name of 5 MB": lambda db: db.rename_eval_run(world.eval_run.id, FIVE_MB),
        "resolved_by of 300": lambda db: db.resolve_approval(world.approval.id, status="approved",
                                                              resolved_by="x" * 300),
        "cursor past 64 bits": lambda db: db.list_runs(sid, cursor=_cursor("seq", [2**70])),
        "cursor with a lone surrogate": lambda db: db.list_sessions(cursor=_cursor("updated_desc",
                                                                                   [{"t": T0.isoformat()}, "\ud800"])),
        "lease past the year 9999": lambda db: db.claim_due_schedules(worker_id="w", now=dt.datetime.max.replace(
            tzinfo=UTC), lease_seconds=600),
        "time outside 1..9999 in UTC": lambda db: db.upsert_session({"expires_at": dt.datetime(
            1, 1, 1, tzinfo=PLUS_14)}),
        "max_attempts past 64 bits": lambda db: db.enqueue_job(Job(kind="k", max_attempts=2**70)),
        "job lease past the year 9999": lambda db: db.renew_job(world.job.id, worker_id="w1", now=dt.datetime.max.replace(
            tzinfo=UTC)),
        "job result of 5 MB": lambda db: db.finish_job(world.job.id, worker_id="w1", status="completed",
                                                       result={"x": FIVE_MB}),
    }


def _cursor(order: str, values: list) -> str:
    import base64
    import json

    raw = json.dumps([order, values], ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CASE_NAMES = [
    "size past 64 bits", "max_retries past 64 bits", "after_seq past 64 bits", "runs past 64 bits",
    "lone surrogate key", "lone surrogate id", "lone surrogate name_contains", "lone surrogate search",
    "lone surrogate topic", "int of 5,000 digits", "eval name of 5 MB", "resolved_by of 300",
    "cursor past 64 bits", "cursor with a lone surrogate", "lease past the year 9999",
    "time outside 1..9999 in UTC", "max_attempts past 64 bits", "job lease past the year 9999", "job result of 5 MB",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refused_with_invalid_input_and_nothing_written(db: Any, case: str) -> None:
    world = World(db)
    before = snapshot(db)
    with pytest.raises(InvalidInputError):
        _cases(world)[case](db)
    assert snapshot(db) == before


def test_big_integers_inside_json_still_round_trip(db: Any) -> None:
    s = db.upsert_session(Session(state={"big": 2**70, "neg": -(2**80), "digits": 10**4000}))
    assert db.get_session(s.session_id).state == {"big": 2**70, "neg": -(2**80), "digits": 10**4000}


def test_names_a_parameter_without_a_rule() -> None:
    from agentkeep.db.arguments import api

    with pytest.raises(TypeError, match="no argument rule"):

        @api
        def frobnicate(self, gizmo: int) -> None:  # pragma: no cover - never called
            pass
