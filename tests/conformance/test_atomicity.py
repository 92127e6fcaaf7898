"""A call that raises writes nothing: bulk writes check the whole batch before the first
write, an import checks the whole dump (a stream too), and no record moves to another
owner or parent through a write of its id."""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any

import pytest

from agentkeep.db import (
    ConflictError,
    EvalRun,
    InvalidInputError,
    Job,
    OwnershipError,
    ScheduleRun,
    Session,
    UserMemory,
)

from ._helpers import T0, all_items, schedule, snapshot, span

HEADER = json.dumps({"format": "agentkeep-export", "version": 1, "tables": ["memories"]})


def _memory_line(memory_id: str, user: str = "bob") -> str:
    record = UserMemory(memory_id=memory_id, user_id=user, memory=f"fact {memory_id}").model_dump(mode="json")
    return json.dumps({"table": "memories", "record": record})


def _count_memories(db: Any, user: str | None = None) -> int:
    return db.list_memories(user_id=user, with_total=True).total


# -- bulk writes ------------------------------------------------------------------------------


def test_upsert_memories_with_one_foreign_id_writes_none_of_the_batch(db: Any) -> None:
    mine = db.upsert_memory(UserMemory(memory_id="alice-1", user_id="alice", memory="alice's"))
    batch = [UserMemory(memory_id=f"bob-{i}", user_id="bob", memory="b") for i in range(1001)]
    batch.append(UserMemory(memory_id="alice-1", user_id="bob", memory="taken over"))
    with pytest.raises(OwnershipError):
        db.upsert_memories(batch)
    assert _count_memories(db, "bob") == 0
    assert db.get_memory("alice-1") == mine


def test_upsert_memories_with_one_bad_record_writes_none(db: Any) -> None:
    batch = [UserMemory(memory_id=f"bob-{i}", user_id="bob", memory="b") for i in range(600)]
    batch.append({"memory_id": "x" * 300, "user_id": "bob", "memory": "b"})
    with pytest.raises(InvalidInputError, match="memory 600"):
        db.upsert_memories(batch)
    assert _count_memories(db) == 0


@pytest.mark.parametrize("method", ["delete_sessions", "delete_memories", "delete_eval_runs", "delete_jobs"])
def test_bulk_delete_with_one_bad_id_deletes_nothing(db: Any, method: str) -> None:
    ids = [
        db.upsert_session(Session(user_id="bob")).session_id if method == "delete_sessions"
        else db.upsert_memory(UserMemory(user_id="bob", memory="m")).memory_id if method == "delete_memories"
        else db.enqueue_job(Job(user_id="bob", kind="k")).id if method == "delete_jobs"
        else db.save_eval_run(EvalRun(user_id="bob", eval_type="accuracy")).id
        for _ in range(3)
    ]
    before = snapshot(db)
    with pytest.raises(InvalidInputError):
        getattr(db, method)([*ids, "bad\nid"], user_id="bob")
    assert snapshot(db) == before
    assert getattr(db, method)(ids, user_id="bob") == 3


# -- no record moves through a side door --------------------------------------------------------


def test_write_spans_refuses_a_span_of_another_trace_and_writes_nothing(db: Any) -> None:
    db.write_spans([span("alice-trace", "s1", T0, attributes={"user.id": "alice"})])
    before = snapshot(db)
    batch = [span("bob-trace", f"bob-{i}", T0) for i in range(3)] + [span("bob-trace", "s1", T0)]
    with pytest.raises(ConflictError, match="s1"):
        db.write_spans(batch)
    assert snapshot(db) == before
    assert [s.span_id for s in db.get_spans("alice-trace")] == ["s1"]
    assert db.get_trace("bob-trace") is None
    assert db.get_trace("alice-trace").span_count == 1


def test_write_spans_again_in_the_same_trace_is_idempotent(db: Any) -> None:
    db.write_spans([span("t", "s1", T0, name="first")])
    db.write_spans([span("t", "s1", T0, name="second"), span("t", "s2", T0)])
    assert {s.span_id: s.name for s in db.get_spans("t")} == {"s1": "second", "s2": ""}
    assert db.get_trace("t").span_count == 2


def test_record_schedule_run_never_moves_a_run_to_another_schedule(db: Any) -> None:
    alice = db.upsert_schedule(schedule(user_id="alice"))
    bob = db.upsert_schedule(schedule(user_id="bob"))
    run = db.record_schedule_run(ScheduleRun(id="r1", schedule_id=alice.id, started_at=T0))
    with pytest.raises(ConflictError, match="r1"):
        db.record_schedule_run(ScheduleRun(id="r1", schedule_id=bob.id, started_at=T0, status="success"))
    assert [r.id for r in all_items(db.list_schedule_runs, alice.id)] == ["r1"]
    assert all_items(db.list_schedule_runs, bob.id) == []
    assert db.list_schedule_runs(alice.id).items[0] == run
    # the same schedule may record the run's outcome under its id
    done = db.record_schedule_run(ScheduleRun(id="r1", schedule_id=alice.id, started_at=T0, status="success"))
    assert db.list_schedule_runs(alice.id).items == [done]


# -- import ---------------------------------------------------------------------------------------


def _pipe(text: str) -> Any:
    """A real pipe carrying `text`, read end as a text stream (not seekable)."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "w", encoding="utf-8") as out:
            out.write(text)

    threading.Thread(target=feed, daemon=True).start()
    return os.fdopen(read_fd, "r", encoding="utf-8")


def test_import_from_a_stream_with_a_bad_line_late_writes_nothing(db: Any) -> None:
    lines = [HEADER] + [_memory_line(f"m{i}") for i in range(600)] + ["{not json"] + [_memory_line("late")]
    with _pipe("\n".join(lines) + "\n") as stream:
        assert not stream.seekable()
        with pytest.raises(InvalidInputError, match="line 602"):
            db.import_jsonl(stream)
    assert _count_memories(db) == 0


def test_import_from_a_stream_writes_it_all(db: Any) -> None:
    lines = [HEADER] + [_memory_line(f"m{i}") for i in range(600)]
    with _pipe("\n".join(lines) + "\n") as stream:
        count = db.import_jsonl(stream)
    assert count == 600 and count.read == 600 and count.skipped == 0
    assert _count_memories(db, "bob") == 600


def test_import_reports_what_it_skipped(db: Any) -> None:
    dump = "\n".join([HEADER] + [_memory_line(f"m{i}") for i in range(5)]) + "\n"
    db.import_jsonl(io.StringIO(dump))
    again = db.import_jsonl(io.StringIO(dump))
    assert (again, again.read, again.skipped) == (0, 5, 5)
    replaced = db.import_jsonl(io.StringIO(dump), on_conflict="replace")
    assert (replaced, replaced.skipped) == (5, 0)


@pytest.mark.parametrize("bad_id", ["x" * 300, "", "a\nb", "a\x00b", "\ud800"], ids=["300", "empty", "newline", "nul", "surrogate"])
def test_import_refuses_ids_the_api_refuses(db: Any, bad_id: str) -> None:
    with pytest.raises(InvalidInputError):
        db.upsert_memory({"memory_id": bad_id, "user_id": "bob", "memory": "m"})
    record = {"memory_id": bad_id, "user_id": "bob", "memory": "m", "topics": []}
    dump = "\n".join([HEADER, _memory_line("good"), json.dumps({"table": "memories", "record": record})]) + "\n"
    with pytest.raises(InvalidInputError, match="line 3"):
        db.import_jsonl(io.StringIO(dump))
    assert _count_memories(db) == 0


def test_import_refuses_what_the_api_refuses_inside_a_record(db: Any) -> None:
    session = Session(user_id="bob").model_dump(mode="json")
    session["state"] = {"n": 2**70}
    ok = json.dumps({"table": "sessions", "record": session})
    bad = dict(session, session_id="s2", metadata={"\udfff": 1})
    lines = [HEADER, ok, json.dumps({"table": "sessions", "record": bad}, ensure_ascii=True)]
    with pytest.raises(InvalidInputError, match="line 3"):
        db.import_jsonl(io.StringIO("\n".join(lines) + "\n"))
    assert db.list_sessions(with_total=True).total == 0
