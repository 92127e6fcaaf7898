"""Concurrent writers (threads, and processes where the backend supports it) lose nothing
and never let two compare-and-sets both win."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

from agentkeep.db import (
    Approval,
    ConflictError,
    EvalRun,
    KnowledgeContent,
    OwnershipError,
    Run,
    Session,
    UserMemory,
)

from . import _workers
from ._helpers import UTC, all_items, schedule

THREADS = 8
PER_WORKER = 25
NOW = dt.datetime(2030, 6, 1, tzinfo=UTC)


def _in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(i) in n threads released together by a barrier; re-raise any error."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait(timeout=60)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(go, i) for i in range(n)]
        return [f.result(timeout=300) for f in futures]


def _outcomes(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Like _in_threads, but returns the exception instead of raising it."""

    def wrapped(i: int) -> Any:
        try:
            return fn(i)
        except Exception as exc:  # noqa: BLE001
            return exc

    return _in_threads(n, wrapped)


def _need_processes(db: Any) -> None:
    if "multi_process" not in db.capabilities:
        pytest.skip("the backend does not share a db between processes (no 'multi_process' capability)")


def _run_processes(target: Callable[..., None], args_for: Callable[[int, Any, Any], tuple], n: int,
                   also: Callable[[], Any] | None = None) -> tuple[list[Any], Any]:
    """Start n spawned processes calling target(*args_for(i, barrier, queue)); while they
    run, call also() in this process (released together with the children). Returns the
    children's results and also()'s result."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=args_for(i, barrier, out), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        local = also() if also else None
        results = [out.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    errors = [r[1] for r in results if r[0] != "ok"]
    assert not errors, "child process failed:\n" + "\n".join(errors)
    return [r[1] for r in results], local


# -- runs ----------------------------------------------------------------------------------


def test_threads_appending_to_one_session_lose_nothing(db):
    sid = db.upsert_session(Session(user_id="alice")).session_id

    def work(i: int) -> list[int]:
        return [db.append_run(Run(session_id=sid, content=f"t{i}-{k}")).seq for k in range(PER_WORKER)]

    per_thread = _in_threads(THREADS, work)
    for seqs in per_thread:
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    returned = [s for seqs in per_thread for s in seqs]
    assert len(set(returned)) == THREADS * PER_WORKER
    runs = all_items(db.list_runs, sid)
    assert len(runs) == THREADS * PER_WORKER
    listed = [r.seq for r in runs]
    assert all(a < b for a, b in zip(listed, listed[1:]))
    assert sorted(listed) == sorted(returned)
    assert sorted(r.content for r in runs) == sorted(f"t{i}-{k}" for i in range(THREADS) for k in range(PER_WORKER))
    assert db.list_runs(sid, with_total=True, limit=1).total == THREADS * PER_WORKER
    assert len(db.get_session(sid, runs=-1).runs) == THREADS * PER_WORKER


def test_processes_and_threads_appending_to_one_session_lose_nothing(db, db_opener):
    _need_processes(db)
    assert db_opener is not None, "a multi_process backend needs a URL or opener for child processes"
    sid = db.upsert_session(Session(user_id="alice")).session_id
    procs, threads = 4, 4

    def local() -> list[list[int]]:
        return _in_threads(threads, lambda i: [db.append_run(Run(session_id=sid, content=f"t{i}-{k}")).seq
                                               for k in range(PER_WORKER)])

    child_seqs, thread_seqs = _run_processes(
        _workers.append_runs, lambda i, barrier, out: (db_opener, sid, PER_WORKER, barrier, out), procs, local)
    returned = [s for seqs in child_seqs + thread_seqs for s in seqs]
    for seqs in child_seqs + thread_seqs:
        assert len(seqs) == PER_WORKER and seqs == sorted(seqs)
    total = (procs + threads) * PER_WORKER
    assert len(set(returned)) == total
    runs = all_items(db.list_runs, sid)
    assert len(runs) == total
    listed = [r.seq for r in runs]
    assert all(a < b for a, b in zip(listed, listed[1:]))
    assert sorted(listed) == sorted(returned)


def test_threads_writing_different_records_lose_nothing(db):
    def work(i: int) -> list[str]:
        return [db.upsert_memory(UserMemory(user_id=f"u{i % 2}", memory=f"{i}-{k}")).memory_id
                for k in range(PER_WORKER)]

    written = {m for ids in _in_threads(THREADS, work) for m in ids}
    assert {m.memory_id for m in all_items(db.list_memories)} == written
    assert len(written) == THREADS * PER_WORKER


# -- compare-and-set ----------------------------------------------------------------------


def test_only_one_expected_revision_write_wins(db):
    s = db.upsert_session(Session(user_id="alice", name="v1"))
    n = 6
    results = _outcomes(n, lambda i: db.upsert_session(
        Session(session_id=s.session_id, user_id="alice", name=f"writer {i}"), expected_revision=1))
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, Session)), results
    got = db.get_session(s.session_id)
    assert got.revision == 2 and got.name == winners[0].name


def test_only_one_creation_with_expected_revision_0_wins(db):
    n = 6
    results = _outcomes(n, lambda i: db.upsert_session(
        Session(session_id="race", user_id="alice", name=f"creator {i}"), expected_revision=0))
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, Session)), results
    assert db.get_session("race").name == winners[0].name


def test_only_one_approval_resolution_wins(db):
    a = db.create_approval(Approval(user_id="alice", tool_name="rm"))
    n = 6
    results = _outcomes(n, lambda i: db.resolve_approval(
        a.id, status="approved" if i % 2 else "rejected", resolved_by=f"admin{i}"))
    winners = [r for r in results if isinstance(r, Approval)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, Approval)), results
    got = db.get_approval(a.id)
    assert (got.status, got.resolved_by) == (winners[0].status, winners[0].resolved_by)


# -- schedules ----------------------------------------------------------------------------


def _due_schedules(db: Any, n: int) -> set[str]:
    return {db.upsert_schedule(schedule(next_run_at=NOW - dt.timedelta(minutes=i + 1))).id for i in range(n)}


def _assert_claimed_once(claims: list[list[str]], due: set[str]) -> None:
    flat = [s for c in claims for s in c]
    assert len(flat) == len(set(flat)), f"a schedule was claimed twice: {sorted(flat)}"
    assert set(flat) == due


def test_threads_never_claim_the_same_schedule(db):
    due = _due_schedules(db, 12)

    def work(i: int) -> list[str]:
        claimed: list[str] = []
        while got := db.claim_due_schedules(worker_id=f"w{i}", now=NOW, lease_seconds=600, limit=1):
            claimed.extend(s.id for s in got)
        return claimed

    claims = _in_threads(4, work)
    _assert_claimed_once(claims, due)
    for i, ids in enumerate(claims):
        assert all(db.get_schedule(x).locked_by == f"w{i}" for x in ids)
    assert db.claim_due_schedules(worker_id="late", now=NOW, limit=100) == []


def test_threads_claiming_batches_never_overlap(db):
    due = _due_schedules(db, 12)
    claims = _in_threads(4, lambda i: [s.id for s in db.claim_due_schedules(
        worker_id=f"w{i}", now=NOW, lease_seconds=600, limit=5)])
    flat = [s for c in claims for s in c]
    assert len(flat) == len(set(flat))
    assert set(flat) <= due
    rest = {s.id for s in db.claim_due_schedules(worker_id="sweeper", now=NOW, limit=100)}
    assert rest.isdisjoint(flat) and rest | set(flat) == due


def test_processes_never_claim_the_same_schedule(db, db_opener):
    _need_processes(db)
    due = _due_schedules(db, 12)
    claims, _ = _run_processes(
        _workers.claim_all, lambda i, barrier, out: (db_opener, f"proc{i}", NOW, barrier, out), 4)
    _assert_claimed_once(claims, due)
    assert db.claim_due_schedules(worker_id="late", now=NOW, limit=100) == []


# -- schema -------------------------------------------------------------------------------


def test_create_tables_from_several_processes_at_once(db, make_db):
    _need_processes(db)
    handle = make_db()
    fresh_opener = handle.opener
    _run_processes(_workers.create_tables, lambda i, barrier, out: (fresh_opener, barrier, out), 4)
    try:
        status = handle.db.schema_status()
        assert status and all(info["up_to_date"] for info in status.values())
        handle.db.upsert_session(Session(session_id="after", user_id="u"))
        assert handle.db.get_session("after") is not None
    finally:
        handle.db.close()


def test_two_handles_on_one_db_see_each_others_writes(db, db_opener):
    _need_processes(db)
    other = db_opener()
    try:
        assert other.list_sessions().items == []
        db.upsert_session(Session(session_id="shared", user_id="alice", name="a"))
        assert other.get_session("shared").name == "a"
        assert [s.session_id for s in other.list_sessions().items] == ["shared"]
        other.rename_session("shared", "b")
        got = db.get_session("shared")
        assert (got.name, got.revision) == ("b", 2)
        with pytest.raises(ConflictError):
            db.upsert_session(Session(session_id="shared", user_id="alice", name="stale"), expected_revision=1)
        seqs = [(db if i % 2 else other).append_run(Run(session_id="shared")).seq for i in range(6)]
        assert seqs == sorted(set(seqs))
        assert [r.seq for r in other.list_runs("shared").items] == seqs
        db.upsert_memory(UserMemory(memory_id="m", user_id="alice", memory="x"))
        assert other.memory_topics() == [] and other.get_memory("m").memory == "x"
        assert other.delete_memory("m") is True
        assert db.get_memory("m") is None
        assert db.delete_session("shared") is True
        assert other.get_session("shared") is None and other.list_sessions().items == []
    finally:
        other.close()


# -- ownership under races ------------------------------------------------------------------

CLAIMS = {
    "session": lambda db, user: db.upsert_session(Session(session_id="contested", user_id=user)).user_id,
    "memory": lambda db, user: db.upsert_memory(UserMemory(memory_id="contested", user_id=user, memory=user)).user_id,
    "knowledge": lambda db, user: db.upsert_knowledge(KnowledgeContent(id="contested", user_id=user)).user_id,
    "schedule": lambda db, user: db.upsert_schedule(schedule(id="contested", user_id=user)).user_id,
    "eval_run": lambda db, user: db.save_eval_run(EvalRun(id="contested", user_id=user,
                                                          eval_type="accuracy")).user_id,
    "approval": lambda db, user: db.create_approval(Approval(id="contested", user_id=user)).user_id,
}
READ = {
    "session": lambda db: db.get_session("contested").user_id,
    "memory": lambda db: db.get_memory("contested").user_id,
    "knowledge": lambda db: db.get_knowledge("contested").user_id,
    "schedule": lambda db: db.get_schedule("contested").user_id,
    "eval_run": lambda db: db.get_eval_run("contested").user_id,
    "approval": lambda db: db.get_approval("contested").user_id,
}


@pytest.mark.parametrize("kind", list(CLAIMS))
def test_racing_creators_of_one_id_get_exactly_one_owner(db, kind):
    results = _outcomes(6, lambda i: CLAIMS[kind](db, f"user{i}"))
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1, results
    assert all(isinstance(r, OwnershipError) for r in results if not isinstance(r, str)), results
    assert READ[kind](db) == winners[0]
