"""The MongoDB kernel, on pymongo's AsyncMongoClient.

This is the async source; `agentkeep/db/backends/mongo/_sync/kernel.py` is generated from it by
`scripts/unasync.py` (never edit the generated file).

One collection per table. A document holds every column of its row as a field of the
same name (absent when the value is None), and `_id` is the row's key: the key value itself,
or, for a composite key, the JSON text of its values. Values are stored so that MongoDB
compares and sorts them as agentkeep does: times as int64 epoch microseconds (BSON dates
keep milliseconds only), dates as ISO text, JSON columns as JSON text (user keys such as
"$set" or "a.b" and ints past int64 are safe there) except list columns named in a spec's
`multi`, which stay native arrays for their multikey index. Filters are built from the
specs' field names and typed values only (every comparison is `$eq`/`$in`/`$gt`..., never a
user value in operator position), so no user string can become an operator.
"""
# unasync: AsyncMongoClient -> MongoClient
# unasync: AsyncMongoKernel -> MongoKernel

from __future__ import annotations

import datetime as dt
import json
import re
from contextlib import nullcontext
from typing import Any
from urllib.parse import unquote

import bson
from pymongo import AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConfigurationError,
    DuplicateKeyError,
    InvalidURI,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from agentkeep.db.connection import CONNECT_TIMEOUT_S, connection_failed
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.tables import TableSpec, children

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
TTL_FIELD = "_ttl"  # a BSON-date copy of expires_at, for the server's TTL monitor
INT64 = 2**63
NAMESPACE_EXISTS = 48
DUPLICATE_KEY = 11000
AUTHENTICATION_FAILED = 18
# pymongo's defaults wait 30 s for a server to select and 20 s for a connection
CONNECT_OPTIONS = ("serverSelectionTimeoutMS", "connectTimeoutMS")
MAX_DOCUMENT = 16 * 1024 * 1024
_LITERALS = (str, int, float, bool)
_FORBIDDEN_NAME = re.compile(r"[$\x00]")


def _time(value: dt.datetime) -> int:
    d = value - EPOCH  # exact integer arithmetic: no float rounding of microseconds
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _int(value: Any) -> int:
    if not -INT64 <= value < INT64:
        raise InvalidInputError(f"integer {value} is outside the 64-bit range MongoDB stores")
    return value


ENCODE = {
    "int": _int,
    "float": float,
    "bool": bool,
    "time": _time,
    "date": lambda d: d.isoformat(),
    "json": _dumps,
}
DECODE = {
    "int": int,
    "float": float,  # a float that happens to be whole may come back as an int
    "bool": bool,
    "time": lambda n: EPOCH + dt.timedelta(microseconds=n),
    "date": dt.date.fromisoformat,
    "json": json.loads,
}


def _ttl_date(value: dt.datetime) -> dt.datetime:
    # BSON dates have milliseconds: round up, so the server never expires a record early
    extra = -value.microsecond % 1000
    return value + dt.timedelta(microseconds=extra) if value.year < 9999 else value


class _Layout:
    """How one table's rows map to documents and its conditions to filters."""

    def __init__(self, spec: TableSpec, ttl: bool) -> None:
        self.spec = spec
        self.name = spec.physical
        self.kinds = {c.name: c.kind for c in spec.columns}
        self.encoders = {
            c: None if c in spec.multi else ENCODE.get(kind) for c, kind in self.kinds.items()
        }
        self.decoders = {
            c: list if c in spec.multi else DECODE.get(kind) for c, kind in self.kinds.items()
        }
        self.single = spec.key[0] if len(spec.key) == 1 else None
        self.required = {c.name for c in spec.columns if not c.nullable} | set(spec.key)
        self.expires = spec.expires
        self.ttl = ttl and self.expires
        self.all_fields = {c: 1 for c in self.kinds} | {"_id": 0}

    # -- values ----------------------------------------------------------------------------

    def enc(self, field: str, value: Any) -> Any:
        if value is None:
            return None
        f = self.encoders[field]
        return value if f is None else f(value)

    def literal(self, field: str, value: Any) -> Any:
        """A filter value: encoded, and a plain scalar (never a document or an operator)."""
        out = self.enc(field, value)
        if out is not None and not isinstance(out, _LITERALS):
            raise InvalidInputError(f"{self.spec.name}.{field}: cannot compare with a {type(value).__name__}")
        return out

    def key_id(self, key: tuple) -> Any:
        if self.single is not None:
            return self.literal(self.single, key[0])
        return _dumps([self.literal(k, v) for k, v in zip(self.spec.key, key)])

    def doc(self, row: dict) -> dict:
        out = {"_id": self.key_id(self.spec.key_of(row))}
        for c in self.kinds:
            value = row.get(c)
            if value is not None:
                out[c] = self.enc(c, value)
        if self.expires and row.get("expires_at") is not None:
            out[TTL_FIELD] = _ttl_date(row["expires_at"])
        return out

    def dec(self, field: str, value: Any) -> Any:
        f = self.decoders[field]
        return value if value is None or f is None else f(value)

    def row(self, doc: dict, fields: Any = None) -> dict:
        return {c: self.dec(c, doc.get(c)) for c in fields or self.kinds}

    def replacement(self, doc: dict) -> dict:
        """An update making the stored document exactly `doc` (an upsert keeps `_id`)."""
        gone = {c: "" for c in (*self.kinds, *([TTL_FIELD] if self.expires else [])) if c not in doc}
        return {"$set": _body(doc), **({"$unset": gone} if gone else {})}

    def changes(self, set: dict | None, incr: dict | None = None) -> dict:
        """An update document: `$set` values, `$unset` Nones (absent = None), `$inc`."""
        sets, unsets = {}, {}
        for f, value in (set or {}).items():
            if value is None:
                unsets[f] = ""
            else:
                sets[f] = self.enc(f, value)
        if self.expires and "expires_at" in (set or {}):
            if set["expires_at"] is None:
                unsets[TTL_FIELD] = ""
            else:
                sets[TTL_FIELD] = _ttl_date(set["expires_at"])
        out: dict = {}
        if sets:
            out["$set"] = _sized(sets)
        if unsets:
            out["$unset"] = unsets
        if incr:
            out["$inc"] = {f: _int(n) for f, n in incr.items()}
        return out

    # -- filters -----------------------------------------------------------------------------

    def cond(self, c: Cond) -> tuple[str, dict]:
        """(field, operators) of one condition; a field name always comes from the spec."""
        field = c.field
        if field not in self.kinds:
            raise InvalidInputError(f"{self.spec.name} has no field {field!r}")
        if c.op == "in":
            return self.path(field), {"$in": [self.literal(field, v) for v in c.value]}
        if c.op == "icontains":
            # a literal pattern; MongoDB refuses a NUL byte in a pattern, PCRE reads \x00 as one
            pattern = re.escape(self.literal(field, c.value)).replace("\x00", "\\x00")
            return field, {"$regex": pattern, "$options": "i"}
        if c.op == "contains_all":
            values = [_element(v) if field in self.spec.multi else self.literal(field, v) for v in c.value]
            return field, {"$all": values} if values else {"$exists": True}
        return self.path(field), {f"${c.op}": self.literal(field, c.value)}

    def path(self, field: str) -> str:
        """A single key is `_id` itself (same value, same order): its index serves it."""
        return "_id" if field == self.single else field

    def order_paths(self, order: tuple[str, ...]) -> list[str]:
        """The fields to sort on: `_id` for the key alone, else the indexed fields (a spec
        index ends with the key field, not with `_id`)."""
        return ["_id"] if order == self.spec.key and self.single else list(order)

    def where(self, conds: tuple[Cond, ...], *, key: tuple | None = None, also: list = ()) -> dict:
        """The filter of `conds` (and of one key, and more (field, operators)), one entry per
        field where the operators do not collide."""
        parts = [self.cond(c) for c in conds] + list(also)
        if key is not None:
            parts.append(("_id", {"$eq": self.key_id(key)}))
        out: dict = {}
        more = []
        for field, ops in parts:
            have = out.setdefault(field, {})
            if have.keys() & ops.keys():
                more.append({field: ops})
            else:
                have.update(ops)
        if more:
            out["$and"] = more
        return out

    def ranges(self, order: tuple[str, ...], values: tuple, desc: bool) -> list[list[tuple[str, dict]]]:
        """Plain range filters (no `$or`, so each is one seek on the index that yields `order`)
        holding, one after the other, exactly the rows past the keyset position `values`:
        first the ties on the longest prefix, then ever shorter ones."""
        paths, out = self.order_paths(order), []
        for i in reversed(range(len(order))):
            prefix = [(p, {"$eq": self.literal(f, v)}) for p, f, v in zip(paths, order[:i], values[:i])]
            f = order[i]
            nullable = f not in self.required
            out += [prefix + [(paths[i], ops)] for ops in _beyond(self.literal(f, values[i]), desc, nullable)]
        return out


def _element(value: Any) -> Any:
    if not isinstance(value, _LITERALS):
        raise InvalidInputError(f"cannot compare a list element with a {type(value).__name__}")
    return value


def _beyond(v: Any, desc: bool, nullable: bool) -> list[dict]:
    """Operators for the values strictly past `v`, in order (None, an absent field, sorts lowest)."""
    if not desc:
        return [{"$exists": True}] if v is None else [{"$gt": v}]
    if v is None:
        return []
    return [{"$lt": v}, {"$eq": None}] if nullable else [{"$lt": v}]


def parse_url(db_url: Any) -> tuple[str, str | None]:
    """(the URL without credentials, for ids and reports; the database the URL names)."""
    if not isinstance(db_url, str) or not db_url.startswith(("mongodb://", "mongodb+srv://")):
        raise InvalidInputError(f"not a MongoDB URL: {db_url!r} (expected mongodb:// or mongodb+srv://)")
    scheme, rest = db_url.split("://", 1)
    hosts, _, path = rest.partition("/")
    hosts = hosts.split("?")[0].rsplit("@", 1)[-1]
    name = unquote(path.split("?")[0])
    return f"{scheme}://{hosts}", name or None


def with_timeouts(db_url: str, client_options: dict, seconds: float) -> dict:
    """`client_options` plus CONNECT_OPTIONS of `seconds`, each unless the caller or the URL
    sets it (options are case-insensitive, and a keyword would override the URL's)."""
    query = db_url.partition("?")[2]
    given = {k.lower() for k in client_options} | {p.split("=")[0].lower() for p in query.split("&")}
    ms = int(seconds * 1000)
    return {**{name: ms for name in CONNECT_OPTIONS if name.lower() not in given}, **client_options}


def check_db_name(name: Any) -> str:
    if not isinstance(name, str) or not 0 < len(name) < 64 or re.search(r'[/\\. "$*<>:|?\x00]', name):
        raise InvalidInputError(f"db_name must be 1..63 characters without /\\. \"$*<>:|? or NUL, got {name!r}")
    return name


class AsyncMongoKernel:
    # atomic_append: seq is `$inc` on the session in one find_one_and_update, then the run's insert
    capabilities = frozenset({"multi_process", "persistent", "atomic_append"})

    def __init__(self, db_url: str, db_name: str | None, *, ttl: bool = False,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **client_options: Any) -> None:
        self.location, url_db = parse_url(db_url)
        self.db_name = check_db_name(db_name if db_name is not None else url_db or "agentkeep")
        self.ttl = ttl
        if ttl:
            self.capabilities = self.capabilities | {"native_ttl"}
        options = with_timeouts(db_url, client_options, connect_timeout)
        try:
            self.client = AsyncMongoClient(db_url, appname="agentkeep", **options)
        except (InvalidURI, ValueError, TypeError) as exc:
            raise InvalidInputError(f"invalid MongoDB URL or option ({self.location}): {exc}") from exc
        except ConfigurationError as exc:  # a mongodb+srv:// name that does not resolve
            raise self.translate_error(exc) from exc
        self.db = self.client[self.db_name]
        self.t: dict[str, _Layout] = {}

    def setup(self, specs: dict[str, TableSpec]) -> None:
        for spec in specs.values():
            name = spec.physical
            if not isinstance(name, str) or not name or _FORBIDDEN_NAME.search(name) or name.startswith("system."):
                raise InvalidInputError(f"invalid collection name {name!r} (no '$' or NUL, not 'system.*')")
        # a record with children (a session's runs) is not left to the TTL monitor, which
        # would delete it without them: purge_expired takes both
        self.t = {name: _Layout(spec, self.ttl and not children(specs, name)) for name, spec in specs.items()}

    def default_id(self) -> str:
        return f"{self.location}/{self.db_name}"

    def describe(self) -> str:
        return f"MongoDB at {self.location} db {self.db_name}"

    def translate_error(self, exc: BaseException) -> DbError | None:
        """ConnectionFailedError when no server answered in time, a mongodb+srv:// name did
        not resolve, or the login was refused; else None."""
        if isinstance(exc, (ServerSelectionTimeoutError, ConfigurationError)) or (
            isinstance(exc, OperationFailure) and exc.code == AUTHENTICATION_FAILED
        ):
            # server selection's message goes on with the timeouts and the whole topology
            reason = re.split(r" \(configured timeouts|, Timeout: ", str(exc))[0]
            return connection_failed("MongoDB", self.location, exc, reason=reason)
        return None

    def _coll(self, table: str):
        return self.db[self.t[table].name]

    # -- schema: every step is idempotent, so concurrent migrations meet at the same end ------

    def schema_lock(self):
        return nullcontext()

    def transaction(self):
        # no multi-document transactions: each primitive is atomic on its own document, and
        # the domain's writes are built from compare-and-set steps that tolerate that
        return nullcontext()

    def indexes(self, table: str) -> list[tuple[tuple, dict]]:
        """(key fields, options) of every index `table` needs."""
        lay = self.t[table]
        spec = lay.spec
        out = []
        for idx in spec.indexes:
            if idx.sparse:  # most records never expire: index only those that do
                out.append((idx.fields, {"sparse": True}))
            elif idx.unique:
                out.append((idx.fields, {"unique": True}))
            else:  # ends with the key, so the index yields list order (which ends with it)
                out.append((idx.fields + tuple(k for k in spec.key if k not in idx.fields), {}))
        for field in spec.multi:  # multikey: "contains all" of a list field
            out.append(((field,), {}))
        if lay.ttl:
            out.append(((TTL_FIELD,), {"expireAfterSeconds": 0}))
        return out

    async def has_table(self, table: str) -> bool:
        name = self.t[table].name
        return name in await self.db.list_collection_names(filter={"name": name})

    async def plan_schema(self) -> list[Step]:
        existing = set(await self.db.list_collection_names())
        steps = []
        for table, lay in self.t.items():
            have: set[tuple] = set()
            if lay.name not in existing:
                steps.append(Step(f"create collection {lay.name}", "create_collection", table))
            else:
                have = {tuple(ix["key"]) for ix in await (await self._coll(table).list_indexes()).to_list(None)}
            for fields, options in self.indexes(table):
                if fields not in have:
                    what = ", ".join(fields) + "".join(f" {k}={v}" for k, v in options.items())
                    steps.append(Step(f"create index {lay.name}({what})", "add_index", table, (fields, options)))
        return steps

    async def apply_step(self, step: Step) -> None:
        if step.action == "create_collection":
            try:
                await self.db.create_collection(self.t[step.table].name, check_exists=False)
            except CollectionInvalid:
                pass
            except OperationFailure as exc:
                if exc.code != NAMESPACE_EXISTS:  # else another process made it first
                    raise
        elif step.action == "add_index":
            fields, options = step.detail
            await self._coll(step.table).create_index([(f, 1) for f in fields], **options)
        else:  # pragma: no cover - only the steps above are planned
            raise AssertionError(step)

    # -- the kernel primitives -------------------------------------------------------------

    async def get(self, table: str, key: tuple) -> dict | None:
        lay = self.t[table]
        doc = await self._coll(table).find_one(lay.where((), key=key), lay.all_fields)
        return None if doc is None else lay.row(doc)

    async def find(self, q: Query) -> list[dict]:
        lay = self.t[q.table]
        if q.after is None:
            return await self._find(lay, q, lay.where(q.where), q.limit, q.offset)
        out: list[dict] = []
        skip = q.offset
        for also in lay.ranges(q.order, q.after, q.desc):
            need = None if q.limit is None else q.limit - len(out)
            if need == 0:
                break
            query = lay.where(q.where, also=also)
            got = await self._find(lay, q, query, need, skip)
            if skip:  # a range that returned rows held more than `skip`; else count what it held
                skip = 0 if got else skip - await self._coll(q.table).count_documents(query, limit=skip)
            out += got
        return out

    async def _find(self, lay: _Layout, q: Query, query: dict, limit: int | None, skip: int = 0) -> list[dict]:
        projection = {f: 1 for f in q.fields} | {"_id": 0} if q.fields else lay.all_fields
        sort = [(p, -1 if q.desc else 1) for p in lay.order_paths(q.order)] or None
        cursor = self._coll(q.table).find(query, projection, sort=sort, limit=limit or 0, skip=skip)
        return [lay.row(doc, q.fields) for doc in await cursor.to_list(None)]

    async def count(self, table: str, where: tuple[Cond, ...]) -> int:
        return await self._coll(table).count_documents(self.t[table].where(where))

    async def insert(self, table: str, row: dict) -> None:
        try:
            await self._coll(table).insert_one(_sized(self.t[table].doc(row)))
        except DuplicateKeyError:
            raise DuplicateKey(table) from None

    async def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        lay = self.t[table]
        docs = list({d["_id"]: d for d in (_sized(lay.doc(r)) for r in rows)}.values())
        if not docs:
            return 0
        coll, pending, written, attempt = self._coll(table), docs, 0, 0
        while True:
            if replace:  # every column set or unset: the stored document becomes exactly the row
                ops = [UpdateOne({"_id": d["_id"]}, lay.replacement(d), upsert=True) for d in pending]
            else:
                ops = [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": _body(d)}, upsert=True) for d in pending]
            try:
                result = await coll.bulk_write(ops, ordered=False)
                return len(docs) if replace else written + result.upserted_count
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                pending = [pending[e["index"]] for e in errors]
                ids = [d["_id"] for d in pending]
                # two upserts of one new _id can race to insert it; then the loser's document
                # exists now, and its op is run again (replace) or was not needed (keep)
                if (attempt == 2 or not errors or any(e.get("code") != DUPLICATE_KEY for e in errors)
                        or await coll.count_documents({"_id": {"$in": ids}}) != len(ids)):
                    raise
                written += exc.details.get("nUpserted", 0)
                if not replace:
                    return written
                attempt += 1

    async def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
                     where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        lay = self.t[table]
        query = lay.where(where, key=key)
        changes = lay.changes(set, incr)
        projection = {f: 1 for f in returning} | {"_id": 0} if returning else {"_id": 1}
        coll = self._coll(table)
        if not changes:
            doc = await coll.find_one(query, projection)
        else:
            doc = await coll.find_one_and_update(query, changes, projection=projection,
                                                 return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        return lay.row(doc, returning) if returning else {}

    async def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        return (await self._coll(table).delete_many(self.t[table].where(where))).deleted_count

    async def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        lay = self.t[table]
        pipeline: list[dict] = [{"$match": lay.where(where)}]
        if field in lay.spec.multi:
            pipeline.append({"$unwind": f"${field}"})
        pipeline.append({"$group": {"_id": f"${field}"}})
        docs = await (await self._coll(table).aggregate(pipeline)).to_list(None)
        if field in lay.spec.multi:  # the elements of the lists
            return [d["_id"] for d in docs if d["_id"] is not None]
        return [lay.dec(field, d["_id"]) for d in docs if d["_id"] is not None]

    async def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...],
                          limit: int) -> list[tuple]:
        lay = self.t[table]
        pipeline = [
            {"$match": lay.where(where)},
            {"$group": {"_id": f"${by}", "n": {"$sum": 1}, "last": {"$max": f"${max_field}"}}},
            {"$sort": {"_id": 1}},
            {"$limit": limit},
        ]
        docs = await (await self._coll(table).aggregate(pipeline)).to_list(None)
        return [(lay.dec(by, d["_id"]), d["n"], lay.dec(max_field, d["last"])) for d in docs]

    async def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str,
                     set: dict, where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Bump the parent's counter (one atomic `$inc` that returns the new value), then
        insert the child with it. A taken child key is checked first, so a duplicate leaves
        the parent unchanged; only two appends of one new key racing each other can use up a
        number, and numbers stay strictly increasing either way."""
        lay, coll = self.t[child], self._coll(child)
        if await coll.find_one(lay.where((), key=lay.spec.key_of(row)), {"_id": 1}) is not None:
            raise DuplicateKey(child)
        doc = _sized(lay.doc({**row, seq: 0}))  # refuse an oversized run before counting it
        p = self.t[parent]
        changes = p.changes(set)
        changes["$inc"] = {counter: 1}
        got = await self._coll(parent).find_one_and_update(
            p.where(where, key=key), changes,
            projection={f: 1 for f in (counter, *inherit)} | {"_id": 0}, return_document=ReturnDocument.AFTER,
        )
        if got is None:
            return None
        back = p.row(got, (counter, *inherit))
        out = {seq: back[counter], **{f: back[f] for f in inherit}}
        for f, value in out.items():
            if value is None:
                doc.pop(f, None)
            else:
                doc[f] = lay.enc(f, value)
        try:
            await coll.insert_one(doc)
        except DuplicateKeyError:
            raise DuplicateKey(child) from None
        return out

    async def close(self) -> None:
        await self.client.close()


def _body(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_id"}


def _sized(doc: dict) -> dict:
    """`doc`, if it fits a MongoDB document. JSON text escapes control characters (up to 6
    bytes each), so a record within the 4 MiB payload limit can still pass 16 MiB."""
    chars = sum(len(v) for v in doc.values() if isinstance(v, str))
    if chars * 4 + 65_536 > MAX_DOCUMENT and len(bson.encode(doc)) > MAX_DOCUMENT:
        raise InvalidInputError(_TOO_LARGE)
    return doc


_TOO_LARGE = ("the record is larger than MongoDB's 16 MiB document limit once stored "
              "(JSON text escapes control characters)")
