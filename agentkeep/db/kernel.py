"""The storage kernel: the few primitives a backend implements. The domain layer
(`_async/domain.py`, and the sync twin generated from it) builds every API method on them.

Rows are dicts of column name -> Python value (str, int, float, bool, UTC datetime, date,
or a JSON value); a kernel encodes them for its store and decodes them back exactly.

Sync kernels implement these as plain methods; async kernels as coroutines of the same
names (`transaction` and `schema_lock` become async context managers).

    capabilities: frozenset[str]      what the store can do (see CAPABILITIES)
    describe() -> str                 what the kernel runs against, for test reports
    has_table(table) -> bool
    plan_schema() -> list[Step]       additive steps that would bring the store to the specs
    apply_step(step) -> None
    schema_lock() -> context manager  held while the schema is checked and changed
    transaction() -> context manager  groups writes; atomic where the store allows
    get(table, key) -> row | None
    find(query) -> list[row]
    count(table, where) -> int
    insert(table, row) -> None        raises DuplicateKey when the key exists
    put_many(table, rows, replace) -> int   insert; existing keys replaced or left alone
    update(table, key, set, incr, where, returning) -> dict | None
                                      None when no row has that key and meets `where`;
                                      else the `returning` columns after the update
    delete(table, where) -> int
    distinct(table, field, where) -> list   distinct values (list-valued fields unnested)
    group_count(table, by, max_field, where, after, limit) -> list[(value, count, max)]
    close() -> None
    translate_error(exc) -> DbError | None
                                      the library's error for a driver error that means the
                                      store cannot be reached, refused the login or has no
                                      such database (ConnectionFailedError), else None

Optional, for stores that can do these in one atomic step (the domain falls back to
`transaction()` with update + insert, and to compare-and-set on `revision`, otherwise):

    atomic_append: bool               True when `append` is provided
    append(child, row, parent, key, counter, seq, set, where, inherit) -> dict | None
                                      bump the parent's counter, set `set` on it, insert the
                                      child with seq = new counter and `inherit` copied from
                                      the parent; None when no parent has `key` and meets
                                      `where`; DuplicateKey when the child's key exists
    atomic_claim: bool                True when `claim_due` is provided
    claim_due(now, until, worker_id, limit) -> list[row]
                                      lease up to `limit` due schedules, never twice
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CAPABILITIES = {
    "transactions": "writes inside one domain call are atomic",
    "multi_process": "several processes may share the db safely",
    "persistent": "data outlives the process",
    "native_ttl": "the store expires records itself",
}


class DuplicateKey(Exception):
    """Raised by `insert` when the key already exists (internal to agentkeep)."""


@dataclass(frozen=True)
class Step:
    description: str
    action: str  # kernel-specific, e.g. "create_table", "add_column", "add_index"
    table: str
    detail: Any = None
