"""The Firestore kernel: references, schema lock, encoding, writes and the kernel primitives;
its reads and query planning are in reads.py."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
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

from agentkeep.db import planner
from agentkeep.db.backends.firestore.codec import UTC, _dec, _enc, _size, _token, doc_id
from agentkeep.db.backends.firestore.layout import (
    COMMIT_BYTES,
    COMMIT_WRITES,
    IN_PARENT,
    INLINE_MAX,
    LOCK_LEASE,
    LOWEST,
    MAIN_MAX,
    MARKER_TTL,
    NESTED,
    PART_BYTES,
    RETRIES,
    SCAN_BATCH,
    _Coll,
    _colls,
    _Group,
    _Meta,
)
from agentkeep.db.backends.firestore.reads import Reads
from agentkeep.db.connection import (
    CONNECT_TIMEOUT_S,
    cloud_unreachable,
    connection_failed,
)
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.rowstore import apply_update, check_where
from agentkeep.db.tables import TableSpec


class FirestoreKernel(Reads):
    capabilities = frozenset({"multi_process", "persistent", "atomic_append"})

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

    def _in_parent(self, parent_key: Any) -> Any:
        """The subcollection of the nested table's records under one parent."""
        link = self.specs[NESTED].parent
        return self._col(link.table).document(doc_id((parent_key,))).collection(NESTED)

    def _nested_ref(self, row: dict) -> Any:
        spec = self.specs[NESTED]
        return self._in_parent(row[spec.parent.field]).document(doc_id(spec.key_of(row)))

    def _pointer_ref(self, row: dict) -> Any:
        """The index document of a nested record."""
        return self._ref(NESTED, self.specs[NESTED].key_of(row))

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

    # -- writing -------------------------------------------------------------------------------------

    def _write_group(self, table: str, row: dict, old: _Meta | None, token: str | None = None) -> _Group:
        """Writes that store `row` whole: created (the create is the guard), or replacing the
        version `old` that was read (creating the marker of that version is the guard)."""
        coll = self.colls[IN_PARENT if table == NESTED else table]
        token = token or _token()
        main, parts = self._encode(coll, row, token)
        if table == NESTED:
            ref = self._nested_ref(row)
        else:
            ref = self._ref(table, self.specs[table].key_of(row))
        writes: list = []
        if old is not None:
            writes.append(("create", self._marker(old.ref, old.token or "-"), self._marker_data(token)))
            if old.ref.path != ref.path:  # moved to another parent (imports only)
                writes.append(("delete", old.ref, None))
        if table == NESTED:
            # the index document's id is the record's key: creating it keeps keys unique
            pointer = self._pointer_ref(row)
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
        coll = self.colls[IN_PARENT if table == NESTED else table]
        kinds = {c.name: c.kind for c in coll.native}
        token = token or _token()
        fields = {f: _enc(kinds[f], row.get(f)) for f in changed}
        fields["_t"] = token
        writes = [("create", self._marker(meta.ref, meta.token or "-"), self._marker_data(token)),
                  ("update", meta.ref, fields)]
        if table == NESTED:
            writes.append(("update", self._pointer_ref(row), fields))
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
        if planner.key_values(spec.key, where) is None:
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
        if table == NESTED:
            for row, meta in items:
                meta.pointer = meta.pointer or self._pointer_ref(row)
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
            if table == NESTED:
                meta.pointer = self._ref(NESTED, key)
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
        assert child == NESTED and parent == self.specs[NESTED].parent.table, (child, parent)
        pointer = self._pointer_ref(row)
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
