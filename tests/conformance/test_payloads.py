"""Payloads: hostile content round-trips unchanged; bad input is refused and writes nothing."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeep.db import (
    Approval,
    DbError,
    OwnershipError,
    EvalRun,
    InvalidInputError,
    Job,
    KnowledgeContent,
    Run,
    ScheduleRun,
    Session,
    UserMemory,
)

from ._helpers import T0, UTC, all_items, schedule, span, strict_equal, target

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

# -- strategies -----------------------------------------------------------------------------

SPECIAL = ["", "\x00", "a\x00b", "$", "$set", "$where", "a.b", ".", "..", "_id", "__proto__", "😀",
           "\u200b", "\U0010ffff", "\r\n", "'; DROP TABLE x; --", "\\", '"', "null", "NaN"]
texts = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), st.sampled_from(SPECIAL))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=25,
)
json_dicts = st.dictionaries(texts, json_values, max_size=5)


def nested(depth: int, leaf=None):
    value = {"leaf": "bottom\x00", "$k": 1.5} if leaf is None else leaf
    for i in range(depth - 1):
        value = {f"l{i}.$": value} if i % 2 else [value, i]
    return value


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# -- property tests: every JSON field of every record ---------------------------------------


@SETTINGS
@given(state=json_dicts, metadata=json_dicts, summary=st.none() | json_dicts, name=texts)
def test_session_payloads_round_trip(db, state, metadata, summary, name):
    s = db.upsert_session(Session(user_id="u", name=name, state=state, metadata=metadata, summary=summary))
    got = db.get_session(s.session_id)
    strict_equal(got.state, state)
    strict_equal(got.metadata, metadata)
    strict_equal(got.summary, summary)
    strict_equal(got.name, name)
    listed = db.list_sessions(user_id="u", limit=1000).items
    strict_equal([x.state for x in listed if x.session_id == s.session_id], [state])


@SETTINGS
@given(inp=json_values, content=json_values, messages=st.lists(json_dicts, max_size=3), metadata=json_dicts)
def test_run_payloads_round_trip(db, inp, content, messages, metadata):
    sid = "payload-session"
    if db.get_session(sid) is None:
        db.upsert_session(Session(session_id=sid, user_id="u"))
    r = db.append_run(Run(session_id=sid, input=inp, content=content, messages=messages, metadata=metadata))
    for got in (db.get_run(r.run_id), db.list_runs(sid, last=1).items[0]):
        strict_equal(got.input, inp)
        strict_equal(got.content, content)
        strict_equal(got.messages, messages)
        strict_equal(got.metadata, metadata)


@SETTINGS
@given(memory=texts, inp=st.none() | texts, feedback=st.none() | texts)
def test_memory_strings_round_trip(db, memory, inp, feedback):
    m = db.upsert_memory(UserMemory(user_id="u", memory=memory, topics=["t"], input=inp, feedback=feedback))
    got = db.get_memory(m.memory_id)
    strict_equal(got.memory, memory)
    strict_equal(got.input, inp)
    strict_equal(got.feedback, feedback)


@SETTINGS
@given(topics=st.lists(texts, max_size=4, unique=True))
def test_memory_topics_round_trip(db, topics):
    m = db.upsert_memory(UserMemory(user_id="u", memory="m", topics=topics))
    strict_equal(sorted(db.get_memory(m.memory_id).topics), sorted(topics))


@SETTINGS
@given(metadata=json_dicts, name=texts, description=st.none() | texts)
def test_knowledge_payloads_round_trip(db, metadata, name, description):
    k = db.upsert_knowledge(KnowledgeContent(user_id="u", name=name, description=description, metadata=metadata))
    got = db.get_knowledge(k.id)
    strict_equal(got.metadata, metadata)
    strict_equal(got.name, name)
    strict_equal(got.description, description)


@SETTINGS
@given(tool_args=json_dicts, context=json_dicts, resolution=json_dicts)
def test_approval_payloads_round_trip(db, tool_args, context, resolution):
    a = db.create_approval(Approval(user_id="u", tool_args=tool_args, context=context))
    db.resolve_approval(a.id, status="approved", resolved_by="admin", resolution=resolution)
    got = db.get_approval(a.id)
    strict_equal(got.tool_args, tool_args)
    strict_equal(got.context, context)
    strict_equal(got.resolution, resolution)


@SETTINGS
@given(payload=json_dicts, output=json_values, error=st.none() | texts)
def test_schedule_payloads_round_trip(db, payload, output, error):
    s = db.upsert_schedule(schedule(user_id="u", target=target(payload=payload)))
    strict_equal(db.get_schedule(s.id).target.payload, payload)
    r = db.record_schedule_run(ScheduleRun(schedule_id=s.id, started_at=T0, output=output, error=error))
    got = [x for x in db.list_schedule_runs(s.id, limit=1000).items if x.id == r.id][0]
    strict_equal(got.output, output)
    strict_equal(got.error, error)


@SETTINGS
@given(inp=json_values, result=json_dicts)
def test_eval_payloads_round_trip(db, inp, result):
    e = db.save_eval_run(EvalRun(user_id="u", eval_type="accuracy", input=inp, result=result))
    got = db.get_eval_run(e.id)
    strict_equal(got.input, inp)
    strict_equal(got.result, result)


@SETTINGS
@given(payload=json_dicts, result=json_dicts, error=st.none() | texts)
def test_job_payloads_round_trip(db, payload, result, error):
    j = db.enqueue_job(Job(user_id="u", kind="payloads", payload=payload))
    strict_equal(db.get_job(j.id).payload, payload)
    db.claim_jobs(worker_id="w", kinds=["payloads"])
    db.finish_job(j.id, worker_id="w", status="completed", result=result, error=error)
    got = db.get_job(j.id)
    strict_equal(got.payload, payload)
    strict_equal(got.result, result)
    strict_equal(got.error, error)


@SETTINGS
@given(attributes=json_dicts, events=st.lists(json_dicts, max_size=3), name=texts)
def test_span_payloads_round_trip(db, attributes, events, name):
    s = span("payload-trace", f"sp-{len(attributes)}-{abs(hash(name))}-{len(events)}", T0, 5,
             name=name, attributes=attributes, events=events)
    db.write_spans([s])
    got = [x for x in db.get_spans("payload-trace") if x.span_id == s.span_id][0]
    strict_equal(got.attributes, attributes)
    strict_equal(got.events, events)
    strict_equal(got.name, name)


# -- fixed cases --------------------------------------------------------------------------


def test_nesting_64_levels_round_trips(db):
    deep = nested(64)
    assert depth_of(deep) >= 64
    s = db.upsert_session(Session(user_id="u", state={"deep": deep}, metadata={"list": nested(64, [])}))
    got = db.get_session(s.session_id)
    strict_equal(got.state, {"deep": deep})
    strict_equal(got.metadata, {"list": nested(64, [])})
    sid = s.session_id
    r = db.append_run(Run(session_id=sid, content=deep))
    strict_equal(db.get_run(r.run_id).content, deep)


def test_one_megabyte_strings_round_trip(db):
    big = ("0123456789abcdef\u00e9\u4e2d\U0001f600\x00" * 60_000)[:1_000_000]
    s = db.upsert_session(Session(user_id="u", state={"big": big}, name=big[:1000]))
    strict_equal(db.get_session(s.session_id).state, {"big": big})
    r = db.append_run(Run(session_id=s.session_id, content=big, input={"x": big[:500_000]}))
    got = db.get_run(r.run_id)
    strict_equal(got.content, big)
    strict_equal(db.get_session(s.session_id, runs=-1).runs[0].content, big)
    m = db.upsert_memory(UserMemory(user_id="u", memory=big))
    strict_equal(db.get_memory(m.memory_id).memory, big)
    k = db.upsert_knowledge(KnowledgeContent(user_id="u", metadata={"text": big}))
    strict_equal(db.get_knowledge(k.id).metadata, {"text": big})


def test_payload_just_under_the_limit_round_trips(db):
    big = "x" * 3_500_000
    s = db.upsert_session(Session(user_id="u", state={"big": big}))
    assert db.get_session(s.session_id).state["big"] == big


def _names_limit(exc: BaseException) -> bool:
    return bool(re.search(r"4\s*Mi?B|4194304|4,194,304|4 ?194 ?304", str(exc)))


def test_oversized_payload_is_refused_and_writes_nothing(db):
    huge = "x" * (4 * 1024 * 1024 + 1024)
    s = Session(user_id="u", state={"huge": huge})
    with pytest.raises(InvalidInputError) as exc:
        db.upsert_session(s)
    assert _names_limit(exc.value), str(exc.value)[:300]
    assert db.get_session(s.session_id) is None
    assert all_items(db.list_sessions) == []

    kept = db.upsert_session(Session(user_id="u", state={"small": 1}))
    with pytest.raises(InvalidInputError):
        db.upsert_session(Session(session_id=kept.session_id, user_id="u", state={"huge": huge}))
    got = db.get_session(kept.session_id)
    assert got.state == {"small": 1} and got.revision == 1

    r = Run(session_id=kept.session_id, content=huge)
    with pytest.raises(InvalidInputError) as exc:
        db.append_run(r)
    assert _names_limit(exc.value)
    assert db.get_run(r.run_id) is None and db.list_runs(kept.session_id).items == []

    m = UserMemory(user_id="u", memory=huge)
    with pytest.raises(InvalidInputError):
        db.upsert_memory(m)
    assert db.get_memory(m.memory_id) is None


def test_oversized_record_in_a_batch_writes_nothing(db):
    ok = UserMemory(user_id="u", memory="fine")
    bad = UserMemory(user_id="u", memory="x" * (4 * 1024 * 1024 + 1024))
    with pytest.raises(InvalidInputError):
        db.upsert_memories([ok, bad])
    assert db.get_memory(ok.memory_id) is None and db.get_memory(bad.memory_id) is None


def test_nesting_past_the_limit_is_refused(db):
    s = Session(user_id="u", state={"deep": nested(300)})
    with pytest.raises(InvalidInputError):
        db.upsert_session(s)
    assert db.get_session(s.session_id) is None


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", object(), dt.datetime(2024, 1, 1, tzinfo=UTC), {1: "int key"}, {"ok": [1, {"bad": {3}}]}],
    ids=["set", "bytes", "object", "datetime", "int-key", "nested-set"],
)
def test_non_json_values_are_refused(db, value):
    s = Session(user_id="u", state={"v": value})
    with pytest.raises(InvalidInputError):
        db.upsert_session(s)
    assert db.get_session(s.session_id) is None


# -- ids ------------------------------------------------------------------------------------

ODD_IDS = ["\U0001f468\u200d\U0001f469\u200d\U0001f467", "no\u00a0break", "zero\u200bwidth", "\u05e9\u05dc\u05d5\u05dd\u200f",
           "a/b", "../escape", "..", ".", "$where", "a.b", "😀 emoji id", "with space", "x" * 255, "%2F", "C:\\x",
           "-", "_", "ünïcödé", "<tag>", "a:b", "~"]


@pytest.mark.parametrize("odd", ODD_IDS, ids=range(len(ODD_IDS)))
def test_odd_but_valid_ids_round_trip(db, odd):
    db.upsert_session(Session(session_id=odd, user_id="u", name="n"))
    assert db.get_session(odd).session_id == odd
    r = db.append_run(Run(session_id=odd, run_id=odd))
    assert db.get_run(odd).run_id == r.run_id == odd
    db.upsert_memory(UserMemory(memory_id=odd, user_id="u", memory="m"))
    assert db.get_memory(odd).memory_id == odd
    assert [s.session_id for s in db.list_sessions().items] == [odd]
    assert db.delete_session(odd) is True
    assert db.get_session(odd) is None


def test_ids_differing_in_case_or_trailing_space_are_distinct(db):
    variants = ["CaseId", "caseid", "caseid ", "CASEID", "case\u0131d"]
    for v in variants:
        db.upsert_session(Session(session_id=v, user_id="u", name=v))
    for v in variants:
        assert db.get_session(v).name == v
    assert sorted(s.session_id for s in all_items(db.list_sessions)) == sorted(variants)


BAD_IDS = ["", "a\x00b", "line\nbreak", "tab\there", "\x7f", "next\x85line", "x" * 256]


@pytest.mark.parametrize("bad", BAD_IDS, ids=["empty", "nul", "newline", "tab", "del", "c1-nel", "256-chars"])
def test_invalid_ids_are_refused_and_write_nothing(db, bad):
    s = Session(user_id="u")
    s.session_id = bad
    with pytest.raises(InvalidInputError):
        db.upsert_session(s)
    m = UserMemory(user_id="u", memory="m")
    m.memory_id = bad
    with pytest.raises(InvalidInputError):
        db.upsert_memory(m)
    sess = db.upsert_session(Session(user_id="u"))
    r = Run(session_id=sess.session_id)
    r.run_id = bad
    with pytest.raises(InvalidInputError):
        db.append_run(r)
    assert all_items(db.list_memories) == []
    assert [x.session_id for x in all_items(db.list_sessions)] == [sess.session_id]
    assert db.list_runs(sess.session_id).items == []


@pytest.mark.parametrize("bad", [{"$gt": ""}, {"$ne": None}, ["a"], 42], ids=repr)
def test_non_string_ids_are_refused(db, bad):
    db.upsert_session(Session(session_id="real", user_id="u"))
    s = Session(user_id="u")
    s.session_id = bad
    with pytest.raises(InvalidInputError):
        db.upsert_session(s)
    assert [x.session_id for x in all_items(db.list_sessions)] == ["real"]
    with pytest.raises(InvalidInputError):
        db.get_session(bad)
    with pytest.raises(InvalidInputError):
        db.delete_session(bad)
    with pytest.raises(InvalidInputError):
        db.get_memory(bad)
    assert db.get_session("real") is not None


def test_control_char_ids_are_refused_on_reads(db):
    for bad in ("a\x00b", "a\nb", ""):
        with pytest.raises(InvalidInputError):
            db.get_session(bad)
        with pytest.raises(InvalidInputError):
            db.get_run(bad)


# -- naive datetimes ------------------------------------------------------------------------

NAIVE = dt.datetime(2024, 1, 1, 12, 0)


def test_naive_datetime_in_a_record_is_refused(db):
    s = Session(user_id="u")
    s.expires_at = NAIVE
    with pytest.raises(InvalidInputError):
        db.upsert_session(s)
    assert db.get_session(s.session_id) is None
    m = UserMemory(user_id="u", memory="m")
    m.created_at = NAIVE
    with pytest.raises(InvalidInputError):
        db.upsert_memory(m)
    assert db.get_memory(m.memory_id) is None
    sc = schedule()
    sc.next_run_at = NAIVE
    with pytest.raises(InvalidInputError):
        db.upsert_schedule(sc)
    assert db.get_schedule(sc.id) is None


def test_naive_datetime_arguments_are_refused(db):
    sc = db.upsert_schedule(schedule(next_run_at=T0))
    with pytest.raises(InvalidInputError):
        db.list_sessions(updated_after=NAIVE)
    with pytest.raises(InvalidInputError):
        db.list_traces(started_before=NAIVE)
    with pytest.raises(InvalidInputError):
        db.claim_due_schedules(worker_id="w", now=NAIVE)
    got = db.get_schedule(sc.id)
    assert got.locked_by is None and got.revision == 1
    db.claim_due_schedules(worker_id="w", now=T0 + dt.timedelta(minutes=1))
    with pytest.raises(InvalidInputError):
        db.release_schedule(sc.id, worker_id="w", next_run_at=NAIVE)
    got = db.get_schedule(sc.id)
    assert got.locked_by == "w" and got.next_run_at == T0


def test_aware_non_utc_datetimes_are_normalised(db):
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    local = dt.datetime(2024, 1, 1, 17, 30, 0, 123456, tzinfo=tz)
    s = db.upsert_session(Session(user_id="u", created_at=local))
    got = db.get_session(s.session_id)
    assert got.created_at == local
    assert got.created_at.utcoffset() == dt.timedelta(0)
    assert got.created_at == dt.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "when",
    [dt.datetime(1900, 1, 1, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
     dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
     dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
    ids=["1900", "pre-epoch-us", "epoch", "after-2038", "9999"],
)
def test_extreme_timestamps_round_trip_with_microseconds(db, when):
    s = db.upsert_session(Session(user_id="u", created_at=when, expires_at=when))
    got = db.get_session(s.session_id)
    assert got.created_at == when and got.expires_at == when
    sp = span("tt", "sp", when.replace(year=min(when.year, 9998)), 1)
    db.write_spans([sp])
    assert db.get_spans("tt")[0].start_time == sp.start_time


# -- bad arguments -------------------------------------------------------------------------

BAD_CALLS = {
    "expected_revision-str": lambda db: db.upsert_session(Session(session_id="new", user_id="u"), expected_revision="1"),
    "expected_revision-negative": lambda db: db.upsert_session(Session(session_id="new", user_id="u"),
                                                               expected_revision=-1),
    "session_type": lambda db: db.list_sessions(session_type="robot"),
    "run-status": lambda db: db.list_runs("s", status="weird"),
    "after_seq-str": lambda db: db.list_runs("s", after_seq="1"),
    "runs-negative": lambda db: db.get_session("s", runs=-2),
    "approval-status": lambda db: db.list_approvals(status="weird"),
    "knowledge-status": lambda db: db.list_knowledge(status="weird"),
    "topics-str": lambda db: db.list_memories(topics="abc"),
    "eval_type": lambda db: db.list_eval_runs(eval_type="vibes"),
    "lease-zero": lambda db: db.claim_due_schedules(worker_id="w", now=T0, lease_seconds=0),
    "claim-limit-zero": lambda db: db.claim_due_schedules(worker_id="w", now=T0, limit=0),
    "worker-empty": lambda db: db.claim_due_schedules(worker_id="", now=T0),
    "refresh-naive": lambda db: db.refresh_metrics(now=NAIVE),
    "metrics-date-str": lambda db: db.get_metrics(start_date="2024-01-01"),
    "delete_user-none": lambda db: db.delete_user(None),
    "delete_user-empty": lambda db: db.delete_user(""),
    "delete_sessions-str": lambda db: db.delete_sessions("s"),
    "session-not-a-record": lambda db: db.upsert_session({"session_id": "x", "bogus_field": 1}),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_arguments_are_invalid_and_write_nothing(db, call):
    db.upsert_session(Session(session_id="s", user_id="u", name="before"))
    db.append_run(Run(session_id="s"))
    db.upsert_schedule(schedule(next_run_at=T0 - dt.timedelta(minutes=1)))
    with pytest.raises(InvalidInputError):
        call(db)
    assert [s.session_id for s in all_items(db.list_sessions)] == ["s"]
    assert db.get_session("s").name == "before" and len(db.list_runs("s").items) == 1
    assert all(s.locked_by is None for s in all_items(db.list_schedules))
    assert db.get_metrics() == []


def test_duplicate_run_id_never_overwrites(db):
    a = db.upsert_session(Session(user_id="alice")).session_id
    b = db.upsert_session(Session(user_id="bob")).session_id
    r = db.append_run(Run(session_id=a, content="alice's"))
    with pytest.raises(OwnershipError):
        db.append_run(Run(run_id=r.run_id, session_id=b, content="bob's"))
    with pytest.raises(DbError):
        db.append_run(Run(run_id=r.run_id, session_id=a, content="again"))
    got = db.get_run(r.run_id)
    assert (got.content, got.session_id, got.seq) == ("alice's", a, r.seq)
    assert len(db.list_runs(a).items) == 1 and db.list_runs(b).items == []
