"""The vector stores the conformance suite runs against.

Each entry builds a fresh, isolated store (not yet created) from keyword options that every
store accepts (search_type, distance, vector_weight, keyword_weight, rrf_k,
hybrid_candidates, dimensions), says why it cannot run (None when it can) and what it runs
against. Adding a store means adding an entry here; test bodies never name a store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Store:
    name: str
    build: Callable[..., Any]  # build(**options) -> (store, cleanup)
    unavailable: Callable[[], Optional[str]] = lambda: None
    target: Callable[[], str] = lambda: "this process"

    def __repr__(self) -> str:
        return self.name


def _in_memory(**options: Any):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    store = InMemoryVectorDb(**options)
    return store, store.drop


def _pgvector_unavailable() -> Optional[str]:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"pgvector: driver not installed ({exc})"
    from tests.services.pgvector import unavailable

    return unavailable()


def _pgvector_target() -> str:
    from tests.services.pgvector import target

    return target() + ", a table per test"


def _pgvector(**options: Any):
    from agentkeep.vector_db.pgvector import PgVector
    from tests.services.pgvector import server_url

    store = PgVector(f"t_{uuid.uuid4().hex[:12]}", db_url=server_url(), pool_size=2, **options)

    def cleanup() -> None:
        try:
            store.drop()
        finally:
            store.close()

    return store, cleanup


STORES = [
    Store("in_memory", _in_memory),
    Store("pgvector", _pgvector, _pgvector_unavailable, _pgvector_target),
]
