"""The storage kernel: the few primitives a backend implements. The domain layer
(`_async/domain.py`, and the sync twin generated from it) builds every API method on them.

Rows are dicts of column name -> Python value (str, int, float, bool, UTC datetime, date,
or a JSON value); a kernel encodes them for its store and decodes them back exactly.

`Kernel` is the contract of a sync kernel, `AsyncKernel` of an async one: the same methods,
the I/O ones coroutines (and `transaction` and `schema_lock` async context managers). What
a store can do beyond the common contract is in `capabilities` (see `CAPABILITIES`); the two
optional primitives, `append` and `claim_due`, exist where it names "atomic_append" and
"atomic_claim" (the domain falls back to `transaction()` with update + insert, and to
compare-and-set on `revision`, otherwise). A test (tests/unit/test_kernel_contract.py)
checks every kernel against these signatures.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agentkeep.db.errors import DbError
    from agentkeep.db.query import Cond, Query
    from agentkeep.db.tables import TableSpec

CAPABILITIES = {
    "transactions": "writes inside one domain call are atomic",
    "multi_process": "several processes may share the db safely",
    "persistent": "data outlives the process",
    "native_ttl": "the store expires records itself",
    "atomic_append": "the kernel has `append`: a run's seq is taken from its session's counter and the run "
                     "inserted by the store's own step (a statement, script or commit), not a domain transaction",
    "atomic_claim": "the store leases due schedules itself, never one twice: the kernel has `claim_due`",
}


class DuplicateKey(Exception):
    """Raised by `insert` when the key already exists (internal to agentkeep)."""


@dataclass(frozen=True)
class Step:
    description: str
    action: str  # kernel-specific, e.g. "create_table", "add_column", "add_index"
    table: str
    detail: Any = None


class Kernel(Protocol):
    """A sync kernel."""

    capabilities: frozenset[str]  # names from CAPABILITIES

    def setup(self, specs: dict[str, TableSpec]) -> None:
        """Take the tables (their physical names and layout) before any other call."""

    def default_id(self) -> str:
        """The db's id when none is given: where the data is."""

    def describe(self) -> str:
        """What the kernel runs against, for test reports and repr."""

    def translate_error(self, exc: BaseException) -> DbError | None:
        """The library's error for a driver error that means the store cannot be reached,
        refused the login or has no such database (ConnectionFailedError), else None."""

    def has_table(self, table: str) -> bool: ...

    def plan_schema(self) -> list[Step]:
        """The additive steps that would bring the store to the specs."""

    def apply_step(self, step: Step) -> None: ...

    def schema_lock(self) -> AbstractContextManager[Any]:
        """Held while the schema is checked and changed."""

    def transaction(self) -> AbstractContextManager[Any]:
        """Groups writes; atomic where the store has "transactions"."""

    def get(self, table: str, key: tuple) -> dict | None: ...

    def find(self, q: Query) -> list[dict]: ...

    def count(self, table: str, where: tuple[Cond, ...]) -> int: ...

    def insert(self, table: str, row: dict) -> None:
        """Raises DuplicateKey when the key exists."""

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        """Insert; existing keys replaced or left alone. Returns the rows written."""

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        """None when no row has that key and meets `where`; else the `returning` columns
        after the update."""

    def delete(self, table: str, where: tuple[Cond, ...]) -> int: ...

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        """The distinct values of `field` (list-valued fields unnested), None left out."""

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...],
                    limit: int) -> list[tuple]:
        """(value of `by`, rows, largest `max_field`) per group, by value ascending, at most
        `limit` groups."""

    def close(self) -> None: ...


class AtomicAppend(Protocol):
    """A sync kernel with "atomic_append"."""

    def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str, set: dict,
               where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Bump the parent's `counter`, set `set` on it, insert the child with `seq` = the
        new counter and `inherit` copied from the parent; None when no parent has `key` and
        meets `where`; DuplicateKey when the child's key exists (nothing changed). Returns
        `seq` and the inherited fields."""


class AtomicClaim(Protocol):
    """A sync kernel with "atomic_claim"."""

    def claim_due(self, *, now: dt.datetime, until: dt.datetime, worker_id: str, limit: int) -> list[dict]:
        """Lease up to `limit` due schedules to `worker_id` until `until`, never one twice."""


class AsyncKernel(Protocol):
    """An async kernel: `Kernel` with coroutines for the I/O."""

    capabilities: frozenset[str]

    def setup(self, specs: dict[str, TableSpec]) -> None: ...

    def default_id(self) -> str: ...

    def describe(self) -> str: ...

    def translate_error(self, exc: BaseException) -> DbError | None: ...

    async def has_table(self, table: str) -> bool: ...

    async def plan_schema(self) -> list[Step]: ...

    async def apply_step(self, step: Step) -> None: ...

    def schema_lock(self) -> AbstractAsyncContextManager[Any]: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

    async def get(self, table: str, key: tuple) -> dict | None: ...

    async def find(self, q: Query) -> list[dict]: ...

    async def count(self, table: str, where: tuple[Cond, ...]) -> int: ...

    async def insert(self, table: str, row: dict) -> None: ...

    async def put_many(self, table: str, rows: list[dict], replace: bool) -> int: ...

    async def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
                     where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None: ...

    async def delete(self, table: str, where: tuple[Cond, ...]) -> int: ...

    async def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list: ...

    async def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...],
                          limit: int) -> list[tuple]: ...

    async def close(self) -> None: ...


class AsyncAtomicAppend(Protocol):
    async def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str, set: dict,
                     where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None: ...


class AsyncAtomicClaim(Protocol):
    async def claim_due(self, *, now: dt.datetime, until: dt.datetime, worker_id: str,
                        limit: int) -> list[dict]: ...


# the optional primitive each capability brings, sync and async
OPTIONAL = {"atomic_append": (AtomicAppend, AsyncAtomicAppend), "atomic_claim": (AtomicClaim, AsyncAtomicClaim)}
