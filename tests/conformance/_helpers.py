"""Helpers for the conformance tests: fixed times, record builders, paging, snapshots."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable

from agentkeep.db import (
    Approval,
    EvalRun,
    Job,
    KnowledgeContent,
    Run,
    RunMetrics,
    Schedule,
    ScheduleRun,
    ScheduleTarget,
    Session,
    Span,
    UserMemory,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def at(minutes: float = 0, *, base: dt.datetime = T0) -> dt.datetime:
    return base + dt.timedelta(minutes=minutes)


# -- builders ---------------------------------------------------------------------------


def target(**kw: Any) -> ScheduleTarget:
    kw.setdefault("type", "agent")
    kw.setdefault("id", "agent-1")
    return ScheduleTarget(**kw)


def schedule(user_id: str | None = "alice", **kw: Any) -> Schedule:
    kw.setdefault("cron", "0 * * * *")
    kw.setdefault("target", target())
    return Schedule(user_id=user_id, **kw)


def span(trace_id: str, span_id: str, start: dt.datetime, ms: float = 100, **kw: Any) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        start_time=start,
        end_time=start + dt.timedelta(milliseconds=ms),
        duration_ms=ms,
        **kw,
    )


def run(session_id: str, user_id: str | None = None, **kw: Any) -> Run:
    return Run(session_id=session_id, user_id=user_id, **kw)


def metrics(model: str, inp: int, out: int, cost: float | None = None) -> RunMetrics:
    return RunMetrics(input_tokens=inp, output_tokens=out, total_tokens=inp + out, cost=cost, model=model)


# -- reading ------------------------------------------------------------------------------


def all_items(list_fn: Callable[..., Any], *args: Any, limit: int = 1000, **kw: Any) -> list[Any]:
    """Every item of a list_* call, following next_cursor."""
    items: list[Any] = []
    cursor = None
    for _ in range(10_000):
        page = list_fn(*args, limit=limit, cursor=cursor, **kw)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError("pagination did not terminate")


def ids(items: Iterable[Any], attr: str) -> set[str]:
    return {getattr(x, attr) for x in items}


def later_write(write: Callable[[], Any], after: dt.datetime) -> Any:
    """Repeat `write()` until the record it returns has updated_at > after (the db's clock
    may have a coarse resolution); uses the db's own timestamps, never the local clock."""
    for _ in range(100_000):
        record = write()
        if record.updated_at > after:
            return record
    raise AssertionError("the db's updated_at never advanced")


def dump(record: Any, exclude: set[str] | None = None) -> dict:
    return record.model_dump(mode="json", exclude=exclude)


# -- table kinds --------------------------------------------------------------------------

KINDS = (
    "sessions", "runs", "memories", "knowledge", "traces", "spans", "approvals",
    "schedules", "schedule_runs", "metrics", "eval_runs", "jobs",
)


def kind_of(table: str) -> str | None:
    """Map a table name (whatever its prefix) to its logical kind."""
    t = table.lower()
    if "schedule" in t and "run" in t:
        return "schedule_runs"
    if "eval" in t:
        return "eval_runs"
    if "job" in t:
        return "jobs"
    if "schedule" in t:
        return "schedules"
    if "run" in t:
        return "runs"
    if "session" in t:
        return "sessions"
    if "memor" in t:
        return "memories"
    if "knowledge" in t:
        return "knowledge"
    if "span" in t:
        return "spans"
    if "trace" in t:
        return "traces"
    if "approval" in t:
        return "approvals"
    if "metric" in t:
        return "metrics"
    return None


def by_kind(result: dict[str, int]) -> dict[str, int]:
    """Sum a {table: count} result per logical kind, dropping zeros."""
    out: dict[str, int] = {}
    for table, count in result.items():
        assert isinstance(table, str) and isinstance(count, int) and not isinstance(count, bool), (table, count)
        assert count >= 0, (table, count)
        kind = kind_of(table)
        if count:
            out[kind or table] = out.get(kind or table, 0) + count
    return out


# -- strict JSON equality -------------------------------------------------------------


def strict_equal(a: Any, b: Any, path: str = "$") -> None:
    """Assert a == b with JSON types kept apart (True is not 1, 1 is not 1.0)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} {a!r:.80} != {type(b).__name__} {b!r:.80}"
    if isinstance(a, dict):
        assert list(sorted(a)) == list(sorted(b)), f"{path}: keys {sorted(a)!r:.200} != {sorted(b)!r:.200}"
        for k in a:
            strict_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            strict_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r:.200} != {b!r:.200}"


# -- a full snapshot through the public API ------------------------------------------------


def snapshot(db: Any) -> dict[str, list[dict]]:
    """Every record of every table, as JSON dumps sorted by key."""
    out: dict[str, list[dict]] = {}
    sessions = all_items(db.list_sessions)
    out["sessions"] = sorted((dump(s, {"runs"}) for s in sessions), key=lambda d: d["session_id"])
    runs = [r for s in sessions for r in all_items(db.list_runs, s.session_id)]
    out["runs"] = sorted((dump(r) for r in runs), key=lambda d: d["run_id"])
    out["memories"] = sorted((dump(m) for m in all_items(db.list_memories)), key=lambda d: d["memory_id"])
    out["knowledge"] = sorted((dump(k) for k in all_items(db.list_knowledge)), key=lambda d: d["id"])
    traces = all_items(db.list_traces)
    out["traces"] = sorted((dump(t) for t in traces), key=lambda d: d["trace_id"])
    out["spans"] = sorted(
        (dump(sp) for t in traces for sp in db.get_spans(t.trace_id)), key=lambda d: d["span_id"]
    )
    out["approvals"] = sorted((dump(a) for a in all_items(db.list_approvals)), key=lambda d: d["id"])
    schedules = all_items(db.list_schedules)
    out["schedules"] = sorted((dump(s) for s in schedules), key=lambda d: d["id"])
    out["schedule_runs"] = sorted(
        (dump(r) for s in schedules for r in all_items(db.list_schedule_runs, s.id)), key=lambda d: d["id"]
    )
    out["eval_runs"] = sorted((dump(e) for e in all_items(db.list_eval_runs)), key=lambda d: d["id"])
    out["jobs"] = sorted((dump(j) for j in all_items(db.list_jobs)), key=lambda d: d["id"])
    users = {s.user_id for s in sessions if s.user_id} | {r.user_id for r in runs if r.user_id}
    rows = {(str(m.date), m.user_id): dump(m) for m in db.get_metrics()}
    for user in users:
        rows.update({(str(m.date), m.user_id): dump(m) for m in db.get_metrics(user_id=user)})
    out["metrics"] = [rows[k] for k in sorted(rows)]
    return out


# -- seeding every table ---------------------------------------------------------------


def seed_user(db: Any, user: str) -> dict[str, list[str]]:
    """One user's records in every table: 2 sessions with 3 runs, 2 memories, 1 knowledge
    row, 1 approval, 1 schedule with 2 schedule runs, 1 eval run, 1 trace with 2 spans,
    2 jobs (one of them claimed)."""
    day = dt.datetime(2024, 2, 1, 10, tzinfo=UTC)
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for i in range(2):
        s = db.upsert_session(Session(user_id=user, agent_id="ag", name=f"{user} chat {i}", created_at=day,
                                      state={"i": i, "ü": "ñ", "nested": {"a": [1, 2.5, None, True]}}))
        out["sessions"].append(s.session_id)
    for i, sid in enumerate([out["sessions"][0], out["sessions"][0], out["sessions"][1]]):
        r = db.append_run(Run(session_id=sid, agent_id="ag", content=f"answer {i} \u2603", input={"q": i},
                              messages=[{"role": "user", "content": "hi"}], created_at=day,
                              metrics=metrics("model-x", 3, 4, 0.5)))
        out["runs"].append(r.run_id)
    for i in range(2):
        m = db.upsert_memory(UserMemory(user_id=user, memory=f"{user} fact {i}", topics=["t", f"t{i}"]))
        out["memories"].append(m.memory_id)
    k = db.upsert_knowledge(KnowledgeContent(user_id=user, name=f"{user}.pdf", metadata={"p": 1}, linked_to="kb"))
    out["knowledge"].append(k.id)
    a = db.create_approval(Approval(user_id=user, tool_name="rm", tool_args={"x": 1}, session_id=out["sessions"][0]))
    out["approvals"].append(a.id)
    sc = db.upsert_schedule(schedule(user_id=user, name=f"{user} job", next_run_at=day))
    out["schedules"].append(sc.id)
    for i in range(2):
        sr = db.record_schedule_run(ScheduleRun(schedule_id=sc.id, attempt=i + 1, started_at=day, status="success",
                                                output={"i": i}))
        out["schedule_runs"].append(sr.id)
    e = db.save_eval_run(EvalRun(user_id=user, eval_type="accuracy", name=f"{user} eval", result={"ok": 1},
                                 score=0.5))
    out["eval_runs"].append(e.id)
    for i in range(2):
        j = db.enqueue_job(Job(user_id=user, kind=f"{user}.work", payload={"i": i, "ü": [1.5, None]}, run_after=day))
        out["jobs"].append(j.id)
    db.claim_jobs(worker_id=f"{user}-worker", kinds=[f"{user}.work"], now=day)
    trace_id = f"trace-{user}"
    db.write_spans([
        span(trace_id, f"{trace_id}-root", day, 100, name="root", status_code="OK",
             attributes={"user.id": user, "session.id": out["sessions"][0], "agent.id": "ag"}),
        span(trace_id, f"{trace_id}-child", day, 50, name="child", parent_span_id=f"{trace_id}-root"),
    ])
    out["traces"].append(trace_id)
    out["spans"] += [f"{trace_id}-root", f"{trace_id}-child"]
    return out
