"""DynamoDB's layout (no I/O): a DynamoDB table per agentkeep table, a GSI per spec index,
marker tables for list columns, expression placeholders and query plans."""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

from agentkeep.db import planner
from agentkeep.db.backends.dynamo.codec import _clip, _utf8_len, component
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
MAX_PARTITIONS = 1000  # GSI partitions one query may read (one Query each, merged)
ORDERED_KINDS = ("time", "date", "int", "float")
MOVABLE_KINDS = ("json", "text")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
# group_count(by) walks the distinct values of `by` in order. DynamoDB can enumerate a GSI's
# partition values only with a Scan, so the fields the domain groups by (memory_stats) get a
# one-partition GSI sorted by the field.
GROUPED = {"memories": ("user_id",)}

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
        # the GSIs a query may read, as the planner sees them: by_key last, as it holds keys only
        self.planned = [g for g in self.gsis if g.role == "index"] + [g for g in self.gsis if g.role == "key"]
        self.shapes = [planner.Shape(g.part + g.sort, sparse=g.sparse, partition=len(g.part)) for g in self.planned]
        self.sides = {f: Side(f"{self.name}_{f}", f) for f in spec.multi}
        indexed = {f for g in self.gsis for f in g.part + g.sort}
        self.movable = tuple(c.name for c in spec.columns
                             if c.kind in MOVABLE_KINDS and c.name not in indexed and c.name not in spec.key)
        self.text = tuple(c.name for c in spec.columns if c.kind == "text")
        self.ttl = spec.expires
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

def set_of(av: dict | None) -> set:
    return set(av.get("SS", ())) if av else set()
