"""MongoDB specifics the conformance suite does not see: the collections and indexes the
specs ask for really exist (TTL ones included), list calls are index reads that stop at
their limit, hostile ids and JSON keys stay data, seq stays strictly increasing under
concurrent appends, and what does not fit a document is refused before anything is written.

Runs against the server tests/services/mongo.py provides: the nx-27017 emulator, or the
MongoDB that $AGENTKEEP_MONGO_URL names. Where the two differ, the test says which one it
checked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agentkeep.db import Approval, ConflictError, InvalidInputError, Run, Session, UserMemory
from agentkeep.db.query import Cond, Query
from tests.services import mongo as service

pymongo = pytest.importorskip("pymongo")
from pymongo import monitoring  # noqa: E402

UTC = dt.timezone.utc
EMULATOR_REASON = "nx-27017 (the emulator this run uses)"


@pytest.fixture(scope="module", autouse=True)
def _server():
    reason = service.reachable()
    if reason:
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


class Recorder(monitoring.CommandListener):
    """Every command the client sends (pymongo's command monitoring)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict]] = []

    def started(self, event) -> None:
        self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def named(self, *names: str) -> list[dict]:
        return [c for n, c in self.commands if n in names]


@pytest.fixture
def db_name():
    name, drop = service.new_database()
    yield name
    drop()


def _open(db_name, kind="sync", **kw):
    from agentkeep.db.mongo import AsyncMongoDb, MongoDb
    from tests.conformance.backends import SyncAdapter

    if kind == "async":
        return SyncAdapter(lambda: AsyncMongoDb(db_url=service.server_url(), db_name=db_name, **kw))
    return MongoDb(db_url=service.server_url(), db_name=db_name, **kw)


@pytest.fixture
def raw(db_name):
    """The test's database, read directly with pymongo."""
    client = pymongo.MongoClient(service.server_url())
    yield client[db_name]
    client.close()


def _keys(raw, collection) -> dict[tuple, dict]:
    return {tuple(ix["key"]): ix for ix in raw[collection].list_indexes()}


# -- layout ---------------------------------------------------------------------------------


def test_every_spec_index_exists_with_the_key_appended(db_name, raw):
    with _open(db_name) as db:
        db.create_tables()
        assert db.migrate(dry_run=True) == []  # indexes are recognised by their keys
        for name, spec in db.specs.items():
            assert spec.physical in raw.list_collection_names()
            have = _keys(raw, spec.physical)
            for idx in spec.indexes:
                if idx.sparse or idx.unique:
                    assert idx.fields in have, (name, idx.fields, list(have))
                else:  # list orders end with the key: so does the index
                    fields = idx.fields + tuple(k for k in spec.key if k not in idx.fields)
                    assert fields in have, (name, idx.fields, list(have))
                if idx.unique:
                    assert have[idx.fields].get("unique") is True
            for field in spec.multi:
                assert (field,) in have  # multikey: "contains all" of topics
            assert ("_ttl",) not in have  # native expiry is opt-in


def test_ttl_indexes_are_created_on_request_and_the_server_expires(db_name, raw):
    with _open(db_name) as plain:
        plain.create_tables()
        assert "native_ttl" not in plain.capabilities
    with _open(db_name, ttl=True) as db:
        assert "native_ttl" in db.capabilities
        steps = db.migrate(dry_run=True)
        assert len(steps) == 2 and all("_ttl" in s and "expireAfterSeconds=0" in s for s in steps), steps
        db.create_tables()
        for table in ("memories", "approvals"):
            ttl = _keys(raw, db.specs[table].physical)[("_ttl",)]
            assert ttl["expireAfterSeconds"] == 0
        # a session has runs, which a server-side delete of the session would leave behind
        assert ("_ttl",) not in _keys(raw, db.specs["sessions"].physical)

        when = dt.datetime(2099, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
        m = db.upsert_memory(UserMemory(user_id="u", memory="m", expires_at=when))
        doc = raw[db.specs["memories"].physical].find_one({"_id": m.memory_id})
        # the date copy is rounded up to BSON's milliseconds: never expired early
        assert doc["_ttl"] == dt.datetime(2099, 1, 1, 0, 0, 0, 124000)
        assert db.get_memory(m.memory_id).expires_at == when  # the record keeps microseconds

        gone = db.upsert_memory(UserMemory(user_id="u", memory="old", expires_at=dt.datetime(2001, 1, 1, tzinfo=UTC)))
        if service.emulated():  # nx-27017 applies TTL indexes when a collection is next used
            assert db.get_memory(gone.memory_id) is None
            assert db.get_memory(m.memory_id) is not None
        # a real mongod's TTL monitor runs once a minute; purge_expired needs none of it
        db.purge_expired()
        assert db.get_memory(gone.memory_id) is None


def test_documents_keep_typed_fields_and_json_text(db_name, raw):
    when = dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    state = {"$set": {"a.b": 1}, "a.b": [2**100, -(2**70)], "$where": "1", "": None, "x\x00y": 1.5}
    with _open(db_name) as db:
        s = db.upsert_session(Session(session_id="s$.1", user_id="u", state=state, created_at=when))
        got = db.get_session("s$.1")
        assert got.state == state and got.created_at == when
        assert json.dumps(got.state, sort_keys=True) == json.dumps(state, sort_keys=True)
        doc = raw[db.specs["sessions"].physical].find_one({"_id": "s$.1"})
        assert doc["session_id"] == "s$.1"
        assert isinstance(doc["state"], str) and json.loads(doc["state"]) == state
        assert doc["created_at"] == -1  # epoch microseconds: order-preserving, exact
        assert "expires_at" not in doc and "summary" not in doc  # None is an absent field
        assert doc["revision"] == s.revision == 1

        m = db.upsert_memory(UserMemory(user_id="u", memory="m", topics=["$x", "a.b", "plain"]))
        mdoc = raw[db.specs["memories"].physical].find_one({"_id": m.memory_id})
        assert mdoc["topics"] == ["$x", "a.b", "plain"]  # a native array, for the multikey index
        assert [x.memory_id for x in db.list_memories(topics=["$x", "a.b"]).items] == [m.memory_id]
        assert db.memory_topics(user_id="u") == ["$x", "a.b", "plain"]


def test_composite_keys_are_encoded_unambiguously(db_name, raw):
    with _open(db_name) as db:
        db.create_tables()
        day = dt.date(2030, 1, 1)
        rows = [{"date": day, "user_id": u, "agent_runs": i, "team_runs": 0, "workflow_runs": 0, "sessions": 0,
                 "users": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cost": 0.0, "by_model": {}}
                for i, u in enumerate(['a","b', "a", "", '"]'])]
        assert db.kernel.put_many("metrics", rows, True) == 4
        ids = sorted(d["_id"] for d in raw[db.specs["metrics"].physical].find())
        assert ids == sorted(json.dumps([day.isoformat(), u], ensure_ascii=False, separators=(",", ":"))
                             for u in ['a","b', "a", "", '"]'])
        for i, u in enumerate(['a","b', "a", "", '"]']):
            assert [(m.user_id, m.agent_runs) for m in db.get_metrics(user_id=u)] == [(u, i)]
            assert db.kernel.get("metrics", (day, u))["agent_runs"] == i


# -- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_operator_as_id_is_refused_and_writes_nothing(db_name, kind):
    recorder = Recorder()
    with _open(db_name, kind, event_listeners=[recorder]) as db:
        db.upsert_session(Session(session_id="real", user_id="u"))
        recorder.commands.clear()
        for call in (
            lambda: db.get_session({"$ne": None}),
            lambda: db.get_session("real", user_id={"$ne": None}),
            lambda: db.delete_session({"$gt": ""}),
            lambda: db.list_sessions(user_id={"$exists": True}),
            lambda: db.rename_session({"$ne": None}, "x"),
        ):
            with pytest.raises(InvalidInputError):
                call()
        writes = recorder.named("insert", "update", "delete", "findAndModify", "bulkWrite")
        assert writes == [] and db.get_session("real").name is None


def test_the_kernel_never_sends_a_value_in_operator_position(db_name):
    """Below the domain's checks: a document where a scalar belongs is refused, not sent."""
    with _open(db_name) as db:
        db.upsert_session(Session(session_id="real", user_id="u"))
        k = db.kernel
        for call in (
            lambda: k.get("sessions", ({"$ne": None},)),
            lambda: k.find(Query("sessions", (Cond("user_id", "eq", {"$ne": None}),))),
            lambda: k.count("sessions", (Cond("user_id", "in", [{"$gt": ""}]),)),
            lambda: k.delete("sessions", (Cond("session_id", "eq", {"$exists": True}),)),
            lambda: k.find(Query("memories", (Cond("topics", "contains_all", [{"$ne": 1}]),))),
            lambda: k.find(Query("sessions", (Cond("$where", "eq", "1"),))),
        ):
            with pytest.raises(InvalidInputError):
                call()
        assert db.get_session("real") is not None


IDS = ["$", "$where", "$set.x", "a.b", ".", "..", "a$b.c", "_id", "{\"$ne\": null}", "x" * 255]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ids_with_dollar_and_dot_round_trip(db_name, kind):
    with _open(db_name, kind) as db:
        for i in IDS:
            db.upsert_session(Session(session_id=i, user_id=i, name=i))
            db.append_run(Run(session_id=i, run_id=i))
            db.upsert_memory(UserMemory(memory_id=i, user_id=i, memory=i, topics=[i]))
        for i in IDS:
            assert db.get_session(i).name == i
            assert db.get_session(i, user_id=i, runs=-1).runs[0].run_id == i
            assert [s.session_id for s in db.list_sessions(user_id=i).items] == [i]
            assert [m.memory_id for m in db.list_memories(topics=[i]).items] == [i]
            assert db.get_memory(i, user_id=i).memory == i
        assert sorted(s.session_id for s in db.list_sessions(limit=100).items) == sorted(IDS)
        assert db.delete_sessions(IDS[:3]) == 3
        assert db.get_session(IDS[0]) is None and db.get_session(IDS[3]) is not None


@pytest.mark.xfail(service.emulated(), strict=True,
                   reason=f"{EMULATOR_REASON} reads a 24-hex-digit _id in a query as an ObjectId and lowercases it")
def test_hex_ids_differing_in_case_are_distinct(db_name):
    upper, lower = "507F1F77BCF86CD799439011", "507f1f77bcf86cd799439011"
    with _open(db_name) as db:
        for i in (upper, lower):
            db.upsert_session(Session(session_id=i, user_id="u", name=i))
        assert db.get_session(upper).name == upper and db.get_session(lower).name == lower


def test_search_text_is_literal_and_case_insensitive(db_name):
    with _open(db_name) as db:
        hit = db.upsert_memory(UserMemory(user_id="u", memory="Ünï a.b*(c)\x00d $x ^[z]"))
        db.upsert_memory(UserMemory(user_id="u", memory="abc a-b xc"))

        def found(text):
            return [m.memory_id for m in db.list_memories(search=text).items]

        for text in (".B*(C)\x00D", "üNÏ", "$X ^[Z]", "\x00"):
            assert found(text) == [hit.memory_id], text
        for text in (".*", "a.b*(x", "[a-z]", "\\"):
            assert found(text) == [], text


@pytest.mark.xfail(service.emulated(), strict=True,
                   reason=f"{EMULATOR_REASON} never matches a string holding NUL inside a document field")
def test_a_topic_holding_nul_can_be_filtered_on(db_name):
    with _open(db_name) as db:
        m = db.upsert_memory(UserMemory(user_id="u", memory="m", topics=["a\x00b", "c"]))
        assert db.get_memory(m.memory_id).topics == ["a\x00b", "c"]  # stored either way
        assert [x.memory_id for x in db.list_memories(topics=["a\x00b"]).items] == [m.memory_id]


def test_a_record_too_large_once_stored_is_refused_and_writes_nothing(db_name):
    """Within the 4 MiB payload limit, JSON text of control characters still passes MongoDB's
    16 MiB document (each is written as a 6-character escape)."""
    dense = "\x01" * 3_000_000
    with _open(db_name) as db:
        s = Session(user_id="u", state={"x": dense})
        with pytest.raises(InvalidInputError, match="16 MiB"):
            db.upsert_session(s)
        assert db.get_session(s.session_id) is None

        kept = db.upsert_session(Session(user_id="u"))
        with pytest.raises(InvalidInputError, match="16 MiB"):
            db.upsert_session(Session(session_id=kept.session_id, user_id="u", state={"x": dense}))
        r = Run(session_id=kept.session_id, content=dense)
        with pytest.raises(InvalidInputError, match="16 MiB"):
            db.append_run(r)
        assert db.get_run(r.run_id) is None
        after = db.get_session(kept.session_id)
        assert after.revision == 1 and after.updated_at == kept.updated_at  # the seq was not taken
        assert db.append_run(Run(session_id=kept.session_id)).seq == 1


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_eight_threads_appending_get_strictly_increasing_seqs(db_name, kind):
    threads, each = 8, 20
    with _open(db_name, kind) as db:
        sid = db.upsert_session(Session(user_id="u")).session_id
        barrier = threading.Barrier(threads)

        def work(i):
            barrier.wait(timeout=60)
            return [db.append_run(Run(session_id=sid, content=f"{i}-{k}")).seq for k in range(each)]

        with ThreadPoolExecutor(threads) as pool:
            per_thread = list(pool.map(work, range(threads)))
        for seqs in per_thread:
            assert all(a < b for a, b in zip(seqs, seqs[1:]))
        every = sorted(s for seqs in per_thread for s in seqs)
        assert every == list(range(1, threads * each + 1))  # no duplicate, no gap
        listed = [r.seq for r in db.get_session(sid, runs=-1).runs]
        assert listed == every
        assert db.get_session(sid).updated_at >= db.list_runs(sid, last=1).items[0].created_at


def test_a_duplicate_run_id_leaves_the_session_untouched(db_name, raw):
    with _open(db_name) as db:
        sid = db.upsert_session(Session(user_id="u")).session_id
        db.append_run(Run(session_id=sid, run_id="r1"))
        before = raw[db.specs["sessions"].physical].find_one({"_id": sid})
        with pytest.raises(ConflictError):
            db.append_run(Run(session_id=sid, run_id="r1"))
        assert raw[db.specs["sessions"].physical].find_one({"_id": sid}) == before
        assert db.append_run(Run(session_id=sid)).seq == 2


# -- list calls are index reads ---------------------------------------------------------------


def _winning_plan(raw, find: dict):
    cmd = {k: find[k] for k in ("find", "filter", "sort", "limit", "projection") if k in find}
    return raw.command("explain", cmd, verbosity="queryPlanner")["queryPlanner"]["winningPlan"]


def _ixscans(plan) -> list[dict]:
    found = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("stage") == "IXSCAN":
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_listing_a_users_sessions_is_an_index_read_that_stops_at_the_limit(db_name, raw):
    recorder = Recorder()
    with _open(db_name, event_listeners=[recorder]) as db:
        for i in range(30):
            db.upsert_session(Session(user_id=f"u{i % 3}", name=f"s{i}"))
        recorder.commands.clear()
        page = db.list_sessions(user_id="u1", limit=4, with_total=True)
        assert len(page.items) == 4 and page.total == 10
        second = db.list_sessions(user_id="u1", limit=4, cursor=page.next_cursor)
        assert not {s.session_id for s in second.items} & {s.session_id for s in page.items}

        finds = recorder.named("find")
        # the next page: the ties of the position, then the rows before it (plain ranges)
        assert len(finds) == 3
        assert set(finds[1]["filter"]) == {"user_id", "updated_at", "session_id"}
        assert set(finds[1]["filter"]["updated_at"]) == {"$eq"} and set(finds[1]["filter"]["session_id"]) == {"$lt"}
        assert set(finds[2]["filter"]) == {"user_id", "updated_at"} and set(finds[2]["filter"]["updated_at"]) == {"$lt"}
        for find in finds:
            assert find["filter"]["user_id"] == {"$eq": "u1"}
            assert list(find["sort"].items()) == [("updated_at", -1), ("session_id", -1)]
            assert find["limit"] == 5  # one more than the page, to know there is a next one
        assert ("user_id", "updated_at", "session_id") in _keys(raw, db.specs["sessions"].physical)
        # the total is counted on the server, not fetched
        counts = recorder.named("aggregate", "count")
        assert len(counts) == 1 and all(not c.get("find") for c in counts)

        for find in finds:
            plan = _winning_plan(raw, find)
            if service.emulated():
                # nx-27017 answers explain with SQLite's plan for the filter it translated
                text = json.dumps(plan)
                assert "USING INDEX" in text and "user_id" in text, text
            else:
                scans = _ixscans(plan)
                assert scans and all(list(s["keyPattern"])[:2] == ["user_id", "updated_at"] for s in scans), plan


# -- set-up ---------------------------------------------------------------------------------


def test_bad_locations_are_invalid_input():
    from agentkeep.db.mongo import MongoDb

    for kwargs in ({"db_url": "postgresql://x"}, {"db_url": service.server_url(), "db_name": "a.b"},
                   {"db_url": service.server_url(), "db_name": ""},
                   {"db_url": service.server_url(), "collection_prefix": "bad$"},
                   {"db_url": service.server_url(), "session_table": "system.x"}):
        with pytest.raises(InvalidInputError):
            MongoDb(**kwargs)


def test_db_name_comes_from_the_url_when_not_given(db_name):
    from agentkeep.db.mongo import MongoDb

    with MongoDb(db_url=f"{service.server_url()}/{db_name}") as db:
        assert db.kernel.db_name == db_name
        assert db.id.endswith(f"/{db_name}") and "@" not in db.id
    with MongoDb(db_url=service.server_url()) as db:
        assert db.kernel.db_name == "agentkeep"


def test_collection_prefix_and_overrides(db_name, raw):
    with _open(db_name, collection_prefix="ak_", session_table="chat_sessions") as db:
        db.upsert_session(Session(session_id="s", user_id="u"))
        db.create_approval(Approval(user_id="u"))
        names = set(raw.list_collection_names())
        assert "chat_sessions" in names and "ak_approvals" in names and "ak_sessions" not in names
