"""Traces and spans: idempotent ingestion, trace row merge, list filters, stats."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import InvalidInputError, OwnershipError

from ._helpers import T0, all_items, at, dump, ids, span


def _ms(delta: dt.timedelta) -> float:
    return delta.total_seconds() * 1000


ROOT_ATTRS = {
    "agentkeep.run_id": "run-1",
    "agentkeep.session_id": "sess-1",
    "agentkeep.user_id": "alice",
    "agentkeep.agent_id": "agent-1",
    "agentkeep.team_id": "team-1",
    "agentkeep.workflow_id": "wf-1",
}


def test_spans_round_trip(db):
    s = span("t1", "s1", T0, 250, name="llm call", kind="CLIENT", status_code="OK", status_message="fine",
             attributes={"llm.model": "gpt", "n": 3, "nested": {"a": [1, 2]}},
             events=[{"name": "token", "attributes": {"i": 1}}], parent_span_id=None)
    db.write_spans([s])
    got = db.get_spans("t1")
    assert [dump(x) for x in got] == [dump(s)]
    assert db.get_spans("missing") == []
    assert db.get_trace("missing") is None


def test_trace_row_is_merged_from_spans(db):
    root = span("t1", "root", T0, 1000, name="agent.run", status_code="OK", attributes=ROOT_ATTRS)
    child = span("t1", "child", at(0.001), 300, name="tool", parent_span_id="root", status_code="OK")
    late = span("t1", "late", T0 + dt.timedelta(milliseconds=900), 500, name="late", parent_span_id="root",
                status_code="OK")
    db.write_spans([child])
    db.write_spans([root, late])
    t = db.get_trace("t1")
    assert t.trace_id == "t1"
    assert t.name == "agent.run"
    assert t.start_time == T0
    assert t.end_time == T0 + dt.timedelta(milliseconds=1400)
    assert t.duration_ms == pytest.approx(1400)
    assert t.span_count == 3
    assert t.status == "ok"
    assert (t.run_id, t.session_id, t.user_id, t.agent_id, t.team_id, t.workflow_id) == (
        "run-1", "sess-1", "alice", "agent-1", "team-1", "wf-1")
    assert ids(db.get_spans("t1"), "span_id") == {"root", "child", "late"}


def test_write_spans_is_idempotent_on_span_id(db):
    spans = [span("t1", f"s{i}", at(i), 100, parent_span_id=None if i == 0 else "s0") for i in range(4)]
    db.write_spans(spans)
    db.write_spans(spans)
    db.write_spans(spans[:2])
    assert db.get_trace("t1").span_count == 4
    got = db.get_spans("t1")
    assert sorted(s.span_id for s in got) == ["s0", "s1", "s2", "s3"]
    # a rewritten span replaces the stored one
    changed = span("t1", "s1", at(1), 100, parent_span_id="s0", name="renamed")
    db.write_spans([changed])
    assert {s.span_id: s.name for s in db.get_spans("t1")}["s1"] == "renamed"
    assert db.get_trace("t1").span_count == 4


def test_any_error_span_marks_the_trace(db):
    db.write_spans([span("t1", "root", T0, 100, status_code="OK")])
    assert db.get_trace("t1").status == "ok"
    db.write_spans([span("t1", "bad", at(0.01), 10, parent_span_id="root", status_code="ERROR",
                         status_message="boom")])
    assert db.get_trace("t1").status == "error"
    db.write_spans([span("t1", "ok2", at(0.02), 10, parent_span_id="root", status_code="OK")])
    t = db.get_trace("t1")
    assert t.status == "error" and t.span_count == 3 and t.error_count == 1
    db.write_spans([span("t1", "bad", at(0.01), 10, parent_span_id="root", status_code="ERROR"),  # again
                    span("t1", "bad2", at(0.03), 10, parent_span_id="root", status_code="ERROR")])
    assert db.get_trace("t1").error_count == 2  # a span sent twice counts once


@pytest.mark.parametrize(
    "attrs",
    [
        {"run_id": "r", "session_id": "s", "user_id": "u", "agent_id": "a", "team_id": "t", "workflow_id": "w"},
        {"run.id": "r", "session.id": "s", "user.id": "u", "agent.id": "a", "team.id": "t", "workflow.id": "w"},
        {"agentkeep.run_id": "r", "gen_ai.conversation.id": "s", "enduser.id": "u", "gen_ai.agent.id": "a",
         "team_id": "t", "workflow_id": "w"},
    ],
    ids=["plain", "dotted", "semantic-conventions"],
)
def test_trace_ids_from_attribute_spellings(db, attrs):
    db.write_spans([span("t1", "root", T0, 10, attributes=attrs)])
    t = db.get_trace("t1")
    assert (t.run_id, t.session_id, t.user_id, t.agent_id, t.team_id, t.workflow_id) == (
        "r", "s", "u", "a", "t", "w")


def test_one_batch_spanning_several_traces(db):
    db.write_spans([span("ta", "a1", T0, 10), span("tb", "b1", at(1), 20), span("ta", "a2", at(0.1), 10,
                                                                                parent_span_id="a1")])
    assert db.get_trace("ta").span_count == 2
    assert db.get_trace("tb").span_count == 1
    assert ids(db.get_spans("tb"), "span_id") == {"b1"}


def _trace(db, trace_id, start, ms, *, error=False, **attrs):
    db.write_spans([span(trace_id, f"{trace_id}-root", start, ms, name=trace_id,
                         status_code="ERROR" if error else "OK", attributes=attrs)])


def test_list_traces_filters_and_orders(db):
    _trace(db, "t1", at(1), 100, **{"user.id": "alice", "session.id": "s1", "run.id": "r1", "agent.id": "a1"})
    _trace(db, "t2", at(2), 100, error=True,
           **{"user.id": "alice", "session.id": "s2", "run.id": "r2", "team.id": "tm1"})
    _trace(db, "t3", at(3), 100, **{"user.id": "bob", "session.id": "s3", "run.id": "r3", "workflow.id": "w1",
                                    "agent.id": "a1"})
    _trace(db, "t4", at(4), 100)

    def found(**kw):
        return [t.trace_id for t in all_items(db.list_traces, **kw)]

    assert found() == ["t4", "t3", "t2", "t1"]
    assert found(order="start_desc") == ["t4", "t3", "t2", "t1"]
    assert found(order="start_asc") == ["t1", "t2", "t3", "t4"]
    assert found(user_id="alice") == ["t2", "t1"]
    assert found(user_id="carol") == []
    assert found(session_id="s3") == ["t3"]
    assert found(run_id="r1") == ["t1"]
    assert found(agent_id="a1") == ["t3", "t1"]
    assert found(agent_id="a1", user_id="alice") == ["t1"]
    assert found(team_id="tm1") == ["t2"]
    assert found(workflow_id="w1") == ["t3"]
    assert found(status="error") == ["t2"]
    assert found(status="ok") == ["t4", "t3", "t1"]
    assert found(started_after=at(2.5)) == ["t4", "t3"]
    assert found(started_before=at(2.5)) == ["t2", "t1"]
    assert found(started_after=at(1.5), started_before=at(3.5), order="start_asc") == ["t2", "t3"]
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert found(started_after=at(2.5).astimezone(ist)) == ["t4", "t3"]
    assert db.list_traces(user_id="alice", with_total=True, limit=1).total == 2


def test_trace_stats_by_agent(db):
    _trace(db, "a1x", at(1), 100, **{"agent.id": "a1"})
    _trace(db, "a1y", at(2), 200, error=True, **{"agent.id": "a1"})
    _trace(db, "a1z", at(3), 300, **{"agent.id": "a1"})
    _trace(db, "a2x", at(4), 50, **{"agent.id": "a2"})
    stats = {s.key: s for s in db.trace_stats(group_by="agent")}
    a1, a2 = stats["a1"], stats["a2"]
    assert (a1.traces, a1.errors) == (3, 1)
    assert a1.avg_ms == pytest.approx(200)
    assert a1.max_ms == pytest.approx(300)
    assert 200 <= a1.p95_ms <= 300
    assert (a2.traces, a2.errors) == (1, 0)
    assert a2.avg_ms == pytest.approx(50) and a2.max_ms == pytest.approx(50) and a2.p95_ms == pytest.approx(50)
    assert (a1.first_start, a1.last_start, a2.first_start) == (at(1), at(3), at(4))
    late = {s.key: s for s in db.trace_stats(group_by="agent", started_after=at(2.5))}
    assert late["a1"].traces == 1 and late["a1"].max_ms == pytest.approx(300)
    assert late["a2"].traces == 1
    early = {s.key: s for s in db.trace_stats(group_by="agent", started_before=at(2.5))}
    assert early["a1"].traces == 2 and "a2" not in early


@pytest.mark.parametrize("group_by,attr", [("session", "session.id"), ("team", "team.id"),
                                           ("workflow", "workflow.id")])
def test_trace_stats_other_groupings(db, group_by, attr):
    _trace(db, "x1", at(1), 10, **{attr: "k1"})
    _trace(db, "x2", at(2), 30, error=True, **{attr: "k1"})
    _trace(db, "x3", at(3), 70, **{attr: "k2"})
    stats = {s.key: s for s in db.trace_stats(group_by=group_by)}
    assert (stats["k1"].traces, stats["k1"].errors) == (2, 1)
    assert stats["k1"].avg_ms == pytest.approx(20) and stats["k1"].max_ms == pytest.approx(30)
    assert (stats["k2"].traces, stats["k2"].errors) == (1, 0)


def test_trace_stats_unknown_grouping(db):
    with pytest.raises(InvalidInputError):
        db.trace_stats(group_by="planet")


# -- scoped to a user ------------------------------------------------------------------------


def test_get_spans_of_another_users_trace_are_those_of_a_missing_trace(db):
    db.write_spans([span("ta", "a1", at(1), 100, attributes={"user.id": "alice"}),
                    span("ta", "a2", at(1.5), 50, parent_span_id="a1")])
    db.write_spans([span("tb", "b1", at(2), 300, attributes={"user.id": "bob"})])
    db.write_spans([span("tn", "n1", at(3), 10)])  # a trace of no user
    assert [s.span_id for s in db.get_spans("ta", user_id="alice")] == ["a1", "a2"]
    assert [dump(s) for s in db.get_spans("ta", user_id="alice")] == [dump(s) for s in db.get_spans("ta")]
    assert db.get_spans("ta", user_id="bob") == [] == db.get_spans("missing", user_id="bob")
    assert db.get_spans("tn", user_id="alice") == []
    assert db.get_trace("ta", user_id="bob") is None
    assert ids(db.get_spans("tb"), "span_id") == {"b1"}  # unscoped: every trace


def test_trace_stats_of_one_user(db):
    _trace(db, "a1", at(1), 100, **{"user.id": "alice", "agent.id": "ag"})
    _trace(db, "a2", at(2), 300, error=True, **{"user.id": "alice", "agent.id": "ag"})
    _trace(db, "b1", at(3), 50, **{"user.id": "bob", "agent.id": "ag"})
    _trace(db, "n1", at(4), 70, **{"agent.id": "ag"})
    alice = {s.key: s for s in db.trace_stats(group_by="agent", user_id="alice")}
    assert set(alice) == {"ag"}
    assert (alice["ag"].traces, alice["ag"].errors, alice["ag"].max_ms) == (2, 1, pytest.approx(300))
    assert (alice["ag"].first_start, alice["ag"].last_start) == (at(1), at(2))
    bob = db.trace_stats(group_by="agent", user_id="bob")
    assert [(s.key, s.traces, s.errors) for s in bob] == [("ag", 1, 0)]
    assert [(s.key, s.traces) for s in db.trace_stats(group_by="agent")] == [("ag", 4)]
    assert [s.traces for s in db.trace_stats(user_id="alice", started_after=at(1.5))] == [1]
    assert db.trace_stats(user_id="alice", started_before=at(1)) == []
    assert db.trace_stats(group_by="session", user_id="carol") == []


def test_write_spans_for_a_user_joins_only_that_users_traces(db):
    db.write_spans([span("ta", "a1", at(1), 100, attributes={"user.id": "alice"})])
    db.write_spans([span("tn", "n1", at(1), 100)])  # a trace of no user
    db.write_spans([span("ta", "a2", at(1.5), 50, parent_span_id="a1", attributes={"user.id": "alice"}),
                    span("tc", "c1", at(2), 10, attributes={"user.id": "alice"})], user_id="alice")
    assert ids(db.get_spans("ta"), "span_id") == {"a1", "a2"} and db.get_trace("tc").user_id == "alice"
    before = dump(db.get_trace("ta"))
    for batch in ([span("ta", "x1", at(3), 10, attributes={"user.id": "bob"})],
                  [span("tb", "x2", at(3), 10, attributes={"user.id": "bob"}),  # a new trace, and
                   span("ta", "x3", at(3), 10, attributes={"user.id": "bob"})],  # alice's: all refused
                  [span("tn", "x4", at(3), 10, attributes={"user.id": "bob"})]):
        with pytest.raises(OwnershipError):
            db.write_spans(batch, user_id="bob")
    assert dump(db.get_trace("ta")) == before
    assert db.get_trace("tb") is None and ids(db.get_spans("tn"), "span_id") == {"n1"}
    assert {s.span_id for s in db.get_spans("ta")} == {"a1", "a2"}
