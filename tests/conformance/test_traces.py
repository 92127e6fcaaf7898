"""Traces and spans: idempotent ingestion, trace row merge, list filters, stats."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3

import pytest

from agentkeep.db import InvalidInputError, OwnershipError
from tests.backends._helpers import statements
from tests.conformance.backends import BY_NAME

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


# -- token, cost, model and tool rollups -------------------------------------------------------

IN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
COST_KEYS = ("gen_ai.usage.cost", "agentkeep.cost", "llm.cost.total")


def _reported(spans, keys):
    """What the spans report under the first of `keys` each has."""
    return sum(next(s.attributes[k] for k in keys if k in s.attributes) for s in spans)


def _run_spans(trace_id, start=T0, prefix=""):
    """One agent run as its spans: the agent span (with the run's totals, as agentkeep's own
    tracing writes it), two chat calls (the GenAI conventions' current and older names), an
    OpenInference chain (with its children's totals) around an OpenInference LLM call whose
    reported total also counts reasoning tokens, and three tool calls (two of one tool).
    Returns (the agent span, the LLM-call spans, the other spans)."""
    p = prefix
    chat1 = span(trace_id, f"{p}chat1", at(0.01, base=start), 800, name="chat gpt-4o", kind="CLIENT",
                 parent_span_id=f"{p}agent", status_code="OK",
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                             "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 120,
                             "gen_ai.usage.output_tokens": 31, "gen_ai.usage.cost": 0.0021})
    chat2 = span(trace_id, f"{p}chat2", at(0.03, base=start), 600, name="chat gpt-4o-mini", kind="CLIENT",
                 parent_span_id=f"{p}agent",
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                             "gen_ai.usage.prompt_tokens": 300, "gen_ai.usage.completion_tokens": 12,
                             "agentkeep.cost": 0.0004})
    llm = span(trace_id, f"{p}llm", at(0.05, base=start), 400, name="ChatAnthropic", parent_span_id=f"{p}chain",
               attributes={"openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-sonnet",
                           "llm.token_count.prompt": 40, "llm.token_count.completion": 50,
                           "llm.token_count.total": 100, "llm.cost.total": 0.01})
    calls = [chat1, chat2, llm]
    inp, out = _reported(calls, IN_KEYS), _reported(calls, OUT_KEYS)
    agent = span(trace_id, f"{p}agent", start, 3000, name="invoke_agent support", status_code="OK",
                 attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "gpt-4o",
                             "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
                             "agentkeep.cost": _reported(calls, COST_KEYS), "user.id": "alice"})
    chain = span(trace_id, f"{p}chain", at(0.04, base=start), 500, name="RunnableSequence",
                 parent_span_id=f"{p}agent",
                 attributes={"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 40,
                             "llm.token_count.completion": 50, "llm.token_count.total": 100})
    tools = [
        span(trace_id, f"{p}tool1", at(0.02, base=start), 50, name="execute_tool search", parent_span_id=f"{p}agent",
             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        span(trace_id, f"{p}tool2", at(0.025, base=start), 50, name="execute_tool search",
             parent_span_id=f"{p}agent",
             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        span(trace_id, f"{p}tool3", at(0.06, base=start), 50, name="calculator", parent_span_id=f"{p}chain",
             attributes={"openinference.span.kind": "TOOL", "tool.name": "calculator"}),
    ]
    return agent, calls, [chain, *tools]


def _rollup(t):
    return t.input_tokens, t.output_tokens, t.total_tokens, round(t.cost, 12), t.models, t.tools


def test_rollups_count_llm_calls_not_agent_totals(db):
    agent, calls, others = _run_spans("t1")
    db.write_spans([agent, *calls, *others])
    t = db.get_trace("t1")
    chat1, chat2, llm = calls
    inp, out = _reported(calls, IN_KEYS), _reported(calls, OUT_KEYS)
    total = (chat1.attributes["gen_ai.usage.input_tokens"] + chat1.attributes["gen_ai.usage.output_tokens"]
             + chat2.attributes["gen_ai.usage.prompt_tokens"] + chat2.attributes["gen_ai.usage.completion_tokens"]
             + llm.attributes["llm.token_count.total"])  # a reported total wins over input + output
    assert (t.input_tokens, t.output_tokens, t.total_tokens) == (inp, out, total)
    assert t.cost == pytest.approx(_reported(calls, COST_KEYS))
    # the response's model, else the request's, else OpenInference's; none from the agent span
    assert t.models == ["claude-3-5-sonnet", "gpt-4o-2024-08-06", "gpt-4o-mini"]
    assert t.tools == ["calculator", "search"]
    assert t.span_count == 8 and t.user_id == "alice"
    assert db.get_trace("t1", user_id="alice").models == t.models


def test_a_trace_without_llm_calls_rolls_up_zero(db):
    db.write_spans([span("t1", "root", T0, 10, attributes={"gen_ai.operation.name": "invoke_agent",
                                                           "gen_ai.usage.input_tokens": 50})])
    t = db.get_trace("t1")
    assert (t.input_tokens, t.output_tokens, t.total_tokens, t.cost, t.models, t.tools) == (0, 0, 0, 0.0, [], [])


def test_unusable_usage_values_are_ignored(db):
    odd = [({"gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": -3}, (0, 0)),
           ({"gen_ai.usage.input_tokens": True, "gen_ai.usage.prompt_tokens": 7}, (7, 0)),  # a bool is no count
           ({"gen_ai.usage.input_tokens": 2.0, "gen_ai.usage.output_tokens": 2.5}, (2, 0)),
           ({"gen_ai.usage.input_tokens": "11", "gen_ai.usage.cost": "0.5"}, (11, 0))]
    db.write_spans([span("t1", f"s{i}", at(i), 10, attributes=attrs) for i, (attrs, _) in enumerate(odd)]
                   + [span("t1", "m1", at(5), 10, attributes={"gen_ai.request.model": "x" * 256}),
                      span("t1", "m2", at(6), 10, attributes={"gen_ai.request.model": "bad\nname",
                                                              "gen_ai.tool.name": ""}),
                      span("t1", "m3", at(7), 10, attributes={"gen_ai.response.model": 4,
                                                              "gen_ai.request.model": "ok-model"})])
    t = db.get_trace("t1")
    assert (t.input_tokens, t.output_tokens) == (sum(i for _, (i, _o) in odd), 0)
    assert t.total_tokens == t.input_tokens and t.cost == pytest.approx(0.5)
    assert (t.models, t.tools) == (["ok-model"], [])


def test_rewritten_spans_are_not_counted_again(db):
    agent, calls, others = _run_spans("t1")
    batch = [agent, *calls, *others]
    db.write_spans(batch)
    once = dump(db.get_trace("t1"))
    db.write_spans(batch)
    db.write_spans(list(reversed(batch[:4])))
    db.write_spans([calls[0]])
    assert dump(db.get_trace("t1")) == once
    # a batch of a span already stored and a new one counts the new one only
    extra = span("t1", "chat3", at(0.5), 100, parent_span_id="agent",
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-4o-mini",
                             "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 6})
    db.write_spans([calls[1], extra])
    t = db.get_trace("t1")
    assert (t.input_tokens, t.output_tokens, t.total_tokens) == (once["input_tokens"] + 5, once["output_tokens"] + 6,
                                                                 once["total_tokens"] + 11)
    assert t.cost == pytest.approx(once["cost"]) and t.models == once["models"] and t.span_count == 9


def test_rollups_add_up_across_batches(db):
    agent, calls, others = _run_spans("t1")
    spans = [agent, *calls, *others]
    db.write_spans(spans)
    whole = db.get_trace("t1")
    a2, calls2, others2 = _run_spans("t2", prefix="b-")
    db.write_spans([calls2[1], others2[2]])  # children before their parents, in three batches
    db.write_spans([calls2[0], others2[0], others2[1]])
    db.write_spans([a2, calls2[2], others2[3]])
    t = db.get_trace("t2")
    assert _rollup(t) == _rollup(whole)
    assert (t.span_count, t.name, t.start_time, t.duration_ms) == (whole.span_count, whole.name, whole.start_time,
                                                                    whole.duration_ms)


def test_models_and_tools_are_capped_sorted(db):
    def call(i, n):
        return span("t1", f"c{n}-{i}", at(i), 10, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.response.model": f"model-{n:02d}", "gen_ai.tool.name": f"tool-{n:02d}",
            "gen_ai.usage.input_tokens": 1})

    db.write_spans([call(i, n) for i, n in enumerate(range(24, 9, -1))])  # model-24 .. model-10
    db.write_spans([call(i, n) for i, n in enumerate(range(10), start=20)])  # model-00 .. model-09
    t = db.get_trace("t1")
    assert t.models == [f"model-{n:02d}" for n in range(20)] and t.tools == [f"tool-{n:02d}" for n in range(20)]
    assert t.input_tokens == 25


def test_older_rows_without_rollups_start_from_zero():
    from agentkeep.db.traces import merge_trace

    agent, calls, others = _run_spans("t1")
    first = [s.model_dump() for s in [agent, *calls]]
    new = merge_trace(None, "t1", first, first)
    old = {**new, "input_tokens": None, "output_tokens": None, "total_tokens": None, "cost": None, "models": None,
           "tools": None, "revision": 3}
    tool = others[1].model_dump()
    merged = merge_trace(old, "t1", [tool], [tool])
    assert (merged["input_tokens"], merged["output_tokens"], merged["total_tokens"], merged["cost"],
            merged["models"], merged["tools"]) == (0, 0, 0, 0.0, [], ["search"])
    assert merged["span_count"] == new["span_count"] + 1 and "revision" not in merged


# -- filters: model, tool, duration --------------------------------------------------------------


def _traced(db, trace_id, start, ms, *, user=None, models=(), tools=(), error=False, open_=False):
    attrs = {"user.id": user} if user else {}
    spans = [span(trace_id, f"{trace_id}-root", start, ms, name=trace_id, status_code="ERROR" if error else "OK",
                  attributes={**attrs, "gen_ai.operation.name": "invoke_agent"})]
    for i, model in enumerate(models):
        spans.append(span(trace_id, f"{trace_id}-m{i}", start, ms / 2, parent_span_id=f"{trace_id}-root",
                          attributes={"gen_ai.operation.name": "chat", "gen_ai.response.model": model,
                                      "gen_ai.usage.input_tokens": 10}))
    for i, tool in enumerate(tools):
        spans.append(span(trace_id, f"{trace_id}-t{i}", start, ms / 4, parent_span_id=f"{trace_id}-root",
                          attributes={"gen_ai.tool.name": tool}))
    if open_:  # a trace whose spans have not ended: no duration
        spans = [s.model_copy(update={"end_time": None, "duration_ms": None}) for s in spans]
    db.write_spans(spans)


@pytest.fixture
def filtered(db):
    _traced(db, "t1", at(1), 100, user="alice", models=["gpt-4o"], tools=["search"])
    _traced(db, "t2", at(2), 2000, user="alice", models=["claude"], tools=["search", "calc"], error=True)
    _traced(db, "t3", at(3), 500, user="bob", models=["gpt-4o"])
    _traced(db, "t4", at(4), 300, tools=["calc"], open_=True)
    _traced(db, "t5", at(5), 1000, user="alice", models=["claude", "gpt-4o"])
    _traced(db, "t6", at(6), 1500, user="alice", models=["gpt-4o-mini"], error=True)

    def found(**kw):
        return [t.trace_id for t in all_items(db.list_traces, **kw)]

    return found


def test_list_traces_by_model_and_tool(db, filtered):
    found = filtered
    assert found(model="gpt-4o") == ["t5", "t3", "t1"]  # the whole name: not gpt-4o-mini
    assert found(model="gpt-4o", order="start_asc") == ["t1", "t3", "t5"]
    assert found(model="claude") == ["t5", "t2"]
    assert found(model="GPT-4o") == [] == found(model="gpt") == found(model="nope")
    assert found(tool="search") == ["t2", "t1"]
    assert found(tool="calc") == ["t4", "t2"]
    assert found(model="claude", tool="calc") == ["t2"]
    assert found(model="gpt-4o", tool="calc") == []
    assert found(model="gpt-4o", user_id="alice") == ["t5", "t1"]
    assert found(model="gpt-4o", user_id="bob") == ["t3"] and found(tool="search", user_id="bob") == []
    assert found(model="claude", status="error") == ["t2"]
    assert found(model="gpt-4o", started_after=at(2), started_before=at(5)) == ["t3"]
    assert db.list_traces(model="gpt-4o", with_total=True, limit=1).total == 3
    assert db.list_traces(tool="search", user_id="alice", with_total=True).total == 2


def test_list_traces_by_status_and_duration(db, filtered):
    found = filtered
    assert found(status="error") == ["t6", "t2"]
    assert found(status="error", user_id="alice") == ["t6", "t2"] and found(status="error", user_id="bob") == []
    assert found(min_duration_ms=1000) == ["t6", "t5", "t2"]  # bounds are inclusive
    assert found(max_duration_ms=500) == ["t3", "t1"]  # t4 has not ended: no duration, no match
    assert found(min_duration_ms=300, max_duration_ms=1000) == ["t5", "t3"]
    assert found(min_duration_ms=100.5, max_duration_ms=100.4) == []
    assert found(min_duration_ms=0) == ["t6", "t5", "t3", "t2", "t1"]
    assert found(min_duration_ms=1000, user_id="alice") == ["t6", "t5", "t2"]
    assert found(min_duration_ms=1000, user_id="alice", status="ok") == ["t5"]
    assert found(max_duration_ms=1999.5, model="gpt-4o", user_id="alice") == ["t5", "t1"]
    assert found(min_duration_ms=0, tool="calc") == ["t2"]
    assert db.list_traces(min_duration_ms=500, with_total=True, limit=2).total == 4


def test_filtered_pages(db, filtered):
    found = filtered
    for kw in ({"model": "gpt-4o"}, {"min_duration_ms": 500}, {"user_id": "alice", "tool": "search"},
               {"status": "ok", "max_duration_ms": 1000}):
        every = found(**kw)
        for order in ("start_desc", "start_asc"):
            ordered = every if order == "start_desc" else every[::-1]
            assert [t.trace_id for t in all_items(db.list_traces, limit=1, order=order, **kw)] == ordered, kw
            first = db.list_traces(limit=2, order=order, **kw)
            assert [t.trace_id for t in first.items] == ordered[:2]
            if len(ordered) > 2:
                rest = db.list_traces(limit=10, order=order, cursor=first.next_cursor, **kw)
                assert [t.trace_id for t in rest.items] == ordered[2:] and rest.next_cursor is None
            assert [t.trace_id for t in db.list_traces(limit=10, offset=1, order=order, **kw).items] == ordered[1:]


@pytest.mark.parametrize("kw", [{"min_duration_ms": -1}, {"max_duration_ms": "5"}, {"min_duration_ms": True},
                                {"max_duration_ms": float("nan")}, {"min_duration_ms": float("inf")},
                                {"model": ""}, {"model": "x" * 256}, {"tool": 3}, {"tool": "a\nb"}])
def test_list_traces_refuses_bad_filters(db, kw):
    with pytest.raises(InvalidInputError):
        db.list_traces(**kw)


# -- a model or tool filter reads an index (EXPLAIN, SQLite and PostgreSQL) ------------------------


def _sql_plan(backend, db, db_url, sql, params):
    if backend.name == "sqlite":
        con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        try:
            return [row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + sql, params)]
        finally:
            con.close()
    import psycopg

    from tests.conformance.backends import postgres_url

    with psycopg.connect(postgres_url()) as conn:
        # can an index serve it, whatever the costs of a table this small?
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        return [row[0] for row in conn.execute("EXPLAIN " + sql, params).fetchall()]


@pytest.mark.parametrize("backend", [BY_NAME["sqlite"], BY_NAME["postgres"]], ids=["sqlite", "postgres"],
                         indirect=True)
@pytest.mark.parametrize("field, kw", [("models", {"model": "model-7"}), ("tools", {"tool": "tool-3"}),
                                       ("models", {"model": "model-7", "user_id": "u1"})],
                         ids=["model", "tool", "model-and-user"])
def test_a_model_or_tool_filter_reads_an_index(backend, db, db_url, field, kw):
    rows = [(f"t{i}", f"model-{i % 40}", f"tool-{i % 7}", f"u{i % 5}") for i in range(400)]
    db.write_spans([span(t, f"s{i}", at(i), 100 + i, attributes={
        "gen_ai.response.model": model, "gen_ai.tool.name": tool, "user.id": user})
        for i, (t, model, tool, user) in enumerate(rows)])
    traces, side = db.specs["traces"].physical, db.kernel.side[("traces", field)].name
    ran = statements(db, lambda: db.list_traces(**kw))
    assert ran, "no statement ran"
    plan = _sql_plan(backend, db, db_url, *ran[0])
    shown = "\n".join(plan)
    if backend.name == "sqlite":
        # each table searched or walked by an index (the traces in page order), none scanned
        reads = [line for line in plan if line.startswith(("SCAN", "SEARCH"))]
        assert {line.split()[1] for line in reads} == {traces, side}, shown
        assert all(line.startswith("SEARCH") or " USING " in line for line in reads), shown
        assert all(line.startswith("SEARCH") for line in reads if line.split()[1] == side), shown
        assert "TEMP B-TREE" not in shown, shown
    else:
        assert "Seq Scan" not in shown, shown
        assert re.search(rf"Index (Only )?Scan( Backward)? using \S+ on {side}\b", shown), shown
        assert re.search(rf"Index (Only )?Scan( Backward)? using \S+ on {traces}\b", shown), shown
    wanted = [t for t, model, tool, user in reversed(rows)
              if kw.get("model", model) == model and kw.get("tool", tool) == tool and kw.get("user_id", user) == user]
    assert [t.trace_id for t in db.list_traces(**kw, limit=100).items] == wanted


@pytest.mark.parametrize("order", ["start_asc", "start_desc"])
def test_a_cursor_never_widens_a_time_range(db, order):
    # a cursor made by another query (with another range, or none) still obeys this one's range
    db.write_spans([span(f"t{i}", f"s{i}", at(i)) for i in range(10)])
    page = db.list_traces(order=order, limit=3)
    early = page.next_cursor  # after t2 (ascending) or t7 (descending)
    got = db.list_traces(order=order, started_after=at(4), started_before=at(8), cursor=early, limit=100).items
    expected = ["t4", "t5", "t6", "t7"] if order == "start_asc" else ["t6", "t5", "t4"]
    assert [t.trace_id for t in got] == expected
    deep = db.list_traces(order=order, limit=6).next_cursor  # after t5 / t4: further than the range's start
    got = db.list_traces(order=order, started_after=at(4), started_before=at(8), cursor=deep, limit=100).items
    assert [t.trace_id for t in got] == (["t6", "t7"] if order == "start_asc" else [])
