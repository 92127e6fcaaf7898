"""MySQL / MariaDB specifics, for MysqlDb and SingleStoreDb (same wire protocol; here both run
on MariaDB) and their async twins (driven through SyncAdapter): schema changes are safe when
8 processes boot at once, an additive upgrade keeps every row, 4-byte UTF-8 round-trips, ids
compare exactly (no case folding, no trailing-space padding), a dropped connection is
survived, and the hot queries are served by an index in order (EXPLAIN, sync kernels: the
async ones send the same statements). Every test gets a database of its own
(tests/services/mysql.py)."""

import datetime as dt
import importlib
import os

import pytest

from agentkeep.db import Approval, Run, Schedule, Session, UserMemory
from agentkeep.db import tables as tables_module
from agentkeep.db.in_memory import InMemoryDb
from tests.backends._helpers import statements
from tests.conformance.backends import SyncAdapter
from tests.processes import run_together
from tests.services import mysql as server
from tests.upgrades import CURRENT, NEXT, upgraded_specs

pymysql = pytest.importorskip("pymysql")

CLASSES = {
    "mysql": ("agentkeep.db.mysql", "MysqlDb"),
    "mysql_async": ("agentkeep.db.mysql", "AsyncMysqlDb"),
    "singlestore": ("agentkeep.db.singlestore", "SingleStoreDb"),
    "singlestore_async": ("agentkeep.db.singlestore", "AsyncSingleStoreDb"),
}
SYNC = [k for k in CLASSES if not k.endswith("_async")]  # EXPLAIN captures the sync kernel's statements
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def _server():
    url = server.server_url()
    reason = server.reachable(url)
    if reason:
        reason = f"mysql: server at {url} is not reachable ({reason}); start it or set AGENTKEEP_MYSQL_URL"
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=list(CLASSES))
def kind(request):
    return request.param


@pytest.fixture
def database():
    url, drop = server.new_database()
    yield url
    drop()


def _db(kind, url):
    module, name = CLASSES[kind]
    cls = getattr(importlib.import_module(module), name)
    return SyncAdapter(lambda: cls(db_url=url)) if kind.endswith("_async") else cls(db_url=url)


def _query(url, sql, params=()):
    with server.connect(url) as con:
        cur = con.cursor()
        cur.execute(sql, params)
        return cur.fetchall()


def _name(url):
    return server.connect_args(url)["database"]


# -- schema changes -----------------------------------------------------------------------


def _boot(kind, url, barrier):
    barrier.wait()
    with _db(kind, url) as db:
        db.create_tables()


def _migrate(kind, url, barrier):
    barrier.wait()
    with _db(kind, url) as db:
        db.migrate()


def _assert_one_schema(url):
    tables = [r[0] for r in _query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (_name(url),))]
    versions = _query(url, "SELECT `key`, count(*) FROM agentkeep_meta WHERE `key` LIKE %s GROUP BY `key`",
                      ("version:%",))
    side = sum(len(spec.multi) for spec in tables_module.default_specs().values())  # memory topics, trace models...
    assert len(tables) == len(set(tables)) == len(tables_module.TABLES) + side
    assert len(versions) == len(tables_module.EXPORT_TABLES) and all(n == 1 for _, n in versions)


@pytest.mark.parametrize("target", [_boot, _migrate], ids=["create_tables", "migrate"])
def test_eight_processes_change_the_schema_at_once(kind, database, target):
    run_together(target, (kind, database), 8)
    _assert_one_schema(database)
    with _db(kind, database) as db:
        assert all(s["up_to_date"] for s in db.schema_status().values())
        assert db.migrate(dry_run=True) == []


def test_additive_upgrade_keeps_every_row(kind, database, monkeypatch):
    with _db(kind, database) as db:
        ids = [db.upsert_session(Session(user_id=f"u{i % 3}", state={"i": i})).session_id for i in range(40)]
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    with _db(kind, database) as db:
        plan = db.migrate(dry_run=True)
        assert "add column agentkeep_sessions.color" in plan
        assert db.schema_status()["sessions"] == {"version": CURRENT, "expected": NEXT, "up_to_date": False}
        assert db.migrate() == plan and db.migrate(dry_run=True) == []
        assert [db.get_session(i).state["i"] for i in ids] == list(range(40))
        assert db.schema_status()["sessions"] == {"version": NEXT, "expected": NEXT, "up_to_date": True}
    where = "table_schema = %s AND table_name = 'agentkeep_sessions' AND column_name = 'color'"
    for view in ("columns", "statistics"):  # the column, and an index on it
        assert _query(database, f"SELECT count(*) FROM information_schema.{view} WHERE {where}",
                      (_name(database),))[0][0] >= 1
    assert _query(database, "SELECT count(*) FROM agentkeep_sessions")[0][0] == 40


# -- text ---------------------------------------------------------------------------------


def test_four_byte_utf8_round_trips(kind, database):
    user, name = "user-😀", "Refund 💸 for 🧑‍💻 𝄞 (4-byte UTF-8)"
    payload = {"note": "🎉 done", "🔑": ["𝄞", "🦄" * 1000]}
    with _db(kind, database) as db:
        s = db.upsert_session(Session(session_id="s-🦄", user_id=user, name=name, state=payload))
        db.append_run(Run(session_id=s.session_id, user_id=user, input="hi 🙂", content="🚀 " * 500,
                          messages=[{"role": "user", "content": "𝄞🎶"}], metadata=payload))
        db.upsert_memory(UserMemory(user_id=user, memory="likes 🍕", topics=["food 🍕"]))
    with _db(kind, database) as db:  # a new db object: read back from the server, not a cache
        got = db.get_session("s-🦄", user_id=user, runs=-1)
        assert (got.name, got.state) == (name, payload)
        [run] = got.runs
        assert (run.input, run.content, run.messages[0]["content"], run.metadata) == (
            "hi 🙂", "🚀 " * 500, "𝄞🎶", payload)
        assert [x.session_id for x in db.list_sessions(user_id=user).items] == ["s-🦄"]
        assert [x.memory for x in db.list_memories(user_id=user, topics=["food 🍕"]).items] == ["likes 🍕"]


# ids equal under a case-insensitive, accent-insensitive or PAD SPACE collation (and, under
# utf8mb4_general_ci, the two emoji), which must all stay distinct records
NEAR_IDS = ["abc", "ABC", "abc ", "ábc", "s-🦄", "s-🐍"]


def test_ids_differing_by_case_or_trailing_space_are_different_records(kind, database):
    with _db(kind, database) as db:
        for i in NEAR_IDS:
            db.upsert_session(Session(session_id=i, user_id="u", name=f"name of {i!r}"))
            db.append_run(Run(session_id=i, user_id="u", content=f"run of {i!r}"))
        db.upsert_session(Session(session_id="Abc", user_id="other"))  # no OwnershipError: another id
        for i in NEAR_IDS:
            got = db.get_session(i, user_id="u", runs=-1)
            assert got.session_id == i and got.name == f"name of {i!r}"
            assert [(r.seq, r.content) for r in got.runs] == [(1, f"run of {i!r}")]
        assert db.get_session("abc  ") is None and db.get_session("Abc", user_id="u") is None
        assert db.list_sessions(user_id="u", with_total=True).total == len(NEAR_IDS)
        assert sorted(s.session_id for s in db.list_sessions(user_id="u", limit=100).items) == sorted(NEAR_IDS)
        assert db.list_sessions(user_id="U", with_total=True).total == 0
        # topics live in a side table keyed by (memory, topic): the same rule applies there
        a = db.upsert_memory(UserMemory(user_id="u", memory="a", topics=["red", "Red"]))
        b = db.upsert_memory(UserMemory(user_id="u", memory="b", topics=["red "]))
        assert db.get_memory(a.memory_id).topics == ["red", "Red"]
        assert [m.memory for m in db.list_memories(user_id="u", topics=["Red"]).items] == ["a"]
        assert [m.memory for m in db.list_memories(user_id="u", topics=["red "]).items] == ["b"]
        assert sorted(m.memory for m in db.list_memories(user_id="u", topics=["red"]).items) == ["a"]
        assert b.memory_id != a.memory_id


# -- connections --------------------------------------------------------------------------


def test_a_dropped_connection_is_survived(kind, database):
    """What a server restart, a failover or wait_timeout does to pooled connections: the next
    call still succeeds, and no acknowledged write is lost. Only this test's connections die."""
    with _db(kind, database) as db:
        ids = [db.upsert_session(Session(user_id="u", name=f"before {i}")).session_id for i in range(5)]
        with server.connect(database) as con:
            cur = con.cursor()
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                        (_name(database),))
            victims = [r[0] for r in cur.fetchall()]
            for pid in victims:
                cur.execute(f"KILL CONNECTION {int(pid)}")
        assert victims, "the db holds no pooled connection to kill"
        ids.append(db.upsert_session(Session(user_id="u", name="after")).session_id)
        assert [db.get_session(i).session_id for i in ids] == ids
        assert db.list_sessions(user_id="u", with_total=True).total == 6


# -- the hot queries use their index (EXPLAIN) --------------------------------------------


def _seed(path):
    """A JSONL dump with a few thousand rows per hot table, spread so an index is selective:
    MariaDB scans small tables in full whatever the indexes."""
    src = InMemoryDb()
    src.upsert_session(Session(session_id="s1", user_id="u1"))
    for i in range(2000):
        src.upsert_session(Session(user_id=f"u{i % 50}", name=f"session {i}"))
    for i in range(300):
        src.append_run(Run(session_id="s1", user_id="u1", content=f"run {i}"))
    others = [s.session_id for s in src.list_sessions(user_id="u7", limit=40).items]
    for i in range(1500):
        src.append_run(Run(session_id=others[i % len(others)], user_id="u7", content=f"run {i}"))
    for i in range(2000):
        src.upsert_memory(UserMemory(user_id=f"u{i % 50}", memory=f"m{i}", topics=[f"t{i % 10}", f"t{(i + 3) % 10}"]))
    for i in range(2000):
        status = "pending" if i % 20 == 0 else ("approved", "rejected", "expired")[i % 3]
        src.create_approval(Approval(user_id=f"u{i % 50}", status=status))
    for i in range(2000):
        # 1 in 25 due at NOW, the rest later; a few disabled
        due = NOW - dt.timedelta(minutes=i) if i % 25 == 0 else NOW + dt.timedelta(hours=1 + i)
        src.upsert_schedule(Schedule(cron="0 * * * *", target={"type": "agent", "id": "a"}, enabled=i % 50 != 1,
                                     next_run_at=due if i % 50 != 1 else None, user_id=f"u{i % 50}"))
    src.export_jsonl(path)


@pytest.fixture(scope="module")
def _dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("mysql-explain") / "seed.jsonl"
    _seed(path)
    return path


@pytest.fixture(params=SYNC)
def seeded(request, _dump):
    kind = request.param
    url, drop = server.new_database()
    db = _db(kind, url)
    try:
        db.import_jsonl(_dump)
        for (table,) in _query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                               (_name(url),)):
            _query(url, f"ANALYZE TABLE `{table}`")
        yield db, url
    finally:
        db.close()
        drop()


def _plan(url, sql, params):
    """EXPLAIN's rows as dicts (id, table, type, possible_keys, key, rows, Extra, ...)."""
    with server.connect(url) as con:
        cur = con.cursor(pymysql.cursors.DictCursor)
        cur.execute("EXPLAIN " + sql, params)
        return cur.fetchall()


@pytest.mark.parametrize(
    "name, call, table, index",
    [
        ("sessions by user", lambda db: db.list_sessions(user_id="u1"), "agentkeep_sessions",
         "ix_agentkeep_sessions_user_id_updated_at"),
        ("last runs", lambda db: db.list_runs("s1", last=10), "agentkeep_runs", "ix_agentkeep_runs_session_id_seq"),
        ("memories by user and topic", lambda db: db.list_memories(user_id="u1", topics=["t1"]),
         "agentkeep_memories", "ix_agentkeep_memories_user_id_updated_at"),
        ("approvals by status", lambda db: db.list_approvals(status="pending"), "agentkeep_approvals",
         "ix_agentkeep_approvals_status_created_at"),
        ("due schedules", lambda db: db.claim_due_schedules(worker_id="w", now=NOW), "agentkeep_schedules",
         "ix_agentkeep_schedules_enabled_next_run_at"),
    ],
)
def test_hot_queries_use_their_index(seeded, name, call, table, index):
    db, url = seeded
    ran = statements(db, lambda: call(db))
    assert ran, f"{name}: no statement ran"
    plan = _plan(url, *ran[0])
    shown = "\n".join(str(row) for row in plan)
    [row] = [r for r in plan if r["table"] == table]
    assert row["key"] == index, f"{name}: {index} not used:\n{ran[0][0]}\n{shown}"
    assert not any("filesort" in (r["Extra"] or "") for r in plan), f"{name}: sorted, not read in index order:\n{shown}"


def test_later_pages_use_the_index_too(seeded):
    """A keyset page (WHERE user_id = ? AND (updated_at, session_id) < (?, ?)) is an index
    range read in order, as the first page is."""
    db, url = seeded
    cursor = db.list_sessions(user_id="u1", limit=5).next_cursor
    plan = _plan(url, *statements(db, lambda: db.list_sessions(user_id="u1", limit=5, cursor=cursor))[0])
    shown = "\n".join(str(row) for row in plan)
    [row] = plan
    assert row["key"] == "ix_agentkeep_sessions_user_id_updated_at" and row["type"] == "range", shown
    assert "filesort" not in (row["Extra"] or ""), shown
