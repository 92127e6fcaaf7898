"""Metrics: refresh_metrics (per day, all users and per user, incremental), get_metrics."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import Run, Session

from ._helpers import UTC, metrics

DAY1 = dt.date(2024, 3, 1)
DAY2 = dt.date(2024, 3, 2)


def _t(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _activity(db):
    db.upsert_session(Session(session_id="sa", user_id="alice", created_at=_t(DAY1, 9)))
    db.upsert_session(Session(session_id="sb", user_id="bob", created_at=_t(DAY1, 10)))
    db.upsert_session(Session(session_id="sa2", user_id="alice", created_at=_t(DAY2, 9)))
    db.append_run(Run(session_id="sa", agent_id="ag", created_at=_t(DAY1, 9),
                      metrics=metrics("gpt-4o", 10, 5, 0.01)))
    db.append_run(Run(session_id="sa", agent_id="ag", team_id="tm", created_at=_t(DAY1, 11),
                      metrics=metrics("claude", 20, 10, 0.02)))
    db.append_run(Run(session_id="sb", team_id="tm", workflow_id="wf", created_at=_t(DAY1, 12),
                      metrics=metrics("gpt-4o", 1, 1, 0.001)))
    db.append_run(Run(session_id="sa2", agent_id="ag", created_at=_t(DAY2, 9),
                      metrics=metrics("gpt-4o", 100, 50, 0.1)))


def _rows(db, **kw):
    if kw.get("user_id") == "":
        # the all-users rows (user_id ""): ask unscoped, keep the "" rows
        del kw["user_id"]
        return {(m.date, m.user_id): m for m in db.get_metrics(**kw) if m.user_id == ""}
    return {(m.date, m.user_id): m for m in db.get_metrics(**kw)}


def _check(row, *, agent=0, team=0, workflow=0, sessions=0, users=0, inp=0, out=0, cost=0.0, models=()):
    assert (row.agent_runs, row.team_runs, row.workflow_runs) == (agent, team, workflow)
    assert (row.sessions, row.users) == (sessions, users)
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (inp, out, inp + out)
    assert row.cost == pytest.approx(cost)
    assert set(row.by_model) == set(models)


def test_refresh_metrics_per_day_for_all_users_and_per_user(db):
    _activity(db)
    written = db.refresh_metrics()
    everyone = _rows(db, user_id="")
    alice = _rows(db, user_id="alice")
    bob = _rows(db, user_id="bob")
    assert set(everyone) == {(DAY1, ""), (DAY2, "")}
    assert set(alice) == {(DAY1, "alice"), (DAY2, "alice")}
    assert set(bob) == {(DAY1, "bob")}
    assert written == 5
    _check(everyone[(DAY1, "")], agent=1, team=1, workflow=1, sessions=2, users=2, inp=31, out=16, cost=0.031,
           models={"gpt-4o", "claude"})
    _check(everyone[(DAY2, "")], agent=1, sessions=1, users=1, inp=100, out=50, cost=0.1, models={"gpt-4o"})
    _check(alice[(DAY1, "alice")], agent=1, team=1, sessions=1, users=1, inp=30, out=15, cost=0.03,
           models={"gpt-4o", "claude"})
    _check(alice[(DAY2, "alice")], agent=1, sessions=1, users=1, inp=100, out=50, cost=0.1, models={"gpt-4o"})
    _check(bob[(DAY1, "bob")], workflow=1, sessions=1, users=1, inp=1, out=1, cost=0.001, models={"gpt-4o"})


def test_refresh_metrics_is_incremental(db):
    _activity(db)
    assert db.refresh_metrics() == 5
    before = {k: m.model_dump() for k, m in _rows(db, user_id="").items()}
    assert db.refresh_metrics() == 0
    assert {k: m.model_dump() for k, m in _rows(db, user_id="").items()} == before
    db.append_run(Run(session_id="sb", agent_id="ag", created_at=_t(DAY2, 15), metrics=metrics("claude", 2, 3, 1.0)))
    written = db.refresh_metrics()
    assert 1 <= written <= 3  # only day 2 rows: "", alice, bob
    everyone = _rows(db, user_id="")
    assert everyone[(DAY1, "")].model_dump() == before[(DAY1, "")]
    _check(everyone[(DAY2, "")], agent=2, sessions=1, users=2, inp=102, out=53, cost=1.1,
           models={"gpt-4o", "claude"})
    _check(_rows(db, user_id="bob")[(DAY2, "bob")], agent=1, users=1, inp=2, out=3, cost=1.0, models={"claude"})
    assert db.refresh_metrics() == 0


def test_refresh_on_an_empty_db_writes_nothing(db):
    assert db.refresh_metrics() == 0
    assert db.get_metrics() == []


def test_get_metrics_filters(db):
    _activity(db)
    db.refresh_metrics()
    assert set(_rows(db, user_id="", start_date=DAY2)) == {(DAY2, "")}
    assert set(_rows(db, user_id="", end_date=DAY1)) == {(DAY1, "")}
    assert set(_rows(db, user_id="alice", start_date=DAY1, end_date=DAY1)) == {(DAY1, "alice")}
    assert set(_rows(db, user_id="", start_date=dt.date(2024, 3, 3))) == set()
    assert _rows(db, user_id="carol") == {}
    unscoped = _rows(db)
    assert {(DAY1, ""), (DAY2, "")} <= set(unscoped)


def _nearest_rank(values: list[float], q: int) -> float | None:
    import math

    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def test_errors_and_latency_per_agent_match_the_raw_runs(db):
    import random

    rng = random.Random(17)
    raw = []
    for i in range(60):
        day = (DAY1, DAY2)[i % 2]
        user = ("alice", "bob", "carol")[i % 3]
        sid = f"s{i % 12}"
        if db.get_session(sid) is None:
            db.upsert_session(Session(session_id=sid, user_id=user, created_at=_t(day, 8)))
        user = db.get_session(sid).user_id
        run = Run(session_id=sid, agent_id=("writer", "coder")[i % 2 if i % 5 else 0], user_id=user,
                  status="error" if rng.random() < 0.25 else "completed", created_at=_t(day, 9 + i % 10),
                  metrics=metrics("m1", rng.randint(1, 50), rng.randint(1, 20), 0.0))
        run.metrics.duration_ms = round(rng.uniform(10, 2000), 3)
        raw.append(db.append_run(run))
    db.refresh_metrics(now=_t(DAY2, 23))
    for day in (DAY1, DAY2):
        for user in ("", "alice", "bob", "carol"):
            runs = [r for r in raw if r.created_at.date() == day and user in ("", r.user_id)]
            [row] = [m for m in db.get_metrics(start_date=day, end_date=day, user_id=user or None)
                     if m.user_id == user]
            assert row.errors == sum(r.status == "error" for r in runs)
            assert row.agent_runs == len(runs)
            for agent in {r.agent_id for r in runs}:
                mine = [r for r in runs if r.agent_id == agent]
                by = row.by_agent[agent]
                assert (by["runs"], by["errors"]) == (len(mine), sum(r.status == "error" for r in mine))
                assert by["total_tokens"] == sum(r.metrics.total_tokens for r in mine)
                for q in (50, 95, 99):
                    assert by[f"p{q}_ms"] == pytest.approx(_nearest_rank([r.metrics.duration_ms for r in mine], q))
            assert set(row.by_agent) == {r.agent_id for r in runs}
