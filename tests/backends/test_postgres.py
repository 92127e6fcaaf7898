"""PostgreSQL specifics: the hot queries are served by indexes (EXPLAIN), schema changes are
safe when 8 processes boot at once, and an additive upgrade keeps every row."""

import datetime as dt
import os
import uuid

import pytest

from agentkeep.db import Approval, Run, Schedule, Session, UserMemory
from agentkeep.db import tables as tables_module
from tests.backends._helpers import statements as _statements
from tests.conformance.backends import _postgres_check, postgres_url
from tests.processes import run_together
from tests.services.postgres import EmbeddedPostgres
from tests.upgrades import NEXT, upgraded_specs

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module", autouse=True)
def _server():
    reason = _postgres_check()
    if reason:
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def schema():
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_restarted_server_is_survived(kind):
    """The first call after the server comes back succeeds (the pool hands out no connection
    the server closed), and no acknowledged write is lost. A private server, so restarting it
    disturbs no other test."""
    from agentkeep.db.postgres import AsyncPostgresDb, PostgresDb
    from tests.conformance.backends import SyncAdapter

    server = EmbeddedPostgres()
    server.start()
    try:
        if kind == "sync":
            db = PostgresDb(db_url=server.url, db_schema="restart")
        else:
            db = SyncAdapter(lambda: AsyncPostgresDb(db_url=server.url, db_schema="restart"))
        ids = [db.upsert_session(Session(user_id="u", name=f"before {i}")).session_id for i in range(5)]
        server.restart()
        ids.append(db.upsert_session(Session(user_id="u", name="after")).session_id)
        assert [db.get_session(i).session_id for i in ids] == ids
        assert db.list_sessions(user_id="u", with_total=True).total == 6
        db.close()
    finally:
        server.stop()


def _db(schema):
    from agentkeep.db.postgres import PostgresDb

    return PostgresDb(db_url=postgres_url(), db_schema=schema)


def _plan(schema, sql, params):
    with psycopg.connect(postgres_url()) as conn:
        # can an index serve it, in order, whatever the costs of a table this small?
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        rows = conn.execute("EXPLAIN " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "name, call, index, ordered",
    [
        ("sessions by user", lambda db: db.list_sessions(user_id="u1"), "ix_agentkeep_sessions_user_id_updated_at", True),
        ("last runs", lambda db: db.list_runs("s1", last=10), "ix_agentkeep_runs_session_id_seq", True),
        ("memories by user and topic", lambda db: db.list_memories(user_id="u1", topics=["t1"]), "ix_agentkeep_memories_user_id_updated_at", True),
        ("approvals by status", lambda db: db.list_approvals(status="pending"), "ix_agentkeep_approvals_status_created_at", True),
        ("due schedules", lambda db: db.claim_due_schedules(worker_id="w", now=NOW), "ix_agentkeep_schedules_enabled_next_run_at", True),
    ],
)
def test_hot_queries_use_their_index(schema, name, call, index, ordered):
    db = _db(schema)
    try:
        db.upsert_session(Session(session_id="s1", user_id="u1"))
        db.append_run(Run(session_id="s1"))
        db.upsert_memory(UserMemory(user_id="u1", memory="m", topics=["t1"]))
        db.create_approval(Approval(user_id="u1"))
        db.upsert_schedule(Schedule(cron="* * * * *", target={"type": "agent", "id": "a"}, next_run_at=NOW))
        statements = _statements(db, lambda: call(db))
        assert statements, f"{name}: no statement ran"
        plan = _plan(schema, *statements[0])
        assert index in plan, f"{name}: {index} not used:\n{plan}"
        if ordered:
            assert "Sort" not in plan, f"{name}: sorted instead of reading the index in order:\n{plan}"
    finally:
        db.close()


def _boot(schema, barrier):
    barrier.wait()
    _db(schema).create_tables()


def test_eight_processes_create_tables_at_once(schema):
    run_together(_boot, (schema,), 8)
    with psycopg.connect(postgres_url()) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]
        versions = conn.execute(
            f'SELECT key, count(*) FROM "{schema}".agentkeep_meta WHERE key LIKE %s GROUP BY key', ("version:%",)).fetchall()
    side = sum(len(spec.multi) for spec in tables_module.default_specs().values())  # memory topics, trace models...
    assert len(tables) == len(set(tables)) == len(tables_module.TABLES) + side
    assert len(versions) == len(tables_module.EXPORT_TABLES) and all(n == 1 for _, n in versions)


def test_additive_upgrade_keeps_every_row(schema, monkeypatch):
    db = _db(schema)
    ids = [db.upsert_session(Session(user_id=f"u{i % 3}", state={"i": i})).session_id for i in range(40)]
    db.close()
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    db = _db(schema)
    try:
        plan = db.migrate(dry_run=True)
        assert "add column agentkeep_sessions.color" in plan
        assert db.migrate() == plan and db.migrate(dry_run=True) == []
        assert [db.get_session(i).state["i"] for i in ids] == list(range(40))
        assert db.schema_status()["sessions"] == {"version": NEXT, "expected": NEXT, "up_to_date": True}
    finally:
        db.close()


def test_a_batch_is_one_insert_over_arrays_and_every_value_round_trips(schema):
    """put_many binds one array per column (INSERT ... SELECT FROM unnest): one statement for
    the whole batch, with values that need escaping, columns that are NULL in every row,
    and lookups by a list of ids that is longer than any statement's parameter list."""
    from agentkeep.db import Span

    db = _db(schema)
    sent = []
    execute = db.kernel._execute

    def record(raw, sql, params=()):
        sent.append(sql)
        return execute(raw, sql, params)

    db.kernel._execute = record
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    names = ["plain", "nul \x00 inside", "\ue000 escape char", "emoji 🦀", 'quote " \\ {x,y}', "", "NULL"]
    spans = [
        Span(span_id=f"s{i:04d}", trace_id=f"t{i % 3}", name=names[i % len(names)], start_time=start + dt.timedelta(seconds=i),
             duration_ms=i if i % 2 else i + 0.5, attributes={"n": i, "text": names[i % len(names)], "big": 1e16},
             parent_span_id=None if i % 10 == 0 else f"s{i - 1:04d}")
        for i in range(1200)
    ]
    try:
        db.write_spans(spans)
        inserts = [s for s in sent if s.lstrip().upper().startswith("INSERT") and "agentkeep_spans" in s]
        assert len(inserts) == 3, inserts  # the batch is written in chunks of 500 spans
        assert all("unnest" in s for s in inserts)
        got = [s for t in ("t0", "t1", "t2") for s in db.get_spans(t)]
        assert sorted(got, key=lambda s: s.span_id) == spans  # status_message is NULL in every row
        assert isinstance(got[0].attributes["big"], float)
        assert db.get_trace("t0").span_count == 400
        # a list of ids is one array parameter, whatever its length
        kept = [db.upsert_session(Session(user_id="u")).session_id for _ in range(3)]
        sent.clear()
        assert db.delete_sessions(kept + [f"missing-{i}" for i in range(497)]) == 3
        deletes = [s for s in sent if s.lstrip().upper().startswith("DELETE")]
        assert deletes and all("= ANY (" in s and s.count("%(") <= 2 for s in deletes), deletes
        assert db.list_sessions(user_id="u").items == []
    finally:
        db.close()
