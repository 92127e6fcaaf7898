"""Runs that outlive their replica: a server killed (SIGKILL) in the middle of a streamed run
leaves that run `error` once its lease ends, failed by another replica on the same db, with
every acknowledged run and message kept. Real processes, real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from agentkeep.models.scripted import Reply
from tests.os.replica import LEASE_SECONDS, Replica, db_url

SLOW = "a slow answer that streams one small piece at a time " * 4


def test_a_killed_replica_leaves_its_run_error_after_the_lease(store: Any, scripted: Any, replicas: list) -> None:
    def answer(body: dict) -> Reply:
        question = body["messages"][-1]["content"]
        if "slow" in question:
            return Reply(SLOW, chunk_chars=4, chunk_delay=0.2)
        return Reply(f"answer to {question}")

    model = scripted(answer)
    first = Replica(db_url(store), model.base_url)
    replicas.append(first)
    ids = {"session_id": "s1", "user_id": "alice"}
    kept = httpx.post(f"{first.base}/agents/analyst/runs", json={"message": "first question", **ids}, timeout=30)
    assert kept.status_code == 200 and kept.json()["status"] == "completed", kept.text

    events = []
    with httpx.stream("POST", f"{first.base}/agents/analyst/runs", json={"message": "slow question", "stream": True,
                                                                          **ids}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if line == "event: RunContent":
                break
        first.kill()  # mid-stream: the answer has begun and will never end
    started = next(e for e in events if e["event"] == "RunStarted")

    db = store.db
    run = db.get_run(started["run_id"])
    assert run.status == "running" and run.lease_until is not None
    second = Replica(db_url(store), model.base_url)  # its sweep finds the dead replica's run
    replicas.append(second)
    deadline = time.monotonic() + 60
    while db.get_run(run.run_id).status == "running":
        assert time.monotonic() < deadline, "the dead replica's run is still running"
        time.sleep(0.2)
    failed = db.get_run(run.run_id)
    assert failed.status == "error" and failed.metadata["error"]["type"] == "RunLeaseExpired"
    assert failed.input == "slow question" and failed.user_id == "alice" and failed.seq == run.seq
    assert failed.updated_at > run.lease_until  # not before its lease ended

    # every acknowledged run and message is kept, and the session goes on through the other replica
    acknowledged = db.get_run(kept.json()["run_id"])
    assert acknowledged.status == "completed" and acknowledged.content == "answer to first question"
    assert [m["role"] for m in acknowledged.messages][-1] == "assistant"
    after = httpx.post(f"{second.base}/agents/analyst/runs", json={"message": "next question", **ids}, timeout=30)
    assert after.status_code == 200 and after.json()["status"] == "completed"
    runs = httpx.get(f"{second.base}/sessions/s1/runs", params={"user_id": "alice"}, timeout=30).json()
    assert [(r["run_input"], r["status"]) for r in runs] == [
        ("first question", "completed"), ("slow question", "error"), ("next question", "completed")]


def test_a_long_run_keeps_its_lease_while_replicas_sweep(store: Any, scripted: Any, replicas: list) -> None:
    """A run that lasts several leases is renewed by its process and never failed by the
    other replica's sweeps."""
    model = scripted([Reply(SLOW, delay=2.5 * LEASE_SECONDS + 1)])  # a slow model: over two leases
    one, other = Replica(db_url(store), model.base_url), None
    replicas.append(one)
    other = Replica(db_url(store), model.base_url)
    replicas.append(other)
    began = time.monotonic()
    done = httpx.post(f"{one.base}/agents/analyst/runs", json={"message": "long", "session_id": "s2"}, timeout=60)
    assert time.monotonic() - began > 2.5 * LEASE_SECONDS  # it did outlive several leases
    assert done.status_code == 200 and done.json()["status"] == "completed", (done.text, one.output(), other.output())
    assert store.db.get_run(done.json()["run_id"]).lease_until is None  # no lease once it ended
