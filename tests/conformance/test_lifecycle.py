"""Schema, capabilities, context manager, close/reopen, purge_expired, delete_user."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db import Approval, InvalidInputError, Run, Session, UserMemory

from ._helpers import KINDS, UTC, by_kind, kind_of, seed_user, snapshot

NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)


def test_error_hierarchy():
    from agentkeep.db import errors

    for name in ("NotFoundError", "ConflictError", "OwnershipError", "InvalidInputError", "SchemaError",
                 "UnsupportedError"):
        assert issubclass(getattr(errors, name), errors.DbError), name
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.NotFoundError, LookupError)


def test_create_tables_is_idempotent(db):
    db.create_tables()
    db.create_tables()
    db.upsert_session(Session(session_id="s", user_id="alice"))
    db.create_tables()
    assert db.get_session("s").user_id == "alice"


def test_schema_status_every_table_up_to_date(db):
    db.create_tables()
    status = db.schema_status()
    assert isinstance(status, dict) and status
    for table, info in status.items():
        assert isinstance(table, str)
        assert info["up_to_date"] is True, (table, info)
        assert info["version"] == info["expected"], (table, info)
    kinds = {kind_of(t) for t in status}
    assert set(KINDS) <= kinds, f"tables missing from schema_status: {set(KINDS) - kinds}"


@pytest.mark.fresh_store
def test_tables_appear_on_first_use(db):
    assert not any(info["up_to_date"] for info in db.schema_status().values())
    db.upsert_session(Session(session_id="s", user_id="alice"))
    assert db.get_session("s") is not None
    db.create_tables()
    assert all(info["up_to_date"] for info in db.schema_status().values())


def test_migrate_on_an_up_to_date_db(db):
    db.create_tables()
    before = db.schema_status()
    assert db.migrate(dry_run=True) == []
    assert db.migrate() == []
    assert db.schema_status() == before


def test_capabilities_is_a_frozenset_of_str(db):
    caps = db.capabilities
    assert isinstance(caps, frozenset)
    assert all(isinstance(c, str) for c in caps)
    assert db.capabilities == caps


def test_context_manager(make_db):
    handle = make_db()
    with handle.db as entered:
        entered.upsert_session(Session(session_id="cm", user_id="alice", name="kept"))
        assert entered.get_session("cm").name == "kept"
    if handle.opener is None:
        return
    with handle.opener() as reopened:
        assert reopened.get_session("cm").name == "kept"


def test_close_then_reopen_keeps_everything(make_db):
    handle = make_db()
    if handle.opener is None:
        handle.db.close()
        pytest.skip("this backend's data lives only as long as the db object")
    seed_user(handle.db, "alice")
    handle.db.refresh_metrics()
    before = snapshot(handle.db)
    handle.db.close()
    reopened = handle.opener()
    try:
        assert snapshot(reopened) == before
    finally:
        reopened.close()


def test_purge_expired(db):
    gone_s = [db.upsert_session(Session(user_id="alice", expires_at=NOW - dt.timedelta(hours=h))) for h in (1, 2)]
    kept_s = db.upsert_session(Session(user_id="alice", expires_at=NOW + dt.timedelta(hours=1)))
    forever = db.upsert_session(Session(user_id="alice"))
    runs = [db.append_run(Run(session_id=s.session_id)) for s in (gone_s[0], gone_s[0], gone_s[1])]
    kept_run = db.append_run(Run(session_id=kept_s.session_id))
    gone_m = db.upsert_memory(UserMemory(user_id="bob", memory="old", expires_at=NOW - dt.timedelta(days=1)))
    kept_m = db.upsert_memory(UserMemory(user_id="bob", memory="new", expires_at=NOW + dt.timedelta(days=1)))
    db.upsert_memory(UserMemory(user_id="bob", memory="forever"))
    gone_a = db.create_approval(Approval(user_id="bob", expires_at=NOW - dt.timedelta(minutes=1)))
    kept_a = db.create_approval(Approval(user_id="bob", expires_at=NOW + dt.timedelta(minutes=1)))

    result = db.purge_expired(now=NOW)
    assert isinstance(result, dict)
    assert set(result) <= set(db.schema_status()), "purge_expired keys must be table names"
    assert by_kind(result) == {"sessions": 2, "runs": 3, "memories": 1, "approvals": 1}
    assert db.get_approval(gone_a.id) is None and db.get_approval(kept_a.id) is not None
    assert all(db.get_session(s.session_id) is None for s in gone_s)
    assert all(db.get_run(r.run_id) is None for r in runs)
    assert db.get_memory(gone_m.memory_id) is None
    assert db.get_session(kept_s.session_id) is not None and db.get_session(forever.session_id) is not None
    assert db.get_run(kept_run.run_id) is not None and db.get_memory(kept_m.memory_id) is not None
    assert by_kind(db.purge_expired(now=NOW)) == {}


def test_purge_expired_with_naive_now_is_invalid(db):
    s = db.upsert_session(Session(user_id="alice", expires_at=NOW - dt.timedelta(hours=1)))
    with pytest.raises(InvalidInputError):
        db.purge_expired(now=dt.datetime(2030, 1, 1))
    assert db.get_session(s.session_id) is not None


def test_delete_user(db):
    alice = seed_user(db, "alice")
    bob = seed_user(db, "bob")
    db.refresh_metrics()
    assert db.get_metrics(user_id="alice")
    bob_before = snapshot(db)

    result = db.delete_user("alice")
    assert isinstance(result, dict)
    assert set(result) <= set(db.schema_status()), "delete_user keys must be table names"
    counts = by_kind(result)
    for kind in ("sessions", "runs", "memories", "knowledge", "approvals", "schedules", "schedule_runs",
                 "eval_runs", "traces", "jobs"):
        assert counts.get(kind) == len(alice[kind]), (kind, result)

    assert all(db.get_session(i) is None for i in alice["sessions"])
    assert all(db.get_run(i) is None for i in alice["runs"])
    assert all(db.get_memory(i) is None for i in alice["memories"])
    assert all(db.get_knowledge(i) is None for i in alice["knowledge"])
    assert all(db.get_approval(i) is None for i in alice["approvals"])
    assert all(db.get_schedule(i) is None for i in alice["schedules"])
    assert all(db.get_eval_run(i) is None for i in alice["eval_runs"])
    assert all(db.get_job(i) is None for i in alice["jobs"])
    assert all(db.get_trace(i) is None for i in alice["traces"])
    assert db.get_metrics(user_id="alice") == []

    # bob's records are untouched
    after = snapshot(db)
    keys = {"sessions": "session_id", "runs": "run_id", "memories": "memory_id", "traces": "trace_id",
            "spans": "span_id"}
    for table in ("sessions", "runs", "memories", "knowledge", "approvals", "schedules", "schedule_runs",
                  "eval_runs", "traces", "spans", "jobs"):
        key = keys.get(table, "id")
        want = [r for r in bob_before[table] if r[key] in bob[table]]
        assert [r for r in after[table] if r[key] in bob[table]] == want, table
        assert len(want) == len(bob[table])
    assert [r for r in after["metrics"] if r["user_id"] == "bob"] == [
        r for r in bob_before["metrics"] if r["user_id"] == "bob"]

    again = db.delete_user("alice")
    assert by_kind(again) == {}
