"""A process that starts under load serves its first calls: fifty callers making their
first call on a new db object at once all get an answer (the schema is checked once, by
one of them, while the others wait without holding a connection)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from agentkeep.db import Session

from .test_concurrency import _outcomes

CALLERS = 50


def _first_calls(db: Any) -> list[Any]:
    return _outcomes(CALLERS, lambda i: db.list_sessions(user_id=f"user-{i % 5}").items)


def _assert_all_answered(outcomes: list[Any]) -> None:
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == [], f"{len(errors)} of {CALLERS} first calls failed, first: {errors[0]!r}"


@pytest.mark.fresh_store
def test_fifty_first_calls_at_once_on_a_new_store(db: Any) -> None:
    _assert_all_answered(_first_calls(db))
    assert all(s["up_to_date"] for s in db.schema_status().values())


def test_fifty_first_calls_at_once_on_a_new_object_over_existing_tables(
    db: Any, db_opener: Callable[[], Any] | None
) -> None:
    if db_opener is None:
        pytest.skip("no second db object can open this data (it lives in the first object)")
    db.upsert_session(Session(user_id="user-1", name="already here"))
    other = db_opener()
    try:
        outcomes = _first_calls(other)
    finally:
        other.close()
    _assert_all_answered(outcomes)
    assert sum(len(o) for o in outcomes) == CALLERS // 5
