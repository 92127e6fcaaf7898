"""The DynamoDB kernel: setup, schema steps and the items of records (chunks for large
ones); its reads are in reads.py and its writes in writes.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import nullcontext
from typing import Any, Iterable

from agentkeep.db.backends.dynamo.codec import (
    _av_size,
    _item_size,
    _micros,
    decode_value,
    encode_value,
)
from agentkeep.db.backends.dynamo.layout import (
    _TABLE_NAME,
    CHUNK_BYTES,
    CHUNK_DATA,
    CHUNKS,
    ITEM_BUDGET,
    LOWER,
    MOVED,
    PK,
    RETRIES,
    TAGS,
    TOKEN,
    TTL,
    Gsi,
    Table,
    _backoff,
    _code,
    _Expr,
)
from agentkeep.db.backends.dynamo.reads import Reads
from agentkeep.db.backends.dynamo.writes import Writes
from agentkeep.db.connection import (
    cloud_unreachable,
    connection_failed,
)
from agentkeep.db.errors import DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _json
from agentkeep.db.kernel import Step
from agentkeep.db.messages import shorten
from agentkeep.db.tables import TableSpec


class DynamoKernel(Reads, Writes):
    # no "atomic_claim": the domain's compare-and-set on `revision` claims safely
    capabilities = frozenset({"multi_process", "persistent", "native_ttl", "atomic_append"})

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
        for name, spec in specs.items():  # children expire with their parent
            if spec.parent is not None and self.t[spec.parent.table].ttl:
                self.t[name].ttl_parent = (spec.parent.table, spec.parent.field)
                self.t[spec.parent.table].ttl_children.append((name, spec.parent.field))

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
