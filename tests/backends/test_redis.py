"""Redis specifics, for RedisDb and AsyncRedisDb: the value encoding sorts like the values,
the kernel answers every query exactly as the in-memory reference does, hostile ids stay in
their own records and key spaces, list calls are range reads that stop at the limit and
never ask for KEYS or SCAN (counted by the server), racing inserts of one id have one winner,
records keep no native expiry, and an index added to a spec is built from the records."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
import uuid

import pytest

from agentkeep.db import Approval, ConflictError, Run, Session, UserMemory
from agentkeep.db import tables as tables_module
from agentkeep.db.in_memory import MemoryKernel
from agentkeep.db.kernel import DuplicateKey
from agentkeep.db.query import Cond, Query
from agentkeep.db.tables import build_specs
from tests.conformance.backends import SyncAdapter
from tests.processes import run_together
from tests.services import redis as server
from tests.upgrades import NEXT, upgraded_specs

redis = pytest.importorskip("redis")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentkeep.db.redis import AsyncRedisDb, RedisDb, decode, encode  # noqa: E402

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _server():
    reason = server.check()
    if reason:
        import os

        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def prefix():
    name = server.new_prefix()
    yield name
    server.drop_prefix(server.server_url(), name)


@pytest.fixture
def db(prefix):
    d = RedisDb(db_url=server.server_url(), prefix=prefix)
    yield d
    d.close()


@pytest.fixture
def client():
    c = redis.Redis.from_url(server.server_url())
    yield c
    c.close()


# -- the encoding ----------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\x00", "\x01", "\x00\x01", "\x01\x00", "a\x00", "a", "a\x01b", "\uffff", "\U0010ffff", "é", "e"])
KINDS = {
    "str": TEXT,
    "int": st.integers(min_value=-(10**30), max_value=10**30) | st.sampled_from([0, -1, 1, 9, 10, -9, -10]),
    "float": st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1e-300, -1e-300]),
    "bool": st.booleans(),
    "time": st.datetimes(timezones=st.just(UTC)),
    "date": st.dates(),
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(KINDS)).flatmap(lambda k: st.tuples(st.just(k), st.none() | KINDS[k], st.none() | KINDS[k])))
def test_encoding_sorts_like_the_values_with_none_lowest(case):
    kind, a, b = case
    ea, eb = encode(kind, a), encode(kind, b)
    assert decode(kind, ea[:-1]) == a and decode(kind, eb[:-1]) == b
    assert ea.count(b"\x00") == 1 and ea.endswith(b"\x00"), "one terminator, nothing else"
    key = (lambda v: (0, 0) if v is None else (1, v))
    assert (ea < eb) == (key(a) < key(b)) and (ea == eb) == (key(a) == key(b))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TEXT, st.integers(-5, 5)), min_size=2, max_size=6))
def test_concatenated_encodings_sort_like_tuples(pairs):
    """Index members are encodings concatenated: their byte order is the tuples' order."""
    members = sorted(pairs, key=lambda p: encode("str", p[0]) + encode("int", p[1]))
    assert members == sorted(pairs)


# -- the kernel against the reference -----------------------------------------------------------

IDS = ["a", "A", "a ", "a:b", "a*", "a?", "[a]", "a\\b", "é", "\x00", "a\x00b", "a\x01", "z" * 255, "a\x00"]
USERS = ["u1", "u2", "U1", "u1 ", "u*", None]
TIMES = [None, dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), NOW, NOW + dt.timedelta(microseconds=1),
         NOW + dt.timedelta(days=1), dt.datetime(9000, 1, 1, tzinfo=UTC)]


def _random_session(rng: random.Random, sid: str) -> dict:
    """A sessions row: every column of the table (None unless drawn here)."""
    columns = dict.fromkeys(c.name for c in tables_module.default_specs()["sessions"].columns)
    return columns | {
        "session_id": sid, "session_type": rng.choice(["agent", "team"]), "user_id": rng.choice(USERS),
        "agent_id": rng.choice(["ag1", "ag2", None]), "team_id": None, "workflow_id": None,
        "name": rng.choice(["Alpha", "beta", "", None, "ALPHA\x00x"]), "state": {"n": rng.randint(0, 3)},
        "metadata": {}, "summary": None, "revision": rng.randint(1, 3), "created_at": rng.choice(TIMES[1:]),
        "updated_at": rng.choice(TIMES), "expires_at": rng.choice([None, None, *TIMES[1:]]), "last_seq": 0,
    }


def _random_where(rng: random.Random) -> tuple[Cond, ...]:
    options = [
        lambda: Cond("user_id", "eq", rng.choice(USERS)),
        lambda: Cond("user_id", "in", rng.sample(USERS, rng.randint(1, 3))),
        lambda: Cond("agent_id", "eq", rng.choice(["ag1", "ag2", None])),
        lambda: Cond("updated_at", rng.choice(["lt", "lte", "gt", "gte"]), rng.choice(TIMES[1:])),
        lambda: Cond("created_at", rng.choice(["lt", "gte"]), rng.choice(TIMES[1:])),
        lambda: Cond("expires_at", "lte", rng.choice(TIMES[1:])),
        lambda: Cond("name", "icontains", rng.choice(["alp", "a", "x"])),
        lambda: Cond("session_id", "in", rng.sample(IDS, 3)),
        lambda: Cond("session_id", "gte", rng.choice(IDS)),
        lambda: Cond("revision", "eq", rng.randint(1, 3)),
        lambda: Cond("session_type", "eq", "team"),
    ]
    return tuple(rng.choice(options)() for _ in range(rng.randint(0, 3)))


def test_the_kernel_answers_like_the_reference(prefix):
    """find / count / distinct / delete / update over random data and random queries give
    exactly what the in-memory RowTable gives (it defines the semantics)."""
    rng = random.Random(7)
    specs = build_specs("", None)
    ref, db = MemoryKernel(), RedisDb(db_url=server.server_url(), prefix=prefix)
    ref.setup(specs)
    kernel = db.kernel
    try:
        rows = [_random_session(rng, sid) for sid in IDS]
        ref.put_many("sessions", rows, True)
        assert kernel.put_many("sessions", rows, True) == len(rows)
        orders = [("updated_at", "session_id"), ("created_at", "session_id"), ("session_id",)]
        for _ in range(400):
            where = _random_where(rng)
            order = rng.choice(orders)
            desc = rng.random() < 0.5
            full = ref.find(Query("sessions", where, order, desc))
            after = None
            if full and rng.random() < 0.5:
                pick = rng.choice(full)
                after = tuple(pick[f] for f in order)
            limit = rng.choice([None, 1, 2, 5, 50])
            q = Query("sessions", where, order, desc, limit, after)
            assert kernel.find(q) == ref.find(q), q
            projected = Query("sessions", where, order, desc, limit, after, ("session_id", "name"))
            assert kernel.find(projected) == ref.find(projected), projected
            unordered = Query("sessions", where)
            key = lambda r: r["session_id"]  # noqa: E731
            assert sorted(kernel.find(unordered), key=key) == sorted(ref.find(unordered), key=key), where
            assert kernel.count("sessions", where) == ref.count("sessions", where), where
            assert sorted(map(str, kernel.distinct("sessions", "user_id", where))) == sorted(
                map(str, ref.distinct("sessions", "user_id", where))), where
        for _ in range(60):
            sid = rng.choice(IDS)
            where = tuple(c for c in _random_where(rng) if c.op != "icontains" and c.field != "session_id")
            values = {"updated_at": rng.choice(TIMES), "user_id": rng.choice(USERS), "name": "n"}
            incr = {"revision": 1} if rng.random() < 0.5 else None
            got = kernel.update("sessions", (sid,), set=values, incr=incr, where=where, returning=("revision", "user_id"))
            assert got == ref.update("sessions", (sid,), set=values, incr=incr, where=where, returning=("revision", "user_id"))
        everything = Query("sessions", (), ("updated_at", "session_id"))
        assert kernel.find(everything) == ref.find(everything)
        for _ in range(5):
            where = _random_where(rng)
            assert kernel.delete("sessions", where) == ref.delete("sessions", where), where
            assert kernel.find(everything) == ref.find(everything)
    finally:
        db.close()


def test_topics_answer_like_the_reference(prefix):
    rng = random.Random(3)
    specs = build_specs("", None)
    ref, db = MemoryKernel(), RedisDb(db_url=server.server_url(), prefix=prefix)
    ref.setup(specs)
    kernel = db.kernel
    topics = ["a", "A", "a\x00", "b*", "c d", "é"]
    try:
        rows = []
        for i in range(60):
            rows.append({
                "memory_id": f"m{i}", "user_id": rng.choice(USERS), "memory": rng.choice(["x", "Yes", "no"]),
                "topics": rng.sample(topics, rng.randint(0, 3)), "input": None, "feedback": None,
                "agent_id": rng.choice(["ag", None]), "team_id": None, "created_at": NOW,
                "updated_at": rng.choice(TIMES[1:]), "expires_at": None,
            })
        ref.put_many("memories", rows, True)
        kernel.put_many("memories", rows, True)
        for _ in range(200):
            where = [Cond("topics", "contains_all", rng.sample(topics, rng.randint(1, 2)))]
            if rng.random() < 0.6:
                where.append(Cond("user_id", "eq", rng.choice(USERS)))
            if rng.random() < 0.3:
                where.append(Cond("memory", "icontains", "y"))
            q = Query("memories", tuple(where), ("updated_at", "memory_id"), rng.random() < 0.5, rng.choice([None, 3]))
            assert kernel.find(q) == ref.find(q), q
            assert kernel.count("memories", q.where) == ref.count("memories", q.where)
        for user in USERS:
            where = (Cond("user_id", "eq", user),)
            assert sorted(kernel.distinct("memories", "topics", where)) == sorted(ref.distinct("memories", "topics", where))
        assert sorted(kernel.distinct("memories", "topics", ())) == sorted(ref.distinct("memories", "topics", ()))
        for after in ["", "u1", "u2"]:
            where = (Cond("user_id", "gt", after),)
            assert kernel.group_count("memories", "user_id", "updated_at", where, 2) == \
                ref.group_count("memories", "user_id", "updated_at", where, 2)
    finally:
        db.close()


# -- hostile ids ---------------------------------------------------------------------------------

HOSTILE = [":", "*", "?", "[", "]", "\\", "a:b", "*:*", "[a-z]*", "é", "日本", "🙂", "abc", "ABC", "abc ", " abc",
           "x" * 255, "$", ".", "/", "%", "{tag}"]


def test_hostile_ids_are_distinct_records_and_private_to_their_users(db, client, prefix):
    for i, hostile in enumerate(HOSTILE):
        db.upsert_session(Session(session_id=hostile, user_id=hostile, name=f"s{i}"))
        db.upsert_memory(UserMemory(memory_id=hostile, user_id=hostile, memory=f"m{i}", topics=[hostile, "*"]))
    for i, hostile in enumerate(HOSTILE):
        assert db.get_session(hostile).name == f"s{i}"
        page = db.list_sessions(user_id=hostile, with_total=True)
        assert [s.session_id for s in page.items] == [hostile] and page.total == 1
        assert [m.memory_id for m in db.list_memories(user_id=hostile, topics=[hostile]).items] == [hostile]
        assert db.memory_topics(user_id=hostile) == sorted({hostile, "*"})
        for other in HOSTILE:
            if other != hostile:
                assert db.get_session(hostile, user_id=other) is None
    assert db.list_sessions(user_id="ab", with_total=True).total == 0
    assert db.list_memories(topics=["*"], with_total=True, limit=1).total == len(HOSTILE)
    # every key of the db is under the prefix, in one of its fixed key spaces
    kinds = {k.split(b":", 3)[2] for k in client.scan_iter(match=f"{prefix}:*")}
    assert kinds <= {b"r", b"k", b"i", b"m", b"indexes", b"lock"}


def test_nul_and_escape_bytes_in_keys_do_not_collide(db):
    """Ids never hold control characters (the domain refuses them), but the kernel's key
    encoding does not rely on that."""
    k = db.kernel
    base = {"value": 1, "updated_at": NOW}
    keys = ["a", "a\x00", "a\x00b", "a\x01", "a\x01\x01", "a\x02", "\x00", "\x01", "a\\x00"]
    for i, key in enumerate(keys):
        k.insert("meta", {**base, "key": key, "value": i})
    for i, key in enumerate(keys):
        assert k.get("meta", (key,))["value"] == i
    got = [r["key"] for r in k.find(Query("meta", (Cond("key", "gte", "a"), Cond("key", "lt", "a\x02")), ("key",)))]
    assert got == sorted(x for x in keys if "a" <= x < "a\x02")


def test_topics_with_separator_bytes_stay_apart(db):
    db.upsert_memory(UserMemory(memory_id="m1", user_id="u", memory="x", topics=["a\x00b"]))
    db.upsert_memory(UserMemory(memory_id="m2", user_id="u", memory="x", topics=["a", "b"]))
    assert [m.memory_id for m in db.list_memories(topics=["a\x00b"]).items] == ["m1"]
    assert [m.memory_id for m in db.list_memories(topics=["a"]).items] == ["m2"]
    assert db.memory_topics(user_id="u") == ["a", "a\x00b", "b"]


# -- reads are range reads -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_url():
    """A server of our own, so the command counts are this test's alone."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary for a private server")
    from tests.services.process import ServerProcess

    proc = ServerProcess("redis-private", lambda port: ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                                        "--save", "", "--appendonly", "no"],
                         ready=lambda port: server.reachable(f"redis://127.0.0.1:{port}/0") is None)
    yield f"redis://127.0.0.1:{proc.port}/0"
    proc.stop()


def _commands(client) -> dict[str, int]:
    return {name[len("cmdstat_"):]: v["calls"] for name, v in client.info("commandstats").items()}


def _delta(client, call) -> dict[str, int]:
    before = _commands(client)
    call()
    after = _commands(client)
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


def test_a_list_page_is_one_range_read_that_stops_at_the_limit(private_url):
    d = RedisDb(db_url=private_url, prefix="page")
    c = redis.Redis.from_url(private_url)
    try:
        for i in range(300):
            d.upsert_session(Session(user_id=f"u{i % 3}", name=f"s{i}"))
        d.get_session("warm-up")
        page = []
        calls = _delta(c, lambda: page.append(d.list_sessions(user_id="u1", limit=20)))
        assert len(page[0].items) == 20
        assert calls.get("zrevrangebylex") == 1 and calls.get("hmget") == 21  # limit + 1 records read
        assert not {"scan", "keys", "sscan", "zscan", "hscan", "hgetall"} & set(calls)
        nxt = _delta(c, lambda: page.append(d.list_sessions(user_id="u1", limit=20, cursor=page[0].next_cursor)))
        assert nxt.get("zrevrangebylex") == 1 and nxt.get("hmget") == 21
        assert {s.session_id for s in page[0].items}.isdisjoint(s.session_id for s in page[1].items)
        total = _delta(c, lambda: page.append(d.list_sessions(user_id="u1", limit=20, with_total=True)))
        assert page[2].total == 100
        assert total.get("zlexcount") == 1 and total.get("hmget") == 21, "the total is counted, not read"
        runs = _delta(c, lambda: page.append(d.list_runs(page[0].items[0].session_id, last=5)))
        assert not {"scan", "keys"} & set(runs)
        for call in (lambda: d.delete_user("u2"), lambda: d.purge_expired(now=NOW), lambda: d.memory_topics(user_id="u1"),
                     lambda: d.memory_stats(), lambda: d.claim_due_schedules(worker_id="w")):
            assert not {"scan", "keys"} & set(_delta(c, call))
        # delete_user reads the user's index range, not the table
        assert d.list_sessions(with_total=True).total == 200
    finally:
        d.close()
        c.close()


def test_a_restarted_server_is_survived():
    """The first call after a restart succeeds: stale connections are replaced and the
    scripts, which the new server does not know, are loaded again."""
    from tests.services.process import ServerProcess, free_port

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary for a private server")
    port = free_port()
    argv = lambda p: ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]  # noqa: E731
    ready = lambda p: server.reachable(f"redis://127.0.0.1:{p}/0") is None  # noqa: E731
    proc = ServerProcess("redis-restart", argv, port=port, ready=ready)
    for kind in ("sync", "async"):
        url = f"redis://127.0.0.1:{port}/0"
        d = RedisDb(db_url=url, prefix=kind) if kind == "sync" else SyncAdapter(lambda: AsyncRedisDb(db_url=url, prefix=kind))
        try:
            sid = d.upsert_session(Session(user_id="u")).session_id
            assert d.append_run(Run(session_id=sid)).seq == 1
            proc.stop()
            proc = ServerProcess("redis-restart", argv, port=port, ready=ready)  # nothing kept on disk
            assert d.get_session(sid) is None
            sid = d.upsert_session(Session(user_id="u")).session_id
            assert d.append_run(Run(session_id=sid)).seq == 1
        finally:
            d.close()
    proc.stop()


def test_get_session_with_runs_is_two_calls(private_url):
    d = RedisDb(db_url=private_url, prefix="two")
    c = redis.Redis.from_url(private_url)
    try:
        sid = d.upsert_session(Session(user_id="u")).session_id
        for _ in range(50):
            d.append_run(Run(session_id=sid))
        d.get_session(sid, runs=10)  # the server has now seen every script this call runs
        got = []
        calls = _delta(c, lambda: got.append(d.get_session(sid, runs=10)))
        assert [r.seq for r in got[0].runs] == list(range(41, 51))
        assert calls.get("evalsha") == 2 and calls.get("hmget") == 11 and calls.get("zrevrangebylex") == 1
    finally:
        d.close()
        c.close()


# -- writes --------------------------------------------------------------------------------------


def test_racing_inserts_of_one_id_have_exactly_one_winner(prefix):
    dbs = [RedisDb(db_url=server.server_url(), prefix=prefix) for _ in range(8)]
    barrier = threading.Barrier(len(dbs))
    outcomes: list = [None] * len(dbs)

    def go(i: int) -> None:
        barrier.wait()
        for n in range(30):
            try:
                dbs[i].kernel.insert("meta", {"key": f"k{n}", "value": i, "updated_at": NOW})
                outcomes[i] = (outcomes[i] or 0) + 1
            except DuplicateKey:
                pass

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(dbs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sum(o or 0 for o in outcomes) == 30
        winners = {n: dbs[0].kernel.get("meta", (f"k{n}",))["value"] for n in range(30)}
        assert len(winners) == 30
        # the domain reports the losers
        errors = []

        def approve(i: int) -> None:
            try:
                dbs[i].create_approval(Approval(id="same", user_id="u"))
            except ConflictError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=approve, args=(i,)) for i in range(len(dbs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == len(dbs) - 1
    finally:
        for d in dbs:
            d.close()


def test_records_keep_no_native_expiry(db, client):
    """expires_at is served by a sparse index and purge_expired, never by key expiry: a
    record past its time stays readable (an approval turns "expired" on resolution) until
    purged, and its runs go with it."""
    s = db.upsert_session(Session(user_id="u", expires_at=NOW - dt.timedelta(days=1)))
    db.append_run(Run(session_id=s.session_id))
    keep = db.upsert_session(Session(user_id="u"))
    rkey = db.kernel.tables["sessions"].rkey((s.session_id,))
    assert client.pttl(rkey) == -1
    expiring = db.kernel.tables["sessions"].indexes
    sparse = next(ix for ix in expiring if ix.sparse)
    assert client.zcard(sparse.zkey) == 1, "only records that expire are in the expiry index"
    assert db.purge_expired(now=NOW) == {"sessions": 1, "runs": 1, "memories": 0, "approvals": 0}
    assert client.exists(rkey) == 0 and client.zcard(sparse.zkey) == 0
    assert db.get_session(keep.session_id) is not None


def test_every_spec_index_is_a_sorted_set_with_a_member_per_record(db, client, prefix):
    for i in range(5):
        db.upsert_session(Session(user_id=f"u{i}", expires_at=NOW if i == 0 else None))
    db.upsert_memory(UserMemory(user_id="u", memory="m", topics=["a", "b", "a"]))
    sessions = db.kernel.tables["sessions"]
    names = {ix.zkey: client.zcard(ix.zkey) for ix in sessions.indexes}
    assert names == {
        f"{prefix}:sessions:k".encode(): 5,
        f"{prefix}:sessions:i:user_id,updated_at".encode(): 5,
        f"{prefix}:sessions:i:user_id,created_at".encode(): 5,
        f"{prefix}:sessions:i:updated_at".encode(): 5,
        f"{prefix}:sessions:i:created_at".encode(): 5,
        f"{prefix}:sessions:i:session_type,updated_at".encode(): 5,
        f"{prefix}:sessions:i:expires_at".encode(): 1,
    }
    assert all(score == 0 for _, score in client.zrange(f"{prefix}:sessions:i:updated_at", 0, -1, withscores=True))
    assert client.zcard(f"{prefix}:memories:m:topics") == 2 and client.zcard(f"{prefix}:memories:m:user_id,topics") == 2
    member = client.zrange(sessions.key_index.zkey, 0, 0)[0]
    assert client.type(sessions.rprefix + member) == b"hash", "a key index member is the record's encoded key"


def test_the_async_twin_shares_the_data(prefix):
    sync = RedisDb(db_url=server.server_url(), prefix=prefix)
    adb = SyncAdapter(lambda: AsyncRedisDb(db_url=server.server_url(), prefix=prefix))
    try:
        sid = adb.upsert_session(Session(user_id="u")).session_id
        assert adb.append_run(Run(session_id=sid)).seq == 1
        assert sync.append_run(Run(session_id=sid)).seq == 2
        assert [r.seq for r in adb.get_session(sid, runs=-1).runs] == [1, 2]
    finally:
        adb.close()
        sync.close()


# -- schema ------------------------------------------------------------------------------------------


def test_an_index_added_to_a_spec_is_built_from_the_records(prefix, monkeypatch):
    d = RedisDb(db_url=server.server_url(), prefix=prefix)
    ids = [d.upsert_session(Session(user_id=f"u{i % 3}", state={"i": i})).session_id for i in range(40)]
    d.close()
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    d = RedisDb(db_url=server.server_url(), prefix=prefix)
    try:
        plan = d.migrate(dry_run=True)
        assert f"create index {prefix}:sessions:i:user_id,color" in plan
        assert f"record sessions schema version {NEXT}" in plan
        assert d.migrate() == plan and d.migrate(dry_run=True) == []
        assert d.schema_status()["sessions"] == {"version": NEXT, "expected": NEXT, "up_to_date": True}
        found = d.kernel.find(Query("sessions", (Cond("user_id", "eq", "u1"), Cond("color", "eq", None)), ("color", "session_id")))
        assert sorted(r["session_id"] for r in found) == sorted(ids[1::3])
        assert [d.get_session(i).state["i"] for i in ids] == list(range(40))
    finally:
        d.close()


def _boot(url, prefix, barrier):
    barrier.wait()
    RedisDb(db_url=url, prefix=prefix).create_tables()


def test_concurrent_first_boot(prefix, client):
    run_together(_boot, (server.server_url(), prefix), 4)
    d = RedisDb(db_url=server.server_url(), prefix=prefix)
    try:
        assert d.migrate(dry_run=True) == []
        versions = d.kernel.find(Query("meta", (Cond("key", "gte", "version:"), Cond("key", "lt", "version;"))))
        assert len(versions) == len(tables_module.EXPORT_TABLES)
        assert client.exists(f"{prefix}:_:lock") == 0
    finally:
        d.close()


def test_a_large_record_round_trips(db):
    big = {"blob": "x" * (3 * 2**20), "nul": "\x00" * 10, "deep": [[[[[[{"$a.b": 1.5e300}]]]]]], "n": 2**80}
    s = db.upsert_session(Session(user_id="u", state=big))
    assert db.get_session(s.session_id).state == big


def test_bad_constructor_arguments():
    from agentkeep.db.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        RedisDb(db_url="http://localhost")
    with pytest.raises(InvalidInputError):
        RedisDb(prefix="has space")
    d = RedisDb(db_url=server.server_url(), prefix=f"p{uuid.uuid4().hex[:6]}")
    assert "Redis at" in repr(d) and "redis://" in d.id
    d.close()
