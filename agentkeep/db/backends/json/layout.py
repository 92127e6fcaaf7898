"""JsonDb's files and values (see db.py for the layout): value codecs, the state kept per
table, the record cache and the filesystem behind a path."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import threading
from collections import OrderedDict
from typing import Any

from agentkeep.db.drivers import driver_for

with driver_for("JsonDb", "json"):
    import fsspec

from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.rowstore import RowTable
from agentkeep.db.tables import TableSpec

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)
COMPACT_MIN_LINES = 20_000
COMPACT_RATIO = 4
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()

# object stores
OBJECT_STORES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
STORE_DRIVERS = {"s3": "s3fs", "gcs": "gcsfs"}  # the package each store needs; its extra has the store's name
SNAPSHOT_EVERY = 1000  # the writer of every 1000th segment writes a snapshot
RETENTION = 3600.0  # seconds a segment or snapshot below the newest snapshot is kept
PROBE_MAX = 64  # segments fetched at once while catching up
COMMIT_ATTEMPTS = 200
RECORD_CACHE_BYTES = 64 << 20


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return (value - EPOCH) // MICRO
    if kind == "date":
        return value.isoformat()
    return value


def _decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return EPOCH + dt.timedelta(microseconds=value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


class _Stale(Exception):
    """The view a write was planned on is out of date: reload and plan again."""


class _TableState:
    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.index = RowTable(spec)
        self.gen = -1  # local log generation; -1: not loaded yet
        self.offset = 0
        self.lines = 0
        self.pos = -1  # object stores: the last segment applied; -1: not loaded yet
        self.synced_at = 0.0  # object stores: when segment pos + 1 was last seen absent
        self.scalar = [c for c in spec.columns if c.kind != "json" or c.name in spec.multi]
        self.json = [c.name for c in spec.columns if c.kind == "json" and c.name not in spec.multi]
        self.key_kinds = [spec.kind(k) for k in spec.key]

    def key_out(self, key: tuple) -> list:
        return [_encode(kind, v) for kind, v in zip(self.key_kinds, key)]

    def key_in(self, raw: list) -> tuple:
        return tuple(_decode(kind, v) for kind, v in zip(self.key_kinds, raw))

    def line(self, key: tuple, row: dict, version: Any) -> str:
        scalars = {c.name: _encode(c.kind, row.get(c.name)) for c in self.scalar}
        return _dumps({"k": self.key_out(key), "r": scalars, "v": version})


class _Bytes:
    """A small LRU of immutable files (object-store records never change once written)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size, self.items = limit, 0, OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> bytes | None:
        with self._lock:
            data = self.items.get(path)
            if data is not None:
                self.items.move_to_end(path)
            return data

    def put(self, path: str, data: bytes) -> None:
        if len(data) > self.limit // 8:
            return
        with self._lock:
            if path not in self.items:
                self.items[path] = data
                self.size += len(data)
            while self.size > self.limit:
                self.size -= len(self.items.popitem(last=False)[1])


def _mtime(entry: dict) -> float:
    for name in ("LastModified", "mtime", "updated"):
        value = entry.get(name)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


def _number(path: str) -> int | None:
    name = path.rsplit("/", 1)[-1]
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "jsonl" and stem.isdigit() else None


def _lost_race(exc: OSError) -> bool:
    """A create-if-absent refused: another writer's object is there (s3fs and gcsfs raise
    FileExistsError), or, on S3, 409 ConditionalRequestConflict, answered while another
    conditional put of the same key is in progress (AWS asks to retry)."""
    if isinstance(exc, FileExistsError):
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")


def _filesystem(path: str, storage_options: dict) -> tuple[Any, str]:
    protocol = fsspec.utils.get_protocol(path)
    if protocol in ("file", "local"):
        storage_options.setdefault("auto_mkdir", True)
    store = OBJECT_STORES.get(protocol)
    with driver_for(f"JsonDb on {protocol}://", store or "json"):
        if store:  # fsspec says only "Install s3fs to access S3", and as an ImportError
            importlib.import_module(STORE_DRIVERS[store])
        if store == "gcs" and os.environ.get("STORAGE_EMULATOR_HOST"):
            # gcsfs's default class asks a gRPC API about the bucket type, which emulators lack
            # (each call then waits 60 s); the plain class speaks JSON only
            from gcsfs.core import GCSFileSystem

            storage_options.setdefault("token", "anon")
            return GCSFileSystem(**storage_options), GCSFileSystem._strip_protocol(path)
        return fsspec.core.url_to_fs(path, **storage_options)
