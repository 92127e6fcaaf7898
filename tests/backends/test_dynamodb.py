"""DynamoDB specifics the conformance suite does not see: the tables and GSIs the specs
derive, which operations the hot calls send (recorded off botocore's own event hooks, on the
real client talking to the server), items split past the 400 KB limit, hostile ids, native
TTL, expression strings free of user text, and a migration that adds a GSI."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from contextlib import contextmanager

import pytest

from agentkeep.db import Approval, InvalidInputError, KnowledgeContent, Run, Schedule, ScheduleTarget, Session, UserMemory
from agentkeep.db import tables as tables_module
from tests.services import dynamodb as service
from tests.upgrades import NEXT, upgraded_specs

pytest.importorskip("boto3")

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _server():
    reason = service.unavailable()
    if reason:
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def prefix():
    name = service.new_prefix()
    yield name
    service.delete_tables(name + "_")


@pytest.fixture
def db(prefix):
    handle = service.open_db(prefix)
    handle.create_tables()
    yield handle
    handle.close()


class Calls:
    """The operations a client sent (name and JSON body as sent) and what came back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.answers: list[tuple[str, dict]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def of(self, name: str) -> list[dict]:
        return [body for n, body in self.sent if n == name]


@contextmanager
def recorded(db):
    calls = Calls()
    events = db.kernel.client.meta.events

    def before(model, params, **_):
        body = params.get("body") or b"{}"
        calls.sent.append((model.name, json.loads(body)))

    def after(model, parsed, **_):
        calls.answers.append((model.name, parsed))

    events.register("before-call.dynamodb.*", before)
    events.register("after-call.dynamodb.*", after)
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb.*", before)
        events.unregister("after-call.dynamodb.*", after)


def raw_item(db, table: str, key: tuple) -> dict | None:
    t = db.kernel.t[table]
    return db.kernel.client.get_item(TableName=t.name, Key={"pk": {"S": t.pk(key)}}, ConsistentRead=True).get("Item")


def chunk_items(db, table: str) -> list[dict]:
    """Every chunk item of a table (a Scan: fine in a test, never in the kernel's list calls)."""
    c, name = db.kernel.client, db.kernel.t[table].name
    items, args = [], {"TableName": name, "FilterExpression": "attribute_exists(#d)",
                       "ExpressionAttributeNames": {"#d": "_d"}}
    while True:
        resp = c.scan(**args)
        items += resp["Items"]
        if not resp.get("LastEvaluatedKey"):
            return items
        args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


# -- layout ----------------------------------------------------------------------------------


def test_every_spec_index_is_a_gsi_with_its_key_design(db):
    c = db.kernel.client
    for name, spec in db.specs.items():
        desc = c.describe_table(TableName=spec.physical)["Table"]
        assert desc["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
        gsis = {g["IndexName"]: g for g in desc.get("GlobalSecondaryIndexes", [])}
        expected = {"by_" + "_".join(idx.fields) for idx in spec.indexes} | {"by_key"}
        assert expected <= set(gsis), (name, expected - set(gsis))
        assert gsis["by_key"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
        for idx in spec.indexes:
            gsi = gsis["by_" + "_".join(idx.fields)]
            assert gsi["Projection"]["ProjectionType"] == "ALL"
            assert [k["KeyType"] for k in gsi["KeySchema"]][0] == "HASH"

    sessions = {g["IndexName"]: g for g in c.describe_table(TableName=db.specs["sessions"].physical)["Table"]
                ["GlobalSecondaryIndexes"]}
    assert sessions["by_user_id_updated_at"]["KeySchema"] == [
        {"AttributeName": "_by_user_id_updated_at_p", "KeyType": "HASH"},
        {"AttributeName": "_by_user_id_updated_at_s", "KeyType": "RANGE"},
    ]
    # memory topics: a side table of marker items, queried by value or by owner
    side = c.describe_table(TableName=db.specs["memories"].physical + "_topics")["Table"]
    assert {g["IndexName"] for g in side["GlobalSecondaryIndexes"]} == {"by_value", "by_user"}
    # memory_stats walks the owners in order without a Scan
    memories = {g["IndexName"] for g in c.describe_table(TableName=db.specs["memories"].physical)["Table"]
                ["GlobalSecondaryIndexes"]}
    assert "group_user_id" in memories


def test_sparse_and_constant_partition_indexes(db):
    db.upsert_session(Session(session_id="forever", user_id="u"))
    db.upsert_session(Session(session_id="expiring", user_id="u", expires_at=NOW))
    forever, expiring = raw_item(db, "sessions", ("forever",)), raw_item(db, "sessions", ("expiring",))
    assert "_by_expires_at_p" not in forever and "_by_expires_at_s" not in forever
    assert expiring["_by_expires_at_p"] == {"S": "_"}
    assert forever["_by_updated_at_p"] == {"S": "_"}  # no equality fields: one partition
    # a None in an indexed field is indexed (it sorts lowest), so "user_id is None" is a Query
    db.upsert_session(Session(session_id="nobody", user_id=None))
    with recorded(db) as calls:
        assert [s.session_id for s in db.list_sessions(user_id=None).items]  # unscoped: all three
    assert "Scan" not in calls.names()


# -- the hot calls are Queries on their GSI ---------------------------------------------------


def test_list_sessions_by_user_is_one_query_that_stops_at_the_limit(db):
    for i in range(30):
        db.upsert_session(Session(session_id=f"a{i:02d}", user_id="alice"))
        db.upsert_session(Session(session_id=f"b{i:02d}", user_id="bob"))
    with recorded(db) as calls:
        page = db.list_sessions(user_id="alice", limit=5)
    assert calls.names() == ["Query"]
    query = calls.of("Query")[0]
    assert query["IndexName"] == "by_user_id_updated_at" and query["ScanIndexForward"] is False
    assert query["Limit"] <= 6
    answer = calls.answers[0][1]
    assert answer["ScannedCount"] <= 6  # read from the index in order, stopped at the limit
    assert len(page.items) == 5 and page.next_cursor

    with recorded(db) as calls:
        second = db.list_sessions(user_id="alice", limit=5, cursor=page.next_cursor)
    assert calls.names() == ["Query"]
    assert "BETWEEN" in calls.of("Query")[0]["KeyConditionExpression"] or "<" in calls.of("Query")[0][
        "KeyConditionExpression"]  # the keyset position is a key condition, not a filter
    assert not {s.session_id for s in page.items} & {s.session_id for s in second.items}

    with recorded(db) as calls:
        assert db.list_sessions(user_id="alice", limit=1, with_total=True).total == 30
    counts = [q for q in calls.of("Query") if q.get("Select") == "COUNT"]
    assert len(counts) == 1 and counts[0]["IndexName"] == "by_user_id_updated_at"
    assert "Scan" not in calls.names()


def test_runs_approvals_schedules_and_memories_read_their_indexes(db):
    sid = db.upsert_session(Session(user_id="alice")).session_id
    for _ in range(12):
        db.append_run(Run(session_id=sid))
    with recorded(db) as calls:
        assert [r.seq for r in db.list_runs(sid, limit=3).items] == [1, 2, 3]
        assert [r.seq for r in db.get_session(sid, runs=2).runs] == [11, 12]
        assert [r.seq for r in db.list_runs(sid, after_seq=10).items] == [11, 12]
    queries = calls.of("Query")
    assert {q["IndexName"] for q in queries} == {"by_session_id_seq"}
    assert queries[1]["ScanIndexForward"] is False and queries[1]["Limit"] <= 3
    assert "Scan" not in calls.names()

    for i in range(3):
        db.create_approval(Approval(id=f"ap{i}", user_id="alice"))
    target = ScheduleTarget(type="agent", id="a1")
    db.upsert_schedule(Schedule(id="sch", cron="* * * * *", target=target, user_id="alice",
                                next_run_at=NOW - dt.timedelta(minutes=1)))
    db.upsert_memory(UserMemory(memory_id="m1", user_id="alice", memory="Likes green tea", topics=["tea", "drinks"]))
    db.upsert_memory(UserMemory(memory_id="m2", user_id="alice", memory="Coffee", topics=["drinks"]))
    db.upsert_memory(UserMemory(memory_id="m3", user_id="bob", memory="Tea too", topics=["tea"]))
    with recorded(db) as calls:
        assert len(db.list_approvals(status="pending").items) == 3
        assert [s.id for s in db.claim_due_schedules(worker_id="w", now=NOW)] == ["sch"]
        assert [m.memory_id for m in db.list_memories(user_id="alice", topics=["tea", "drinks"]).items] == ["m1"]
        assert [m.memory_id for m in db.list_memories(user_id="alice", search="GREEN").items] == ["m1"]
        assert db.memory_topics(user_id="alice") == ["drinks", "tea"]
        assert db.count_pending_approvals(user_id="alice") == 3
    assert "Scan" not in calls.names()
    indexes = {q.get("IndexName") for q in calls.of("Query")}
    assert {"by_status_created_at", "by_enabled_next_run_at", "by_value", "by_user", "by_user_id_updated_at"} <= indexes
    # the case-insensitive search is a filter on the lower-cased copy, inside the user's Query
    search = [q for q in calls.of("Query") if "FilterExpression" in q and "contains(" in q["FilterExpression"]]
    assert search and all(q["IndexName"] == "by_user_id_updated_at" for q in search)


def test_memory_stats_walks_owners_without_a_scan(db):
    for user, n in (("alice", 3), ("bob", 1), ("carol", 2)):
        for i in range(n):
            db.upsert_memory(UserMemory(user_id=user, memory=f"{user}{i}"))
    with recorded(db) as calls:
        first = db.memory_stats(limit=2)
        second = db.memory_stats(limit=2, cursor=first.next_cursor)
    assert [(s.user_id, s.memories) for s in first.items + second.items] == [("alice", 3), ("bob", 1), ("carol", 2)]
    assert second.next_cursor is None
    assert "Scan" not in calls.names()


# -- item size ------------------------------------------------------------------------------


def test_a_2mb_run_round_trips_and_goes_with_its_chunks(db):
    sid = db.upsert_session(Session(session_id="big", user_id="u")).session_id
    content = ("ünïcødé 😀 \x00 " * 150_000)[:2_000_000]
    messages = [{"role": "user", "content": "y" * 500_000}]
    run = db.append_run(Run(session_id=sid, content=content, messages=messages))
    item = raw_item(db, "runs", (run.run_id,))
    assert len(json.dumps(item, default=str)) < 400_000 and "_ch" in item
    first = chunk_items(db, "runs")
    assert len(first) >= 6
    got = db.get_run(run.run_id)
    assert got.content == content and got.messages == messages
    assert db.list_runs(sid, last=1).items[0].content == content

    replaced = "ß" * 1_500_000
    db.update_run(run.model_copy(update={"content": replaced}))
    assert db.get_run(run.run_id).content == replaced
    second = chunk_items(db, "runs")
    assert not {c["pk"]["S"] for c in first} & {c["pk"]["S"] for c in second}  # the old chunks are gone

    db.update_run(run.model_copy(update={"content": "small", "messages": []}))
    assert db.get_run(run.run_id).content == "small"
    assert chunk_items(db, "runs") == [] and "_ch" not in raw_item(db, "runs", (run.run_id,))

    db.update_run(run.model_copy(update={"content": content}))
    assert chunk_items(db, "runs")
    assert db.delete_session(sid) is True
    assert chunk_items(db, "runs") == [] and db.get_run(run.run_id) is None


def test_a_large_session_keeps_its_chunks_through_small_updates(db):
    state = {"blob": "z" * 1_200_000, "n": 2**70, "f": 0.1}
    s = db.upsert_session(Session(session_id="s", user_id="u", state=state))
    assert "_ch" in raw_item(db, "sessions", ("s",))
    renamed = db.rename_session("s", "new name")
    assert renamed.revision == s.revision + 1
    got = db.get_session("s")
    assert got.name == "new name" and got.state == state
    assert [x.session_id for x in db.list_sessions(user_id="u").items] == ["s"]
    assert db.list_sessions(user_id="u").items[0].state == state
    db.append_run(Run(session_id="s"))
    assert db.get_session("s").state == state


# -- hostile ids ------------------------------------------------------------------------------

HOSTILE = ["a:b", "a#b", "#", ":", "$x", "a.b", "*", "a/b", "ü漢字😀", "abc", "ABC", "abc ", " abc", "😀" * 255,
           "x" * 255, "\\", '"', "'", "a%00b", "null", "_"]


def test_hostile_ids_round_trip_as_distinct_records(db):
    for i in HOSTILE:
        db.upsert_session(Session(session_id=i, user_id=i, name=i))
        db.append_run(Run(session_id=i, run_id=i, content=i))  # runs are a table of their own
        db.upsert_memory(UserMemory(memory_id=i, user_id=i, memory=i, topics=[i]))
    for i in HOSTILE:
        assert db.get_session(i).name == i
        assert [s.session_id for s in db.list_sessions(user_id=i).items] == [i]
        assert [r.run_id for r in db.list_runs(i).items] == [i]
        assert db.get_run(i).content == i
        assert [m.memory_id for m in db.list_memories(user_id=i, topics=[i]).items] == [i]
        assert db.memory_topics(user_id=i) == [i]
    listed = [s.session_id for s in db.list_sessions(order="created_asc", limit=1000).items]
    assert sorted(listed) == sorted(HOSTILE)
    assert db.delete_sessions(HOSTILE) == len(HOSTILE)
    assert db.list_sessions().items == [] and all(db.get_run(i) is None for i in HOSTILE)


def test_control_characters_and_overlong_ids_are_refused(db):
    for bad in ("\x00", "a\x00b", "a\x01", "x" * 1000):
        with pytest.raises(InvalidInputError):
            db.upsert_session(Session(session_id=bad, user_id="u"))
    assert db.list_sessions().items == []


def test_topics_of_any_text_round_trip_and_filter(db):
    topics = ["\x00", "", "a#b", "😀", "t", "T", "t "]
    db.upsert_memory(UserMemory(memory_id="m", user_id="u", memory="x", topics=topics))
    assert sorted(db.get_memory("m").topics) == sorted(topics)
    assert db.memory_topics(user_id="u") == sorted(topics)
    for t in topics:
        assert [m.memory_id for m in db.list_memories(user_id="u", topics=[t]).items] == ["m"]
    db.upsert_memory(UserMemory(memory_id="m", user_id="u", memory="x", topics=["t"]))
    assert db.memory_topics(user_id="u") == ["t"] and db.memory_topics() == ["t"]
    assert db.list_memories(topics=["T"]).items == []


def test_shared_and_owned_knowledge_merge_two_partitions_in_order(db):
    for i in range(4):
        db.upsert_knowledge(KnowledgeContent(id=f"own{i}", user_id="u", name="n"))
        db.upsert_knowledge(KnowledgeContent(id=f"shared{i}", user_id=None, name="n"))
    db.upsert_knowledge(KnowledgeContent(id="other", user_id="v", name="n"))
    with recorded(db) as calls:
        first = db.list_knowledge(user_id="u", limit=5)
        rest = db.list_knowledge(user_id="u", limit=5, cursor=first.next_cursor)
    got = [k.id for k in first.items + rest.items]
    assert len(got) == 8 and "other" not in got
    times = [k.updated_at for k in first.items + rest.items]
    assert times == sorted(times, reverse=True)
    assert "Scan" not in calls.names()


# -- native TTL -------------------------------------------------------------------------------


def test_ttl_is_enabled_where_records_expire_and_children_expire_with_their_parent(db):
    c = db.kernel.client
    for name, spec in db.specs.items():
        ttl = c.describe_time_to_live(TableName=spec.physical)["TimeToLiveDescription"]
        if "expires_at" in spec.column_map:
            assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "_ttl"}, name
        else:
            assert ttl.get("TimeToLiveStatus") == "DISABLED", name
    assert "native_ttl" in db.capabilities

    when = NOW + dt.timedelta(microseconds=500_000)
    epoch = math.ceil(when.timestamp())
    s = db.upsert_session(Session(session_id="s", user_id="u", expires_at=when))
    run = db.append_run(Run(session_id="s"))
    assert raw_item(db, "sessions", ("s",))["_ttl"] == {"N": str(epoch)}
    assert raw_item(db, "runs", (run.run_id,))["_ttl"] == {"N": str(epoch)}

    later = NOW + dt.timedelta(days=30)
    db.upsert_session(s.model_copy(update={"expires_at": later}))
    assert raw_item(db, "runs", (run.run_id,))["_ttl"] == {"N": str(int(later.timestamp()))}
    db.upsert_session(s.model_copy(update={"expires_at": None}))
    assert "_ttl" not in raw_item(db, "sessions", ("s",)) and "_ttl" not in raw_item(db, "runs", (run.run_id,))
    assert db.get_session("s").expires_at is None

    m = db.upsert_memory(UserMemory(user_id="u", memory="m", expires_at=when))
    a = db.create_approval(Approval(user_id="u", expires_at=when))
    assert raw_item(db, "memories", (m.memory_id,))["_ttl"] == {"N": str(epoch)}
    assert raw_item(db, "approvals", (a.id,))["_ttl"] == {"N": str(epoch)}
    # the store's own expiry is eventual: reads and purge_expired still go by expires_at
    assert db.get_memory(m.memory_id).expires_at == when
    assert db.purge_expired(now=when)["memories"] == 1


# -- expressions --------------------------------------------------------------------------------

MARK = "Zq9MARK"
EVIL = [f"{MARK} = :v0 OR #n0", f"{MARK}) OR attribute_exists(pk", f"#{MARK}", f":{MARK}", f"{MARK}, #n1 = :v1"]


def _expressions(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            if k.endswith("Expression") and isinstance(v, str):
                out.append(v)
            elif k == "ExpressionAttributeNames":
                out.extend(v.values())
            else:
                _expressions(v, out)
    elif isinstance(value, list):
        for v in value:
            _expressions(v, out)
    return out


def test_expression_strings_never_carry_user_text(db):
    with recorded(db) as calls:
        for i, evil in enumerate(EVIL):
            s = db.upsert_session(Session(session_id=evil, user_id=evil, name=evil, agent_id=evil,
                                          state={evil: evil}, expires_at=NOW))
            db.rename_session(evil, evil + "!", user_id=evil)
            run = db.append_run(Run(session_id=evil, run_id=f"r{i}", content=evil, status="running"))
            db.update_run(run.model_copy(update={"content": evil + evil}))
            db.list_sessions(user_id=evil, name_contains=evil, agent_id=evil, with_total=True)
            db.list_runs(evil, user_id=evil, status="running")
            db.upsert_memory(UserMemory(memory_id=evil, user_id=evil, memory=evil, topics=[evil, MARK]))
            db.list_memories(user_id=evil, topics=[evil], search=evil, with_total=True)
            db.list_memories(topics=[evil])
            db.memory_topics(user_id=evil)
            db.upsert_knowledge(KnowledgeContent(id=evil, user_id=evil, linked_to=evil, name=evil))
            db.list_knowledge(user_id=evil, linked_to=evil)
            db.create_approval(Approval(id=evil, user_id=evil, session_id=evil, tool_name=evil))
            db.resolve_approval(evil, status="approved", resolved_by=evil, user_id=evil)
            db.list_approvals(user_id=evil, session_id=evil, status="approved")
            db.upsert_session(s, expected_revision=None)
        db.delete_user(EVIL[0])
        db.purge_expired(now=NOW)
        db.export_jsonl(os.devnull)
    expressions = _expressions([body for _, body in calls.sent], [])
    assert expressions, "nothing was recorded"
    assert not [x for x in expressions if MARK in x]
    assert any(MARK in json.dumps(body.get("ExpressionAttributeValues", {})) for _, body in calls.sent)


# -- schema ---------------------------------------------------------------------------------------


def test_migrate_adds_a_missing_gsi_and_indexes_existing_items(prefix, monkeypatch):
    old = service.open_db(prefix)
    old.upsert_session(Session(session_id="before", user_id="alice"))
    old.close()

    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    new = service.open_db(prefix)
    try:
        plan = new.migrate(dry_run=True)
        assert f"create index by_user_id_color on {prefix}_sessions" in plan
        assert f"record sessions schema version {NEXT}" in plan
        new.migrate()
        gsis = {g["IndexName"] for g in new.kernel.client.describe_table(TableName=f"{prefix}_sessions")["Table"]
                ["GlobalSecondaryIndexes"]}
        assert "by_user_id_color" in gsis
        assert new.schema_status()["sessions"] == {"version": NEXT, "expected": NEXT, "up_to_date": True}
        assert new.migrate() == []
        assert "_by_user_id_color_p" in raw_item(new, "sessions", ("before",))  # back-filled
        assert new.get_session("before").user_id == "alice"
    finally:
        new.close()
