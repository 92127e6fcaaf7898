"""A tour of agentkeep: fill every table of a db with a little of everything, then show it.

    python -m agentkeep.demo                   # an embedded SQLite file, ./agentkeep-demo.db
    python -m agentkeep.demo --db json://./keep
    agentkeep demo --db sqlite:///other.db

Every run adds new records (fresh ids), so it can be run again and again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

DEFAULT_DEMO_URL = "sqlite:///agentkeep-demo.db"
UTC = dt.timezone.utc

# The logical tables the demo fills, in the order it prints them.
TABLES = (
    "sessions",
    "runs",
    "memories",
    "knowledge",
    "traces",
    "spans",
    "approvals",
    "schedules",
    "schedule_runs",
    "metrics",
    "eval_runs",
)

_USERS = {
    "alice": {
        "agent_id": "support-agent",
        "name": "Refund for a double charge",
        "turns": [
            ("I was charged twice for my March invoice.", "I see two charges of $49 on March 3rd. I have asked for a refund of the second one."),
            ("How long will the refund take?", "Refunds reach your card in 3 to 5 business days."),
        ],
        "memories": [
            ("Prefers short answers without emoji.", ["preferences", "style"]),
            ("Is on the Team plan, billed monthly.", ["billing"]),
        ],
    },
    "bob": {
        "agent_id": "research-agent",
        "name": "Comparing vector databases",
        "turns": [
            ("Which vector store should I use for 2M documents?", "For 2M documents, pgvector with an HNSW index is a good start if you already run PostgreSQL."),
            ("And if I need hybrid search?", "Combine pgvector similarity with PostgreSQL full-text ranking, fused by reciprocal rank."),
            ("Summarise that in one line.", "pgvector + full-text, fused by rank."),
        ],
        "memories": [
            ("Runs PostgreSQL 15 in production.", ["infrastructure", "databases"]),
            ("Works on a search product for legal documents.", ["work"]),
        ],
    },
}


# --------------------------------------------------------------------------- filling


def fill(db: Any, *, now: Optional[dt.datetime] = None) -> dict[str, Any]:
    """Write a little of everything to `db` through the public API; return what was made."""
    from croniter import croniter

    from agentkeep.db import (
        Approval,
        EvalRun,
        KnowledgeContent,
        Run,
        RunMetrics,
        Schedule,
        ScheduleRun,
        ScheduleTarget,
        Session,
        Span,
        UserMemory,
        new_id,
    )

    now = now or dt.datetime.now(UTC)
    made: dict[str, Any] = {"sessions": [], "runs": [], "traces": []}
    db.create_tables()

    # Sessions with runs (messages and token metrics), one per user, plus a team session.
    for user_id, spec in _USERS.items():
        session = db.upsert_session(
            Session(
                session_id=new_id(),
                session_type="agent",
                user_id=user_id,
                agent_id=spec["agent_id"],
                name=spec["name"],
                state={"turns": len(spec["turns"]), "locale": "en"},
                metadata={"source": "agentkeep.demo"},
            ),
            expected_revision=0,
        )
        made["sessions"].append(session)
        history: list[dict[str, Any]] = []
        for i, (question, answer) in enumerate(spec["turns"]):
            history = history + [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            input_tokens = 120 + 40 * i + len(question) // 4
            output_tokens = 30 + len(answer) // 4
            run = db.append_run(
                Run(
                    session_id=session.session_id,
                    user_id=user_id,
                    agent_id=spec["agent_id"],
                    status="completed",
                    input=question,
                    content=answer,
                    messages=[{"role": "system", "content": "You are a helpful assistant."}] + history,
                    metrics=RunMetrics(
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                        total_tokens=input_tokens + output_tokens,
                        cost=round((input_tokens * 0.15 + output_tokens * 0.6) / 1_000_000, 8),
                        duration_ms=350.0 + 120 * i,
                        model="gpt-4o-mini",
                        provider="openai",
                    ),
                    metadata={"turn": i + 1},
                )
            )
            made["runs"].append(run)
        # A summary written with compare-and-set on the revision we just read.
        current = db.get_session(session.session_id, user_id=user_id)
        summary = {"text": f"{len(spec['turns'])} turns about: {spec['name'].lower()}"}
        db.upsert_session(current.model_copy(update={"summary": summary}), expected_revision=current.revision)

    team_session = db.upsert_session(
        Session(
            session_id=new_id(),
            session_type="team",
            user_id="alice",
            team_id="triage-team",
            name="Triage: login errors",
            state={"assigned_to": "support-agent"},
        )
    )
    made["sessions"].append(team_session)
    made["runs"].append(
        db.append_run(
            Run(
                session_id=team_session.session_id,
                user_id="alice",
                team_id="triage-team",
                input="Users report 500 errors at login since 9:00.",
                content="Routed to the support agent; the auth service is being restarted.",
                messages=[
                    {"role": "user", "content": "Users report 500 errors at login since 9:00."},
                    {"role": "assistant", "content": "Routing to support-agent.", "name": "triage-team"},
                ],
                metrics=RunMetrics(input_tokens=210, output_tokens=64, total_tokens=274, model="claude-3-5-haiku", provider="anthropic"),
            )
        )
    )

    # Memories with topics.
    made["memories"] = db.upsert_memories(
        [
            UserMemory(memory_id=new_id(), user_id=user_id, memory=text, topics=topics, agent_id=spec["agent_id"])
            for user_id, spec in _USERS.items()
            for text, topics in spec["memories"]
        ]
    )

    # Knowledge contents: one shared document, one private to alice.
    made["knowledge"] = [
        db.upsert_knowledge(
            KnowledgeContent(
                id=new_id(),
                name="refund-policy.pdf",
                description="When and how refunds are granted.",
                type="application/pdf",
                size=182_304,
                status="completed",
                metadata={"pages": 6, "source": "agentkeep.demo"},
            )
        ),
        db.upsert_knowledge(
            KnowledgeContent(
                id=new_id(),
                name="alice-contract.md",
                type="text/markdown",
                size=4_210,
                status="processing",
                user_id="alice",
            )
        ),
    ]

    # A trace with spans for alice's first run (write_spans maintains the trace row).
    first_run = made["runs"][0]
    trace_id = new_id()
    root_id, llm_id, tool_id = new_id()[:16], new_id()[:16], new_id()[:16]
    start = now - dt.timedelta(seconds=2)
    ids = {
        "agentkeep.run_id": first_run.run_id,
        "agentkeep.session_id": first_run.session_id,
        "agentkeep.user_id": "alice",
        "agentkeep.agent_id": "support-agent",
    }
    spans = [
        Span(span_id=root_id, trace_id=trace_id, name="support-agent.run", kind="INTERNAL", status_code="OK",
             start_time=start, end_time=start + dt.timedelta(milliseconds=900), duration_ms=900.0, attributes=ids),
        Span(span_id=llm_id, trace_id=trace_id, parent_span_id=root_id, name="openai.chat", kind="CLIENT",
             status_code="OK", start_time=start + dt.timedelta(milliseconds=20),
             end_time=start + dt.timedelta(milliseconds=620), duration_ms=600.0,
             attributes={**ids, "llm.model_name": "gpt-4o-mini", "llm.token_count.total": 190},
             events=[{"name": "first_token", "time_ms": 180}]),
        Span(span_id=tool_id, trace_id=trace_id, parent_span_id=root_id, name="tool.lookup_invoice",
             kind="INTERNAL", status_code="OK", start_time=start + dt.timedelta(milliseconds=640),
             end_time=start + dt.timedelta(milliseconds=880), duration_ms=240.0,
             attributes={**ids, "tool.args": {"invoice": "2024-03"}}),
    ]
    db.write_spans(spans)
    db.write_spans(spans[1:])  # idempotent on span_id: nothing doubles
    made["traces"].append(db.get_trace(trace_id))

    # An approval that gets resolved, and one left pending.
    approval = db.create_approval(
        Approval(
            id=new_id(),
            run_id=first_run.run_id,
            session_id=first_run.session_id,
            user_id="alice",
            agent_id="support-agent",
            tool_name="issue_refund",
            tool_args={"amount": 49.0, "currency": "USD"},
            requested_by="support-agent",
            expires_at=now + dt.timedelta(days=1),
        )
    )
    made["approval"] = db.resolve_approval(
        approval.id, status="approved", resolved_by="alice", resolution={"note": "ok, refund it"}, user_id="alice"
    )
    db.create_approval(
        Approval(
            id=new_id(),
            user_id="bob",
            agent_id="research-agent",
            tool_name="send_email",
            tool_args={"to": "team@example.com", "subject": "Vector DB notes"},
            requested_by="research-agent",
        )
    )

    # A schedule: created, claimed by a worker, run, released with its next due time.
    schedule = db.upsert_schedule(
        Schedule(
            id=new_id(),
            name="nightly memory digest",
            cron="0 3 * * *",
            timezone="UTC",
            target=ScheduleTarget(type="agent", id="support-agent", payload={"input": "Summarise yesterday."}),
            user_id="alice",
            max_retries=2,
            timeout_seconds=120,
            next_run_at=now - dt.timedelta(seconds=1),  # due now, so the worker below picks it up
        ),
        expected_revision=0,
    )
    worker = f"demo-worker-{new_id()[-6:]}"
    due = schedule.next_run_at or now
    claim_at = now if due <= now else due + dt.timedelta(seconds=1)
    claimed = db.claim_due_schedules(worker_id=worker, now=claim_at, lease_seconds=60, limit=1000)
    for s in claimed:  # earlier demo runs' schedules may be due too; this worker runs them all
        if s.id == schedule.id:
            made["schedule_run"] = db.record_schedule_run(
                ScheduleRun(
                    id=new_id(),
                    schedule_id=s.id,
                    attempt=1,
                    status="success",
                    started_at=claim_at,
                    finished_at=claim_at + dt.timedelta(seconds=3),
                    output={"digest": "2 memories, 1 approval"},
                    run_id=first_run.run_id,
                    session_id=first_run.session_id,
                )
            )
        next_at = croniter(s.cron, claim_at.astimezone(UTC)).get_next(dt.datetime)
        db.release_schedule(s.id, worker_id=worker, next_run_at=next_at)
    if "schedule_run" not in made:  # the claim did not return our schedule: still record a run
        made["schedule_run"] = db.record_schedule_run(
            ScheduleRun(id=new_id(), schedule_id=schedule.id, status="skipped", started_at=now, finished_at=now,
                        error="not due")
        )
    made["schedule"] = db.get_schedule(schedule.id)

    # Daily metrics, computed incrementally from the runs and sessions above.
    made["metric_rows_written"] = db.refresh_metrics()

    # An eval run.
    made["eval_run"] = db.save_eval_run(
        EvalRun(
            id=new_id(),
            name="refund answers",
            eval_type="accuracy",
            agent_id="support-agent",
            model="gpt-4o-mini",
            input={"cases": 20},
            result={"passed": 18, "failed": 2},
            score=0.9,
            user_id="alice",
        )
    )
    return made


# --------------------------------------------------------------------------- reading back


def _all_pages(list_fn: Callable[..., Any], **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = list_fn(limit=1000, cursor=cursor, **kwargs)
        items.extend(page.items)
        cursor = page.next_cursor
        if not cursor or not page.items:
            return items


def _total(list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    page = list_fn(*args, limit=1, with_total=True, **kwargs)
    return page.total if page.total is not None else len(page.items)


def _users(sessions: list[Any]) -> list[str]:
    return sorted({s.user_id for s in sessions if s.user_id})


def count_rows(db: Any) -> dict[str, int]:
    """Rows per logical table, counted through the public API (works on every backend)."""
    sessions = _all_pages(db.list_sessions)
    traces = _all_pages(db.list_traces)
    schedules = _all_pages(db.list_schedules)
    return {
        "sessions": len(sessions),
        "runs": sum(_total(db.list_runs, s.session_id) for s in sessions),
        "memories": _total(db.list_memories),
        "knowledge": _total(db.list_knowledge),
        "traces": len(traces),
        "spans": sum(len(db.get_spans(t.trace_id)) for t in traces),
        "approvals": _total(db.list_approvals),
        "schedules": len(schedules),
        "schedule_runs": sum(_total(db.list_schedule_runs, s.id) for s in schedules),
        # get_metrics() without user_id gives the all-users rows; per-user rows are asked per user.
        "metrics": len(db.get_metrics()) + sum(len(db.get_metrics(user_id=u)) for u in _users(sessions)),
        "eval_runs": _total(db.list_eval_runs),
    }


def _short(value: Any, width: int = 40) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _samples(db: Any, table: str, n: int = 3) -> tuple[list[str], list[list[Any]]]:
    """A few recent rows of a logical table: (column names, rows)."""
    if table == "sessions":
        items = db.list_sessions(limit=n).items
        return ["session_id", "type", "user", "name", "rev"], [
            [s.session_id, s.session_type, s.user_id, s.name, s.revision] for s in items
        ]
    if table == "runs":
        items = []
        for session in db.list_sessions(limit=n).items:  # the latest runs of the latest sessions
            items.extend(reversed(db.list_runs(session.session_id, last=n - len(items)).items))
            if len(items) >= n:
                break
        return ["session_id", "seq", "status", "tokens", "model", "content"], [
            [r.session_id, r.seq, r.status, r.metrics.total_tokens, r.metrics.model, r.content] for r in items
        ]
    if table == "memories":
        items = db.list_memories(limit=n).items
        return ["user", "memory", "topics"], [[m.user_id, m.memory, ", ".join(m.topics)] for m in items]
    if table == "knowledge":
        items = db.list_knowledge(limit=n).items
        return ["name", "type", "size", "status", "owner"], [
            [k.name, k.type, k.size, k.status, k.user_id or "(shared)"] for k in items
        ]
    if table == "traces":
        items = db.list_traces(limit=n).items
        return ["trace_id", "name", "status", "spans", "ms", "user"], [
            [t.trace_id, t.name, t.status, t.span_count, t.duration_ms, t.user_id] for t in items
        ]
    if table == "spans":
        trace = next(iter(db.list_traces(limit=1).items), None)
        items = db.get_spans(trace.trace_id)[:n] if trace else []
        return ["span_id", "name", "kind", "status", "ms"], [
            [s.span_id, s.name, s.kind, s.status_code, s.duration_ms] for s in items
        ]
    if table == "approvals":
        items = db.list_approvals(limit=n).items
        return ["tool", "status", "user", "resolved_by"], [[a.tool_name, a.status, a.user_id, a.resolved_by] for a in items]
    if table == "schedules":
        items = db.list_schedules(limit=n).items
        return ["name", "cron", "next_run_at", "locked_by", "rev"], [
            [s.name, s.cron, s.next_run_at, s.locked_by, s.revision] for s in items
        ]
    if table == "schedule_runs":
        schedule = next(iter(db.list_schedules(limit=1).items), None)
        items = db.list_schedule_runs(schedule.id, limit=n).items if schedule else []
        return ["schedule_id", "attempt", "status", "started_at"], [
            [r.schedule_id, r.attempt, r.status, r.started_at] for r in items
        ]
    if table == "metrics":
        rows = db.get_metrics() + [r for u in _users(db.list_sessions(limit=100).items) for r in db.get_metrics(user_id=u)]
        items = sorted(rows, key=lambda m: (m.date, m.user_id == "", m.user_id), reverse=True)[:n]
        return ["date", "user", "agent runs", "team runs", "tokens", "cost"], [
            [m.date, m.user_id or "(all)", m.agent_runs, m.team_runs, m.total_tokens, round(m.cost, 6)] for m in items
        ]
    if table == "eval_runs":
        items = db.list_eval_runs(limit=n).items
        return ["name", "type", "model", "score"], [[e.name, e.eval_type, e.model, e.score] for e in items]
    raise KeyError(table)


def show(db: Any, console: "Console", *, title: str = "") -> dict[str, int]:
    """Print rows per table with a few samples, then the schema status; return the counts."""
    from rich.table import Table

    from agentkeep.report import render_schema_status

    counts = count_rows(db)
    summary = Table(title=title or "What the db holds", title_justify="left")
    summary.add_column("table", style="bold")
    summary.add_column("rows", justify="right")
    for table in TABLES:
        summary.add_row(table, str(counts[table]))
    console.print(summary)
    for table in TABLES:
        columns, rows = _samples(db, table)
        sample = Table(title=f"{table} (latest {len(rows)} of {counts[table]})", title_justify="left")
        for column in columns:
            sample.add_column(column, overflow="ellipsis", max_width=44)
        for row in rows:
            sample.add_row(*(_short(v, 12 if c.endswith("_id") else 40) for c, v in zip(columns, row)))
        console.print(sample)
    render_schema_status(db.schema_status(), console, title="Schema status")
    return counts


def run_demo(url: str = DEFAULT_DEMO_URL, *, console: Optional["Console"] = None) -> dict[str, int]:
    """Fill the db at `url`, print what it holds, and return the rows per table."""
    from rich.console import Console

    from agentkeep.db.urls import connect

    console = console or Console()
    db = connect(url)
    try:
        earlier = db.list_sessions(limit=1, with_total=True).total  # a rerun appends: say so
        made = fill(db)
        where = (f"appended to {url}, which already held {earlier} session(s)" if earlier
                 else f"created at {url}")
        console.print(
            f"[bold]agentkeep demo[/bold] ({where}): wrote {len(made['sessions'])} sessions, {len(made['runs'])} "
            f"runs, {len(made['memories'])} memories, {len(made['knowledge'])} knowledge contents, 1 trace, "
            f"2 approvals, 1 schedule (claimed and released), 1 schedule run, {made['metric_rows_written']} "
            "metric rows and 1 eval run"
        )
        return show(db, console, title="Rows per table")
    finally:
        db.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkeep.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=DEFAULT_DEMO_URL, metavar="URL", help=f"db URL (default: {DEFAULT_DEMO_URL})")
    args = parser.parse_args(argv)
    from agentkeep.report import user_error_message

    try:
        run_demo(args.db)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
