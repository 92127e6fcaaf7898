"""Functions run in child processes (spawn): they import only agentkeep and open the db
with the picklable opener the backend entry provides."""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable


def append_runs(opener: Callable[[], Any], session_id: str, n: int, barrier: Any, out: Any) -> None:
    from agentkeep.db import Run

    try:
        db = opener()
        try:
            barrier.wait(timeout=120)
            seqs = [db.append_run(Run(session_id=session_id, content=f"p{os.getpid()}-{i}")).seq for i in range(n)]
        finally:
            db.close()
        out.put(("ok", seqs))
    except BaseException:  # noqa: BLE001 - reported to the parent
        out.put(("error", traceback.format_exc()))


def claim_all(opener: Callable[[], Any], worker_id: str, now: Any, barrier: Any, out: Any) -> None:
    try:
        db = opener()
        try:
            barrier.wait(timeout=120)
            claimed: list[str] = []
            while True:
                got = db.claim_due_schedules(worker_id=worker_id, now=now, lease_seconds=600, limit=1)
                if not got:
                    break
                claimed.extend(s.id for s in got)
        finally:
            db.close()
        out.put(("ok", claimed))
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))


def claim_jobs(opener: Callable[[], Any], worker_id: str, now: Any, barrier: Any, out: Any) -> None:
    try:
        db = opener()
        try:
            barrier.wait(timeout=120)
            claimed: list[str] = []
            while got := db.claim_jobs(worker_id=worker_id, now=now, lease_seconds=600, limit=2):
                claimed.extend(j.id for j in got)
        finally:
            db.close()
        out.put(("ok", claimed))
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))


def create_tables(opener: Callable[[], Any], barrier: Any, out: Any) -> None:
    try:
        db = opener()
        try:
            barrier.wait(timeout=120)
            db.create_tables()
            db.create_tables()
        finally:
            db.close()
        out.put(("ok", None))
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))
