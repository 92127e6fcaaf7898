"""Firestore specifics, against the emulator: the document layout (escaped ids, runs in their
session's subcollection, split bodies), the composite-index file and that every query the
kernel sends is covered by it, and compare-and-set through version markers."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.firestore")

from agentkeep.db import (  # noqa: E402
    Approval,
    ConflictError,
    EvalRun,
    InvalidInputError,
    Job,
    KnowledgeContent,
    Run,
    Session,
    Span,
    UserMemory,
)
from agentkeep.db.query import Cond, Query  # noqa: E402
from tests.services import firestore as service  # noqa: E402

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
INDEX_FILE = Path(__file__).resolve().parents[2] / "docs" / "firestore.indexes.json"


@pytest.fixture(scope="module", autouse=True)
def _emulator():
    reason = service.unavailable()
    if reason:
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def project():
    return service.new_project()


@pytest.fixture
def db(project):
    from agentkeep.db.firestore import FirestoreDb

    d = FirestoreDb(project_id=project, emulator_host=service.emulator_host())
    yield d
    d.close()


@pytest.fixture
def other(project):
    """A second handle on the same data (another writer)."""
    from agentkeep.db.firestore import FirestoreDb

    d = FirestoreDb(project_id=project, emulator_host=service.emulator_host())
    yield d
    d.close()


def raw(db, *path):
    """The stored document at collection/id/... (None when absent)."""
    ref = db.kernel.client.collection(path[0])
    for i, part in enumerate(path[1:]):
        ref = ref.document(part) if i % 2 == 0 else ref.collection(part)
    snap = ref.get()
    return snap.to_dict() if snap.exists else None


# -- document ids -------------------------------------------------------------------------------

HOSTILE = ["a/b", "/", "//", ".", "..", "...", "__x__", "__", "___", "__a", "%", "%2F", "%25", "%00", "a%00b",
           "abc", "ABC", "abc ", " abc", "😀", "\u00e9", "e\u0301", "\u200b", "x" * 255, "/" * 255, "😀" * 255]


def test_document_ids_are_valid_and_injective():
    from agentkeep.db.firestore import MAX_ID_BYTES, doc_id

    ids = [doc_id((h,)) for h in HOSTILE]
    assert len(set(ids)) == len(HOSTILE)
    for i in ids:
        assert "/" not in i and i not in (".", "..") and not re.fullmatch("__.*__", i, re.S)
        assert 0 < len(i.encode("utf-8")) <= MAX_ID_BYTES
    # composite keys: the separator is never produced by escaping a part
    assert doc_id(("a%00", "b")) != doc_id(("a", "00b")) != doc_id(("a", "%00b"))
    assert doc_id((dt.date(2024, 1, 2), "")) == "2024-01-02%00"
    assert doc_id(("plain-id_1",)) == "plain-id_1"  # ordinary ids stay readable


@pytest.mark.parametrize("odd", ["a/b", ".", "..", "__x__", "😀 \u05e9", "x" * 255, "/" * 255, "abc", "ABC", "abc "])
def test_hostile_ids_round_trip_and_stay_distinct(db, odd):
    variants = {odd, odd.upper(), odd[:254] + " "}
    for variant in variants:
        db.upsert_session(Session(session_id=variant, user_id="u", name=variant))
    for variant in variants:
        assert db.get_session(variant).name == variant
    assert len(db.list_sessions(limit=10).items) == len(variants)
    r = db.append_run(Run(session_id=odd, run_id=odd, content=odd))
    assert db.get_run(odd).content == odd and r.seq == 1
    assert db.list_runs(odd).items[0].run_id == odd


def test_keys_past_firestore_id_limit_still_work(db):
    """Kernel level (agentkeep ids stop at 255 characters): a 1,000-character key, escaped
    past 1,500 bytes, is stored under a digest and still found by its key."""
    db.create_tables()
    for key in ("k" * 1000, "/" * 1000, "😀" * 1000):
        db.kernel.insert("meta", {"key": key, "value": {"v": key[:3]}, "updated_at": T0})
        assert db.kernel.get("meta", (key,))["value"] == {"v": key[:3]}
    assert db.kernel.get("meta", ("k" * 999,)) is None


# -- layout ---------------------------------------------------------------------------------------


def test_runs_live_in_their_sessions_subcollection(db):
    db.upsert_session(Session(session_id="s/1", user_id="u"))
    db.append_run(Run(session_id="s/1", run_id="r.1", content={"a": 1}))
    body = raw(db, "agentkeep_sessions", "s%2F1", "runs", "r.1")
    assert body["seq"] == 1 and json.loads(body["_body"])["content"] == {"a": 1}
    pointer = raw(db, "agentkeep_runs", "r.1")
    assert pointer["session_id"] == "s/1" and "_body" not in pointer and pointer["_t"] == body["_t"]
    # listing a session's runs reads that subcollection only, in seq order
    assert db.kernel._coll_for("runs", (Cond("session_id", "eq", "s/1"),))[1].parent.id == "s%2F1"
    assert db.delete_session("s/1") is True
    assert raw(db, "agentkeep_sessions", "s%2F1", "runs", "r.1") is None and raw(db, "agentkeep_runs", "r.1") is None


def test_native_fields_and_json_body(db):
    s = db.upsert_session(Session(session_id="s", user_id="u", state={"a.b": [1, 2**70], "`": {"$x": None}},
                                  created_at=dt.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC)))
    doc = raw(db, "agentkeep_sessions", "s")
    assert doc["user_id"] == "u" and doc["revision"] == 1 and doc["_parts"] == 0
    assert isinstance(doc["created_at"], dt.datetime) and doc["created_at"].microsecond == 1
    assert json.loads(doc["_body"])["state"] == {"a.b": [1, 2**70], "`": {"$x": None}}
    got = db.get_session("s")
    assert got.state == s.state and got.created_at == s.created_at and type(got.created_at) is dt.datetime
    assert got.created_at.tzinfo == UTC


def test_a_run_over_one_megabyte_is_split_and_round_trips(db):
    db.upsert_session(Session(session_id="s", user_id="u"))
    big = "\u4e2d\x00x" * 500_000  # 1.5 million characters, ~3 MB of JSON
    r = db.append_run(Run(session_id="s", content=big, metadata={"k": big[:10]}))
    doc = raw(db, "agentkeep_sessions", "s", "runs", r.run_id)
    assert doc["_body"] is None and doc["_parts"] >= 3
    for i in range(doc["_parts"]):
        part = raw(db, "agentkeep_sessions", "s", "runs", r.run_id, "_parts", str(i))
        assert part["t"] == doc["_pt"] and len(part["d"]) <= 1_000_000
    assert db.get_run(r.run_id).content == big
    assert db.get_session("s", runs=-1).runs[0].content == big
    # patching indexed fields leaves the parts alone; rewriting the body replaces them
    db.upsert_session(Session(session_id="s", user_id="u", name="renamed"))
    small = db.update_run(Run(session_id="s", run_id=r.run_id, content="small"))
    assert small.content == "small" and db.get_run(r.run_id).content == "small"
    assert raw(db, "agentkeep_sessions", "s", "runs", r.run_id, "_parts", "0") is None
    assert db.kernel.delete("runs", (Cond("run_id", "eq", r.run_id),)) == 1


def test_oversized_records_are_refused_and_write_nothing(db):
    db.upsert_session(Session(session_id="s", user_id="u"))
    huge = "x" * (4 * 1024 * 1024 + 10)
    with pytest.raises(InvalidInputError, match="4 MiB"):
        db.append_run(Run(session_id="s", run_id="r", content=huge))
    assert db.get_run("r") is None and raw(db, "agentkeep_runs", "r") is None
    assert db.get_session("s").revision == 1


# -- indexes ---------------------------------------------------------------------------------------


def test_committed_index_file_is_the_generated_one():
    from agentkeep.db.firestore import default_index_config

    assert json.loads(INDEX_FILE.read_text()) == default_index_config()


def test_index_file_sets_the_marker_ttl_and_unindexes_bodies():
    overrides = json.loads(INDEX_FILE.read_text())["fieldOverrides"]
    assert {"collectionGroup": "_v", "fieldPath": "expire_at", "ttl": True, "indexes": []} in overrides
    assert {"collectionGroup": "agentkeep_sessions", "fieldPath": "_body", "indexes": []} in overrides
    assert {"collectionGroup": "_parts", "fieldPath": "d", "indexes": []} in overrides


def _needed_index(coll, eq, rng, contains, order, desc):
    """The composite index a query needs (None: single-field indexes serve it)."""
    order = tuple(order or ())
    if not order and not rng:
        return None  # equalities (and array-contains) only: Firestore merges single-field indexes
    if not order:
        order = (rng[0].field,)
    fields = [(f, "ASCENDING") for f in eq if f not in order]
    fields += [(f, "DESCENDING" if desc else "ASCENDING") for f in order]
    if contains:
        fields.insert(0, (contains[0], "CONTAINS"))
    if len(fields) < 2:
        return None
    assert not rng or rng[0].field in eq or rng[0].field == order[0], "a range must lead the order"
    return coll.group, tuple(fields)


def test_every_query_the_kernel_sends_has_its_index(db):
    from agentkeep.db.firestore import default_index_config

    available = {
        (i["collectionGroup"], tuple((f["fieldPath"], f.get("order") or f.get("arrayConfig")) for f in i["fields"]))
        for i in default_index_config()["indexes"]
    }
    sent = []
    query = db.kernel._query

    def record(coll, ref, eq, rng, contains, order, desc, limit, slim=False):
        sent.append((_needed_index(coll, eq, rng, contains, order, desc), limit))
        return query(coll, ref, eq, rng, contains, order, desc, limit, slim)

    db.kernel._query = record
    for i in range(5):
        db.upsert_session(Session(session_id=f"s{i}", user_id=f"u{i % 2}", agent_id="a", session_type="agent"))
        db.append_run(Run(session_id=f"s{i}", status="completed"))
        db.upsert_memory(UserMemory(memory_id=f"m{i}", user_id=f"u{i % 2}", memory=f"Memory {i}",
                                    topics=["t", f"t{i}"]))
        db.upsert_knowledge(KnowledgeContent(id=f"k{i}", user_id=None if i % 2 else "u0", linked_to="x"))
        db.create_approval(Approval(id=f"a{i}", user_id=f"u{i % 2}", session_id="s0", expires_at=T0))
        db.save_eval_run(EvalRun(id=f"e{i}", user_id="u0", eval_type="accuracy", agent_id="a"))
        db.write_spans([Span(trace_id=f"t{i % 2}", span_id=f"sp{i}", start_time=T0, end_time=T0, duration_ms=1,
                             attributes={"agentkeep.user_id": "u0"})])
    page = db.list_sessions(user_id="u0", limit=1, with_total=True)
    db.list_sessions(user_id="u0", limit=1, cursor=page.next_cursor)
    page = db.list_sessions(limit=1, order="created_asc")
    db.list_sessions(limit=1, cursor=page.next_cursor, order="created_asc")
    db.list_sessions(agent_id="a", session_type="agent", name_contains="x", updated_after=T0, limit=2)
    db.list_sessions(updated_before=dt.datetime.now(UTC), order="updated_asc", limit=2, with_total=True)
    db.list_runs("s0", after_seq=0, status="completed", with_total=True)
    db.list_runs("s0", last=2)
    db.get_session("s0", runs=3)
    db.list_memories(user_id="u0", topics=["t", "t0"], search="memory", with_total=True)
    p = db.list_memories(limit=1, order="updated_asc")
    db.list_memories(limit=1, cursor=p.next_cursor, order="updated_asc")
    db.memory_topics(user_id="u0")
    db.memory_stats(limit=1)
    db.list_knowledge(user_id="u0", status="completed", with_total=True)
    db.list_knowledge(linked_to="x")
    db.list_traces(user_id="u0", started_after=T0 - dt.timedelta(days=1), with_total=True)
    db.list_traces(session_id="x", order="start_asc")
    db.trace_stats(group_by="agent", started_after=T0 - dt.timedelta(days=1))
    db.get_spans("t0")
    db.list_approvals(status="pending", user_id="u0", with_total=True)
    db.list_approvals(session_id="s0")
    db.count_pending_approvals(user_id="u0")
    db.list_eval_runs(user_id="u0", agent_id="a", eval_type="accuracy", with_total=True)
    db.refresh_metrics()
    db.get_metrics(user_id="u0", start_date=dt.date(2000, 1, 1))
    db.memory_stats(user_id="u0")
    db.trace_stats(group_by="session", user_id="u0", started_after=T0 - dt.timedelta(days=1))
    db.get_spans("t0", user_id="u0")
    for i in range(4):
        db.enqueue_job(Job(id=f"j{i}", user_id=f"u{i % 2}", kind=f"k{i % 2}", run_after=T0))
    db.claim_jobs(worker_id="w", now=T0, lease_seconds=1)
    db.claim_jobs(worker_id="w", kinds=["k1"], now=T0, limit=2)
    db.claim_jobs(worker_id="w", kinds=["k0", "k1"], now=T0 + dt.timedelta(seconds=5), limit=3)
    db.claim_jobs(worker_id="w", kinds=["k1"], now=T0 + dt.timedelta(hours=1))
    db.list_jobs(user_id="u0", kind="k0", status="running", with_total=True)
    db.list_jobs(status="queued", order="created_asc")
    db.purge_expired(now=T0 + dt.timedelta(days=1))
    db.delete_user("u1")
    db.delete_sessions(["s0"])
    missing = {need for need, _ in sent if need is not None and need not in available}
    assert not missing, sorted(missing)
    assert any(need is not None for need, _ in sent)


def test_a_list_call_reads_an_index_range_that_stops_at_the_limit(db):
    for i in range(30):
        db.upsert_session(Session(session_id=f"s{i:02}", user_id="u" if i % 3 else "v"))
    query = db.kernel._query
    limits = []
    db.kernel._query = lambda *a, **k: limits.append((a[2], a[5], a[7])) or query(*a, **k)
    page = db.list_sessions(user_id="u", limit=5)
    assert len(page.items) == 5
    # one native read: user_id equality, ordered by (updated_at, session_id), limit + 1 rows
    assert limits == [({"user_id": ["u"]}, ("updated_at", "session_id"), 6)]
    plan = db.kernel._plan(db.kernel.colls["sessions"], (Cond("user_id", "eq", "u"),), ("updated_at", "session_id"))
    assert plan.exact and plan.ordered


def test_counts_use_the_count_aggregation(db):
    for i in range(7):
        db.create_approval(Approval(id=f"a{i}", user_id="u", status="pending"))
    calls = []
    select = db.kernel._select
    db.kernel._select = lambda *a, **k: calls.append(a) or select(*a, **k)
    assert db.count_pending_approvals(user_id="u") == 7
    assert db.list_approvals(status="pending", user_id="u", limit=2, with_total=True).total == 7
    assert len(calls) == 1  # the page itself; both counts were aggregations


# -- compare-and-set --------------------------------------------------------------------------------


def test_a_write_from_a_stale_read_loses_and_changes_nothing(db, other):
    """Two writers read version v; the first commit creates the marker `_v/<v>` and moves
    the document on; the second, built from the same read, is refused whole."""
    db.upsert_session(Session(session_id="s", user_id="u", name="v1"))
    (row, stale), = db.kernel._read_keys("sessions", [("s",)], False)
    other.rename_session("s", "v2")  # the other writer commits first
    group = db.kernel._patch_group("sessions", {**row, "name": "stale", "revision": 99}, stale, {"revision"})
    assert db.kernel._commit([group]) == [False]
    doc = raw(db, "agentkeep_sessions", "s")
    assert doc["revision"] == 2 and raw(db, "agentkeep_sessions", "s", "_v", stale.token) is not None
    assert db.get_session("s").name == "v2"
    # the kernel's update re-reads after such a loss and re-checks its condition
    assert db.kernel.update("sessions", ("s",), set={"name": "x"}, where=(Cond("revision", "eq", 1),)) is None
    with pytest.raises(ConflictError):
        db.upsert_session(Session(session_id="s", user_id="u", name="late"), expected_revision=1)


def test_a_delete_consumes_the_version_so_a_stale_update_cannot_revive_it(db, other):
    db.upsert_session(Session(session_id="s", user_id="u"))
    (row, stale), = db.kernel._read_keys("sessions", [("s",)], False)
    assert other.delete_session("s") is True
    group = db.kernel._patch_group("sessions", {**row, "revision": 2}, stale, {"revision"})
    assert db.kernel._commit([group]) == [False]
    assert raw(db, "agentkeep_sessions", "s") is None


def test_a_commit_retried_after_its_answer_was_lost_counts_as_applied(db):
    """The client may resend a commit whose first attempt landed: the resend meets its own
    marker, and reading the check document back shows the write is ours."""
    db.upsert_session(Session(session_id="s", user_id="u"))
    (row, meta), = db.kernel._read_keys("sessions", [("s",)], False)
    group = db.kernel._patch_group("sessions", {**row, "revision": 2}, meta, {"revision"})
    assert db.kernel._commit([group]) == [True]
    assert db.kernel._commit([group]) == [True]  # the resend: refused, but it was ours
    assert raw(db, "agentkeep_sessions", "s")["revision"] == 2


def test_a_refused_batch_redoes_the_other_rows_one_by_one(db):
    """put_many whose read went stale: one create in the commit fails; on the emulator the
    writes before it were applied, on the service none were; either way each other row is
    written exactly once and the existing one is left alone."""
    db.create_tables()
    rows = [{"key": k, "value": k, "updated_at": T0} for k in ("a", "b", "c")]
    db.kernel.insert("meta", {"key": "b", "value": "first", "updated_at": T0})
    read = db.kernel._read_keys
    db.kernel._read_keys = lambda table, keys, need: [] if len(keys) > 1 else read(table, keys, need)
    try:
        assert db.kernel.put_many("meta", rows, False) == 2
    finally:
        db.kernel._read_keys = read
    assert [db.kernel.get("meta", (k,))["value"] for k in "abc"] == ["a", "first", "c"]


def test_markers_expire(db):
    db.upsert_session(Session(session_id="s", user_id="u"))
    token = raw(db, "agentkeep_sessions", "s")["_t"]
    db.rename_session("s", "n")
    marker = raw(db, "agentkeep_sessions", "s", "_v", token)
    assert marker["expire_at"] > dt.datetime.now(UTC) + dt.timedelta(hours=23)


def test_schema_versions_and_lock(db, other):
    db.create_tables()
    assert all(v["up_to_date"] for v in other.schema_status().values())
    assert raw(db, "agentkeep_meta", "version:sessions")["key"] == "version:sessions"
    with db.kernel.schema_lock():
        assert raw(db, "agentkeep_meta", "%schema-lock") is not None
    assert raw(db, "agentkeep_meta", "%schema-lock") is None
    assert other.migrate(dry_run=True) == []


def test_collection_prefix_and_table_overrides(project):
    from agentkeep.db.firestore import FirestoreDb

    d = FirestoreDb(project_id=project, emulator_host=service.emulator_host(), collection_prefix="app",
                    session_table="chats")
    try:
        d.upsert_session(Session(session_id="s", user_id="u"))
        d.append_run(Run(session_id="s", run_id="r"))
        assert raw(d, "chats", "s") is not None and raw(d, "chats", "s", "runs", "r") is not None
        assert raw(d, "app_runs", "r") is not None and raw(d, "agentkeep_sessions", "s") is None
        assert d.kernel.find(Query("runs", (Cond("session_id", "eq", "s"),)))[0]["run_id"] == "r"
    finally:
        d.close()
