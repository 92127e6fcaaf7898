"""The state changes of a job (pure, no I/O): what enqueueing, claiming and finishing write.
The domain applies each as one compare-and-set on the job's revision."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentkeep.db.errors import InvalidInputError

QUEUED, RUNNING = "queued", "running"
# what a claim reads of the jobs it may take (`taken` needs no more)
CLAIM_FIELDS = ("id", "kind", "status", "revision", "attempts", "max_attempts", "run_after", "locked_by",
                "locked_until")


def enqueued(row: dict, now: dt.datetime) -> dict:
    """A new job as stored: queued, no attempt made, due at its `run_after` (else now)."""
    row.update(status=QUEUED, attempts=0, result=None, error=None, locked_by=None, locked_until=None,
               finished_at=None, run_after=row["run_after"] or now, created_at=row["created_at"] or now,
               updated_at=now, revision=1)
    return row


def taken(row: dict, worker_id: str, until: dt.datetime, now: dt.datetime) -> dict:
    """What a claim of `row` writes: a lease to `worker_id` until `until` and one attempt
    more, or, when no attempt is left (the last one's worker stopped), the job failed."""
    values: dict[str, Any] = {"revision": row["revision"] + 1, "updated_at": now}
    if row["attempts"] < row["max_attempts"]:
        values.update(status=RUNNING, locked_by=worker_id, locked_until=until, attempts=row["attempts"] + 1)
        return values
    if row["status"] == RUNNING:
        ended = row["locked_until"].isoformat() if row["locked_until"] else "?"
        error = (f"the worker {row['locked_by']!r} stopped before finishing it (its lease ended at {ended}); "
                 f"{row['attempts']} of {row['max_attempts']} attempts made")
    else:
        error = f"no attempt left ({row['attempts']} of {row['max_attempts']} made)"
    values.update(status="failed", error=error, locked_by=None, locked_until=None, finished_at=now)
    return values


def check_finish(status: str, retry_at: dt.datetime | None) -> None:
    if retry_at is not None and status != "failed":
        raise InvalidInputError("retry_at goes with status='failed' (a failed attempt to retry later)")


def finished(cur: dict, status: str, result: dict | None, error: str | None, retry_at: dt.datetime | None,
             now: dt.datetime) -> dict:
    """What `finish_job` writes: the job completed or failed, or, failed with `retry_at` and
    attempts left, queued again until `retry_at`; the lease released either way."""
    values: dict[str, Any] = {"result": result, "error": error, "locked_by": None, "locked_until": None,
                              "revision": cur["revision"] + 1, "updated_at": now}
    if retry_at is not None and cur["attempts"] < cur["max_attempts"]:
        values.update(status=QUEUED, run_after=retry_at)
    else:
        values.update(status=status, finished_at=now)
    return values
