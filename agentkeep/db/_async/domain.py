"""Every method of the db interface, written once over the storage kernel.

This is the async source; `agentkeep/db/_sync/domain.py` is generated from it by
`scripts/unasync.py` (never edit the generated file).
"""

# unasync: AsyncKernel -> Kernel

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import os
import shutil
import tempfile
from collections import defaultdict
from typing import Any, Iterable, Sequence

from agentkeep.db import jobs
from agentkeep.db import kernel as kernels
from agentkeep.db import models as m
from agentkeep.db import validate as v
from agentkeep.db._async.util import gate
from agentkeep.db.arguments import all_users_or_id, api, check_record
from agentkeep.db.errors import ConflictError, InvalidInputError, NotFoundError, OwnershipError, SchemaError
from agentkeep.db.kernel import DuplicateKey
from agentkeep.db.messages import shorten
from agentkeep.db.metrics import day_bounds, metrics_rows, run_days
from agentkeep.db.query import Cond, Query, eq
from agentkeep.db.schedule import check_cron, next_fire
from agentkeep.db.tables import EXPORT_TABLES, TableSpec, build_specs, children, owned_tables
from agentkeep.db.traces import merge_trace, trace_stats

MAX_RETRIES = 64
CHUNK = 500
EXPORT_FORMAT = "agentkeep-export"
EXPORT_VERSION = 1

SESSION_ORDERS = {
    "updated_desc": (("updated_at", "session_id"), True),
    "updated_asc": (("updated_at", "session_id"), False),
    "created_desc": (("created_at", "session_id"), True),
    "created_asc": (("created_at", "session_id"), False),
}
RUN_ORDER = {"seq": (("seq",), False)}  # seq is unique within the one session listed
MEMORY_ORDERS = {
    "updated_desc": (("updated_at", "memory_id"), True),
    "updated_asc": (("updated_at", "memory_id"), False),
}
KNOWLEDGE_ORDERS = {"updated_desc": (("updated_at", "id"), True), "updated_asc": (("updated_at", "id"), False)}
TRACE_ORDERS = {"start_desc": (("start_time", "trace_id"), True), "start_asc": (("start_time", "trace_id"), False)}
CREATED_ORDERS = {"created_desc": (("created_at", "id"), True), "created_asc": (("created_at", "id"), False)}
SCHEDULE_RUN_ORDER = {"started_desc": (("started_at", "id"), True)}
STATS_ORDER = {"user_asc": (("user_id",), False)}
TRACE_GROUPS = {"agent": "agent_id", "session": "session_id", "team": "team_id", "workflow": "workflow_id"}
APPROVAL_RESOLUTIONS = ("approved", "rejected", "expired")


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@functools.lru_cache(maxsize=None)
def _nested(model: type) -> tuple:
    """Fields of `model` that hold a record of their own (Run.metrics, Schedule.target)."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, m.Record):
            out.append((name, ann))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _assembles_plainly(model: type) -> bool:
    """Whether a record of `model` with every field given is just its values (no aliases,
    extras or post-init hooks for `model_construct` to apply)."""
    return (model.model_config.get("extra") != "allow" and not model.__pydantic_post_init__
            and not model.__private_attributes__
            and all(f.alias is None and f.validation_alias is None for f in model.model_fields.values()))


def _assemble(model: type, data: dict) -> Any:
    """`model.model_construct(**data)` without its per-field walk: a row read back has every
    field but those the table leaves out (a session's runs), which take their defaults. A
    third of reading a page of records."""
    if not _assembles_plainly(model):
        return model.model_construct(**data)
    given = set(data)
    if len(data) != len(model.model_fields):
        for name, field in model.model_fields.items():
            if name not in data:
                if field.is_required():
                    return model.model_construct(**data)
                data[name] = field.get_default(call_default_factory=True, validated_data=data)
    record = model.__new__(model)
    object.__setattr__(record, "__dict__", data)
    object.__setattr__(record, "__pydantic_fields_set__", given)
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _scope(where: list[Cond], field: str, value: Any) -> None:
    if value is not None:
        where.append(eq(field, value))


def _opt_name(what: str) -> Any:
    """The argument rule of a name looked up in a list column (a trace's model or tool)."""
    return lambda value: None if value is None else v.check_id(value, what)


def _opt_ms(what: str) -> Any:
    """The argument rule of a duration bound: None, or milliseconds >= 0."""
    def rule(value: Any) -> float | None:
        if value is None:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 <= value <= 1e300:  # NaN fails this too
            raise InvalidInputError(f"{what} must be a number of milliseconds >= 0, got {v.shown(value)}")
        return float(value)

    return rule


class AsyncDb:
    """The interface every backend satisfies (API.md section 3)."""

    def __init__(
        self,
        kernel: kernels.AsyncKernel,
        *,
        id: str | None = None,
        table_prefix: str = "agentkeep_",
        tables: dict[str, str] | None = None,
    ) -> None:
        self.specs: dict[str, TableSpec] = build_specs(table_prefix, tables)
        self.children = {t: children(self.specs, t) for t in self.specs}  # (child, its parent field)
        self.kernel: Any = kernel  # Any: `append` and `claim_due` exist with their capabilities
        kernel.setup(self.specs)
        self.id = id or kernel.default_id()
        self._schema_checked = False
        self._schema_gate = gate()

    # -- plumbing ----------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.kernel.capabilities)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kernel.describe()})"

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @api(ready=False)
    async def close(self) -> None:
        await self.kernel.close()

    async def _ready(self) -> None:
        """Check the schema once per db object: the first caller checks, the others wait
        here holding no connection. A current schema costs one read of the version rows;
        only a missing or older one takes the schema lock and inspects the store."""
        async with self._schema_gate:
            if self._schema_checked:
                return
            try:
                current = await self._stored_versions(probe=True) == self._expected_versions()
            except Exception as exc:  # no version table yet, most likely: the full check says
                if self.kernel.translate_error(exc) is not None:
                    raise  # the server cannot be reached: say so now, not after a second wait
                current = False
            if not current:
                await self._ensure_schema(dry_run=False)
            self._schema_checked = True

    def _expected_versions(self) -> dict[str, int]:
        return {t: spec.version for t, spec in self.specs.items() if t != "meta"}

    def _model(self, table: str, row: dict | None):
        """A record from a stored row. Rows were validated on the way in, so they are only
        assembled here (nested records included), not validated again."""
        if row is None:
            return None
        spec = self.specs[table]
        data = {k: row[k] for k in spec.model.model_fields if k in row}
        for name, sub in _nested(spec.model):
            if isinstance(data.get(name), dict):
                data[name] = sub.model_construct(**data[name])
        return _assemble(spec.model, data)

    async def _page(
        self,
        table: str,
        where: list[Cond],
        orders: dict,
        order: str,
        limit: int,
        cursor: Any,
        with_total: bool,
        offset: int = 0,
    ) -> m.Page:
        """A page of `limit` rows in `order`: from the cursor's position (else the first
        row), `offset` rows skipped first; next_cursor points after the last row returned."""
        fields, desc = orders[order]
        after = v.decode_cursor(cursor, order, len(fields))
        if after is not None:
            self._check_cursor_kinds(table, fields, after)
        rows = await self.kernel.find(Query(table, tuple(where), fields, desc, limit + 1, after, offset=offset))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = v.encode_cursor(order, [rows[-1][f] for f in fields]) if more else None
        total = await self.kernel.count(table, tuple(where)) if with_total else None
        return m.Page(items=[self._model(table, r) for r in rows], next_cursor=next_cursor, total=total)

    def _check_cursor_kinds(self, table: str, fields: Sequence[str], values: Sequence[Any]) -> None:
        types = {"time": dt.datetime, "date": dt.date, "int": int, "str": str, "text": str, "float": (int, float)}
        for f, value in zip(fields, values):
            if value is not None and not isinstance(value, types.get(self.specs[table].kind(f), object)):
                raise InvalidInputError("invalid cursor: it was not made by this list call")

    async def _put(
        self,
        table: str,
        row: dict,
        *,
        expected_revision: int | None = None,
        keep: Sequence[str] = ("created_at",),
        defaults: dict | None = None,
    ) -> dict:
        """Create or replace one owned record: ownership checked, revision bumped by compare-
        and-set, so concurrent writers never lose an update silently."""
        spec = self.specs[table]
        key = spec.key_of(row)
        revisioned = "revision" in spec.column_map
        may_be_new = expected_revision in (None, 0)
        for _ in range(MAX_RETRIES):
            # no transaction: the insert and the compare-and-set update are each atomic, and
            # a lost race shows as a duplicate key or a missed revision, then retries
            if may_be_new:  # creation is the common case: try it first, one statement
                new = {**(defaults or {}), **row}
                if revisioned:
                    new["revision"] = 1
                try:
                    await self.kernel.insert(table, new)
                    return new
                except DuplicateKey:
                    pass
            cur = await self.kernel.get(table, key)
            if cur is None:
                if expected_revision not in (None, 0):
                    raise ConflictError(f"{table} {key[0]!r} does not exist (expected revision {expected_revision})")
                may_be_new = True
                continue  # deleted since the insert failed: try creating again
            if cur.get("user_id") != row.get("user_id"):
                raise OwnershipError(f"{table} {key[0]!r} belongs to another user")
            if expected_revision is not None and (not revisioned or cur["revision"] != expected_revision):
                raise ConflictError(
                    f"{table} {key[0]!r} is at revision {cur.get('revision')}, not {expected_revision}"
                )
            new = {**row, **{f: cur[f] for f in keep if f in cur}}
            if revisioned:
                new["revision"] = cur["revision"] + 1
                where = (eq("revision", cur["revision"]),)
            else:
                where = (eq("user_id", cur.get("user_id")),)
            values = {k: val for k, val in new.items() if k not in spec.key}
            if await self.kernel.update(table, key, set=values, where=where) is not None:
                return {**cur, **new}
            if expected_revision is not None:
                raise ConflictError(f"{table} {key[0]!r} was changed concurrently")
            may_be_new = False
        raise ConflictError(f"{table} {key[0]!r}: gave up after {MAX_RETRIES} concurrent modifications")

    async def _get_visible(self, table: str, key: tuple, user_id: str | None, *, shared: bool = False):
        row = await self.kernel.get(table, key)
        if row is None or user_id is None:
            return row
        owner = row.get("user_id")
        if owner == user_id or (shared and owner is None):
            return row
        return None

    async def _delete_where(self, table: str, where: list[Cond], children: Sequence[tuple[str, str]] = ()) -> dict:
        """Delete matching rows in chunks, children first; counts per table. Without
        transactions the children are swept again after their parents, so that a child
        another process added in between goes too (append_run checks its parent afterwards)."""
        spec = self.specs[table]
        counts = {table: 0, **{child: 0 for child, _ in children}}
        keyfield = spec.key[0]
        resweep = children if "transactions" not in self.kernel.capabilities else ()
        while True:
            async with self.kernel.transaction():
                rows = await self.kernel.find(Query(table, tuple(where), (keyfield,), False, CHUNK, None, (keyfield,)))
                if not rows:
                    return counts
                keys = [r[keyfield] for r in rows]
                for child, fk in children:
                    counts[child] += await self.kernel.delete(child, (Cond(fk, "in", keys),))
                counts[table] += await self.kernel.delete(table, (Cond(keyfield, "in", keys), *where))
                for child, fk in resweep:
                    counts[child] += await self.kernel.delete(child, (Cond(fk, "in", keys),))
            if len(rows) < CHUNK:
                return counts

    # -- schema --------------------------------------------------------------------------

    async def _stored_versions(self, *, probe: bool = False) -> dict[str, int]:
        """The schema version of every table, from the meta table (`probe`: read it without
        asking the catalog first whether it exists)."""
        if not probe and not await self.kernel.has_table("meta"):
            return {}
        rows = await self.kernel.find(Query("meta", (Cond("key", "gte", "version:"), Cond("key", "lt", "version;"))))
        return {r["key"][len("version:") :]: int(r["value"]) for r in rows}

    async def _ensure_schema(self, *, dry_run: bool) -> list[str]:
        async with self.kernel.schema_lock():
            stored = await self._stored_versions()
            newer = {t: n for t, n in stored.items() if t in self.specs and n > self.specs[t].version}
            if newer:
                raise SchemaError(
                    f"the stored schema is newer than this agentkeep knows ({newer}); upgrade agentkeep"
                )
            steps = await self.kernel.plan_schema()
            done = [s.description for s in steps]
            stale = [t for t, spec in self.specs.items() if t != "meta" and stored.get(t) != spec.version]
            done += [f"record {t} schema version {self.specs[t].version}" for t in stale]
            if dry_run:
                return done
            for step in steps:
                await self.kernel.apply_step(step)
            now = _now()
            if stale:
                await self.kernel.put_many(
                    "meta", [{"key": f"version:{t}", "value": self.specs[t].version, "updated_at": now} for t in stale],
                    True,
                )
            return done

    @api(ready=False)
    async def create_tables(self) -> None:
        await self._ensure_schema(dry_run=False)
        self._schema_checked = True

    @api(ready=False)
    async def migrate(self, *, dry_run: bool = False) -> list[str]:
        steps = await self._ensure_schema(dry_run=dry_run)
        if not dry_run:
            self._schema_checked = True
        return steps

    @api(ready=False)
    async def schema_status(self) -> dict[str, dict]:
        stored = await self._stored_versions()
        return {
            t: {"version": stored.get(t), "expected": spec.version, "up_to_date": stored.get(t) == spec.version}
            for t, spec in self.specs.items()
            if t != "meta"
        }

    # -- sessions and runs -------------------------------------------------------------

    @api
    async def upsert_session(self, session: m.Session, *, expected_revision: int | None = None) -> m.Session:
        row = session  # @api hands every record over as its stored columns, checked
        now = _now()
        row.update(created_at=row["created_at"] or now, updated_at=now)
        stored = await self._put("sessions", row, expected_revision=expected_revision, defaults={"last_seq": 0})
        return self._model("sessions", stored)

    @api
    async def get_session(self, session_id: str, *, user_id: str | None = None, runs: int | None = None):
        row = await self._get_visible("sessions", (session_id,), user_id)
        session = self._model("sessions", row)
        if session is not None and runs is not None:
            session.runs = await self._runs_tail(session_id, runs, row.get("last_seq"))
        return session

    async def _runs_tail(self, session_id: str, n: int, last_seq: int | None = None) -> list[m.Run]:
        if n == 0:
            return []
        fields, _ = RUN_ORDER["seq"]
        where = (eq("session_id", session_id),)
        if n < 0:
            rows = await self.kernel.find(Query("runs", where, fields, False))
            return [self._model("runs", r) for r in rows]
        if last_seq is not None and last_seq >= n:
            # Without gaps in seq, the last n runs are those above last_seq - n: a range the
            # (session_id, seq) index answers in O(n) whatever the store's planner estimates.
            # PostgreSQL, with statistics not yet updated after a burst of appends, read and
            # sorted every run of the session instead: 4.4 ms at 10,000 runs against 0.8 ms.
            ranged = await self.kernel.find(Query("runs", where + (Cond("seq", "gt", last_seq - n),), fields, True, n))
            if len(ranged) == n:
                return [self._model("runs", r) for r in ranged[::-1]]
        rows = (await self.kernel.find(Query("runs", where, fields, True, n)))[::-1]
        return [self._model("runs", r) for r in rows]

    @api(order=SESSION_ORDERS)
    async def list_sessions(
        self,
        *,
        user_id: str | None = None,
        session_type: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        name_contains: str | None = None,
        updated_after: dt.datetime | None = None,
        updated_before: dt.datetime | None = None,
        order: str = "updated_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Session]:
        where: list[Cond] = []
        for f, val in (("user_id", user_id), ("session_type", session_type), ("agent_id", agent_id),
                       ("team_id", team_id), ("workflow_id", workflow_id)):
            _scope(where, f, val)
        if name_contains:
            where.append(Cond("name", "icontains", name_contains))
        if updated_after is not None:
            where.append(Cond("updated_at", "gt", updated_after))
        if updated_before is not None:
            where.append(Cond("updated_at", "lt", updated_before))
        return await self._page("sessions", where, SESSION_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def rename_session(self, session_id: str, name: str, *, user_id: str | None = None) -> m.Session:
        for _ in range(MAX_RETRIES):
            cur = await self._get_visible("sessions", (session_id,), user_id)
            if cur is None:
                raise NotFoundError(f"session {session_id!r} not found")
            values = {"name": name, "revision": cur["revision"] + 1, "updated_at": _now()}
            got = await self.kernel.update("sessions", (session_id,), set=values, where=(eq("revision", cur["revision"]),))
            if got is not None:
                return self._model("sessions", {**cur, **values})
        raise ConflictError(f"session {session_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        return await self.delete_sessions([session_id], user_id=user_id) == 1

    @api
    async def delete_sessions(self, session_ids: Sequence[str], *, user_id: str | None = None) -> int:
        total = 0
        async with self.kernel.transaction():  # all or nothing, where the store has transactions
            for chunk in _chunks(session_ids):
                where = [Cond("session_id", "in", list(chunk))]
                _scope(where, "user_id", user_id)
                total += (await self._delete_where("sessions", where, self.children["sessions"]))["sessions"]
        return total

    @api
    async def append_run(self, run: m.Run) -> m.Run:
        row = run
        session_id, run_id, user_id = row["session_id"], row["run_id"], row["user_id"]
        now = _now()
        where = (eq("user_id", user_id),) if user_id is not None else ()
        row.update(created_at=row["created_at"] or now, updated_at=now)
        if "atomic_append" in self.kernel.capabilities:  # the store does both writes in one step
            try:
                got = await self.kernel.append(
                    "runs", row, parent="sessions", key=(session_id,), counter="last_seq", seq="seq",
                    set={"updated_at": now}, where=where, inherit=("user_id",),
                )
            except DuplicateKey:
                owner = user_id
                if owner is None:  # the run would have taken its session's owner
                    owner = ((await self.kernel.get("sessions", (session_id,))) or {}).get("user_id")
                raise await self._run_taken(run_id, owner) from None
            if got is None:
                raise NotFoundError(f"session {session_id!r} not found")
            row.update(got)
            return self._model("runs", row)
        async with self.kernel.transaction():
            got = await self.kernel.update(
                "sessions", (session_id,), set={"updated_at": now}, incr={"last_seq": 1}, where=where,
                returning=("last_seq", "user_id"),
            )
            if got is None:
                raise NotFoundError(f"session {session_id!r} not found")
            row.update(seq=got["last_seq"], user_id=got["user_id"])
            try:
                await self.kernel.insert("runs", row)
            except DuplicateKey:
                raise await self._run_taken(run_id, row["user_id"]) from None
            if "transactions" not in self.kernel.capabilities and not await self.kernel.count(
                "sessions", (eq("session_id", session_id),)
            ):  # another process deleted the session since its counter moved: take the run back
                await self.kernel.delete("runs", (eq("run_id", run_id),))
                raise NotFoundError(f"session {session_id!r} not found")
        return self._model("runs", row)

    async def _run_taken(self, run_id: str, owner: str | None) -> Exception:
        """The error for appending a run whose id is taken (`owner`: the appended run's)."""
        other = await self.kernel.get("runs", (run_id,))
        if other is not None and other.get("user_id") != owner:
            return OwnershipError(f"run {run_id!r} belongs to another user")
        return ConflictError(f"run {run_id!r} already exists; use update_run to change it")

    @api
    async def update_run(self, run: m.Run, *, expected_status: str | None = None) -> m.Run:
        row = run
        session_id, run_id = row["session_id"], row["run_id"]
        cur = await self._get_visible("runs", (run_id,), row["user_id"])
        if cur is None or cur["session_id"] != session_id:
            raise NotFoundError(f"run {run_id!r} not found in session {session_id!r}")
        if expected_status is not None and cur["status"] != expected_status:
            raise ConflictError(f"run {run_id!r} is {cur['status']}, not {expected_status}")
        row.update(seq=cur["seq"], user_id=cur["user_id"], created_at=cur["created_at"], updated_at=_now())
        values = {k: val for k, val in row.items() if k != "run_id"}
        where = [eq("user_id", cur["user_id"])]
        if expected_status is not None:  # compare-and-set: one writer moves the run on
            where.append(eq("status", expected_status))
        if await self.kernel.update("runs", (run_id,), set=values, where=tuple(where)) is None:
            if expected_status is not None and await self.kernel.get("runs", (run_id,)) is not None:
                raise ConflictError(f"run {run_id!r} left status {expected_status} concurrently")
            raise NotFoundError(f"run {run_id!r} not found")
        return self._model("runs", row)

    @api
    async def renew_run_lease(self, run_id: str, *, lease_seconds: float) -> bool:
        """Push a running run's `lease_until` to now + `lease_seconds` (its process's
        heartbeat); False when the run is not running any more (ended, or failed as dead)."""
        until = self._lease_end(_now(), lease_seconds)
        got = await self.kernel.update("runs", (run_id,), set={"lease_until": until}, where=(eq("status", "running"),))
        return got is not None

    @api
    async def fail_expired_runs(self, *, now: dt.datetime | None = None, limit: int = 100,
                                alive: Sequence[str] = ()) -> list[m.Run]:
        """Mark `error` the running runs whose lease ended before `now`: their process died
        without finishing them. Each is a compare-and-set on status and lease, so a run
        renewed or finished meanwhile is left alone; runs without a lease are never touched,
        nor those in `alive` (the caller's own runs in progress, late with their renewal)."""
        now = now or _now()
        where = (eq("status", "running"), Cond("lease_until", "lt", now))
        rows = await self.kernel.find(Query("runs", where, ("lease_until", "run_id"), False, limit))
        failed = []
        for row in rows:
            if row["run_id"] in alive:
                continue
            error = {"type": "RunLeaseExpired", "message": "the process running it stopped before it ended "
                                                          f"(its lease ended at {row['lease_until'].isoformat()})"}
            values = {"status": "error", "metadata": {**(row["metadata"] or {}), "error": error}, "updated_at": now}
            cas = (eq("status", "running"), eq("lease_until", row["lease_until"]))
            if await self.kernel.update("runs", (row["run_id"],), set=values, where=cas) is not None:
                failed.append(self._model("runs", {**row, **values}))
        return failed

    @staticmethod
    def _lease_end(now: dt.datetime, seconds: float) -> dt.datetime:
        try:
            return now + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise InvalidInputError(f"now + lease_seconds is past the year 9999: {now.isoformat()}") from None

    @api
    async def get_run(self, run_id: str, *, user_id: str | None = None) -> m.Run | None:
        return self._model("runs", await self._get_visible("runs", (run_id,), user_id))

    @api
    async def delete_run(self, run_id: str, *, user_id: str | None = None) -> bool:
        """Delete one run (its session and the other runs stay); with `user_id`, another
        user's run is missing (False)."""
        where = [eq("run_id", run_id)]
        _scope(where, "user_id", user_id)
        return await self.kernel.delete("runs", tuple(where)) == 1

    @api(status=m.RunStatus)
    async def list_runs(
        self,
        session_id: str,
        *,
        user_id: str | None = None,
        last: int | None = None,
        after_seq: int | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Run]:
        where = [eq("session_id", session_id)]
        _scope(where, "user_id", user_id)
        if after_seq is not None:
            where.append(Cond("seq", "gt", after_seq))
        _scope(where, "status", status)
        if last is not None:
            if offset:
                raise InvalidInputError("offset does not apply with last= (which returns the last runs)")
            fields, _ = RUN_ORDER["seq"]
            rows = await self.kernel.find(Query("runs", tuple(where), fields, True, last))
            total = await self.kernel.count("runs", tuple(where)) if with_total else None
            return m.Page(items=[self._model("runs", r) for r in reversed(rows)], total=total)
        return await self._page("runs", where, RUN_ORDER, "seq", limit, cursor, with_total, offset)

    # -- memories ----------------------------------------------------------------------

    @staticmethod
    def _memory_row(row: dict, now: dt.datetime) -> dict:
        row.update(created_at=row["created_at"] or now, updated_at=now)
        return row

    @api
    async def upsert_memory(self, memory: m.UserMemory) -> m.UserMemory:
        row = self._memory_row(memory, _now())
        return self._model("memories", await self._put("memories", row))

    @api
    async def upsert_memories(self, memories: Sequence[m.UserMemory]) -> list[m.UserMemory]:
        """All or nothing: every record is checked (arguments, then owners) before the first
        write, and the writes share one transaction where the store has them."""
        now = _now()
        rows = list({r["memory_id"]: r for r in (self._memory_row(x, now) for x in memories)}.values())
        out: list[dict] = []
        async with self.kernel.transaction():
            owners = await self._owners("memories", [r["memory_id"] for r in rows])
            for r in rows:
                if r["memory_id"] in owners and owners[r["memory_id"]] != r["user_id"]:
                    raise OwnershipError(f"memory {r['memory_id']!r} belongs to another user")
            for chunk in _chunks(rows):
                fresh = [r for r in chunk if r["memory_id"] not in owners]
                if await self.kernel.put_many("memories", fresh, False) == len(fresh):
                    out.extend(fresh)
                    todo = [r for r in chunk if r["memory_id"] in owners]
                else:  # a concurrent writer created some of them: take the careful path
                    todo = chunk
                for r in todo:
                    out.append(await self._put("memories", r))
        return [self._model("memories", r) for r in out]

    async def _owners(self, table: str, ids: list[str], field: str = "user_id") -> dict[str, Any]:
        """`field` (the owner, or the parent) of each stored record among `ids`."""
        keyfield = self.specs[table].key[0]
        found: dict[str, Any] = {}
        for chunk in _chunks(ids):
            query = Query(table, (Cond(keyfield, "in", list(chunk)),), fields=(keyfield, field))
            found.update({r[keyfield]: r[field] for r in await self.kernel.find(query)})
        return found

    @api
    async def get_memory(self, memory_id: str, *, user_id: str | None = None) -> m.UserMemory | None:
        return self._model("memories", await self._get_visible("memories", (memory_id,), user_id))

    @api(order=MEMORY_ORDERS)
    async def list_memories(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        topics: Sequence[str] | None = None,
        search: str | None = None,
        order: str = "updated_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.UserMemory]:
        where: list[Cond] = []
        for f, val in (("user_id", user_id), ("agent_id", agent_id), ("team_id", team_id)):
            _scope(where, f, val)
        if topics:
            where.append(Cond("topics", "contains_all", topics))
        if search:
            where.append(Cond("memory", "icontains", search))
        return await self._page("memories", where, MEMORY_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def memory_topics(self, *, user_id: str | None = None) -> list[str]:
        where: list[Cond] = []
        _scope(where, "user_id", user_id)
        return sorted(await self.kernel.distinct("memories", "topics", tuple(where)))

    @api
    async def memory_stats(
        self, *, user_id: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> m.Page[m.MemoryStats]:
        after = v.decode_cursor(cursor, "user_asc", 1)
        if after is not None and not isinstance(after[0], str):
            raise InvalidInputError("invalid cursor: it was not made by memory_stats")
        where: tuple[Cond, ...] = (Cond("user_id", "gt", after[0] if after else ""),)
        if user_id is not None:  # that user's row alone: a range every store's group walk bounds natively
            where += (Cond("user_id", "gte", user_id), Cond("user_id", "lte", user_id))
        groups = await self.kernel.group_count("memories", "user_id", "updated_at", where, limit + 1)
        items = [m.MemoryStats(user_id=k, memories=n, last_updated=last) for k, n, last in groups[:limit]]
        next_cursor = v.encode_cursor("user_asc", [items[-1].user_id]) if len(groups) > limit else None
        return m.Page(items=items, next_cursor=next_cursor)

    @api
    async def delete_memory(self, memory_id: str, *, user_id: str | None = None) -> bool:
        return await self.delete_memories([memory_id], user_id=user_id) == 1

    @api
    async def delete_memories(self, memory_ids: Sequence[str], *, user_id: str | None = None) -> int:
        return await self._delete_ids("memories", memory_ids, user_id)

    async def _delete_ids(self, table: str, ids: Sequence[str], user_id: str | None) -> int:
        """Delete by id, only `user_id`'s records when given; one transaction where the
        store has them."""
        keyfield = self.specs[table].key[0]
        total = 0
        async with self.kernel.transaction():
            for chunk in _chunks(ids):
                where = [Cond(keyfield, "in", list(chunk))]
                _scope(where, "user_id", user_id)
                total += await self.kernel.delete(table, tuple(where))
        return total

    @api
    async def clear_memories(self, *, user_id: str) -> int:
        return (await self._delete_where("memories", [eq("user_id", user_id)]))["memories"]

    # -- knowledge contents --------------------------------------------------------------

    @api
    async def upsert_knowledge(self, content: m.KnowledgeContent) -> m.KnowledgeContent:
        row = content
        now = _now()
        row.update(created_at=row["created_at"] or now, updated_at=now)
        return self._model("knowledge", await self._put("knowledge", row))

    @api
    async def get_knowledge(self, content_id: str, *, user_id: str | None = None):
        return self._model("knowledge", await self._get_visible("knowledge", (content_id,), user_id, shared=True))

    @api(order=KNOWLEDGE_ORDERS, status=m.ContentStatus)
    async def list_knowledge(
        self,
        *,
        user_id: str | None = None,
        linked_to: str | None = None,
        status: str | None = None,
        order: str = "updated_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.KnowledgeContent]:
        where: list[Cond] = []
        if user_id is not None:
            where.append(Cond("user_id", "in", [user_id, None]))
        _scope(where, "linked_to", linked_to)
        _scope(where, "status", status)
        return await self._page("knowledge", where, KNOWLEDGE_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def delete_knowledge(self, content_id: str, *, user_id: str | None = None) -> bool:
        where = [eq("id", content_id)]
        _scope(where, "user_id", user_id)
        return await self.kernel.delete("knowledge", tuple(where)) == 1

    # -- traces and spans ---------------------------------------------------------------

    @api
    async def write_spans(self, spans: Sequence[m.Span], *, user_id: str | None = None) -> None:
        """Idempotent on span_id; a span never moves to another trace (ConflictError, checked
        for the whole batch before the first write). With `user_id`, the spans may only join
        that user's traces or new ones: a stored trace of anyone else refuses the batch
        (OwnershipError, nothing written)."""
        rows = {row["span_id"]: row for row in spans}
        async with self.kernel.transaction():
            if user_id is not None:
                owners = await self._owners("traces", list({r["trace_id"] for r in rows.values()}))
                taken = sorted(t for t, owner in owners.items() if owner != user_id)
                if taken:
                    raise OwnershipError(f"trace {taken[0]!r} belongs to another user")
            known = await self._owners("spans", list(rows), "trace_id")
            self._check_parents("span", rows, known, "trace_id")
            for chunk in _chunks(list(rows)):
                fresh = [rows[i] for i in chunk if i not in known]
                if await self.kernel.put_many("spans", fresh, False) != len(fresh):
                    # another writer stored some of these ids since the check: same trace or none
                    raced = await self._owners("spans", [r["span_id"] for r in fresh], "trace_id")
                    self._check_parents("span", rows, raced, "trace_id")
                again = [rows[i] for i in chunk if i in known]
                if again:
                    await self.kernel.put_many("spans", again, True)
            groups: dict[str, list[dict]] = defaultdict(list)
            for row in rows.values():
                groups[row["trace_id"]].append(row)
            # the batch's traces read a chunk at a time; each is then created or updated by itself
            for chunk in _chunks(list(groups)):
                query = Query("traces", (Cond("trace_id", "in", list(chunk)),))
                current = {r["trace_id"]: r for r in await self.kernel.find(query)}
                for trace_id in chunk:
                    group = groups[trace_id]
                    # only spans new to the trace are counted (spans, errors, tokens, cost)
                    fresh = [r for r in group if r["span_id"] not in known]
                    await self._merge_trace(trace_id, group, fresh, current.get(trace_id))

    @staticmethod
    def _check_parents(what: str, rows: dict[str, dict], stored: dict[str, Any], field: str) -> None:
        """A record id already stored under another parent raises: it never moves."""
        for key, parent in stored.items():
            if rows[key][field] != parent:
                raise ConflictError(f"{what} {key!r} belongs to {field} {parent!r}, not {rows[key][field]!r}")

    async def _merge_trace(self, trace_id: str, spans: list[dict], fresh: list[dict], cur: dict | None) -> None:
        for attempt in range(MAX_RETRIES):
            if attempt:
                cur = await self.kernel.get("traces", (trace_id,))
            merged = merge_trace(cur, trace_id, spans, fresh)
            if cur is None:
                try:
                    await self.kernel.insert("traces", {**merged, "revision": 1})
                    return
                except DuplicateKey:
                    continue
            merged["revision"] = cur["revision"] + 1
            values = {k: val for k, val in merged.items() if k != "trace_id"}
            if merged["user_id"] == cur.get("user_id"):
                for f in self.specs["traces"].multi:  # an unchanged list's index rows are not rewritten
                    if merged[f] == cur.get(f):
                        del values[f]
            if await self.kernel.update("traces", (trace_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return
        raise ConflictError(f"trace {trace_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def get_trace(self, trace_id: str, *, user_id: str | None = None) -> m.Trace | None:
        return self._model("traces", await self._get_visible("traces", (trace_id,), user_id))

    @api
    async def get_spans(self, trace_id: str, *, user_id: str | None = None) -> list[m.Span]:
        """The trace's spans; with `user_id`, another user's trace has none, as a missing one."""
        if user_id is not None and await self._get_visible("traces", (trace_id,), user_id) is None:
            return []
        rows = await self.kernel.find(Query("spans", (eq("trace_id", trace_id),), ("start_time", "span_id")))
        return [self._model("spans", r) for r in rows]

    @api(order=TRACE_ORDERS, status=m.TraceStatus, model=_opt_name("model"), tool=_opt_name("tool"),
         min_duration_ms=_opt_ms("min_duration_ms"), max_duration_ms=_opt_ms("max_duration_ms"))
    async def list_traces(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        started_after: dt.datetime | None = None,
        started_before: dt.datetime | None = None,
        model: str | None = None,
        tool: str | None = None,
        min_duration_ms: float | None = None,
        max_duration_ms: float | None = None,
        order: str = "start_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Trace]:
        where: list[Cond] = []
        for f, val in (("user_id", user_id), ("session_id", session_id), ("run_id", run_id), ("agent_id", agent_id),
                       ("team_id", team_id), ("workflow_id", workflow_id), ("status", status)):
            _scope(where, f, val)
        where += self._time_range("start_time", started_after, started_before)
        for f, val in (("models", model), ("tools", tool)):
            if val is not None:
                where.append(Cond(f, "contains_all", [val]))
        if min_duration_ms is not None:
            where.append(Cond("duration_ms", "gte", min_duration_ms))
        if max_duration_ms is not None:
            where.append(Cond("duration_ms", "lte", max_duration_ms))
        return await self._page("traces", where, TRACE_ORDERS, order, limit, cursor, with_total, offset)

    @staticmethod
    def _time_range(field: str, after: Any, before: Any) -> list[Cond]:
        out = []
        if after is not None:
            out.append(Cond(field, "gte", after))
        if before is not None:
            out.append(Cond(field, "lt", before))
        return out

    @api(group_by=TRACE_GROUPS)
    async def trace_stats(
        self,
        *,
        group_by: str = "agent",
        started_after: dt.datetime | None = None,
        started_before: dt.datetime | None = None,
        user_id: str | None = None,
    ) -> list[m.TraceStats]:
        field = TRACE_GROUPS[group_by]
        scope: list[Cond] = []
        _scope(scope, "user_id", user_id)  # served by the (user_id, start_time) index
        where = tuple(scope + self._time_range("start_time", started_after, started_before))
        rows = []
        async for batch in self._scan("traces", where, (field, "status", "duration_ms"), by="start_time"):
            rows.extend((r[field], r["status"], r["duration_ms"], r["start_time"]) for r in batch)
        return [m.TraceStats(**s) for s in trace_stats(rows)]

    async def _scan(self, table: str, where: tuple, fields: tuple | None = None, by: str | None = None):
        """Yield every matching row a chunk at a time (bounded memory), in key order, or in
        (`by`, key) order so a range on an indexed time field walks that index."""
        spec = self.specs[table]
        order = ((by,) if by else ()) + spec.key
        if fields is not None:
            fields = tuple(dict.fromkeys(fields + order))
        after = None
        while True:
            rows = await self.kernel.find(Query(table, where, order, False, CHUNK * 2, after, fields))
            if rows:
                yield rows
            if len(rows) < CHUNK * 2:
                return
            after = tuple(rows[-1][f] for f in order)

    # -- approvals ------------------------------------------------------------------------

    @api
    async def create_approval(self, approval: m.Approval) -> m.Approval:
        row = approval
        approval_id, user_id = row["id"], row["user_id"]
        row["created_at"] = row["created_at"] or _now()
        try:
            await self.kernel.insert("approvals", row)
        except DuplicateKey:
            cur = await self.kernel.get("approvals", (approval_id,))
            if cur is not None and cur.get("user_id") != user_id:
                raise OwnershipError(f"approval {approval_id!r} belongs to another user") from None
            raise ConflictError(f"approval {approval_id!r} already exists") from None
        return self._model("approvals", row)

    @api
    async def get_approval(self, approval_id: str, *, user_id: str | None = None) -> m.Approval | None:
        return self._model("approvals", await self._get_visible("approvals", (approval_id,), user_id))

    @api(status=m.ApprovalStatus, order=CREATED_ORDERS)
    async def list_approvals(
        self,
        *,
        status: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        order: str = "created_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Approval]:
        where: list[Cond] = []
        for f, val in (("status", status), ("user_id", user_id), ("session_id", session_id), ("run_id", run_id),
                       ("agent_id", agent_id)):
            _scope(where, f, val)
        return await self._page("approvals", where, CREATED_ORDERS, order, limit, cursor, with_total, offset)

    @api(status=APPROVAL_RESOLUTIONS)
    async def resolve_approval(
        self,
        approval_id: str,
        *,
        status: str,
        resolved_by: str | None,
        resolution: dict | None = None,
        user_id: str | None = None,
    ) -> m.Approval:
        cur = await self._get_visible("approvals", (approval_id,), user_id)
        if cur is None:
            raise NotFoundError(f"approval {approval_id!r} not found")
        if cur["status"] != "pending":
            raise ConflictError(f"approval {approval_id!r} is already {cur['status']}")
        now = _now()
        pending = (eq("status", "pending"),)
        if cur["expires_at"] is not None and cur["expires_at"] <= now and status != "expired":
            await self.kernel.update("approvals", (approval_id,), set={"status": "expired", "resolved_at": now}, where=pending)
            raise ConflictError(f"approval {approval_id!r} expired at {cur['expires_at'].isoformat()}")
        values = {"status": status, "resolved_by": resolved_by, "resolution": resolution, "resolved_at": now}
        if await self.kernel.update("approvals", (approval_id,), set=values, where=pending) is None:
            raise ConflictError(f"approval {approval_id!r} was resolved concurrently")
        return self._model("approvals", {**cur, **values})

    @api
    async def count_pending_approvals(self, *, user_id: str | None = None) -> int:
        where = [eq("status", "pending")]
        _scope(where, "user_id", user_id)
        return await self.kernel.count("approvals", tuple(where))

    @api
    async def delete_approval(self, approval_id: str, *, user_id: str | None = None) -> bool:
        where = [eq("id", approval_id)]
        _scope(where, "user_id", user_id)
        return await self.kernel.delete("approvals", tuple(where)) == 1

    # -- schedules ------------------------------------------------------------------------

    @api
    async def upsert_schedule(self, schedule: m.Schedule, *, expected_revision: int | None = None) -> m.Schedule:
        row = schedule
        check_cron(row["cron"], row["timezone"])
        now = _now()
        if row["next_run_at"] is None and row["enabled"]:
            row["next_run_at"] = next_fire(row["cron"], row["timezone"], now)
        row.update(created_at=row["created_at"] or now, updated_at=now, locked_by=None, locked_until=None)
        stored = await self._put(
            "schedules", row, expected_revision=expected_revision, keep=("created_at", "locked_by", "locked_until")
        )
        return self._model("schedules", stored)

    @api
    async def get_schedule(self, schedule_id: str, *, user_id: str | None = None) -> m.Schedule | None:
        return self._model("schedules", await self._get_visible("schedules", (schedule_id,), user_id))

    @api(order=CREATED_ORDERS)
    async def list_schedules(
        self,
        *,
        user_id: str | None = None,
        enabled: bool | None = None,
        order: str = "created_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Schedule]:
        where: list[Cond] = []
        _scope(where, "user_id", user_id)
        _scope(where, "enabled", enabled)
        return await self._page("schedules", where, CREATED_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def delete_schedule(self, schedule_id: str, *, user_id: str | None = None) -> bool:
        where = [eq("id", schedule_id)]
        _scope(where, "user_id", user_id)
        counts = await self._delete_where("schedules", where, self.children["schedules"])
        return counts["schedules"] == 1

    @api
    async def claim_due_schedules(
        self, *, worker_id: str, now: dt.datetime | None = None, lease_seconds: float = 300, limit: int = 1
    ) -> list[m.Schedule]:
        now = now or _now()
        try:
            until = now + dt.timedelta(seconds=lease_seconds)
        except OverflowError:
            raise InvalidInputError(f"now + lease_seconds is past the year 9999: {now.isoformat()}") from None
        if "atomic_claim" in self.kernel.capabilities:  # the store locks and skips rows itself
            rows = await self.kernel.claim_due(now=now, until=until, worker_id=worker_id, limit=limit)
            return [self._model("schedules", r) for r in rows]
        where = (eq("enabled", True), Cond("next_run_at", "lte", now))
        batch = max(2 * limit, 16)
        claimed: list[m.Schedule] = []
        after = None
        while len(claimed) < limit:
            rows = await self.kernel.find(Query("schedules", where, ("next_run_at", "id"), False, batch, after))
            for row in rows:
                if row["locked_until"] is not None and row["locked_until"] > now:
                    continue
                values = {"locked_by": worker_id, "locked_until": until, "revision": row["revision"] + 1}
                if await self.kernel.update("schedules", (row["id"],), set=values, where=(eq("revision", row["revision"]),)) is not None:
                    claimed.append(self._model("schedules", {**row, **values}))
                    if len(claimed) == limit:
                        break
            if len(rows) < batch:
                break
            after = (rows[-1]["next_run_at"], rows[-1]["id"])
        return claimed

    @api
    async def release_schedule(
        self, schedule_id: str, *, worker_id: str, next_run_at: dt.datetime | None
    ) -> m.Schedule:
        for _ in range(MAX_RETRIES):
            cur = await self.kernel.get("schedules", (schedule_id,))
            if cur is None:
                raise NotFoundError(f"schedule {schedule_id!r} not found")
            if cur["locked_by"] != worker_id:
                raise ConflictError(f"schedule {schedule_id!r} is not leased to worker {worker_id!r}")
            values = {"locked_by": None, "locked_until": None, "next_run_at": next_run_at,
                      "revision": cur["revision"] + 1, "updated_at": _now()}
            if await self.kernel.update("schedules", (schedule_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return self._model("schedules", {**cur, **values})
        raise ConflictError(f"schedule {schedule_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api(run=m.ScheduleRun)
    async def record_schedule_run(self, run: m.ScheduleRun, *, user_id: str | None = None) -> m.ScheduleRun:
        """Create or replace a schedule run; a run id never moves to another schedule. With
        `user_id`, another user's schedule is missing (NotFoundError), as in append_run."""
        row = run
        run_id, schedule_id = row["id"], row["schedule_id"]
        if await self._get_visible("schedules", (schedule_id,), user_id) is None:
            raise NotFoundError(f"schedule {schedule_id!r} not found")
        row["started_at"] = row["started_at"] or _now()
        values = {k: val for k, val in row.items() if k != "id"}
        for _ in range(MAX_RETRIES):
            try:
                await self.kernel.insert("schedule_runs", row)
                return self._model("schedule_runs", row)
            except DuplicateKey:
                pass
            cur = await self.kernel.get("schedule_runs", (run_id,))
            if cur is not None:
                if user_id is not None and cur["schedule_id"] != schedule_id:  # its schedule may be another user's
                    raise ConflictError(f"schedule run {run_id!r} belongs to another schedule")
                self._check_parents("schedule run", {run_id: row}, {run_id: cur["schedule_id"]}, "schedule_id")
                where = (eq("schedule_id", schedule_id),)
                if await self.kernel.update("schedule_runs", (run_id,), set=values, where=where) is not None:
                    return self._model("schedule_runs", row)
        raise ConflictError(f"schedule run {run_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def get_schedule_run(self, schedule_run_id: str, *, user_id: str | None = None) -> m.ScheduleRun | None:
        """With `user_id`, a run of another user's schedule is missing (None)."""
        row = await self.kernel.get("schedule_runs", (schedule_run_id,))
        if row is None or (user_id is not None and await self._get_visible("schedules", (row["schedule_id"],), user_id) is None):
            return None
        return self._model("schedule_runs", row)

    @api
    async def list_schedule_runs(
        self, schedule_id: str, *, user_id: str | None = None, limit: int = 20, cursor: str | None = None,
        offset: int = 0, with_total: bool = False,
    ) -> m.Page[m.ScheduleRun]:
        """Newest first; with `user_id`, another user's schedule has no runs, as a missing one."""
        if user_id is not None and await self._get_visible("schedules", (schedule_id,), user_id) is None:
            v.decode_cursor(cursor, "started_desc", 2)  # a mangled cursor is refused all the same
            return m.Page(items=[], total=0 if with_total else None)
        where = [eq("schedule_id", schedule_id)]
        return await self._page("schedule_runs", where, SCHEDULE_RUN_ORDER, "started_desc", limit, cursor, with_total,
                                offset)

    # -- metrics and evals -----------------------------------------------------------------

    @api
    async def refresh_metrics(self, *, now: dt.datetime | None = None) -> int:
        now = now or _now()
        state = await self.kernel.get("meta", ("metrics:watermark",))
        mark = dt.datetime.fromisoformat(state["value"]) if state else None
        days: set[dt.date] = set()
        newest = mark
        for table, field in (("runs", "updated_at"), ("sessions", "created_at")):
            where = (Cond(field, "gt", mark),) if mark else ()
            async for batch in self._scan(table, where, ("created_at", field), by=field):
                days |= run_days(batch)
                top = max(r[field] for r in batch)
                newest = top if newest is None or top > newest else newest
        written = 0
        for day in sorted(d for d in days if d <= now.date()):
            start, end = day_bounds(day)
            runs, sessions = [], []
            fields = ("run_id", "user_id", "agent_id", "team_id", "workflow_id", "status", "metrics")
            async for batch in self._scan("runs", (Cond("created_at", "gte", start), Cond("created_at", "lt", end)), fields, by="created_at"):
                runs.extend(batch)
            async for batch in self._scan("sessions", (Cond("created_at", "gte", start), Cond("created_at", "lt", end)), ("user_id",), by="created_at"):
                sessions.extend(batch)
            rows = metrics_rows(day, runs, sessions, now)
            written += await self.kernel.put_many("metrics", rows, True)
        if newest is not None and newest != mark:
            await self.kernel.put_many("meta", [{"key": "metrics:watermark", "value": newest.isoformat(), "updated_at": now}], True)
        return written

    @api(user_id=all_users_or_id)
    async def get_metrics(
        self, *, start_date: dt.date | None = None, end_date: dt.date | None = None, user_id: str | None = None
    ) -> list[m.MetricsDay]:
        # user_id None (or "", as the rows store it) reads the all-users rows
        where = [eq("user_id", user_id or "")]
        if start_date is not None:
            where.append(Cond("date", "gte", start_date))
        if end_date is not None:
            where.append(Cond("date", "lte", end_date))
        rows = await self.kernel.find(Query("metrics", tuple(where), ("date", "user_id")))
        return [self._model("metrics", r) for r in rows]

    @api
    async def save_eval_run(self, eval_run: m.EvalRun) -> m.EvalRun:
        row = eval_run
        now = _now()
        row.update(created_at=row["created_at"] or now, updated_at=now)
        return self._model("eval_runs", await self._put("eval_runs", row))

    @api
    async def get_eval_run(self, eval_run_id: str, *, user_id: str | None = None) -> m.EvalRun | None:
        return self._model("eval_runs", await self._get_visible("eval_runs", (eval_run_id,), user_id))

    @api(order=CREATED_ORDERS)
    async def list_eval_runs(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        eval_type: str | None = None,
        order: str = "created_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.EvalRun]:
        where: list[Cond] = []
        for f, val in (("user_id", user_id), ("agent_id", agent_id), ("team_id", team_id), ("workflow_id", workflow_id),
                       ("eval_type", eval_type)):
            _scope(where, f, val)
        return await self._page("eval_runs", where, CREATED_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def rename_eval_run(self, eval_run_id: str, name: str, *, user_id: str | None = None) -> m.EvalRun:
        cur = await self._get_visible("eval_runs", (eval_run_id,), user_id)
        values = {"name": name, "updated_at": _now()}
        if cur is None or await self.kernel.update("eval_runs", (eval_run_id,), set=values, where=(eq("user_id", cur["user_id"]),)) is None:
            raise NotFoundError(f"eval run {eval_run_id!r} not found")
        return self._model("eval_runs", {**cur, **values})

    @api
    async def delete_eval_runs(self, eval_run_ids: Sequence[str], *, user_id: str | None = None) -> int:
        return await self._delete_ids("eval_runs", eval_run_ids, user_id)

    # -- jobs -------------------------------------------------------------------------------

    @api
    async def enqueue_job(self, job: m.Job) -> m.Job:
        """Queue a job. Single-flight by id: a job of that id still queued or running is
        returned unchanged; a finished one is replaced by this one."""
        row = jobs.enqueued(job, _now())
        job_id = row["id"]
        for _ in range(MAX_RETRIES):
            try:
                await self.kernel.insert("jobs", row)
                return self._model("jobs", row)
            except DuplicateKey:
                pass
            cur = await self.kernel.get("jobs", (job_id,))
            if cur is None:
                continue  # deleted since the insert failed: create it again
            if cur.get("user_id") != row["user_id"]:
                raise OwnershipError(f"job {job_id!r} belongs to another user")
            if cur["status"] not in m.JOB_FINISHED:
                return self._model("jobs", cur)
            new = {**row, "revision": cur["revision"] + 1}
            values = {k: val for k, val in new.items() if k != "id"}
            if await self.kernel.update("jobs", (job_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return self._model("jobs", new)
        raise ConflictError(f"job {job_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def claim_jobs(
        self, *, worker_id: str, kinds: Sequence[str] | None = None, now: dt.datetime | None = None,
        lease_seconds: float = 60, limit: int = 1,
    ) -> list[m.Job]:
        """Lease up to `limit` jobs to `worker_id` until now + `lease_seconds`: first running
        jobs whose lease ran out (their worker stopped), then queued jobs due by `now`, oldest
        `run_after` first. Each claim is a compare-and-set on the job's revision, so of several
        workers exactly one gets a job. A job whose lease ran out with no attempt left is
        failed instead of claimed."""
        now = now or _now()
        until = self._lease_end(now, lease_seconds)
        of_kind = (Cond("kind", "in", kinds),) if kinds else ()
        claimed: list[m.Job] = []
        for where, order in (((eq("status", "running"), Cond("locked_until", "lte", now)), ("locked_until", "id")),
                             ((eq("status", "queued"), Cond("run_after", "lte", now)), ("run_after", "id"))):
            batch = max(2 * limit, 16)
            after = None
            while len(claimed) < limit:
                # the scalar columns only: losers of a race read no payloads, JsonDb opens no file
                query = Query("jobs", where + of_kind, order, False, batch, after, jobs.CLAIM_FIELDS)
                rows = await self.kernel.find(query)
                for row in rows:
                    values = jobs.taken(row, worker_id, until, _now())
                    cas = (eq("revision", row["revision"]),)  # lost: another worker took it first
                    if await self.kernel.update("jobs", (row["id"],), set=values, where=cas) is None:
                        continue
                    full = await self.kernel.get("jobs", (row["id"],)) if values["status"] == "running" else None
                    if full is not None:  # else failed as no attempt was left, or deleted since
                        claimed.append(self._model("jobs", full))
                        if len(claimed) == limit:
                            break
                if len(rows) < batch:
                    break
                after = tuple(rows[-1][f] for f in order)
        return claimed

    async def _held_job(self, job_id: str, worker_id: str) -> dict:
        cur = await self.kernel.get("jobs", (job_id,))
        if cur is None:
            raise NotFoundError(f"job {job_id!r} not found")
        if cur["status"] != "running" or cur["locked_by"] != worker_id:
            raise ConflictError(f"job {job_id!r} is not leased to worker {worker_id!r} (it is {cur['status']})")
        return cur

    @api
    async def renew_job(
        self, job_id: str, *, worker_id: str, lease_seconds: float = 60, now: dt.datetime | None = None
    ) -> m.Job:
        """Extend the lease of a running job to now + `lease_seconds` (its worker's heartbeat)."""
        for _ in range(MAX_RETRIES):
            cur = await self._held_job(job_id, worker_id)
            values = {"locked_until": self._lease_end(now or _now(), lease_seconds),
                      "revision": cur["revision"] + 1, "updated_at": _now()}
            if await self.kernel.update("jobs", (job_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return self._model("jobs", {**cur, **values})
        raise ConflictError(f"job {job_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api(status=("completed", "failed"))
    async def finish_job(
        self, job_id: str, *, worker_id: str, status: str, result: dict | None = None, error: str | None = None,
        retry_at: dt.datetime | None = None,
    ) -> m.Job:
        """End the worker's attempt: completed or failed, or with `retry_at` (and attempts
        left) queued again until then; the lease is released."""
        jobs.check_finish(status, retry_at)
        for _ in range(MAX_RETRIES):
            cur = await self._held_job(job_id, worker_id)
            v.check_payload({"payload": cur["payload"], "result": result, "error": error}, f"job {job_id!r}")
            values = jobs.finished(cur, status, result, error, retry_at, _now())
            if await self.kernel.update("jobs", (job_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return self._model("jobs", {**cur, **values})
        raise ConflictError(f"job {job_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def get_job(self, job_id: str, *, user_id: str | None = None) -> m.Job | None:
        return self._model("jobs", await self._get_visible("jobs", (job_id,), user_id))

    @api(order=CREATED_ORDERS, status=m.JobStatus)
    async def list_jobs(
        self,
        *,
        user_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        order: str = "created_desc",
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        with_total: bool = False,
    ) -> m.Page[m.Job]:
        where: list[Cond] = []
        for f, val in (("user_id", user_id), ("kind", kind), ("status", status)):
            _scope(where, f, val)
        return await self._page("jobs", where, CREATED_ORDERS, order, limit, cursor, with_total, offset)

    @api
    async def cancel_job(self, job_id: str, *, user_id: str | None = None) -> m.Job:
        """Cancel a queued job; one running or finished is a ConflictError."""
        for _ in range(MAX_RETRIES):
            cur = await self._get_visible("jobs", (job_id,), user_id)
            if cur is None:
                raise NotFoundError(f"job {job_id!r} not found")
            if cur["status"] != "queued":
                raise ConflictError(f"job {job_id!r} is {cur['status']}: only a queued job can be cancelled")
            now = _now()
            values = {"status": "cancelled", "finished_at": now, "updated_at": now, "revision": cur["revision"] + 1}
            if await self.kernel.update("jobs", (job_id,), set=values, where=(eq("revision", cur["revision"]),)) is not None:
                return self._model("jobs", {**cur, **values})
        raise ConflictError(f"job {job_id!r}: gave up after {MAX_RETRIES} concurrent modifications")

    @api
    async def delete_jobs(self, job_ids: Sequence[str], *, user_id: str | None = None) -> int:
        return await self._delete_ids("jobs", job_ids, user_id)

    # -- lifecycle and data management -----------------------------------------------------

    @api
    async def purge_expired(self, *, now: dt.datetime | None = None) -> dict[str, int]:
        now = now or _now()
        result: dict[str, int] = {}
        for table, spec in self.specs.items():
            if not spec.expires or spec.parent is not None:
                continue  # children expire with their parent
            counts = await self._delete_where(table, [Cond("expires_at", "lte", now)], self.children[table])
            for t, n in counts.items():
                result[t] = result.get(t, 0) + n
        return result

    @api
    async def delete_user(self, user_id: str) -> dict[str, int]:
        mine = [eq("user_id", user_id)]
        result: dict[str, int] = {}
        for table in owned_tables(self.specs):  # children go with their parent (a run has its session's owner)
            if len(self.specs[table].key) > 1:  # no one key field to delete chunks by (metrics): at once
                counts = {table: await self.kernel.delete(table, tuple(mine))}
            else:
                counts = await self._delete_where(table, mine, self.children[table])
            for t, n in counts.items():
                result[t] = result.get(t, 0) + n
        return result

    @api
    async def export_jsonl(self, fp_or_path: Any, *, tables: Sequence[str] | None = None) -> int:
        """Write a versioned, backend-neutral dump, streaming (memory does not grow with size)."""
        chosen = [t for t in EXPORT_TABLES if tables is None or t in tables]
        count = 0
        with _open_text(fp_or_path, "w") as out:
            header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "tables": chosen, "exported_at": _now().isoformat()}
            out.write(json.dumps(header) + "\n")
            for table in chosen:
                spec = self.specs[table]
                async for batch in self._scan(table, ()):
                    lines = []
                    for row in batch:
                        line = {"table": table, "record": self._model(table, row).model_dump(mode="json")}
                        hidden = {k: row[k] for k in spec.internal if k != "revision"}
                        if hidden:
                            line["internal"] = hidden
                        lines.append(json.dumps(line, separators=(",", ":")))
                    out.write("\n".join(lines) + "\n")
                    count += len(batch)
        return count

    @api
    async def import_jsonl(self, fp_or_path: Any, *, on_conflict: str = "skip") -> m.ImportCount:
        """Read a dump made by export_jsonl: all or nothing. Every line is checked first, by
        the rules of the API's own methods (a stream is spooled to a temporary file for
        that), so a bad line, or with on_conflict="error" an existing record, writes
        nothing; the writes then share one transaction where the store has them. Returns
        the records written, an int that also tells how many were read and skipped."""
        with _open_text(fp_or_path, "r") as src:
            if src.seekable():
                return await self._import(src, on_conflict)
            with tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n") as spool:
                shutil.copyfileobj(src, spool)
                spool.seek(0)
                return await self._import(spool, on_conflict)

    async def _import(self, src: Any, on_conflict: str) -> m.ImportCount:
        start = src.tell()
        read = await self._import_lines(src, on_conflict, write=False)
        src.seek(start)
        async with self.kernel.transaction():
            written = await self._import_lines(src, on_conflict, write=True)
        return m.ImportCount(written, read=read)

    async def _import_lines(self, src: Any, on_conflict: str, *, write: bool) -> int:
        """Check (`write=False`: returns the records read) or write (returns those written)."""
        header_line = src.readline()
        try:
            header = json.loads(header_line)
            ok = header.get("format") == EXPORT_FORMAT
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise InvalidInputError("not an agentkeep export: the first line is not its header")
        if not isinstance(header.get("version", 0), int) or header.get("version", 0) > EXPORT_VERSION:
            raise InvalidInputError(f"export version {header['version']!r} is newer than this agentkeep reads")
        count = 0
        batch: list[dict] = []
        table = None
        for lineno, line in enumerate(src, start=2):
            if not line.strip():
                continue
            t, row = self._import_row(line, lineno)
            if batch and (t != table or len(batch) >= CHUNK):
                count += await self._import_batch(table, batch, on_conflict, write)
                batch = []
            table = t
            batch.append(row)
        if batch:
            count += await self._import_batch(table, batch, on_conflict, write)
        return count

    def _import_row(self, line: str, lineno: int) -> tuple[str, dict]:
        """One line as a row, through the same checks as the API's own writes."""
        try:
            item = json.loads(line)
            table = v.check_choice(item["table"], EXPORT_TABLES, "table")
            spec = self.specs[table]
            row = check_record(spec.model, item["record"], f"{table} record")
            hidden = item.get("internal") or {}
            if not isinstance(hidden, dict):
                raise InvalidInputError("its internal fields are not an object")
            for name in spec.internal:
                row[name] = v.check_int(hidden.get(name, 1 if name == "revision" else 0), f"internal {name}", 0)
            return table, row
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {lineno}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"line {lineno}: not a valid record: {shorten(exc, 300)}") from None

    async def _import_batch(self, table: str, rows: list[dict], on_conflict: str, write: bool) -> int:
        spec = self.specs[table]
        if write:
            return await self.kernel.put_many(table, rows, on_conflict == "replace")
        if on_conflict == "error":
            keyfield = spec.key[0]
            if len(spec.key) == 1:
                query = Query(table, (Cond(keyfield, "in", [r[keyfield] for r in rows]),), fields=spec.key)
                found = await self.kernel.find(query)
            else:
                found = [r for r in [await self.kernel.get(table, spec.key_of(r)) for r in rows] if r]
            if found:
                raise ConflictError(f"{table} {spec.key_of(found[0])} already exists (on_conflict='error')")
        return len(rows)


class _open_text:
    """Open a path for text, or wrap a caller's file object (text or binary) without closing it."""

    def __init__(self, target: Any, mode: str) -> None:
        self.target, self.mode, self.owned, self.wrapper = target, mode, None, None

    def __enter__(self):
        if isinstance(self.target, (str, os.PathLike)):
            try:
                self.owned = open(self.target, self.mode, encoding="utf-8", newline="\n")
            except OSError as exc:
                raise InvalidInputError(f"cannot open {self.target!r}: {exc.strerror}") from None
            return self.owned
        if not hasattr(self.target, "write" if self.mode == "w" else "read"):
            raise InvalidInputError("expected a path or a file object")
        if isinstance(self.target, io.TextIOBase) or "b" not in getattr(self.target, "mode", "b"):
            return self.target
        self.wrapper = io.TextIOWrapper(self.target, encoding="utf-8", newline="\n", write_through=True)
        return self.wrapper

    def __exit__(self, *exc: Any) -> None:
        if self.owned is not None:
            self.owned.close()
        if self.wrapper is not None:
            self.wrapper.flush()
            self.wrapper.detach()  # the caller's file stays open
