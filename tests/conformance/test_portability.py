"""export_jsonl / import_jsonl: a backend-neutral dump; export from one backend and import
into every backend gives identical records."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from agentkeep.db import (
    Approval,
    ConflictError,
    DbError,
    InvalidInputError,
    Job,
    KnowledgeContent,
    Run,
    Session,
    UserMemory,
)
from tests.conftest import backends_in_run, pooled_store, require_backend

from ._helpers import UTC, seed_user, snapshot

NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)


def populate(db) -> None:
    """Records in every table, in every interesting state."""
    seed_user(db, "alice")
    bob = seed_user(db, "bob")
    db.upsert_knowledge(KnowledgeContent(user_id=None, name="shared \x00 doc", metadata={"$k": {"a.b": [""]}}))
    db.upsert_session(Session(session_id="ownerless", user_id=None, summary={"s": "\U0001f600"},
                              expires_at=NOW, state={"deep": [[[{"x": None}]]]}))
    db.append_run(Run(session_id="ownerless", status="error", content="\x00"))
    db.upsert_memory(UserMemory(user_id="alice", memory="expiring", expires_at=NOW))
    db.rename_session(bob["sessions"][0], "renamed twice")
    db.rename_session(bob["sessions"][0], "renamed thrice")
    db.resolve_approval(bob["approvals"][0], status="approved", resolved_by="admin", resolution={"ok": True})
    db.create_approval(Approval(user_id="carol", tool_name="t", expires_at=NOW))
    db.claim_due_schedules(worker_id="w1", now=NOW, lease_seconds=60, limit=1)
    for status, outcome in (("completed", {"result": {"rows": [1, None]}}), ("failed", {"error": "boom \u2603"})):
        job = db.enqueue_job(Job(kind=f"admin.{status}", max_attempts=1, run_after=NOW))
        db.claim_jobs(worker_id="w1", kinds=[job.kind], now=NOW)
        db.finish_job(job.id, worker_id="w1", status=status, **outcome)
    db.refresh_metrics()


def _require_each(backends):
    for b in backends:
        reason = b.unavailable()
        if reason is None:
            yield b
        else:
            require_backend(b)  # fails under AGENTKEEP_REQUIRE_ALL=1


def test_export_then_import_into_every_backend(db, tmp_path, pytestconfig, tmp_path_factory):
    populate(db)
    before = snapshot(db)
    assert all(before[k] for k in before), {k: len(v) for k, v in before.items()}
    dump_file = tmp_path / "dump.jsonl"
    exported = db.export_jsonl(str(dump_file))
    assert isinstance(exported, int) and exported >= sum(len(v) for v in before.values())
    assert snapshot(db) == before

    checked = []
    for backend in _require_each(backends_in_run(pytestconfig)):
        with pooled_store(backend, tmp_path_factory) as dest:
            assert dest.db.import_jsonl(str(dump_file)) == exported, backend.name
            after = snapshot(dest.db)
            for table in before:
                assert after[table] == before[table], f"{backend.name}: table {table} differs after import"
            # counters survive the trip: new runs continue the seq, new writes the revision
            session = before["sessions"][0]
            top = max(r["seq"] for r in before["runs"] if r["session_id"] == session["session_id"])
            new_run = dest.db.append_run(Run(session_id=session["session_id"]))
            assert new_run.seq > top, backend.name
            s = dest.db.get_session(session["session_id"])
            assert dest.db.upsert_session(s, expected_revision=session["revision"]).revision == session["revision"] + 1
            checked.append(backend.name)
    assert checked


def test_export_to_a_file_object_and_import_from_one(db, make_db, tmp_path):
    populate(db)
    before = snapshot(db)
    buffer = io.StringIO()
    exported = db.export_jsonl(buffer)
    assert exported > 0 and buffer.getvalue()
    path = tmp_path / "dump.jsonl"
    with open(path, "w", encoding="utf-8") as fp:
        assert db.export_jsonl(fp) == exported

    for source in (lambda: io.StringIO(buffer.getvalue()), lambda: open(path, encoding="utf-8")):
        dest = make_db()
        try:
            with source() as fp:
                assert dest.db.import_jsonl(fp) == exported
            assert snapshot(dest.db) == before
        finally:
            dest.db.close()


def test_export_and_import_with_a_pathlib_path(db, make_db, tmp_path):
    db.upsert_session(Session(session_id="p", user_id="alice", name="via Path"))
    path = Path(tmp_path) / "dump.jsonl"
    assert db.export_jsonl(path) >= 1
    dest = make_db()
    try:
        assert dest.db.import_jsonl(path) >= 1
        assert dest.db.get_session("p").name == "via Path"
    finally:
        dest.db.close()


def test_import_on_conflict(db, tmp_path):
    s = db.upsert_session(Session(user_id="alice", name="v1"))
    m = db.upsert_memory(UserMemory(user_id="alice", memory="v1"))
    path = tmp_path / "dump.jsonl"
    exported = db.export_jsonl(str(path))
    original = snapshot(db)

    db.rename_session(s.session_id, "v2")
    db.upsert_memory(UserMemory(memory_id=m.memory_id, user_id="alice", memory="v2"))
    changed = snapshot(db)

    assert db.import_jsonl(str(path)) == 0  # default: skip
    assert db.import_jsonl(str(path), on_conflict="skip") == 0
    assert snapshot(db) == changed

    with pytest.raises(ConflictError):
        db.import_jsonl(str(path), on_conflict="error")

    assert db.import_jsonl(str(path), on_conflict="replace") == exported
    assert snapshot(db) == original
    got = db.get_session(s.session_id)
    assert got.name == "v1" and got.revision == 1

    with pytest.raises(InvalidInputError):
        db.import_jsonl(str(path), on_conflict="merge")


def test_import_skip_adds_only_missing_records(db, tmp_path):
    a = db.upsert_session(Session(user_id="alice", name="a"))
    path = tmp_path / "dump.jsonl"
    db.export_jsonl(str(path))
    db.delete_session(a.session_id)
    b = db.upsert_session(Session(user_id="alice", name="b"))
    assert db.import_jsonl(str(path), on_conflict="skip") == 1
    assert db.get_session(a.session_id).name == "a"
    assert db.get_session(b.session_id).name == "b"


def test_import_of_garbage_is_invalid_and_writes_nothing(db, tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_text('{"not": "a dump"}\nthis is not json\n', encoding="utf-8")
    with pytest.raises(InvalidInputError):
        db.import_jsonl(str(path))
    assert snapshot(db) == snapshot_empty()


def snapshot_empty() -> dict:
    return {k: [] for k in ("sessions", "runs", "memories", "knowledge", "traces", "spans", "approvals",
                            "schedules", "schedule_runs", "eval_runs", "metrics", "jobs")}


def test_export_selected_tables(db, make_db, tmp_path):
    db.upsert_session(Session(session_id="s", user_id="alice"))
    db.upsert_memory(UserMemory(memory_id="m", user_id="alice", memory="x"))
    session_tables = [t for t in db.schema_status() if t.lower().endswith("sessions")]
    assert len(session_tables) == 1, db.schema_status().keys()
    path = tmp_path / "sessions.jsonl"
    assert db.export_jsonl(str(path), tables=session_tables) == 1
    dest = make_db()
    try:
        assert dest.db.import_jsonl(str(path)) == 1
        assert dest.db.get_session("s") is not None
        assert dest.db.get_memory("m") is None
    finally:
        dest.db.close()


def test_orders_and_tie_breaks_are_identical_on_every_backend(pytestconfig, tmp_path_factory):
    """The same records listed in every order given by the caller's own values (created_at,
    start_time, next_run_at, started_at, seq, user_id), with ties, page by page: every
    backend returns the very same sequence."""
    from .test_pagination import LISTINGS

    sequences: dict[str, dict[str, list]] = {}
    for backend in _require_each(backends_in_run(pytestconfig)):
        with pooled_store(backend, tmp_path_factory) as handle:
            db = handle.db
            got: dict[str, list] = {}
            for listing in LISTINGS:
                ctx = listing.setup(db)
                # pairs share a slot, keys out of slot order; compare creation indexes, not
                # the (possibly generated) keys
                index = {listing.make(db, ctx, n, (n * 5 % 8) // 2): n for n in range(8)}
                for order in listing.orders:
                    if order is not None and order.startswith("updated"):
                        continue  # the db's own clock: differs between backends by nature
                    kw = {"order": order} if order is not None else {}
                    keys: list = []
                    cursor = None
                    try:
                        for _ in range(20):
                            page = listing.call(db, ctx, limit=3, cursor=cursor, **kw)
                            keys += [index[k] for k in map(listing.key, page.items) if k in index]
                            cursor = page.next_cursor
                            if cursor is None:
                                break
                    except DbError as exc:  # must then fail alike everywhere (tested elsewhere)
                        keys = [f"raised {type(exc).__name__}"]
                    got[f"{listing.name}/{order}"] = keys
            sequences[backend.name] = got
    assert len(sequences) >= 2, "needs at least two available backends"
    reference_name, reference = next(iter(sequences.items()))
    for listing_order, keys in reference.items():
        assert keys == ["raised InvalidInputError"] or sorted(keys) == list(range(8)), (listing_order, keys)
    for name, got in sequences.items():
        for listing_order, keys in reference.items():
            assert got[listing_order] == keys, f"{listing_order}: {name} {got[listing_order]} != " \
                                               f"{reference_name} {keys}"
