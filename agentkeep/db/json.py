"""JsonDb: JSON files through fsspec (a local directory, `memory://name`, ...).

Layout, per table directory:
- `index-<gen>.jsonl`: an append-only log of the table's queryable (scalar) columns, one line
  per write or delete. Every process keeps the log materialised in memory (an indexed
  RowTable) and reads only the lines appended since its last look, so a list call costs the
  same at any table size and never opens the records it skips.
- `r/<hh>/<hash>.<version>.json`: the record's JSON columns, written once under a new
  version and pointed to by the index line, so a crash never leaves a torn record.
- `CURRENT`: the index generation; compaction writes a fresh log of the live rows, switches
  `CURRENT`, and marks the old log as moved so other processes reload.

Every write happens under one lock (a lock file locally, so threads and processes share it);
appends are whole lines and a torn last line (a crash mid-write) is cut off by the next
writer. Nothing is ever rewritten in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import fsspec
from filelock import FileLock

from agentkeep.db._sync.domain import Db
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.rowstore import RowTable, apply_update, check_where
from agentkeep.db.tables import TableSpec, table_overrides

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)
COMPACT_MIN_LINES = 20_000
COMPACT_RATIO = 4
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


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


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _TableState:
    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.index = RowTable(spec)
        self.gen = -1  # not loaded yet
        self.offset = 0
        self.lines = 0
        self.scalar = [c for c in spec.columns if c.kind != "json" or c.name in spec.multi]
        self.json = [c.name for c in spec.columns if c.kind == "json" and c.name not in spec.multi]
        self.key_kinds = [spec.kind(k) for k in spec.key]

    def key_out(self, key: tuple) -> list:
        return [_encode(kind, v) for kind, v in zip(self.key_kinds, key)]

    def key_in(self, raw: list) -> tuple:
        return tuple(_decode(kind, v) for kind, v in zip(self.key_kinds, raw))


class JsonKernel:
    def __init__(self, path: str, storage_options: dict | None) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidInputError("JsonDb needs a path: a directory or an fsspec URL such as memory://name")
        options = dict(storage_options or {})
        if fsspec.utils.get_protocol(path) in ("file", "local"):
            options.setdefault("auto_mkdir", True)
        self.fs, root = fsspec.core.url_to_fs(path, **options)
        self.root = root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.local = self.protocol in ("file", "local")
        self.fs.makedirs(self.root, exist_ok=True)
        if self.local:
            self._lock = FileLock(os.path.join(self.root, ".lock"))
            self.capabilities = frozenset({"multi_process", "persistent"})
        else:
            # one process-wide lock per location; cross-process safety on object stores
            # comes from conditional writes (not yet: single writer process there)
            with _PROCESS_LOCKS_GUARD:
                self._lock = _PROCESS_LOCKS.setdefault(f"{self.protocol}://{self.root}", threading.RLock())
            self.capabilities = frozenset({"persistent"} if self.protocol != "memory" else set())
        self._mutex = threading.RLock()  # guards this process's cached state
        self._held = threading.local()
        self.tables: dict[str, _TableState] = {}
        self.path = path

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.tables = {name: _TableState(spec) for name, spec in specs.items()}

    def default_id(self) -> str:
        return f"json:{self.path}"

    def describe(self) -> str:
        return f"JSON files at {self.path}" + (" (local directory)" if self.local else f" (fsspec {self.protocol})")

    # -- paths and files ---------------------------------------------------------------------

    def _dir(self, st: _TableState) -> str:
        return f"{self.root}/{st.spec.physical}"

    def _log(self, st: _TableState, gen: int | None = None) -> str:
        return f"{self._dir(st)}/index-{st.gen if gen is None else gen}.jsonl"

    def _record_path(self, st: _TableState, key: tuple, version: int) -> str:
        digest = hashlib.sha1(_dumps(st.key_out(key)).encode()).hexdigest()
        return f"{self._dir(st)}/r/{digest[:2]}/{digest}.{version}.json"

    def _append(self, path: str, data: str) -> None:
        with self.fs.open(path, "ab") as f:
            f.write(data.encode("utf-8"))

    # -- locking -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with self._lock, self._mutex:
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0

    schema_lock = transaction

    # -- reading the index log -----------------------------------------------------------------

    def _current_gen(self, st: _TableState) -> int:
        try:
            return int(self.fs.cat_file(f"{self._dir(st)}/CURRENT").decode())
        except FileNotFoundError:
            return 0

    def _sync(self, st: _TableState) -> None:
        """Apply the lines other writers appended since this process last looked."""
        with self._mutex:
            for _ in range(8):
                if st.gen < 0:
                    st.index = RowTable(st.spec)
                    st.gen, st.offset, st.lines = self._current_gen(st), 0, 0
                try:
                    size = self.fs.size(self._log(st))
                except FileNotFoundError:
                    if self._current_gen(st) != st.gen:
                        st.gen = -1
                        continue
                    return
                if size <= st.offset:
                    return
                data = self.fs.cat_file(self._log(st), start=st.offset, end=size)
                end = data.rfind(b"\n") + 1
                if end == 0:
                    return  # only a torn line so far
                moved = False
                for line in data[:end].splitlines():
                    if line:
                        moved = self._apply_line(st, json.loads(line)) or moved
                st.offset += end
                if moved:
                    st.gen = -1
                    continue
                return

    def _apply_line(self, st: _TableState, item: dict) -> bool:
        if "moved" in item:
            return True
        st.lines += 1
        key = st.key_in(item["k"])
        if item.get("del"):
            st.index.remove(key)
            return False
        row = {c.name: _decode(c.kind, item["r"].get(c.name)) for c in st.scalar}
        row["_v"] = item.get("v")
        st.index.put(row)
        return False

    def _table(self, table: str) -> _TableState:
        st = self.tables[table]
        self._sync(st)
        return st

    # -- writing -----------------------------------------------------------------------------

    def _repair_tail(self, st: _TableState) -> None:
        """Cut a torn last line left by a writer that crashed mid-append (local files)."""
        path = self._log(st)
        if self.local and os.path.exists(path) and os.path.getsize(path) > st.offset:
            with open(path, "r+b") as f:
                f.truncate(st.offset)

    def _write_rows(self, st: _TableState, rows: list[dict], old: dict[tuple, dict]) -> None:
        """Persist whole rows: JSON columns to new record versions, then one index append."""
        lines = []
        for row in rows:
            key = st.spec.key_of(row)
            prev = old.get(key)
            version = None
            if st.json:
                version = (prev["_v"] if prev and prev.get("_v") is not None else 0) + 1
                record = {"k": st.key_out(key), "j": {c: row.get(c) for c in st.json}}
                with self.fs.open(self._record_path(st, key, version), "wb") as f:
                    f.write(_dumps(record).encode("utf-8"))
            scalars = {c.name: _encode(c.kind, row.get(c.name)) for c in st.scalar}
            lines.append(_dumps({"k": st.key_out(key), "r": scalars, "v": version}))
        self._log_lines(st, lines)
        for key, prev in old.items():
            if prev and prev.get("_v") is not None and st.json:
                self._unlink(self._record_path(st, key, prev["_v"]))

    def _log_lines(self, st: _TableState, lines: list[str]) -> None:
        """Append whole lines to the table's index log (after cutting a torn tail), apply
        them to this process's index, and compact when the log has grown stale."""
        self._repair_tail(st)
        self._append(self._log(st), "\n".join(lines) + "\n")
        self._sync(st)
        self._maybe_compact(st)

    def _unlink(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def _full(self, st: _TableState, entry: dict | None) -> dict | None:
        if entry is None:
            return None
        row = {k: v for k, v in entry.items() if k != "_v"}
        if st.json:
            key = st.spec.key_of(entry)
            try:
                data = json.loads(self.fs.cat_file(self._record_path(st, key, entry["_v"])))
            except FileNotFoundError:
                # replaced by a concurrent writer since we synced: read the newest version
                self._sync(st)
                fresh = st.index.rows.get(key)
                if fresh is None:
                    return None
                return self._full(st, dict(fresh))
            row.update(data["j"])
        return row

    def _maybe_compact(self, st: _TableState) -> None:
        live = len(st.index.rows)
        if st.lines < max(COMPACT_MIN_LINES, COMPACT_RATIO * live):
            return
        new_gen = st.gen + 1
        lines = [
            _dumps({"k": st.key_out(st.spec.key_of(r)), "r": {c.name: _encode(c.kind, r.get(c.name)) for c in st.scalar}, "v": r.get("_v")})
            for r in st.index.rows.values()
        ]
        path = self._log(st, new_gen)
        with self.fs.open(path, "wb") as f:
            f.write(("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        with self.fs.open(f"{self._dir(st)}/CURRENT", "wb") as f:
            f.write(str(new_gen).encode())
        old = self._log(st)
        self._append(old, _dumps({"moved": new_gen}) + "\n")
        self._unlink(old)
        st.gen, st.offset, st.lines = new_gen, self.fs.size(path), len(lines)

    # -- schema: directories appear on first write; nothing to migrate ----------------------

    def has_table(self, table: str) -> bool:
        return True

    def plan_schema(self) -> list[Step]:
        return []

    def apply_step(self, step: Step) -> None:  # pragma: no cover - no steps are planned
        raise AssertionError(step)

    # -- kernel primitives -------------------------------------------------------------------

    def get(self, table: str, key: tuple) -> dict | None:
        st = self._table(table)
        with self._mutex:
            entry = st.index.rows.get(key)
            entry = dict(entry) if entry is not None else None
        return self._full(st, entry)

    def find(self, q: Query) -> list[dict]:
        st = self._table(q.table)
        scalar_names = {c.name for c in st.scalar}
        with self._mutex:
            if q.fields is not None and set(q.fields) <= scalar_names:
                return st.index.find(q)
            entries = st.index.find(Query(q.table, q.where, q.order, q.desc, q.limit, q.after))
        rows = [r for r in (self._full(st, e) for e in entries) if r is not None]
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in rows]
        return rows

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        st = self._table(table)
        with self._mutex:
            return st.index.count(where)

    def insert(self, table: str, row: dict) -> None:
        with self.transaction():
            st = self._table(table)
            if st.spec.key_of(row) in st.index.rows:
                raise DuplicateKey(table)
            self._write_rows(st, [row], {})

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        with self.transaction():
            st = self._table(table)
            old = {}
            todo = []
            for row in {st.spec.key_of(r): r for r in rows}.values():
                key = st.spec.key_of(row)
                prev = st.index.rows.get(key)
                if prev is not None and not replace:
                    continue
                old[key] = dict(prev) if prev is not None else None
                todo.append(row)
            if todo:
                self._write_rows(st, todo, {k: v for k, v in old.items() if v is not None})
            return len(todo)

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        with self.transaction():
            st = self._table(table)
            entry = st.index.rows.get(key)
            if entry is None or not check_where(entry, where):
                return None
            entry = dict(entry)
            if st.json and set and any(c in set for c in st.json):
                current = self._full(st, entry)
            else:
                current = entry  # JSON columns untouched: the record file stays as it is
            new = apply_update(current, set, incr)
            if current is entry:
                scalars = {c.name: _encode(c.kind, new.get(c.name)) for c in st.scalar}
                self._log_lines(st, [_dumps({"k": st.key_out(key), "r": scalars, "v": entry.get("_v")})])
            else:
                self._write_rows(st, [new], {key: entry})
            return {f: new.get(f) for f in returning}

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        with self.transaction():
            st = self._table(table)
            gone = [dict(r) for r in st.index.find(Query(table, where, fields=None))]
            if not gone:
                return 0
            keys = [st.spec.key_of(r) for r in gone]
            self._log_lines(st, [_dumps({"k": st.key_out(k), "del": 1}) for k in keys])
            if st.json:
                for key, row in zip(keys, gone):
                    if row.get("_v") is not None:
                        self._unlink(self._record_path(st, key, row["_v"]))
            return len(keys)

    def distinct(self, table: str, field: str, where: tuple[Cond, ...]) -> list:
        st = self._table(table)
        with self._mutex:
            return st.index.distinct(field, where)

    def group_count(self, table: str, by: str, max_field: str, where: tuple[Cond, ...], limit: int) -> list[tuple]:
        st = self._table(table)
        with self._mutex:
            return st.index.group_count(by, max_field, where, limit)

    def close(self) -> None:
        pass


class JsonDb(Db):
    """JSON files in a local directory or any fsspec location (`memory://name`, ...)."""

    def __init__(
        self,
        path: str = "agentkeep_json",
        *,
        storage_options: dict | None = None,
        id: str | None = None,
        table_prefix: str = "",
        **tables: str,
    ) -> None:
        super().__init__(JsonKernel(str(path), storage_options), id=id, table_prefix=table_prefix,
                         tables=table_overrides(tables))
