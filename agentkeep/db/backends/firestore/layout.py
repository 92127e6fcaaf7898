"""Firestore's layout (no I/O): the collections of each table, the candidate index orders the
queries read and the composite indexes they need (firestore.indexes.json), and the small
records of a plan, a document read and a commit."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from agentkeep.db.backends.firestore.codec import UTC
from agentkeep.db.tables import TableSpec, build_specs

INLINE_MAX = 900_000  # bytes of the JSON body kept inside the document itself
PART_BYTES = 1_000_000  # bytes per `_parts` document (Firestore: 1 MiB per document)
MAIN_MAX = 1_000_000  # the indexed fields alone must fit one document
IN_LIMIT = 30  # values per `in` filter (Firestore's disjunction limit)
COMMIT_WRITES = 500  # writes per commit
COMMIT_BYTES = 9_000_000  # payload per commit (Firestore: 10 MiB per request)
GET_CHUNK = 300
SCAN_BATCH = 500
MARKER_TTL = dt.timedelta(days=1)
RETRIES = 2000
LOCK_LEASE = dt.timedelta(seconds=30)
# The table whose records live in a subcollection of their parent's document (by its
# `parent` link: runs in their session's), named after the table, so a parent's children
# are a native range; an index document per record in the table's own collection finds one
# by its key alone.
NESTED = "runs"
IN_PARENT = NESTED + "@parent"  # the nested records' collection, as the planner sees it
LOWEST = {"time": dt.datetime(1, 1, 1, tzinfo=UTC), "str": "", "text": "", "date": "", "int": -(2**63),
          "float": -math.inf, "bool": False}

# -- collections and indexes -----------------------------------------------------------------------


def _candidates(spec: TableSpec, implicit: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Field orders the planner may read natively: each spec index followed by the key (so
    the order is total), each equality prefix of an index followed by the key, and the key.
    Fields in `implicit` are fixed by the collection itself (a session's runs)."""
    out: list[tuple[str, ...]] = []
    for idx in spec.indexes:
        if implicit and idx.fields[: len(implicit)] != implicit:
            continue
        fields = tuple(f for f in idx.fields if f not in implicit)
        for j in range(1, len(fields) + 1):
            out.append(fields[:j] + tuple(k for k in spec.key if k not in fields[:j]))
    out.append(spec.key)
    return list(dict.fromkeys(c for c in out if c))


class _Coll:
    """One kind of collection a table's documents live in."""

    def __init__(self, spec: TableSpec, group: str, *, implicit: tuple[str, ...] = (), pointer: bool = False) -> None:
        self.spec = spec
        self.group = group  # the collection id (a subcollection's id for a session's runs)
        self.implicit = implicit
        self.pointer = pointer  # slim run index documents: native columns only, no body
        self.heavy = tuple(c.name for c in spec.columns if c.kind in ("json", "text") and c.name not in spec.multi)
        self.native = tuple(c for c in spec.columns if c.name not in self.heavy)
        self.native_names = frozenset(c.name for c in self.native) - set(implicit)
        self.cands = _candidates(spec, implicit)

    def shapes(self) -> list[tuple[tuple[str, str], ...]]:
        """The composite indexes the planner's native queries need: for each candidate order
        C and each number m of leading equality fields, C ascending, and C[:m] then C[m:]
        descending; with a `multi` column, each also behind array-contains on it."""
        out: list[tuple[tuple[str, str], ...]] = []
        for c in self.cands:
            variants = [tuple((f, "ASCENDING") for f in c)]
            variants += [tuple((f, "ASCENDING") for f in c[:m]) + tuple((f, "DESCENDING") for f in c[m:])
                         for m in range(len(c))]
            for v in variants:
                if len(v) >= 2:
                    out.append(v)
                for multi in self.spec.multi:
                    out.append(((multi, "CONTAINS"),) + v)
        return list(dict.fromkeys(out))


def _colls(specs: dict[str, TableSpec]) -> dict[str, _Coll]:
    out = {}
    for name, spec in specs.items():
        out[name] = _Coll(spec, spec.physical, pointer=name == NESTED)
    out[IN_PARENT] = _Coll(specs[NESTED], NESTED, implicit=(specs[NESTED].parent.field,))
    return out


def index_config(specs: dict[str, TableSpec]) -> dict:
    """The Firebase CLI's firestore.indexes.json for these tables: every composite index the
    kernel's queries use, the JSON bodies and parts left out of indexing, and the TTL policy
    that removes old version markers."""
    indexes = []
    overrides = []
    for coll in _colls(specs).values():
        for shape in coll.shapes():
            fields = [{"fieldPath": f, "arrayConfig": d} if d == "CONTAINS" else {"fieldPath": f, "order": d}
                      for f, d in shape]
            indexes.append({"collectionGroup": coll.group, "queryScope": "COLLECTION", "fields": fields})
        if not coll.pointer:
            overrides.append({"collectionGroup": coll.group, "fieldPath": "_body", "indexes": []})
    overrides.append({"collectionGroup": "_parts", "fieldPath": "d", "indexes": []})
    overrides.append({"collectionGroup": "_v", "fieldPath": "expire_at", "ttl": True, "indexes": []})
    return {"indexes": indexes, "fieldOverrides": overrides}


def default_index_config(collection_prefix: str = "agentkeep") -> dict:
    """index_config for FirestoreDb's default tables (docs/firestore.indexes.json)."""
    return index_config(build_specs(_table_prefix(collection_prefix)))


def _table_prefix(collection_prefix: str) -> str:
    return f"{collection_prefix}_" if collection_prefix else ""


# -- query plans -----------------------------------------------------------------------------------


class _Plan:
    __slots__ = ("eq", "rng", "contains", "order", "ordered", "exact")

    def __init__(self, eq: dict, rng: list, contains: tuple | None, order: tuple, ordered: bool) -> None:
        self.eq = eq  # field -> list of values (one: ==, more: in)
        self.rng = rng  # range Conds on one field
        self.contains = contains  # (field, value): array-contains
        self.order = order  # the native order: a candidate's tail, so an index serves it
        self.ordered = ordered  # rows come in the query's order (else: sorted here)
        self.exact = False  # every condition is applied natively


class _Meta:
    """Where a record's document is and which version was read."""

    __slots__ = ("ref", "token", "parts", "pointer")

    def __init__(self, ref: Any, token: str | None, parts: int, pointer: Any = None) -> None:
        self.ref, self.token, self.parts, self.pointer = ref, token, parts, pointer


class _Group:
    """The writes of one document, committed together. Only creates can fail (a marker or
    a new document); `check` is written after them with `_t` = `token`, so reading it tells
    whether the group was applied."""

    __slots__ = ("writes", "token", "size", "check")

    def __init__(self, writes: list, token: str, size: int, check: Any) -> None:
        self.writes, self.token, self.size, self.check = writes, token, size, check
