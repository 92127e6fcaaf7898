"""FirestoreDb on google-cloud-firestore (sync client).

    FirestoreDb(project_id="my-project", database="(default)", collection_prefix="agentkeep")

Layout (docs/firestore.md has the details and the reasons):
- one collection per table, `<prefix>_<table>`, one document per record; the document id
  is the record key, escaped so that any agentkeep id is a valid, distinct Firestore id;
- runs live in their session's subcollection, `<prefix>_sessions/{session}/runs/{run}`, so
  a session's runs are a native range on `seq`; a slim index document per run in
  `<prefix>_runs/{run}` (written in the same commit) finds a run by its id alone and serves
  the queries that cross sessions;
- indexed columns are native fields (timestamps, strings, numbers, arrays); JSON and long
  text columns travel together as one JSON string, inline up to ~900 KB and otherwise split
  across `_parts` documents, so a record up to agentkeep's 4 MiB limit fits Firestore's
  1 MiB document limit;
- every write replaces the document's version token `_t`; a write that depends on what it
  read first creates the marker document `{doc}/_v/{token it read}` in the same commit,
  so of two writers that read the same version exactly one commits (compare-and-set that
  holds on the service and on the emulator, whose transactions do not isolate).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

from agentkeep.db.drivers import driver_for

with driver_for("FirestoreDb", "firestore"):
    # not `from google.cloud import firestore`: with other google-cloud packages installed,
    # that says ImportError, not ModuleNotFoundError, when this one is missing
    import google.cloud.firestore as firestore
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.firestore_v1.base_query import FieldFilter

from agentkeep.db import options
from agentkeep.db._sync.domain import Db
from agentkeep.db.connection import CONNECT_TIMEOUT_S, cloud_unreachable, connection_failed
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query, after_filter, matches, matches_all, row_key
from agentkeep.db.rowstore import apply_update, check_where
from agentkeep.db.tables import TableSpec, build_specs

UTC = dt.timezone.utc
INLINE_MAX = 900_000  # bytes of the JSON body kept inside the document itself
PART_BYTES = 1_000_000  # bytes per `_parts` document (Firestore: 1 MiB per document)
MAIN_MAX = 1_000_000  # the indexed fields alone must fit one document
MAX_ID_BYTES = 1500
IN_LIMIT = 30  # values per `in` filter (Firestore's disjunction limit)
COMMIT_WRITES = 500  # writes per commit
COMMIT_BYTES = 9_000_000  # payload per commit (Firestore: 10 MiB per request)
GET_CHUNK = 300
SCAN_BATCH = 500
MARKER_TTL = dt.timedelta(days=1)
RETRIES = 2000
LOCK_LEASE = dt.timedelta(seconds=30)
RUNS_SUB = "runs"  # the subcollection of a session document that holds its runs
LOWEST = {"time": dt.datetime(1, 1, 1, tzinfo=UTC), "str": "", "text": "", "date": "", "int": -(2**63),
          "float": -math.inf, "bool": False}


# -- document ids ------------------------------------------------------------------------------


def doc_id(key: tuple) -> str:
    """An injective, valid Firestore document id for a record key: '%' and '/' are
    percent-escaped, the parts of a composite key are joined by '%00' (never produced by
    escaping, and ids hold no NUL), and the reserved ids '.', '..' and '__x__' get their
    first character escaped. Everything else (unicode, case, spaces) is kept as it is. An
    agentkeep id (255 characters at most) always fits Firestore's 1,500 bytes; a longer key
    becomes a SHA-256 digest."""
    parts = []
    for v in key:
        s = v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v)
        parts.append(s.replace("%", "%25").replace("/", "%2F"))
    out = "%00".join(parts)
    if out in (".", "..") or (len(out) >= 4 and out.startswith("__") and out.endswith("__")):
        out = f"%{ord(out[0]):02X}{out[1:]}"
    if len(out.encode("utf-8")) > MAX_ID_BYTES:  # '%H' is never made by escaping
        out = "%H" + hashlib.sha256(out.encode("utf-8")).hexdigest()
    return out


def _token() -> str:
    return uuid.uuid4().hex


# -- values --------------------------------------------------------------------------------------


def _enc(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "date":
        return value.isoformat()
    if kind == "float":
        return float(value)
    return value


def _dec(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return dt.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                           value.microsecond, tzinfo=UTC)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "float":
        return float(value)
    return value


def _size(value: Any) -> int:
    """Firestore's size of a stored value (close enough to refuse what cannot fit)."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    if isinstance(value, dict):
        return sum(len(k) + 1 + _size(v) for k, v in value.items())
    return 8


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
        out[name] = _Coll(spec, spec.physical, pointer=name == "runs")
    out["runs@session"] = _Coll(specs["runs"], RUNS_SUB, implicit=("session_id",))
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


class FirestoreKernel:
    capabilities = frozenset({"multi_process", "persistent"})
    atomic_append = True

    def __init__(self, project_id: str | None, database: str, collection_prefix: str, client: Any,
                 emulator_host: str | None, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.project, self.database, self.prefix = project_id, database, collection_prefix
        self.emulator = emulator_host or os.environ.get("FIRESTORE_EMULATOR_HOST")
        if client is None:
            if not project_id:
                raise InvalidInputError("FirestoreDb needs project_id (or a client)")
            try:
                if self.emulator:
                    client = firestore.Client(project=project_id, database=database,
                                              credentials=AnonymousCredentials())
                    client._emulator_host = self.emulator  # the client's own switch to an insecure local channel
                else:
                    client = firestore.Client(project=project_id, database=database)
            except Exception as exc:  # no credentials found
                error = self.translate_error(exc)
                if error is None:
                    raise
                raise error from exc
        self.client = client
        self.project = client.project
        self.emulator = getattr(client, "_emulator_host", None)
        self.connect_timeout = connect_timeout
        self._reached = False

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.specs = specs
        self.colls = _colls(specs)

    def default_id(self) -> str:
        return f"firestore:{self.project}/{self.database}/{self.prefix}"

    def describe(self) -> str:
        where = f"emulator at {self.emulator}" if self.emulator else "Google Cloud"
        return f"Firestore project {self.project}, database {self.database}, prefix {self.prefix!r} ({where})"

    def close(self) -> None:
        self.client.close()

    def translate_error(self, exc: BaseException) -> DbError | None:
        """ConnectionFailedError when the service cannot be reached (also after the client's
        retries), refuses the credentials, or has no such database; else None."""
        cause = exc.cause if isinstance(exc, gexc.RetryError) else exc
        if (isinstance(cause, (gexc.ServiceUnavailable, gexc.Unauthenticated, gexc.PermissionDenied))
                or (isinstance(exc, gexc.RetryError) and isinstance(cause, gexc.DeadlineExceeded))
                or (isinstance(cause, gexc.NotFound) and "database" in str(cause).lower())
                or cloud_unreachable(exc)):
            where = f"project {self.project}, database {self.database}" + (
                f" (emulator at {self.emulator})" if self.emulator else "")
            return connection_failed("Firestore", where, exc, reason=str(cause))
        return None

    def _reach(self) -> None:
        """The first request waits at most `connect_timeout` for the service (the client's
        own retries of an unreachable one go on for 60 s); later ones keep those retries."""
        wait = self.connect_timeout
        retry = Retry(predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
                      initial=0.1, maximum=1.0, timeout=wait)
        self.client.collection(self.specs["meta"].physical).document("%schema-lock").get(retry=retry, timeout=wait)
        self._reached = True

    # -- references ------------------------------------------------------------------------------

    def _col(self, table: str) -> Any:
        if not self._reached:  # every request starts from a collection reference
            self._reach()
        return self.client.collection(self.specs[table].physical)

    def _ref(self, table: str, key: tuple) -> Any:
        return self._col(table).document(doc_id(key))

    def _run_ref(self, session_id: str, run_id: str) -> Any:
        return self._col("sessions").document(doc_id((session_id,))).collection(RUNS_SUB).document(doc_id((run_id,)))

    @staticmethod
    def _marker(ref: Any, token: str) -> Any:
        return ref.collection("_v").document(token)

    @staticmethod
    def _part(ref: Any, i: int) -> Any:
        return ref.collection("_parts").document(str(i))

    # -- schema: nothing to create; versions are meta rows, the lock a document --------------------

    def has_table(self, table: str) -> bool:
        return True

    def plan_schema(self) -> list[Step]:
        return []

    def apply_step(self, step: Step) -> None:  # pragma: no cover - no steps are planned
        raise AssertionError(step)

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """A lease document beside the meta rows (its id is no escaped key), taken with
        create(); an expired lease is removed by compare-and-set and taken again."""
        ref = self._col("meta").document("%schema-lock")
        owner = _token()
        deadline = time.monotonic() + 300
        while True:
            now = dt.datetime.now(UTC)
            try:
                ref.create({"owner": owner, "until": now + LOCK_LEASE, "_t": owner})
                break
            except gexc.AlreadyExists:
                snap = ref.get()
                data = snap.to_dict() if snap.exists else None
                if data is not None and data["until"] <= now:
                    self._commit([self._delete_group(_Meta(ref, data.get("_t"), 0))])
                elif time.monotonic() > deadline:
                    raise DbError("timed out waiting for the schema lock") from None
                else:
                    time.sleep(random.uniform(0.02, 0.08))
        try:
            yield
        finally:
            snap = ref.get()
            if snap.exists and snap.get("owner") == owner:
                self._commit([self._delete_group(_Meta(ref, owner, 0))])

    def transaction(self):
        # Firestore transactions take a callback and read before they write; the domain's
        # grouping reads between writes, so each write here is atomic on its own instead
        return nullcontext()

    # -- encoding ------------------------------------------------------------------------------------

    def _encode(self, coll: _Coll, row: dict, token: str) -> tuple[dict, list[bytes]]:
        main = {c.name: _enc(c.kind, row.get(c.name)) for c in coll.native}
        if _size(main) > MAIN_MAX:
            raise InvalidInputError(
                f"{coll.spec.name}: the indexed fields alone exceed Firestore's 1 MiB document limit")
        body = _dumps({h: row.get(h) for h in coll.heavy})
        raw = body.encode("utf-8")
        parts: list[bytes] = []
        if len(raw) > INLINE_MAX:
            parts = [raw[i : i + PART_BYTES] for i in range(0, len(raw), PART_BYTES)]
            body = None
        # `_pt` names the body's version: a patch of indexed fields changes `_t`, not the parts
        main.update(_body=body, _parts=len(parts), _pt=token if parts else None, _t=token)
        return main, parts

    @staticmethod
    def _pointer_fields(main: dict) -> dict:
        return {k: v for k, v in main.items() if k != "_body"}

    def _decode(self, coll: _Coll, data: dict) -> dict:
        return {c.name: _dec(c.kind, data.get(c.name)) for c in coll.native}

    # -- reading -------------------------------------------------------------------------------------

    @staticmethod
    def _slim(coll: _Coll) -> list[str]:
        """The fields to read when the JSON body is not needed."""
        return [c.name for c in coll.native] + ["_parts", "_pt", "_t"]

    def _get_all(self, refs: list, fields: list[str] | None = None) -> dict[str, Any]:
        out = {}
        for i in range(0, len(refs), GET_CHUNK):
            for snap in self.client.get_all(refs[i : i + GET_CHUNK], field_paths=fields):
                if snap.exists:
                    out[snap.reference.path] = snap
        return out

    def _bodies(self, coll: _Coll, items: list[tuple[dict, dict, _Meta]], depth: int = 0) -> list[tuple[dict, _Meta]]:
        """Attach the JSON/text columns: inline, or from `_parts` (written with the body's
        version `_pt`: a mismatch means a newer write came in between, so read again)."""
        out = []
        split = [(row, data, meta) for row, data, meta in items if data.get("_parts")]
        parts = self._get_all([self._part(m.ref, i) for _, d, m in split for i in range(d["_parts"])]) if split else {}
        for row, data, meta in items:
            n = data.get("_parts") or 0
            if not n:
                row.update(json.loads(data["_body"]) if data.get("_body") is not None else {})
                out.append((row, meta))
                continue
            chunks = [parts.get(self._part(meta.ref, i).path) for i in range(n)]
            if all(c is not None and c.get("t") == data["_pt"] for c in chunks):
                row.update(json.loads(b"".join(c.get("d") for c in chunks).decode("utf-8")))
                out.append((row, meta))
                continue
            if depth >= 50:
                raise DbError(f"{meta.ref.path}: its parts kept changing while being read")
            out.extend(self._load_refs(coll, [meta.ref], True, {meta.ref.path: meta.pointer}, depth + 1))
        return out

    def _load_refs(self, coll: _Coll, refs: list, need_body: bool, pointers: dict | None = None,
                   depth: int = 0) -> list[tuple[dict, _Meta]]:
        snaps = self._get_all(refs, None if need_body else self._slim(coll))
        items = []
        for ref in refs:
            snap = snaps.get(ref.path)
            if snap is None:
                continue
            data = snap.to_dict()
            meta = _Meta(ref, data.get("_t"), data.get("_parts") or 0, (pointers or {}).get(ref.path))
            items.append((self._decode(coll, data), data, meta))
        if not need_body:
            return [(row, meta) for row, _, meta in items]
        return self._bodies(coll, items, depth)

    def _from_snaps(self, coll: _Coll, snaps: list, need_body: bool) -> list[tuple[dict, _Meta]]:
        if coll.pointer:  # run index documents: the run itself is in its session
            rows = [self._decode(coll, s.to_dict()) for s in snaps]
            refs = [self._run_ref(r["session_id"], r["run_id"]) for r in rows]
            if not need_body:
                return [(r, _Meta(ref, s.get("_t"), s.to_dict().get("_parts") or 0, s.reference))
                        for r, ref, s in zip(rows, refs, snaps)]
            body = self.colls["runs@session"]
            return self._load_refs(body, refs, True, {ref.path: s.reference for ref, s in zip(refs, snaps)})
        items = []
        for s in snaps:
            data = s.to_dict()
            items.append((self._decode(coll, data), data, _Meta(s.reference, data.get("_t"), data.get("_parts") or 0)))
        if not need_body:
            return [(row, meta) for row, _, meta in items]
        return self._bodies(coll, items)

    def _read_keys(self, table: str, keys: list[tuple], need_body: bool) -> list[tuple[dict, _Meta]]:
        if table != "runs":
            return self._load_refs(self.colls[table], [self._ref(table, k) for k in keys], need_body)
        pointers = self._get_all([self._ref("runs", k) for k in keys])
        out = []
        for k in keys:
            p = pointers.get(self._ref("runs", k).path)
            if p is not None:
                out.append(p)
        return self._from_snaps(self.colls["runs"], out, need_body)

    # -- query planning ------------------------------------------------------------------------------

    def _coll_for(self, table: str, where: tuple[Cond, ...]) -> tuple[_Coll, Any]:
        """The collection to query: a session's own runs when the query names one session."""
        if table == "runs":
            for c in where:
                if c.field == "session_id" and c.op == "eq" and isinstance(c.value, str):
                    ref = self._col("sessions").document(doc_id((c.value,))).collection(RUNS_SUB)
                    return self.colls["runs@session"], ref
        return self.colls[table], self._col(table)

    def _plan(self, coll: _Coll, where: tuple[Cond, ...], order: tuple[str, ...]) -> _Plan:
        """Which conditions a native query applies and in which index order it reads: the
        candidate with the longest equality prefix that yields `order` (a range on the
        order's first field rides along); without one, an unordered read whose rows are
        sorted here. Conditions left out are checked in Python."""
        eqs: dict[str, list] = {}
        rng: dict[str, list[Cond]] = defaultdict(list)
        contains = None
        disjunction = False
        for c in where:
            if c.field not in coll.native_names:
                continue
            if c.op == "eq" and c.field not in eqs:
                eqs[c.field] = [c.value]
            elif c.op == "in" and c.field not in eqs and 0 < len(c.value) <= IN_LIMIT and not disjunction:
                eqs[c.field] = list(dict.fromkeys(c.value))
                disjunction = len(eqs[c.field]) > 1
            elif c.op in ("lt", "lte", "gt", "gte") and c.value is not None:
                rng[c.field].append(c)
            elif c.op == "contains_all" and c.value and contains is None and c.field in coll.spec.multi:
                contains = (c.field, c.value[0])
        fixed = {f for f, vals in eqs.items() if len(vals) == 1}
        eff = tuple(f for f in order if f not in fixed)
        plan = None
        if eff:
            best = None
            for cand in coll.cands:
                n = 0
                while n < len(cand) and cand[n] in eqs:
                    n += 1
                m = next((m for m in range(n, -1, -1) if cand[m : m + len(eff)] == eff), None)
                if m is None:
                    continue
                score = m + (1 if eff[0] in rng else 0)
                if best is None or score > best[0]:
                    best = (score, cand, m)
            # an internal walk in key order that no native filter narrows is better served
            # by an unordered read that one does narrow, sorted here
            if best is not None and (best[0] > 0 or eff != coll.spec.key or not (eqs or rng)):
                _, cand, m = best
                plan = _Plan({f: eqs[f] for f in cand[:m]}, rng.get(eff[0], []), contains, cand[m:], True)
        if plan is None:
            best = None
            for cand in coll.cands + [(f,) for f in rng]:
                n = 0
                while n < len(cand) and cand[n] in eqs:
                    n += 1
                if n < len(cand) and cand[n] in rng and (best is None or n + 1 > best[0]):
                    best = (n + 1, cand, n)
            if best is not None and best[0] > len(eqs):
                _, cand, n = best  # a range is read in its index's order
                plan = _Plan({f: eqs[f] for f in cand[:n]}, rng[cand[n]], contains, cand[n:], False)
            else:  # equality filters only: Firestore merges single-field indexes for them
                plan = _Plan(dict(eqs), [], contains, (), False)
        native = 0
        for c in where:
            if c.field in coll.implicit and c.op == "eq":
                native += 1
            elif c.field in fixed and c.op in ("lt", "lte", "gt", "gte") and matches({c.field: eqs[c.field][0]}, c):
                native += 1  # implied by the equality on the same field
            elif c.field in plan.eq and (c.op == "in" or (c.op == "eq" and len(plan.eq[c.field]) == 1)):
                native += 1
            elif any(c is r for r in plan.rng):
                native += 1
            elif c.op == "contains_all" and plan.contains and c.field == plan.contains[0] and len(c.value) == 1:
                native += 1
        plan.exact = native == len(where)
        return plan

    def _query(self, coll: _Coll, ref: Any, eq: dict, rng: list[Cond], contains: tuple | None,
               order: tuple[str, ...] | None, desc: bool, limit: int | None, slim: bool = False) -> Any:
        kinds = {c.name: c.kind for c in coll.spec.columns}
        q = ref.select(self._slim(coll)) if slim else ref
        for f, vals in eq.items():
            vals = [_enc(kinds[f], v) for v in vals]
            # `in` also for one value: `== None` would become IS_NULL, which the emulator lacks
            if len(vals) == 1 and vals[0] is not None:
                q = q.where(filter=FieldFilter(f, "==", vals[0]))
            else:
                q = q.where(filter=FieldFilter(f, "in", vals))
        ops = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
        for c in rng:
            q = q.where(filter=FieldFilter(c.field, ops[c.op], _enc(kinds[c.field], c.value)))
        if contains is not None:
            q = q.where(filter=FieldFilter(contains[0], "array_contains", contains[1]))
        for f in order or ():
            q = q.order_by(f, direction=firestore.Query.DESCENDING if desc else firestore.Query.ASCENDING)
        if limit is not None:
            q = q.limit(limit)
        return q

    def _walk(self, coll: _Coll, ref: Any, plan: _Plan, order: tuple[str, ...], desc: bool,
              after: tuple | None, batch: int, slim: bool) -> Iterator[Any]:
        """Snapshots in `order` strictly after `after`, read natively a batch at a time. The
        keyset position becomes range filters, one query per tie level: (a == x, b > y),
        then (a > x); the emulator ignores start_after cursors, and ranges need no others."""
        fixed = {f for f, vals in plan.eq.items() if len(vals) == 1}
        kinds = {c.name: c.kind for c in coll.spec.columns}
        pos = after
        while True:
            levels = []
            if pos is None:
                levels.append(({}, [], plan.order))
            else:
                # order's fields fixed by equality are left out of the native order
                for i in reversed(range(len(order))):
                    f = order[i]
                    if f in fixed:
                        continue
                    eq = {order[j]: [pos[j]] for j in range(i) if order[j] not in fixed}
                    value = pos[i]
                    if value is None:
                        if desc:
                            continue  # nothing sorts below None
                        bound = Cond(f, "gte", LOWEST[kinds[f]])
                    else:
                        bound = Cond(f, "lt" if desc else "gt", value)
                    tail = tuple(x for x in plan.order if x not in eq)
                    levels.append((eq, [bound], tail))
            restart = None
            for eq, bounds, tail in levels:
                rng = bounds + [c for c in plan.rng if c.field not in eq]
                q = self._query(coll, ref, {**plan.eq, **eq}, rng, plan.contains, tail, desc, batch, slim)
                snaps = list(q.stream())
                yield from snaps
                if len(snaps) == batch:
                    last = snaps[-1].to_dict()
                    restart = tuple(_dec(kinds[f], last.get(f)) for f in order)
                    break
            if restart is None:
                return
            pos = restart

    def _select(self, q: Query, need_body: bool) -> list[tuple[dict, _Meta]]:
        """Rows matching `q` (in its order, after its keyset position, up to its limit), with
        where their documents are. Every condition is checked again in Python."""
        spec = self.specs[q.table]
        where = q.where
        keys = self._key_values(spec, where)
        if keys is not None:
            got = self._read_keys(q.table, keys, need_body)
            return self._finish([x for x in got if matches_all(x[0], where)], q)
        coll, ref = self._coll_for(q.table, where)
        order = tuple(q.order)
        plan = self._plan(coll, where, order)
        if order and plan.ordered:
            if plan.exact:
                batch = min(q.limit, SCAN_BATCH) if q.limit else SCAN_BATCH
            else:
                batch = min(max(2 * (q.limit or 0), 100), SCAN_BATCH)
            out: list[tuple[dict, _Meta]] = []
            pending: list = []

            def flush() -> bool:
                for item in self._from_snaps(coll, pending, need_body):
                    if matches_all(item[0], where):
                        out.append(item)
                        if q.limit is not None and len(out) >= q.limit:
                            return True
                pending.clear()
                return False

            slim = not need_body or coll.pointer
            for snap in self._walk(coll, ref, plan, order, q.desc, q.after, batch, slim):
                pending.append(snap)
                if len(pending) >= batch and flush():
                    return out
            flush()
            return out[: q.limit] if q.limit is not None else out
        # unordered native read: everything it finds, sorted here
        native = self._query(coll, ref, plan.eq, plan.rng, plan.contains, plan.order or None, False, None,
                             not need_body or coll.pointer)
        rows = [x for x in self._from_snaps(coll, list(native.stream()), need_body) if matches_all(x[0], where)]
        return self._finish(rows, q)

    @staticmethod
    def _finish(items: list[tuple[dict, _Meta]], q: Query) -> list[tuple[dict, _Meta]]:
        if q.order:
            items.sort(key=lambda x: row_key(x[0], q.order), reverse=q.desc)
            if q.after is not None:
                keep = {id(r) for r in after_filter([x[0] for x in items], q)}
                items = [x for x in items if id(x[0]) in keep]
        return items[: q.limit] if q.limit is not None else items

    @staticmethod
    def _key_values(spec: TableSpec, where: tuple[Cond, ...]) -> list[tuple] | None:
        if len(spec.key) != 1:
            return None
        k = spec.key[0]
        for c in where:
            if c.field == k and c.op == "eq" and c.value is not None:
                return [(c.value,)]
            if c.field == k and c.op == "in":
                return [(x,) for x in dict.fromkeys(c.value) if x is not None]
        return None

    def _need_body(self, table: str, fields: Iterable[str] | None, where: Iterable[Cond]) -> bool:
        heavy = set(self.colls[table].heavy)
        if fields is None:
            return True
        return any(f in heavy for f in fields) or any(c.field in heavy for c in where)

    # -- writing -------------------------------------------------------------------------------------

    def _write_group(self, table: str, row: dict, old: _Meta | None, token: str | None = None) -> _Group:
        """Writes that store `row` whole: created (the create is the guard), or replacing the
        version `old` that was read (creating the marker of that version is the guard)."""
        coll = self.colls["runs@session" if table == "runs" else table]
        token = token or _token()
        main, parts = self._encode(coll, row, token)
        if table == "runs":
            ref = self._run_ref(row["session_id"], row["run_id"])
        else:
            ref = self._ref(table, self.specs[table].key_of(row))
        writes: list = []
        if old is not None:
            writes.append(("create", self._marker(old.ref, old.token or "-"), self._marker_data(token)))
            if old.ref.path != ref.path:  # a run moved to another session (imports only)
                writes.append(("delete", old.ref, None))
        if table == "runs":
            # the index document's id is the run id: creating it keeps run ids unique
            pointer = self._ref("runs", (row["run_id"],))
            writes.append(("create" if old is None else "set", pointer, self._pointer_fields(main)))
            writes.append(("set", ref, main))
        else:
            writes.append(("create" if old is None else "set", ref, main))
        for i, chunk in enumerate(parts):
            writes.append(("set", self._part(ref, i), {"t": token, "d": chunk}))
        if old is not None:
            for i in range(len(parts) if old.ref.path == ref.path else 0, old.parts):
                writes.append(("delete", self._part(old.ref, i), None))
        return _Group(writes, token, _size(main) + sum(len(p) for p in parts), ref)

    def _patch_group(self, table: str, row: dict, meta: _Meta, changed: Iterable[str],
                     token: str | None = None) -> _Group:
        """The changed indexed fields only (the JSON body is not rewritten), after the marker
        of the version read."""
        coll = self.colls["runs@session" if table == "runs" else table]
        kinds = {c.name: c.kind for c in coll.native}
        token = token or _token()
        fields = {f: _enc(kinds[f], row.get(f)) for f in changed}
        fields["_t"] = token
        writes = [("create", self._marker(meta.ref, meta.token or "-"), self._marker_data(token)),
                  ("update", meta.ref, fields)]
        if table == "runs":
            writes.append(("update", self._ref("runs", (row["run_id"],)), fields))
        return _Group(writes, token, _size(fields), meta.ref)

    def _delete_group(self, meta: _Meta) -> _Group:
        token = _token()
        marker = self._marker(meta.ref, meta.token or "-")
        writes = [("create", marker, self._marker_data(token)), ("delete", meta.ref, None)]
        writes += [("delete", self._part(meta.ref, i), None) for i in range(meta.parts)]
        if meta.pointer is not None:
            writes.append(("delete", meta.pointer, None))
        return _Group(writes, token, 0, marker)

    @staticmethod
    def _marker_data(token: str) -> dict:
        return {"_t": token, "expire_at": dt.datetime.now(UTC) + MARKER_TTL}

    def _commit(self, groups: list[_Group]) -> list[bool]:
        """Commit the groups in as few commits as Firestore's limits allow (each commit is
        atomic on the service) and say which were applied. When a commit is refused on a
        create, each group's `check` document is read back: the emulator applies the writes
        before the one that failed, and a commit the client retried after an answer was lost
        meets its own first attempt's marker."""
        done = [False] * len(groups)
        start = 0
        while start < len(groups):
            end, writes, size = start, 0, 0
            while end < len(groups) and (end == start or (writes + len(groups[end].writes) <= COMMIT_WRITES
                                                         and size + groups[end].size <= COMMIT_BYTES)):
                writes += len(groups[end].writes)
                size += groups[end].size
                end += 1
            batch = self.client.batch()
            for g in groups[start:end]:
                for op, ref, data in g.writes:
                    if op == "create":
                        batch.create(ref, data)
                    elif op == "set":
                        batch.set(ref, data)
                    elif op == "update":
                        batch.update(ref, data)
                    else:
                        batch.delete(ref)
            try:
                batch.commit()
                done[start:end] = [True] * (end - start)
            except (gexc.AlreadyExists, gexc.NotFound):
                checks = self._get_all([groups[i].check for i in range(start, end)], ["_t"])
                for i in range(start, end):
                    snap = checks.get(groups[i].check.path)
                    done[i] = snap is not None and snap.get("_t") == groups[i].token
            start = end
        return done

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(random.uniform(0, min(0.002 * (attempt + 1), 0.05)))

    # -- kernel primitives -----------------------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        got = self._read_keys(table, [key], True)
        return got[0][0] if got else None

    def find(self, q: Query) -> list[dict]:
        rows = [r for r, _ in self._select(q, self._need_body(q.table, q.fields, q.where))]
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in rows]
        return rows

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        spec = self.specs[table]
        if self._key_values(spec, where) is None:
            coll, ref = self._coll_for(table, where)
            plan = self._plan(coll, where, ())
            if plan.exact:
                q = self._query(coll, ref, plan.eq, plan.rng, plan.contains, plan.order or None, False, None)
                return int(q.count().get()[0][0].value)
        return len(self._select(Query(table, where), self._need_body(table, (), where)))

    def insert(self, table: str, row: dict) -> None:
        if not self._commit([self._write_group(table, row, None)])[0]:
            raise DuplicateKey(table)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        spec = self.specs[table]
        rows = list({spec.key_of(r): r for r in rows}.values())
        written = 0
        for i in range(0, len(rows), SCAN_BATCH):
            chunk = rows[i : i + SCAN_BATCH]
            found = {spec.key_of(r): m for r, m in self._read_keys(table, [spec.key_of(r) for r in chunk], False)}
            todo = [r for r in chunk if replace or spec.key_of(r) not in found]
            groups = [self._write_group(table, r, found.get(spec.key_of(r))) for r in todo]
            for r, ok in zip(todo, self._commit(groups)):
                # a commit refused for one group applied none of the others: redo each alone
                written += 1 if ok else self._put_one(table, r, replace)
        return written

    def _put_one(self, table: str, row: dict, replace: bool) -> int:
        key = self.specs[table].key_of(row)
        for attempt in range(RETRIES):
            got = self._read_keys(table, [key], False)
            if got and not replace:
                return 0
            if self._commit([self._write_group(table, row, got[0][1] if got else None)])[0]:
                return 1
            self._backoff(attempt)
        raise DbError(f"{table} {key!r}: gave up after {RETRIES} concurrent modifications")

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        set, incr = set or {}, incr or {}
        heavy = set_heavy = any(f in self.colls[table].heavy for f in set)
        heavy = heavy or self._need_body(table, returning, where)
        for attempt in range(RETRIES):
            got = self._read_keys(table, [key], heavy)
            if not got:
                return None
            row, meta = got[0]
            if not check_where(row, where):
                return None
            new = apply_update(row, set, incr)
            if set_heavy:
                group = self._write_group(table, new, meta)
            else:
                group = self._patch_group(table, new, meta, {*set, *incr})
            if self._commit([group])[0]:
                return {f: new.get(f) for f in returning}
            self._backoff(attempt)
        raise DbError(f"{table} {key!r}: gave up after {RETRIES} concurrent modifications")

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        items = self._select(Query(table, where), self._need_body(table, (), where))
        if table == "runs":
            for row, meta in items:
                meta.pointer = meta.pointer or self._ref("runs", (row["run_id"],))
        deleted = 0
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]
            ok = self._commit([self._delete_group(m) for _, m in chunk])
            deleted += sum(ok)
            for (row, _), done in zip(chunk, ok):
                if not done:  # changed since it was read: delete it if it still matches
                    deleted += self._delete_one(table, self.specs[table].key_of(row), where)
        return deleted

    def _delete_one(self, table: str, key: tuple, where: tuple[Cond, ...]) -> int:
        for attempt in range(RETRIES):
            got = self._read_keys(table, [key], self._need_body(table, (), where))
            if not got or not check_where(got[0][0], where):
                return 0
            row, meta = got[0]
            if table == "runs":
                meta.pointer = self._ref("runs", (key[0],))
            if self._commit([self._delete_group(meta)])[0]:
                return 1
            self._backoff(attempt)
        raise DbError(f"{table} {key!r}: gave up after {RETRIES} concurrent modifications")

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        values: set = set()
        for row, _ in self._select(Query(table, where), self._need_body(table, (field,), where)):
            v = row.get(field)
            values.update(v if isinstance(v, list) else [v])
        values.discard(None)
        return list(values)

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        """Skip from one value of `by` to the next (one indexed read each), then count it and
        read its newest `max_field`: the cost follows the groups returned, not the rows."""
        key = self.specs[table].key
        out: list[tuple] = []
        bound: tuple[Cond, ...] = ()
        while len(out) < limit:
            first = self.find(Query(table, where + bound, (by,) + key, False, 1, fields=(by,)))
            if not first:
                break
            value = first[0][by]
            same = tuple(c for c in where if c.field != by) + (Cond(by, "eq", value),)
            n = self.count(table, same)
            top = self.find(Query(table, same, (max_field,) + key, True, 1, fields=(max_field,)))
            out.append((value, n, top[0][max_field] if top else None))
            kind = self.specs[table].kind(by)
            bound = (Cond(by, "gt", value),) if value is not None else (Cond(by, "gte", LOWEST[kind]),)
        return out

    def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str,
               set: dict, where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """One commit: the parent's marker, its counter and `set`, then the child's index
        document (a create: run ids are unique across sessions) and the child itself."""
        assert child == "runs" and parent == "sessions", (child, parent)
        pointer = self._ref("runs", (row["run_id"],))
        if pointer.get(field_paths=["_t"]).exists:  # the common duplicate, before any write
            raise DuplicateKey(child)
        for attempt in range(RETRIES):
            got = self._read_keys(parent, [key], False)
            if not got:
                return None
            prow, meta = got[0]
            if not check_where(prow, where):
                return None
            n = (prow.get(counter) or 0) + 1
            token = _token()
            patch = self._patch_group(parent, {**prow, **set, counter: n}, meta, {*set, counter}, token)
            extra = {seq: n, **{f: prow.get(f) for f in inherit}}
            body = self._write_group(child, {**row, **extra}, None, token)
            if self._commit([_Group(patch.writes + body.writes, token, patch.size + body.size, body.check)])[0]:
                return extra
            if pointer.get(field_paths=["_t"]).exists:
                raise DuplicateKey(child)
            self._backoff(attempt)  # another writer moved the session on: read it again
        raise DbError(f"session {key!r}: gave up after {RETRIES} concurrent appends")


class FirestoreDb(Db):
    """Google Cloud Firestore (native mode), through google-cloud-firestore's sync client.

    `emulator_host` ("127.0.0.1:8080") talks to an emulator; it defaults to
    $FIRESTORE_EMULATOR_HOST. Pass `client` to use a client you configured yourself."""

    def __init__(
        self,
        project_id: str | None = None,
        *,
        database: str = "(default)",
        collection_prefix: str = "agentkeep",
        client: Any = None,
        emulator_host: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        **tables: str,
    ) -> None:
        prefix = _table_prefix(options.text(collection_prefix, "collection_prefix", empty=True))
        overrides = options.db_arguments(self, id=id, table_prefix=prefix, tables=tables)
        kernel = FirestoreKernel(
            options.text(project_id, "project_id", optional=True), options.text(database, "database"),
            collection_prefix, client, options.text(emulator_host, "emulator_host", optional=True),
            options.seconds(connect_timeout),
        )
        super().__init__(kernel, id=id, table_prefix=prefix, tables=overrides)


if __name__ == "__main__":  # python -m agentkeep.db.firestore [prefix] > firestore.indexes.json
    import sys

    print(json.dumps(default_index_config(*sys.argv[1:2]), indent=2))
