"""DynamoDb: agentkeep on Amazon DynamoDB (boto3's low-level client), one DynamoDB table per
agentkeep table. The layout and its reasons are in docs/dynamodb.md; in short:

- Items: partition key `pk` = the encoded record key; one attribute per column (times as
  epoch microseconds, JSON columns as JSON text, None as an absent attribute).
- Every spec index is a GSI: partition = its equality fields, encoded (a constant when it has
  none), sort = an order-preserving string of its order field and the record key, so a list
  page is one Query read in order that stops at the limit. `by_key` (KEYS_ONLY, one
  partition) walks a table in key order for exports and key ranges.
- List-valued columns (`multi`, memory topics) get a side table of marker items with GSIs by
  (value, user) and (user, value).
- Items past ~350 KB move their largest JSON/text columns into chunk items, written before
  the item that points at them and deleted after it stops doing so.
- Every write carries a fresh token `_w`; a read-modify-write puts on condition that the
  token is unchanged. User text only ever travels as an expression attribute value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import itertools
import json
import math
import random
import re
import struct
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from agentkeep.db import options
from agentkeep.db._sync.domain import TTL_TABLES, Db
from agentkeep.db.connection import CONNECT_TIMEOUT_S, cloud_unreachable, connection_failed
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _json
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.messages import shorten
from agentkeep.db.query import Cond, Query, matches_all, row_key, sort_key
from agentkeep.db.rowstore import apply_update
from agentkeep.db.tables import TableSpec

PK = "pk"  # the item's partition key: the encoded record key
TOKEN = "_w"  # a fresh value on every write (read-modify-write compares it)
TTL = "_ttl"  # epoch seconds of expires_at: DynamoDB's native TTL attribute
CHUNKS = "_ch"  # "<generation>:<count>" when some columns live in chunk items
MOVED = "_mv"  # string set: the columns kept in the chunk items
LOWER = "_lc_"  # + text column: its lower-cased copy, when it differs (icontains)
TAGS = "_ts_"  # + multi column: its values as a string set (for marker clean-up conditions)
CHUNK_DATA = "_d"
ALL = "_"  # the partition of a GSI without equality fields

ITEM_BUDGET = 350_000  # bytes; DynamoDB's item limit is 400 KB, GSI keys included
CHUNK_BYTES = 350_000
MAX_PART_BYTES = 2048  # DynamoDB key limits
MAX_SORT_BYTES = 1024
RETRIES = 200
ORDERED_KINDS = ("time", "date", "int", "float")
MOVABLE_KINDS = ("json", "text")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO_OFFSET = 62_135_596_800_000_000  # microseconds from 0001-01-01 to the epoch
_NINES = str.maketrans("0123456789", "9876543210")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
# group_count(by) walks the distinct values of `by` in order. DynamoDB can enumerate a GSI's
# partition values only with a Scan, so the fields the domain groups by (memory_stats) get a
# one-partition GSI sorted by the field.
GROUPED = {"memories": ("user_id",)}


# -- value codecs ----------------------------------------------------------------------------


def _micros(value: dt.datetime) -> int:
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def _float_av(value: float) -> dict:
    # DynamoDB numbers hold 38 digits between 1e-130 and 1e126 and have no -0.0: text otherwise
    if (value == 0 and math.copysign(1.0, value) > 0) or 1e-130 <= abs(value) < 1e125:
        return {"N": repr(value)}
    return {"S": repr(value)}


def encode_value(kind: str, value: Any) -> dict:
    """A column value as a DynamoDB attribute value (never None: None is an absent attribute)."""
    if kind in ("str", "text"):
        return {"S": value}
    if kind == "time":
        return {"N": str(_micros(value))}
    if kind == "int":
        return {"N": str(value)} if len(str(abs(value))) <= 38 else {"S": str(value)}
    if kind == "float":
        return _float_av(float(value))
    if kind == "bool":
        return {"BOOL": bool(value)}
    if kind == "date":
        return {"S": value.isoformat()}
    return {"S": _json(value)}


def decode_value(kind: str, av: dict) -> Any:
    if kind in ("str", "text"):
        return av["S"]
    if kind == "time":
        return EPOCH + dt.timedelta(microseconds=int(av["N"]))
    if kind == "int":
        return int(av.get("N") or av.get("S"))
    if kind == "float":
        return float(av.get("N") or av.get("S"))
    if kind == "bool":
        return av["BOOL"]
    if kind == "date":
        return dt.date.fromisoformat(av["S"])
    return json.loads(av["S"])


def component(kind: str, value: Any, last: bool = True) -> str:
    """An order-preserving string for one key component: None sorts lowest ("0"), values
    after ("1" + body). Bodies are fixed-width or self-delimiting, so concatenations of
    components compare like tuples, and no encoded component is a prefix of another; a
    string that is not the last component ends in \\x01\\x01, with \\x00 and \\x01 escaped
    below every other character."""
    if value is None:
        return "0"
    if kind == "time":
        body = f"{_micros(value) + MICRO_OFFSET:018d}"
    elif kind == "date":
        body = value.isoformat()
    elif kind == "int":
        digits = str(abs(value))
        body = f"p{len(digits):03d}{digits}" if value >= 0 else f"n{999 - len(digits):03d}{digits.translate(_NINES)}"
    elif kind == "float":
        bits = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
        bits ^= 0xFFFFFFFFFFFFFFFF if bits >> 63 else 1 << 63
        body = f"{bits:016x}"
    elif kind == "bool":
        body = "1" if value else "0"
    else:
        text = value if isinstance(value, str) else _json(value)
        body = text.replace("\x01", "\x01\x03").replace("\x00", "\x01\x02") + ("" if last else "\x01\x01")
    return "1" + body


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _clip(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` UTF-8 bytes of `text` (cut at a character boundary), and whether it was cut."""
    if _utf8_len(text) <= limit:
        return text, False
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore"), True


def _av_size(av: dict) -> int:
    (kind, value), = av.items()
    if kind == "S":
        return _utf8_len(value)
    if kind in ("N", "B"):
        return len(value)
    if kind == "SS":
        return sum(_utf8_len(v) for v in value)
    return 1


def _item_size(item: dict) -> int:
    return sum(len(k) + _av_size(v) for k, v in item.items())


# -- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gsi:
    name: str
    part: tuple[str, ...]  # equality fields: the partition value
    sort: tuple[str, ...]  # order field (if any), then the key fields not in the index
    kinds: dict
    sparse: bool = False  # only items whose first sort field is set
    projection: str = "ALL"  # or "KEYS_ONLY", "INCLUDE"
    include: tuple[str, ...] = ()
    role: str = "index"  # "index" (a spec index), "key" (by_key), "group" (group_count)

    @property
    def part_attr(self) -> str:
        return f"_{self.name}_p"

    @property
    def sort_attr(self) -> str:
        return f"_{self.name}_s"

    def part_value(self, values: Iterable[Any]) -> str:
        values = list(values)
        if not self.part:
            return ALL
        text = "".join(component(self.kinds[f], v, i == len(values) - 1) for i, (f, v) in enumerate(zip(self.part, values)))
        if _utf8_len(text) > MAX_PART_BYTES:  # equality only: a digest is as good (rows are re-checked)
            return "h" + hashlib.sha256(text.encode()).hexdigest()
        return text

    def sort_value(self, values: Iterable[Any]) -> tuple[str, bool]:
        """The encoding of the first len(values) sort components, and whether it had to be cut
        to DynamoDB's 1024 bytes (ids past ~1000 UTF-8 bytes: rows are re-checked, see docs)."""
        values = list(values)
        n = len(self.sort)
        text = "".join(component(self.kinds[f], v, i == n - 1) for i, (f, v) in enumerate(zip(self.sort, values)))
        return _clip(text, MAX_SORT_BYTES)

    def attrs(self, row: dict) -> dict:
        """This index's key attributes for a full row ({} when a sparse index skips it)."""
        if self.sparse and row.get(self.sort[0]) is None:
            return {}
        out = {self.part_attr: {"S": self.part_value(row.get(f) for f in self.part)}}
        if self.sort:
            out[self.sort_attr] = {"S": self.sort_value(row.get(f) for f in self.sort)[0]}
        return out

    def schema(self) -> dict:
        keys = [{"AttributeName": self.part_attr, "KeyType": "HASH"}]
        if self.sort:
            keys.append({"AttributeName": self.sort_attr, "KeyType": "RANGE"})
        projection = {"ProjectionType": self.projection}
        if self.include:
            projection["NonKeyAttributes"] = list(self.include)
        return {"IndexName": self.name, "KeySchema": keys, "Projection": projection}


@dataclass
class Side:
    """Marker items of one `multi` column: pk = the record's pk, sk = "t" + value,
    u = the owner (encoded). GSIs: by_value (sk, u) and by_user (u, sk), both KEYS_ONLY."""

    name: str
    field: str

    def schema(self) -> dict:
        attrs = [{"AttributeName": a, "AttributeType": "S"} for a in (PK, "sk", "u")]
        gsis = [
            {"IndexName": "by_value", "KeySchema": [{"AttributeName": "sk", "KeyType": "HASH"},
                                                    {"AttributeName": "u", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
            {"IndexName": "by_user", "KeySchema": [{"AttributeName": "u", "KeyType": "HASH"},
                                                   {"AttributeName": "sk", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
        ]
        return {"TableName": self.name, "AttributeDefinitions": attrs, "GlobalSecondaryIndexes": gsis,
                "KeySchema": [{"AttributeName": PK, "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]}


class Table:
    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.name = spec.physical
        self.kinds = {c.name: c.kind for c in spec.columns}
        key_kinds = {k: self.kinds[k] for k in spec.key}
        self.gsis: list[Gsi] = [Gsi("by_key", (), spec.key, key_kinds, projection="KEYS_ONLY", role="key")]
        for idx in spec.indexes:
            fields = idx.fields
            rest = tuple(k for k in spec.key if k not in fields)
            if self.kinds[fields[-1]] in ORDERED_KINDS:
                part, sort = fields[:-1], fields[-1:] + (() if idx.unique else rest)
            else:
                part, sort = fields, rest
            self.gsis.append(Gsi("by_" + "_".join(fields), part, sort, {f: self.kinds[f] for f in part + sort},
                                 sparse=idx.sparse))
        for f in GROUPED.get(spec.name, ()):
            self.gsis.append(Gsi(f"group_{f}", (), (f,), {f: self.kinds[f]}, projection="INCLUDE", include=(f,),
                                 role="group"))
        self.sides = {f: Side(f"{self.name}_{f}", f) for f in spec.multi}
        indexed = {f for g in self.gsis for f in g.part + g.sort}
        self.movable = tuple(c.name for c in spec.columns
                             if c.kind in MOVABLE_KINDS and c.name not in indexed and c.name not in spec.key)
        self.text = tuple(c.name for c in spec.columns if c.kind == "text")
        self.ttl = "expires_at" in self.kinds
        self.ttl_parent: tuple[str, str] | None = None  # (parent table, fk): children expire with it
        self.ttl_children: list[tuple[str, str]] = []

    def pk(self, key: tuple) -> str:
        n = len(self.spec.key)
        return "".join(component(self.kinds[k], v, i == n - 1)[1:] for i, (k, v) in enumerate(zip(self.spec.key, key)))

    def pk_of(self, row: dict) -> str:
        return self.pk(self.spec.key_of(row))

    def schema(self) -> dict:
        attrs = {PK: "S"}
        for g in self.gsis:
            attrs[g.part_attr] = "S"
            if g.sort:
                attrs[g.sort_attr] = "S"
        return {
            "TableName": self.name,
            "KeySchema": [{"AttributeName": PK, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": k} for a, k in sorted(attrs.items())],
            "GlobalSecondaryIndexes": [g.schema() for g in self.gsis],
        }


class _Expr:
    """Expression placeholders: attribute names as #n<i>, values as :v<i>."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict] = {}

    def n(self, attr: str) -> str:
        if attr not in self.names:
            self.names[attr] = f"#n{len(self.names)}"
        return self.names[attr]

    def v(self, av: dict) -> str:
        ph = f":v{len(self.values)}"
        self.values[ph] = av
        return ph

    def kwargs(self) -> dict:
        out: dict = {}
        if self.names:
            out["ExpressionAttributeNames"] = {ph: a for a, ph in self.names.items()}
        if self.values:
            out["ExpressionAttributeValues"] = dict(self.values)
        return out


@dataclass
class _Plan:
    kind: str  # "keys", "markers", "index", "scan"
    keys: list | None = None
    gsi: Gsi | None = None
    parts: list[str] | None = None
    served: bool = False
    key_cond: tuple | None = None  # (lo, lo_inclusive, hi, hi_inclusive); None bounds are open
    empty: bool = False


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 10))))


# -- the kernel --------------------------------------------------------------------------------


class DynamoKernel:
    capabilities = frozenset({"multi_process", "persistent", "native_ttl"})
    atomic_append = True
    atomic_claim = False  # the domain's compare-and-set on `revision` claims safely

    def __init__(self, client: Any, *, region: str | None, endpoint_url: str | None, prefix: str) -> None:
        self.client = client
        self.region = region
        self.endpoint_url = endpoint_url
        self.prefix = prefix
        self.t: dict[str, Table] = {}
        self._ready: set[str] = set()
        self._lock = threading.RLock()
        self._stripes = [threading.Lock() for _ in range(64)]  # appends to one parent take turns
        self._parents: dict[tuple, dict] = {}  # parent items as this process's appends left them
        self._cache_lock = threading.Lock()

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.t = {name: Table(spec) for name, spec in specs.items()}
        for t in self.t.values():
            for name in (t.name, *(s.name for s in t.sides.values())):
                if not _TABLE_NAME.match(name):
                    raise InvalidInputError(f"{name!r} is not a valid DynamoDB table name ([A-Za-z0-9_.-], 3-255)")
        for parent, child, fk in TTL_TABLES:
            if child and parent in self.t and child in self.t:
                self.t[child].ttl_parent = (parent, fk)
                self.t[parent].ttl_children.append((child, fk))

    def default_id(self) -> str:
        where = self.endpoint_url or f"aws:{self.region or 'default'}"
        return f"dynamodb:{where}/{self.prefix}"

    def translate_error(self, exc: BaseException) -> DbError | None:
        if cloud_unreachable(exc):
            return connection_failed("DynamoDB", self.endpoint_url or f"region {self.region}", exc)
        return None

    def describe(self) -> str:
        return f"DynamoDB at {self.endpoint_url or self.region or 'the default region'}, tables {self.prefix}*"

    def close(self) -> None:
        self.client.close()

    def transaction(self):
        # DynamoDB has no interactive transactions: every primitive is atomic on its own
        return nullcontext()

    def schema_lock(self):
        # each schema step is idempotent and tolerates another process doing it first
        return self._lock

    # -- schema ------------------------------------------------------------------------------

    def _describe(self, name: str) -> dict | None:
        try:
            return self.client.describe_table(TableName=name)["Table"]
        except self.client.exceptions.ResourceNotFoundException:
            return None

    def _physical(self) -> list[tuple[str, dict, Table]]:
        """(name, create_table arguments, owning table) of every DynamoDB table."""
        out = []
        for t in self.t.values():
            out.append((t.name, t.schema(), t))
            out += [(s.name, s.schema(), t) for s in t.sides.values()]
        return out

    def has_table(self, table: str) -> bool:
        name = self.t[table].name
        if name in self._ready:
            return True
        desc = self._describe(name)
        return desc is not None and desc["TableStatus"] in ("ACTIVE", "UPDATING")

    def _table_names(self) -> set[str]:
        names: set[str] = set()
        for page in self.client.get_paginator("list_tables").paginate():
            names.update(page["TableNames"])
        return names

    def plan_schema(self) -> list[Step]:
        steps = []
        listed = self._table_names()
        for name, schema, t in self._physical():
            desc = self._describe(name) if name in listed else None
            if desc is None:
                steps.append(Step(f"create table {name}", "create_table", name, schema))
            else:
                have = {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])}
                for gsi in schema["GlobalSecondaryIndexes"]:
                    if gsi["IndexName"] not in have:
                        steps.append(Step(f"create index {gsi['IndexName']} on {name}", "add_index", name, (schema, gsi)))
            if t.ttl and name == t.name:
                status = None
                if desc is not None:
                    status = self.client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
                if status is None or status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                    steps.append(Step(f"enable TTL on {name}.{TTL}", "enable_ttl", name))
        return steps

    def apply_step(self, step: Step) -> None:
        c = self.client
        if step.action == "create_table":
            try:
                desc = c.create_table(BillingMode="PAY_PER_REQUEST", **step.detail)["TableDescription"]
                if self._active(desc):
                    self._ready.add(step.table)
                    return
            except c.exceptions.ResourceInUseException:
                pass  # another process created it: the same end
            self._wait(step.table)
        elif step.action == "add_index":
            schema, gsi = step.detail
            self._wait(step.table)
            used = {k["AttributeName"] for k in gsi["KeySchema"]}
            attrs = [a for a in schema["AttributeDefinitions"] if a["AttributeName"] in used]
            try:
                c.update_table(TableName=step.table, AttributeDefinitions=attrs,
                               GlobalSecondaryIndexUpdates=[{"Create": gsi}])
            except Exception as exc:  # an index another process is adding, or added
                if _code(exc) not in ("ResourceInUseException", "ValidationException", "LimitExceededException"):
                    raise
                desc = self._describe(step.table) or {}
                if gsi["IndexName"] not in {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])}:
                    raise
            self._ready.discard(step.table)
            self._wait(step.table)
            table = next((t for t in self.t.values() if t.name == step.table), None)
            index = table and next((g for g in table.gsis if g.name == gsi["IndexName"]), None)
            if index is not None:
                self._backfill(table, index)
        elif step.action == "enable_ttl":
            if step.table not in self._ready:
                self._wait(step.table)
            try:
                c.update_time_to_live(TableName=step.table,
                                      TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL})
            except Exception as exc:  # already enabled (by another process)
                if _code(exc) != "ValidationException":
                    raise
        else:  # pragma: no cover - no other steps are planned
            raise AssertionError(step)

    def _backfill(self, t: Table, g: Gsi) -> None:
        """Give the items written before an index existed its key attributes (DynamoDB indexes
        an item once it has them). Items written meanwhile carry them already."""
        fields = list(dict.fromkeys((*t.spec.key, *g.part, *g.sort)))
        e = _Expr()
        projection = [PK, TOKEN, *fields]
        for item in self._scan(t, [f"attribute_not_exists({e.n(g.part_attr)})"], e, projection):
            attrs = g.attrs(self._decode(t, item, fields))
            if not attrs:
                continue
            u = _Expr()
            sets = ", ".join(f"{u.n(a)} = {u.v(av)}" for a, av in attrs.items())
            try:
                self.client.update_item(TableName=t.name, Key={PK: item[PK]}, UpdateExpression="SET " + sets,
                                        ConditionExpression=f"{u.n(TOKEN)} = {u.v(item[TOKEN])}", **u.kwargs())
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # written (so indexed by its writer) or deleted meanwhile

    @staticmethod
    def _active(desc: dict) -> bool:
        return desc.get("TableStatus") == "ACTIVE" and all(
            g.get("IndexStatus", "ACTIVE") == "ACTIVE" for g in desc.get("GlobalSecondaryIndexes", []))

    def _wait(self, name: str, timeout: float = 900.0) -> None:
        """Until the table and its indexes are ACTIVE (index back-fills take minutes on AWS)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            desc = self._describe(name)
            if desc is not None and self._active(desc):
                self._ready.add(name)
                return
            if time.monotonic() > deadline:
                raise DbError(f"DynamoDB table {name} did not become ACTIVE in {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- items ---------------------------------------------------------------------------------

    def _item(self, t: Table, row: dict, keep: dict | None = None) -> tuple[dict, list[dict]]:
        """The item for a full row, and the chunk items it points at (written first)."""
        pk = t.pk_of(row)
        item: dict = {PK: {"S": pk}}
        for name, kind in t.kinds.items():
            value = row.get(name)
            if value is None:
                continue
            item[name] = encode_value(kind, value)
            if kind == "text" and (low := value.lower()) != value:
                item[LOWER + name] = {"S": low}
        for f in t.spec.multi:
            values = row.get(f) or []
            if values:
                item[TAGS + f] = {"SS": sorted({"t" + v for v in values})}
        for g in t.gsis:
            item.update(g.attrs(row))
        if t.ttl:
            if row.get("expires_at") is not None:
                item[TTL] = {"N": str(-(-_micros(row["expires_at"]) // 1_000_000))}
        elif keep and TTL in keep:  # a child expires with its parent
            item[TTL] = keep[TTL]
        item[TOKEN] = {"S": uuid.uuid4().hex[:16]}
        size = _item_size(item)
        if size <= ITEM_BUDGET:
            return item, []
        moved = {}
        for name in sorted((n for n in t.movable if n in item), key=lambda n: -_av_size(item[n])):
            size -= len(name) + _av_size(item.pop(name))
            if LOWER + name in item:
                size -= len(LOWER + name) + _av_size(item.pop(LOWER + name))
            moved[name] = row[name]
            if size <= ITEM_BUDGET - 200:
                break
        if size > ITEM_BUDGET - 200:
            raise InvalidInputError(f"{t.spec.name} record {shorten(repr(pk), 80)}: its indexed and list fields exceed "
                                    f"DynamoDB's 400 KB item limit")
        blob = _json(moved).encode("utf-8")
        gen = uuid.uuid4().hex[:12]
        pieces = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
        item[CHUNKS] = {"S": f"{gen}:{len(pieces)}"}
        item[MOVED] = {"SS": sorted(moved)}
        chunks = [{PK: {"S": self._chunk_pk(pk, gen, i)}, CHUNK_DATA: {"B": p}} for i, p in enumerate(pieces)]
        return item, chunks

    @staticmethod
    def _chunk_pk(pk: str, gen: str, i: int) -> str:
        # "\x01\x04" never occurs in a record's pk (its escapes are \x01 + \x01..\x03)
        return f"{pk}\x01\x04{gen}:{i}"

    def _chunk_keys(self, item: dict) -> list[dict]:
        if CHUNKS not in item:
            return []
        gen, n = item[CHUNKS]["S"].split(":")
        return [{PK: {"S": self._chunk_pk(item[PK]["S"], gen, i)}} for i in range(int(n))]

    def _decode(self, t: Table, item: dict, fields: Iterable[str] | None = None) -> dict:
        names = t.kinds if fields is None else fields
        return {f: (None if (av := item.get(f)) is None else decode_value(t.kinds[f], av)) for f in names}

    def _load(self, t: Table, item: dict, fields: Iterable[str] | None = None) -> dict | None:
        """The row of an item, its chunks read back; None when they were replaced meanwhile."""
        row = self._decode(t, item, fields)
        moved = set(item.get(MOVED, {}).get("SS", ()))
        if moved and (fields is None or moved & set(fields)):
            keys = self._chunk_keys(item)
            got = {i[PK]["S"]: i for i in self._batch_get(t.name, keys, None)}
            if len(got) != len(keys):
                return None
            blob = b"".join(bytes(got[k[PK]["S"]][CHUNK_DATA]["B"]) for k in keys)
            for name, value in json.loads(blob).items():
                if fields is None or name in row:
                    row[name] = value
        return row

    def _read(self, t: Table, key: tuple) -> tuple[dict | None, dict | None]:
        """(item, full row) by key, consistently; (None, None) when there is none."""
        for attempt in range(RETRIES):
            item = self.client.get_item(TableName=t.name, Key={PK: {"S": t.pk(key)}}, ConsistentRead=True).get("Item")
            if item is None:
                return None, None
            row = self._load(t, item)
            if row is not None:
                return item, row
            _backoff(attempt)  # rewritten while we read its chunks: read again
        raise DbError(f"{t.spec.name} {key!r}: rewritten too often to be read")

    def _write_items(self, name: str, puts: list[dict] = (), deletes: list[dict] = ()) -> None:
        requests = [{"PutRequest": {"Item": i}} for i in puts] + [{"DeleteRequest": {"Key": k}} for k in deletes]
        for i in range(0, len(requests), 25):
            pending = {name: requests[i : i + 25]}
            attempt = 0
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                if pending:
                    _backoff(attempt)
                    attempt += 1

    def _batch_get(self, name: str, keys: list[dict], projection: Iterable[str] | None) -> list[dict]:
        """Items by key (consistent reads), in no particular order; missing ones left out."""
        out: list[dict] = []
        unique = list({k[PK]["S"]: k for k in keys}.values())
        for i in range(0, len(unique), 100):
            request: dict = {"Keys": unique[i : i + 100], "ConsistentRead": True}
            if projection is not None:
                e = _Expr()
                request["ProjectionExpression"] = ", ".join(e.n(a) for a in projection)
                request.update({k: v for k, v in e.kwargs().items() if k == "ExpressionAttributeNames"})
            pending = {name: request}
            attempt = 0
            while pending:
                resp = self.client.batch_get_item(RequestItems=pending)
                out += resp["Responses"].get(name, [])
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    _backoff(attempt)
                    attempt += 1
        return out

    # -- conditions ----------------------------------------------------------------------------

    def _cond(self, t: Table, c: Cond, e: _Expr, write: bool = False) -> str | None:
        """A condition as expression text, or None when the kernel checks it itself (a filter
        lets more through, never less). `write`: for a write's condition, which must be exact."""
        kind = t.kinds[c.field]
        values = [x for x in c.value if x is not None] if c.op == "in" else []
        if (c.op in ("lt", "lte", "gt", "gte") and c.value is None) or (c.op == "in" and len(values) > 50) or \
                c.op == "contains_all" or (c.op == "icontains" and kind not in ("str", "text")) or \
                (write and c.field in t.movable):
            return None
        n = e.n(c.field)
        if c.op == "eq":
            expr = f"attribute_not_exists({n})" if c.value is None else f"{n} = {e.v(encode_value(kind, c.value))}"
        elif c.op == "in":
            parts = [f"{n} IN ({', '.join(e.v(encode_value(kind, x)) for x in values)})"] if values else []
            if len(values) < len(c.value):
                parts.append(f"attribute_not_exists({n})")
            # an empty list matches nothing: every record has a token
            expr = "(" + " OR ".join(parts) + ")" if parts else f"attribute_not_exists({e.n(TOKEN)})"
        elif c.op == "icontains":
            low, needle = e.n(LOWER + c.field), e.v({"S": c.value.lower()})
            expr = f"(contains({low}, {needle}) OR (attribute_not_exists({low}) AND contains({n}, {needle})))"
        else:
            op = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[c.op]
            expr = f"{n} {op} {e.v(encode_value(kind, c.value))}"
        if c.field in t.movable:  # the column may live in chunks: let the item through, re-checked
            expr = f"({expr} OR contains({e.n(MOVED)}, {e.v({'S': c.field})}))"
        return expr

    def _conds(self, t: Table, where: Iterable[Cond], e: _Expr, skip: Iterable[str] = (),
               write: bool = False) -> list[str]:
        skip = set(skip)
        return [x for c in where if c.field not in skip and (x := self._cond(t, c, e, write)) is not None]

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, t: Table, where: tuple[Cond, ...], order: tuple[str, ...], desc: bool,
              after: tuple | None) -> _Plan:
        spec = t.spec
        eqs: dict[str, list] = {}
        ranges: dict[str, list] = {}
        for c in where:
            if c.op == "eq" and c.field not in eqs:
                eqs[c.field] = [c.value]
            elif c.op == "in" and c.field not in eqs:
                eqs[c.field] = list(dict.fromkeys(c.value))
            elif c.op in ("lt", "lte", "gt", "gte") and c.value is not None:
                ranges.setdefault(c.field, []).append((c.op, c.value))
        if all(k in eqs for k in spec.key):
            combos = itertools.product(*(eqs[k] for k in spec.key))
            return _Plan("keys", keys=[k for k in combos if None not in k])
        for c in where:
            if c.op == "contains_all" and c.field in t.sides:
                return _Plan("markers")
        single = {f for f, vals in eqs.items() if len(vals) == 1}
        free_order = [f for f in order if f not in single]
        best, best_score = None, None
        for g in t.gsis:
            if g.role == "group" or any(f not in eqs for f in g.part):
                continue
            head = g.sort[0] if g.sort else None
            head_bound = head is not None and (head in ranges or head in single)
            if g.sparse and not (head in ranges or (head in single and eqs[head][0] is not None)):
                continue
            combos = math.prod(len(eqs[f]) for f in g.part)
            if combos > 1000:
                continue
            free_sort = [f for f in g.sort if f not in single]
            served = free_order == free_sort[: len(free_order)]
            constrained = bool(g.part) or head_bound
            if not constrained and not (served and order):
                continue
            rank = 3 if served and constrained else 2 if constrained else 1
            score = (rank, len(g.part) + head_bound, g.projection == "ALL")
            if best_score is None or score > best_score:
                best, best_score = g, score
        if best is None:
            return _Plan("scan")
        parts = [best.part_value(vals) for vals in itertools.product(*(eqs[f] for f in best.part))]
        plan = _Plan("index", gsi=best, parts=parts, served=best_score[0] in (1, 3))
        plan.key_cond = self._key_cond(best, eqs, single, ranges, order, desc, after if plan.served else None)
        if plan.key_cond is not None:
            lo, lo_inc, hi, hi_inc = plan.key_cond
            if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_inc and hi_inc))):
                plan.empty = True
        return plan

    @staticmethod
    def _key_cond(g: Gsi, eqs: dict, single: set, ranges: dict, order: tuple, desc: bool,
                  after: tuple | None) -> tuple | None:
        """Bounds on the GSI's sort key. Each bound is exact or looser than the conditions
        (rows are re-checked), never tighter. Every encoded component starts with "0" or "1",
        so prefix + "2" is above every sort value that starts with prefix."""
        if not g.sort:
            return None
        n = len(g.sort)
        lo: tuple | None = None  # (value, inclusive)
        hi: tuple | None = None

        def raise_lo(value: str, inclusive: bool) -> None:
            nonlocal lo
            if lo is None or value > lo[0] or (value == lo[0] and not inclusive):
                lo = (value, inclusive)

        def lower_hi(value: str, inclusive: bool) -> None:
            nonlocal hi
            if hi is None or value < hi[0] or (value == hi[0] and not inclusive):
                hi = (value, inclusive)

        prefix = []
        while len(prefix) < n and g.sort[len(prefix)] in single:
            prefix.append(eqs[g.sort[len(prefix)]][0])
        if prefix:
            text, clipped = g.sort_value(prefix)
            if len(prefix) == n and not clipped:
                raise_lo(text, True)
                lower_hi(text, True)
            else:
                raise_lo(text, True)
                if not clipped:
                    lower_hi(text + "2", False)
        if len(prefix) < n:
            head = g.sort[len(prefix)]
            last = len(prefix) == n - 1
            for op, value in ranges.get(head, ()):
                if value is None:
                    continue
                text, clipped = g.sort_value(prefix + [value])
                if clipped:
                    continue
                if op == "gte":
                    raise_lo(text, True)
                elif op == "gt":
                    raise_lo(text, False) if last else raise_lo(text + "2", True)
                elif op == "lt":
                    lower_hi(text, False)
                else:  # lte
                    lower_hi(text, True) if last else lower_hi(text + "2", False)
        if after is not None:
            known = dict(zip(order, after))
            values = []
            for f in g.sort:
                if f in single:
                    values.append(eqs[f][0])
                elif f in known:
                    values.append(known[f])
                else:
                    break
            if values:
                text, clipped = g.sort_value(values)
                full = len(values) == n and not clipped
                if not desc:
                    raise_lo(text, True) if clipped else raise_lo(text, False) if full else raise_lo(text + "2", True)
                elif not clipped:
                    lower_hi(text, False)
        if lo is None and hi is None:
            return None
        return (lo[0] if lo else None, lo[1] if lo else True, hi[0] if hi else None, hi[1] if hi else True)

    def _query(self, t: Table, g: Gsi, part: str, key_cond: tuple | None, desc: bool, filters: list[str],
               e: _Expr, projection: list[str] | None, page: int | None, count: bool = False) -> Iterator[dict]:
        """Items of one GSI partition in sort order, a page at a time (or, with `count`, one
        {"Count": n} per page)."""
        ke = _Expr()
        ke.names, ke.values = dict(e.names), dict(e.values)
        cond = f"{ke.n(g.part_attr)} = {ke.v({'S': part})}"
        if key_cond is not None:
            lo, lo_inc, hi, hi_inc = key_cond
            s = ke.n(g.sort_attr)
            if lo is not None and hi is not None:
                cond += f" AND {s} BETWEEN {ke.v({'S': lo})} AND {ke.v({'S': hi})}"
            elif lo is not None:
                cond += f" AND {s} {'>=' if lo_inc else '>'} {ke.v({'S': lo})}"
            else:
                cond += f" AND {s} {'<=' if hi_inc else '<'} {ke.v({'S': hi})}"
        args: dict = {"TableName": t.name, "IndexName": g.name, "KeyConditionExpression": cond,
                      "ScanIndexForward": not desc}
        if filters:
            args["FilterExpression"] = " AND ".join(filters)
        if count:
            args["Select"] = "COUNT"
        elif projection is not None:
            args["ProjectionExpression"] = ", ".join(ke.n(a) for a in projection)
        args.update(ke.kwargs())
        size = page
        while True:
            if size is not None:
                args["Limit"] = size
                size = min(size * 2, 1000)
            resp = self.client.query(**args)
            if count:
                yield {"Count": resp["Count"]}
            else:
                yield from resp["Items"]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return
            args["ExclusiveStartKey"] = start

    def _scan(self, t: Table, filters: list[str], e: _Expr, projection: list[str] | None,
              count: bool = False) -> Iterator[dict]:
        args: dict = {"TableName": t.name}
        filters = [f"attribute_exists({e.n(TOKEN)})", *filters]  # records, not chunk items
        args["FilterExpression"] = " AND ".join(filters)
        if count:
            args["Select"] = "COUNT"
        elif projection is not None:
            args["ProjectionExpression"] = ", ".join(e.n(a) for a in projection)
        args.update(e.kwargs())
        while True:
            resp = self.client.scan(**args)
            if count:
                yield {"Count": resp["Count"]}
            else:
                yield from resp["Items"]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return
            args["ExclusiveStartKey"] = start

    # -- reads ---------------------------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        return self._read(self.t[table], key)[1]

    def find(self, q: Query) -> list[dict]:
        return list(self._find(q))

    def _find(self, q: Query) -> Iterator[dict]:
        t = self.t[q.table]
        spec = t.spec
        if q.limit == 0:
            return
        fields = None
        if q.fields is not None:  # what the rows must carry to be checked, ordered and returned
            need = dict.fromkeys((*q.fields, *spec.key, *q.order, *(c.field for c in q.where)))
            fields = list(need)
        plan = self._plan(t, q.where, q.order, q.desc, q.after)
        if plan.kind in ("keys", "markers", "scan"):
            if plan.kind == "keys":
                rows = self._rows_by_pk(t, [t.pk(k) for k in plan.keys], fields)
            elif plan.kind == "markers":
                rows = self._rows_by_pk(t, self._marker_pks(t, q.where), fields)
            else:
                e = _Expr()
                filters = self._conds(t, q.where, e)
                projection = None if fields is None else [PK, CHUNKS, MOVED, *fields]
                rows = self._complete(t, self._scan(t, filters, e, projection), fields)
            yield from self._finish(rows, q)
            return
        if plan.empty:
            return
        g = plan.gsi
        e = _Expr()
        filters = [] if g.projection != "ALL" else self._conds(t, q.where, e, skip=g.part)
        projection = None
        if fields is not None and g.projection == "ALL":
            projection = list(dict.fromkeys([PK, CHUNKS, MOVED, g.part_attr, *([g.sort_attr] if g.sort else []), *fields]))
        page = None
        if plan.served and q.limit is not None:
            page = min(1000, q.limit)
        streams = [self._query(t, g, p, plan.key_cond, q.desc, filters, e, projection, page) for p in plan.parts]
        if len(streams) == 1:
            items: Iterable[dict] = streams[0]
        elif plan.served and g.sort:
            items = heapq.merge(*streams, key=lambda i: i[g.sort_attr]["S"], reverse=q.desc)
        else:
            items = itertools.chain(*streams)
        if g.projection != "ALL":
            rows = self._fetching(t, items, fields)
        else:
            rows = self._complete(t, items, fields)
        if not plan.served:
            yield from self._finish(rows, q)
            return
        pos = None if q.after is None else tuple(sort_key(v) for v in q.after)
        n = 0
        for row in rows:
            if not matches_all(row, q.where):
                continue
            if pos is not None:
                k = row_key(row, q.order)
                if (k >= pos) if q.desc else (k <= pos):
                    continue
            yield self._project(row, q.fields)
            n += 1
            if q.limit is not None and n >= q.limit:
                return

    @staticmethod
    def _project(row: dict, fields: tuple | None) -> dict:
        return row if fields is None else {f: row.get(f) for f in fields}

    def _finish(self, rows: Iterable[dict], q: Query) -> Iterator[dict]:
        """Filter, order, position and limit rows that came in no useful order."""
        rows = [r for r in rows if matches_all(r, q.where)]
        if q.order:
            rows.sort(key=lambda r: row_key(r, q.order), reverse=q.desc)
            if q.after is not None:
                pos = tuple(sort_key(v) for v in q.after)
                rows = [r for r in rows if (row_key(r, q.order) < pos if q.desc else row_key(r, q.order) > pos)]
        if q.limit is not None:
            rows = rows[: q.limit]
        return (self._project(r, q.fields) for r in rows)

    def _complete(self, t: Table, items: Iterable[dict], fields: list | None) -> Iterator[dict]:
        """Rows of items read from the table or an ALL index; items with chunks are read again,
        whole and consistently."""
        for item in items:
            if CHUNKS in item and (fields is None or set(item.get(MOVED, {}).get("SS", ())) & set(fields)):
                key = tuple(decode_value(t.kinds[k], item[k]) for k in t.spec.key)
                row = self._read(t, key)[1]
                if row is not None:
                    yield row if fields is None else {f: row.get(f) for f in fields}
            else:
                yield self._decode(t, item, fields)

    def _fetching(self, t: Table, items: Iterable[dict], fields: list | None) -> Iterator[dict]:
        """Rows for the keys a KEYS_ONLY index gave, fetched 100 at a time, in index order."""
        batch: list[str] = []
        for item in items:
            batch.append(item[PK]["S"])
            if len(batch) >= 100:
                yield from self._rows_by_pk(t, batch, fields)
                batch = []
        if batch:
            yield from self._rows_by_pk(t, batch, fields)

    def _rows_by_pk(self, t: Table, pks: list[str], fields: list | None) -> list[dict]:
        projection = None if fields is None else list(dict.fromkeys([PK, CHUNKS, MOVED, *fields]))
        got = {i[PK]["S"]: i for i in self._batch_get(t.name, [{PK: {"S": p}} for p in pks], projection)}
        return list(self._complete(t, (got[p] for p in dict.fromkeys(pks) if p in got), fields))

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.t[table]
        plan = self._plan(t, where, (), False, None)
        exact = all(c.op not in ("contains_all",) and c.field not in t.movable for c in where) and all(
            self._cond(t, c, _Expr()) is not None for c in where)
        if plan.kind == "index" and plan.gsi.projection == "ALL" and exact:
            if plan.empty:
                return 0
            e = _Expr()
            filters = self._conds(t, where, e, skip=plan.gsi.part)
            return sum(page["Count"] for p in plan.parts
                       for page in self._query(t, plan.gsi, p, plan.key_cond, False, filters, e, None, None, count=True))
        if plan.kind == "scan" and exact:
            e = _Expr()
            return sum(page["Count"] for page in self._scan(t, self._conds(t, where, e), e, None, count=True))
        return sum(1 for _ in self._find(Query(table, where, fields=t.spec.key)))

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        t = self.t[table]
        side = t.sides.get(field)
        users = [c.value for c in where if c.field == "user_id" and c.op == "eq" and c.value is not None]
        if side is None or len(where) != len(users) or len(users) > 1:
            values: set = set()
            for row in self._find(Query(table, where, fields=(field,))):
                v = row.get(field)
                values.update(v if isinstance(v, list) else [v])
            values.discard(None)
            return list(values)
        user = users[0] if users else None
        candidates: dict[str, list[str]] = {}
        if user is not None:  # the user's distinct values: one Query each, skipping to the next
            u = component("str", user)
            last = None
            while True:
                e = _Expr()
                cond = f"{e.n('u')} = {e.v({'S': u})}"
                if last is not None:
                    cond += f" AND {e.n('sk')} > {e.v({'S': last})}"
                items = self.client.query(TableName=side.name, IndexName="by_user", KeyConditionExpression=cond,
                                          Limit=1, **e.kwargs())["Items"]
                if not items:
                    break
                last = items[0]["sk"]["S"]
                candidates[last] = [items[0][PK]["S"]]
        else:  # every value of every user: the marker table is read whole
            for item in self._scan_side(side):
                candidates.setdefault(item["sk"]["S"], []).append(item[PK]["S"])
        out = []
        for sk, pks in candidates.items():
            if self._marker_holds(t, side, sk, pks, user) or (
                    user is not None and self._marker_holds(
                        t, side, sk, self._marker_pks_for(side, sk, component("str", user)), user)):
                out.append(sk[1:])
        return out

    def _scan_side(self, side: Side) -> Iterator[dict]:
        args: dict = {"TableName": side.name}
        while True:
            resp = self.client.scan(**args)
            yield from resp["Items"]
            if not resp.get("LastEvaluatedKey"):
                return
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _marker_holds(self, t: Table, side: Side, sk: str, pks: list[str], user: str | None) -> bool:
        """Whether a record behind one of these markers still has the value (a marker outlives
        its value until its clean-up ran)."""
        for i in range(0, len(pks), 100):
            keys = [{PK: {"S": p}} for p in pks[i : i + 100]]
            for item in self._batch_get(t.name, keys, [TAGS + side.field, "user_id"]):
                if sk in set_of(item.get(TAGS + side.field)) and (
                        user is None or item.get("user_id", {}).get("S") == user):
                    return True
        return False

    def _marker_pks_for(self, side: Side, sk: str, u: str | None) -> list[str]:
        e = _Expr()
        cond = f"{e.n('sk')} = {e.v({'S': sk})}"
        if u is not None:
            cond += f" AND {e.n('u')} = {e.v({'S': u})}"
        args = {"TableName": side.name, "IndexName": "by_value", "KeyConditionExpression": cond, **e.kwargs()}
        out = []
        while True:
            resp = self.client.query(**args)
            out += [i[PK]["S"] for i in resp["Items"]]
            if not resp.get("LastEvaluatedKey"):
                return out
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _marker_pks(self, t: Table, where: tuple[Cond, ...]) -> list[str]:
        """Records holding every value asked for (by marker; rows are re-checked)."""
        users = [c.value for c in where if c.field == "user_id" and c.op == "eq"]
        u = component("str", users[0]) if users else None
        found: set[str] | None = None
        for c in where:
            if c.op != "contains_all" or c.field not in t.sides:
                continue
            for value in c.value:
                pks = set(self._marker_pks_for(t.sides[c.field], "t" + value, u))
                found = pks if found is None else found & pks
                if not found:
                    return []
        return sorted(found or ())

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        t = self.t[table]
        g = next((x for x in t.gsis if x.role == "group" and x.sort == (by,)), None)
        if g is None:  # no index to walk the distinct values: read the matching rows
            groups: dict = {}
            for row in self._find(Query(table, where, (by, *t.spec.key), fields=(by, max_field))):
                n, last = groups.get(row[by], (0, None))
                value = row[max_field]
                groups[row[by]] = (n + 1, value if last is None or (value is not None and value > last) else last)
            return [(k, n, last) for k, (n, last) in list(groups.items())[:limit]]
        # one Query per distinct value (skipping to the next), then its count and its maximum
        rest = tuple(c for c in where if c.field != by)
        bounds = tuple(c for c in where if c.field == by)
        key_cond = self._key_cond(g, {}, set(), {by: [(c.op, c.value) for c in bounds if c.op != "eq"]}, (), False, None)
        out = []
        last_seen: str | None = None
        while len(out) < limit:
            kc = key_cond
            if last_seen is not None:  # past every item of the value seen last (they share its sort value)
                _, _, hi, hi_inc = kc or (None, True, None, True)
                kc = (last_seen, False, hi, hi_inc)
            items = list(itertools.islice(self._query(t, g, ALL, kc, False, [], _Expr(), None, 1), 1))
            if not items:
                break
            last_seen = items[0][g.sort_attr]["S"]
            value = None if by not in items[0] else decode_value(t.kinds[by], items[0][by])
            if not all(matches_all({by: value}, [c]) for c in bounds):
                continue
            scope = (*rest, Cond(by, "eq", value))
            n = self.count(table, scope)
            if n == 0:
                continue
            top = self.find(Query(table, scope, (max_field, *t.spec.key), True, 1, fields=(max_field,)))
            out.append((value, n, top[0][max_field] if top else None))
        return out

    # -- writes --------------------------------------------------------------------------------

    def _inherited(self, t: Table, rows: list[dict]) -> list[dict]:
        """Per row, what a child keeps from its parent: the parent's TTL."""
        if t.ttl_parent is None:
            return [{} for _ in rows]
        parent, fk = t.ttl_parent
        pt = self.t[parent]
        pks = {r[fk]: pt.pk((r[fk],)) for r in rows if r.get(fk) is not None}
        got = {i[PK]["S"]: i for i in self._batch_get(pt.name, [{PK: {"S": p}} for p in pks.values()], [PK, TTL])}
        out = []
        for r in rows:
            item = got.get(pks.get(r.get(fk)), {})
            out.append({TTL: item[TTL]} if TTL in item else {})
        return out

    def insert(self, table: str, row: dict) -> None:
        t = self.t[table]
        self._insert(t, row, self._inherited(t, [row])[0])

    def _insert(self, t: Table, row: dict, keep: dict) -> None:
        item, chunks = self._item(t, row, keep)
        self._write_items(t.name, chunks)
        e = _Expr()
        try:
            self.client.put_item(TableName=t.name, Item=item, ConditionExpression=f"attribute_not_exists({e.n(PK)})",
                                 **e.kwargs())
        except self.client.exceptions.ConditionalCheckFailedException:
            self._write_items(t.name, deletes=[{PK: c[PK]} for c in chunks])
            raise DuplicateKey(t.spec.name) from None
        self._after_write(t, row, item, None)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        t = self.t[table]
        rows = list({t.spec.key_of(r): r for r in rows}.values())
        if not replace:  # each one conditional: a concurrent writer's record is never overwritten
            written = 0
            for row, keep in zip(rows, self._inherited(t, rows)):
                try:
                    self._insert(t, row, keep)
                    written += 1
                except DuplicateKey:
                    pass
            return written
        if len(rows) == 1:  # one PutItem, which hands back the item it replaced
            row = rows[0]
            item, chunks = self._item(t, row, self._inherited(t, rows)[0])
            self._write_items(t.name, chunks)
            old = self.client.put_item(TableName=t.name, Item=item, ReturnValues="ALL_OLD").get("Attributes")
            self._after_write(t, row, item, old)
            return 1
        olds = {i[PK]["S"]: i for i in self._batch_get(
            t.name, [{PK: {"S": t.pk_of(r)}} for r in rows], [PK, CHUNKS, TTL, *(TAGS + f for f in t.spec.multi)])}
        built = [self._item(t, r, keep) for r, keep in zip(rows, self._inherited(t, rows))]
        self._write_items(t.name, [c for _, chunks in built for c in chunks])
        self._write_items(t.name, [item for item, _ in built])
        for row, (item, _) in zip(rows, built):
            self._after_write(t, row, item, olds.get(item[PK]["S"]), markers_known=False)
        return len(rows)

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        t = self.t[table]
        set, incr = set or {}, incr or {}
        changed = {*set, *incr}
        partial = any(0 < len(changed & {*g.part}) < len(g.part) for g in t.gsis)
        derived = {f for g in t.gsis for f in g.part + g.sort} | {*t.spec.multi, *t.movable, "expires_at"}
        side_effects = bool(changed & {*t.spec.multi, "expires_at"})
        big = sum(_av_size(encode_value(t.kinds[f], v)) for f, v in set.items() if v is not None) > ITEM_BUDGET // 2
        owner_unknown = bool(changed & {*t.spec.multi}) and "user_id" in t.kinds and "user_id" not in set
        if partial or (incr.keys() & derived) or big or (returning and side_effects) or owner_unknown or \
                any(self._cond(t, c, _Expr(), write=True) is None for c in where):
            return self._rewrite(t, key, set, incr, where, returning)
        e = _Expr()
        sets, removes = [], []
        for f, value in set.items():
            if value is None:
                removes.append(e.n(f))
                if f in t.text:
                    removes.append(e.n(LOWER + f))
                continue
            av = encode_value(t.kinds[f], value)
            sets.append(f"{e.n(f)} = {e.v(av)}")
            if f in t.text:
                if value.lower() != value:
                    sets.append(f"{e.n(LOWER + f)} = {e.v({'S': value.lower()})}")
                else:
                    removes.append(e.n(LOWER + f))
            if f in t.spec.multi:
                if value:
                    sets.append(f"{e.n(TAGS + f)} = {e.v({'SS': sorted({'t' + x for x in value})})}")
                else:
                    removes.append(e.n(TAGS + f))
        for f in t.spec.multi:
            if f in set and set[f] is None:
                removes.append(e.n(TAGS + f))
        for f, n in incr.items():
            sets.append(f"{e.n(f)} = if_not_exists({e.n(f)}, {e.v({'N': '0'})}) + {e.v({'N': str(n)})}")
        known = {**dict(zip(t.spec.key, key)), **set}
        for g in t.gsis:
            if not changed & {*g.part, *g.sort}:
                continue
            if changed & {*g.part}:
                sets.append(f"{e.n(g.part_attr)} = {e.v({'S': g.part_value(known[f] for f in g.part)})}")
            if g.sort and changed & {*g.sort}:
                if g.sparse and known.get(g.sort[0]) is None:
                    removes += [e.n(g.part_attr), e.n(g.sort_attr)]
                    continue
                if g.sparse:
                    sets.append(f"{e.n(g.part_attr)} = {e.v({'S': ALL})}")
                sets.append(f"{e.n(g.sort_attr)} = {e.v({'S': g.sort_value(known[f] for f in g.sort)[0]})}")
        if t.ttl and "expires_at" in set:
            if set["expires_at"] is None:
                removes.append(e.n(TTL))
            else:
                sets.append(f"{e.n(TTL)} = {e.v({'N': str(-(-_micros(set['expires_at']) // 1_000_000))})}")
        sets.append(f"{e.n(TOKEN)} = {e.v({'S': uuid.uuid4().hex[:16]})}")
        conds = [f"attribute_exists({e.n(PK)})", *self._conds(t, where, e, write=True)]
        moved = [f for f in set if f in t.movable]
        if moved:  # a column kept in chunks is changed by a rewrite, not here
            mv = e.n(MOVED)
            kept = " OR ".join(f"contains({mv}, {e.v({'S': f})})" for f in moved)
            conds.append(f"(attribute_not_exists({mv}) OR NOT ({kept}))")
        expression = "SET " + ", ".join(dict.fromkeys(sets))
        if removes:
            expression += " REMOVE " + ", ".join(dict.fromkeys(removes))
        values = "ALL_NEW" if returning else "UPDATED_OLD" if side_effects else "NONE"
        try:
            resp = self.client.update_item(
                TableName=t.name, Key={PK: {"S": t.pk(key)}}, UpdateExpression=expression,
                ConditionExpression=" AND ".join(conds), ReturnValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD", **e.kwargs())
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")
            if old is None:
                return None
            if moved and set.keys() & set_of(old.get(MOVED)) and matches_all(self._decode(t, old), [
                    c for c in where if c.field not in t.movable]):
                return self._rewrite(t, key, set, incr, where, returning)
            return None
        except Exception as exc:
            if _code(exc) == "ValidationException" and "size" in str(exc):  # grew past the item limit
                return self._rewrite(t, key, set, incr, where, returning)
            raise
        attrs = resp.get("Attributes", {})
        if side_effects:
            self._after_write(t, {**known}, None, attrs, changed=changed)
        if returning:
            return self._decode(t, attrs, returning)
        return {}

    def _rewrite(self, t: Table, key: tuple, set: dict, incr: dict, where: tuple[Cond, ...],
                 returning: tuple[str, ...]) -> dict | None:
        """Read, change and put back the whole item, on condition that nobody wrote it meanwhile."""
        for attempt in range(RETRIES):
            old, row = self._read(t, key)
            if row is None or not matches_all(row, where):
                return None
            new = apply_update(row, set, incr)
            item, chunks = self._item(t, new, {TTL: old[TTL]} if TTL in old else None)
            self._write_items(t.name, chunks)
            e = _Expr()
            try:
                self.client.put_item(TableName=t.name, Item=item,
                                     ConditionExpression=f"{e.n(TOKEN)} = {e.v(old[TOKEN])}", **e.kwargs())
            except self.client.exceptions.ConditionalCheckFailedException:
                self._write_items(t.name, deletes=[{PK: c[PK]} for c in chunks])
                _backoff(attempt)
                continue
            self._after_write(t, new, item, old, changed={*set, *incr})
            return {f: new.get(f) for f in returning}
        raise DbError(f"{t.spec.name} {key!r}: changed too often to be updated")

    def _after_write(self, t: Table, row: dict, item: dict | None, old: dict | None, *,
                     changed: Iterable[str] | None = None, markers_known: bool = True) -> None:
        """After an item changed: drop the chunks it no longer points at, bring its marker items
        in line and let its children expire with it."""
        if old is not None and CHUNKS in old and (item is None or item.get(CHUNKS) != old[CHUNKS]):
            self._write_items(t.name, deletes=self._chunk_keys(old))
        changed = set(t.kinds) if changed is None else {*changed}
        pk = t.pk_of(row)
        for f, side in t.sides.items():
            if f not in changed:
                continue
            values = {"t" + v for v in (row.get(f) or ())}
            before = set_of((old or {}).get(TAGS + f))
            add = values if (old is None or not markers_known) else values - before
            u = {"S": component("str", row.get("user_id"))}
            self._write_items(side.name, [{PK: {"S": pk}, "sk": {"S": s}, "u": u} for s in sorted(add)])
            self._drop_markers(t, side, pk, before - values)
        if t.ttl_children and "expires_at" in changed and old is not None:
            new_ttl = None if item is None else item.get(TTL)
            if item is None:  # an update: what it set
                exp = row.get("expires_at")
                new_ttl = None if exp is None else {"N": str(-(-_micros(exp) // 1_000_000))}
            if new_ttl != old.get(TTL):
                for child, fk in t.ttl_children:
                    self._retime(self.t[child], fk, t.spec.key_of(row)[0], new_ttl)

    def _drop_markers(self, t: Table, side: Side, pk: str, stale: Iterable[str]) -> None:
        """Delete markers of values the record no longer has, unless it has them again by then."""
        stale = sorted(stale)
        for i in range(0, len(stale), 90):
            group = stale[i : i + 90]
            for attempt in range(2):
                e = _Expr()
                tags = e.n(TAGS + side.field)
                has = " OR ".join(f"contains({tags}, {e.v({'S': s})})" for s in group)
                check = {"ConditionCheck": {"TableName": t.name, "Key": {PK: {"S": pk}},
                                            "ConditionExpression": f"attribute_not_exists({e.n(PK)}) OR NOT ({has})",
                                            **e.kwargs()}}
                deletes = [{"Delete": {"TableName": side.name, "Key": {PK: {"S": pk}, "sk": {"S": s}}}} for s in group]
                try:
                    self.client.transact_write_items(TransactItems=[check, *deletes])
                    break
                except self.client.exceptions.TransactionCanceledException as exc:
                    reasons = exc.response.get("CancellationReasons") or []
                    if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                        if len(group) == 1:
                            break  # the record has the value again: the marker stays
                        for s in group:  # one of them is back: the others still go
                            self._drop_markers(t, side, pk, [s])
                        break
                    _backoff(attempt)

    def _retime(self, t: Table, fk: str, parent_key: Any, ttl: dict | None) -> None:
        """Give every child of a parent the parent's new TTL."""
        for row in self._find(Query(t.spec.name, (Cond(fk, "eq", parent_key),), fields=t.spec.key)):
            e = _Expr()
            expression = f"SET {e.n(TTL)} = {e.v(ttl)}" if ttl is not None else f"REMOVE {e.n(TTL)}"
            try:
                self.client.update_item(TableName=t.name, Key={PK: {"S": t.pk_of(row)}}, UpdateExpression=expression,
                                        ConditionExpression=f"attribute_exists({e.n(PK)})", **e.kwargs())
            except self.client.exceptions.ConditionalCheckFailedException:
                pass

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        t = self.t[table]
        keys = [t.spec.key_of(r) for r in self._find(Query(table, where, fields=t.spec.key))]
        deleted = 0
        for key in keys:
            e = _Expr()
            conds = [f"attribute_exists({e.n(PK)})", *self._conds(t, where, e, skip=t.spec.key, write=True)]
            try:
                old = self.client.delete_item(TableName=t.name, Key={PK: {"S": t.pk(key)}},
                                              ConditionExpression=" AND ".join(conds), ReturnValues="ALL_OLD",
                                              **e.kwargs()).get("Attributes")
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # gone, or changed so that it no longer matches
            deleted += 1
            if old:
                self._write_items(t.name, deletes=self._chunk_keys(old))
                for f, side in t.sides.items():
                    self._drop_markers(t, side, old[PK]["S"], set_of(old.get(TAGS + f)))
        return deleted

    def append(self, child: str, row: dict, *, parent: str, key: tuple, counter: str, seq: str, set: dict,
               where: tuple[Cond, ...] = (), inherit: tuple[str, ...] = ()) -> dict | None:
        """Read the parent, then one TransactWriteItems: the parent's counter moves from the
        value read to the next (and `set` is applied), the child is put if its key is free.
        The transaction's conditions re-check everything taken from the read, so the parent as
        this process last left it serves as the read while it is still true. Threads of one
        process take turns per parent rather than making each other's transactions fail."""
        pt, ct = self.t[parent], self.t[child]
        pkey = {PK: {"S": pt.pk(key)}}
        cache_key = (parent, pkey[PK]["S"])
        with self._stripes[hash(cache_key) % len(self._stripes)]:
            for attempt in range(RETRIES):
                with self._cache_lock:
                    item = self._parents.pop(cache_key, None) if attempt == 0 else None
                cached = item is not None
                if item is None:
                    item = self.client.get_item(TableName=pt.name, Key=pkey, ConsistentRead=True).get("Item")
                    if item is None:
                        return None
                prow = self._decode(pt, item, [f for f in pt.kinds if f not in pt.movable])
                if not matches_all(prow, where):
                    if cached:
                        continue
                    return None
                current = prow.get(counter) or 0
                crow = {**row, seq: current + 1, **{f: prow.get(f) for f in inherit}}
                citem, chunks = self._item(ct, crow, {TTL: item[TTL]} if TTL in item else None)
                e = _Expr()
                sets = [f"{e.n(counter)} = {e.v({'N': str(current + 1)})}"]
                conds = [f"{e.n(counter)} = {e.v({'N': str(current)})}" if counter in item
                         else f"attribute_not_exists({e.n(counter)})", *self._conds(pt, where, e, write=True)]
                conds.append(f"{e.n(TTL)} = {e.v(item[TTL])}" if TTL in item else f"attribute_not_exists({e.n(TTL)})")
                for f, value in set.items():
                    sets.append(f"{e.n(f)} = {e.v(encode_value(pt.kinds[f], value))}")
                merged = {**prow, **set}
                for g in pt.gsis:
                    if set.keys() & {*g.part, *g.sort}:
                        for attr, av in g.attrs(merged).items():
                            sets.append(f"{e.n(attr)} = {e.v(av)}")
                        for f in g.part + g.sort:  # index values computed from the read: still so
                            if f not in set and f not in pt.spec.key:
                                conds.append(self._cond(pt, Cond(f, "eq", prow.get(f)), e, write=True))
                sets.append(f"{e.n(TOKEN)} = {e.v({'S': uuid.uuid4().hex[:16]})}")
                ce = _Expr()
                self._write_items(ct.name, chunks)
                try:
                    self.client.transact_write_items(TransactItems=[
                        {"Update": {"TableName": pt.name, "Key": pkey, "UpdateExpression": "SET " + ", ".join(sets),
                                    "ConditionExpression": " AND ".join(dict.fromkeys(conds)), **e.kwargs()}},
                        {"Put": {"TableName": ct.name, "Item": citem,
                                 "ConditionExpression": f"attribute_not_exists({ce.n(PK)})", **ce.kwargs()}},
                    ])
                except self.client.exceptions.TransactionCanceledException as exc:
                    self._write_items(ct.name, deletes=[{PK: c[PK]} for c in chunks])
                    reasons = exc.response.get("CancellationReasons") or []
                    if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                        raise DuplicateKey(child) from None
                    if not cached:
                        _backoff(attempt)  # the parent moved on (or a conflict): read it again
                    continue
                with self._cache_lock:
                    self._parents[cache_key] = {**item, counter: {"N": str(current + 1)},
                                                **{f: encode_value(pt.kinds[f], v) for f, v in set.items()}}
                    while len(self._parents) > 4096:
                        self._parents.pop(next(iter(self._parents)))
                self._after_write(ct, crow, citem, None)
                return {seq: current + 1, **{f: crow[f] for f in inherit}}
        raise DbError(f"{parent} {key!r}: too many concurrent appends")


def set_of(av: dict | None) -> set:
    return set(av.get("SS", ())) if av else set()


def _retry_connect_once(caught_exception: Exception | None = None, attempts: int = 1, **_: Any) -> None:
    """A connection that could not be made (refused, DNS, connect timeout) is tried twice,
    not the ten times throttling gets: ten backed-off attempts at a dead endpoint take
    about a minute. Raising here ends botocore's retries."""
    from botocore.exceptions import ConnectionError as ConnectFailed

    if isinstance(caught_exception, ConnectFailed) and attempts >= 2:
        raise caught_exception


class DynamoDb(Db):
    """agentkeep on Amazon DynamoDB: one table per agentkeep table, named `table_prefix` + "_"
    + name (override per table: `session_table="..."`), created on first use."""

    def __init__(self, region_name: str | None = None, endpoint_url: str | None = None, table_prefix: str = "agentkeep",
                 id: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        strings = {"region_name": region_name, "endpoint_url": endpoint_url, "aws_access_key_id": aws_access_key_id,
                   "aws_secret_access_key": aws_secret_access_key, "aws_session_token": aws_session_token}
        for name, value in strings.items():
            options.text(value, name, optional=True)
        with driver_for("DynamoDb", "dynamodb"):
            import boto3
            from botocore.config import Config

        sep = "" if not table_prefix or table_prefix[-1] in "_-." else "_"
        session = boto3.session.Session()
        if region_name is None and session.region_name is None and endpoint_url is not None:
            region_name = "us-east-1"  # a local emulator: any region will do
        if region_name is None and session.region_name is None:
            raise InvalidInputError("DynamoDb needs region_name= (or AWS_DEFAULT_REGION / an AWS profile's region)")
        client = session.client(
            "dynamodb", region_name=region_name, endpoint_url=endpoint_url, aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key, aws_session_token=aws_session_token,
            config=Config(retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=64,
                          connect_timeout=options.seconds(connect_timeout)),
        )
        client.meta.events.register_first("needs-retry.dynamodb", _retry_connect_once)
        region = client.meta.region_name
        kernel = DynamoKernel(client, region=region, endpoint_url=endpoint_url, prefix=table_prefix + sep)
        super().__init__(kernel, id=id, table_prefix=table_prefix + sep, tables=overrides)


__all__ = ["DynamoDb", "DynamoKernel"]
