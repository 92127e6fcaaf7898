"""The JsonDb kernel: an indexed RowTable per table caught up from the index log (or the
segments of an object store) before each operation, records as versioned files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import secrets
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from agentkeep.db.drivers import driver_for

with driver_for("JsonDb", "json"):
    import fsspec
    from filelock import FileLock

from agentkeep.db.backends.json.layout import (
    _PROCESS_LOCKS,
    _PROCESS_LOCKS_GUARD,
    COMMIT_ATTEMPTS,
    COMPACT_MIN_LINES,
    COMPACT_RATIO,
    OBJECT_STORES,
    PROBE_MAX,
    RECORD_CACHE_BYTES,
    RETENTION,
    SNAPSHOT_EVERY,
    _Bytes,
    _decode,
    _filesystem,
    _lost_race,
    _mtime,
    _number,
    _Stale,
    _TableState,
)
from agentkeep.db.connection import cloud_unreachable, connection_failed
from agentkeep.db.errors import ConflictError, DbError, InvalidInputError
from agentkeep.db.jsontext import dumps as _dumps
from agentkeep.db.kernel import DuplicateKey, Step
from agentkeep.db.query import Cond, Query
from agentkeep.db.rowstore import RowTable, apply_update, check_where
from agentkeep.db.tables import TableSpec


class JsonKernel:
    def __init__(self, path: str, storage_options: dict | None) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidInputError("JsonDb needs a path: a directory or an fsspec URL such as memory://name")
        self.fs, root = _filesystem(path, dict(storage_options or {}))
        self.root = root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.local = self.protocol in ("file", "local")
        self.store = OBJECT_STORES.get(fsspec.utils.get_protocol(path))  # "s3" | "gcs" | None
        self._mutex = threading.RLock()  # guards this handle's cached state
        self._held = threading.local()
        self._read_kw: dict = {}
        self._cache: _Bytes | None = None
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)
            self._lock = FileLock(os.path.join(self.root, ".lock"))
            self.capabilities = frozenset({"multi_process", "persistent"})
        elif self.store:
            # no directories to make (the bucket must exist); other processes are kept out by
            # conditional writes, so only this handle's threads take turns
            self._lock = self._mutex
            self._cache = _Bytes(RECORD_CACHE_BYTES)  # record versions are unique names
            if self.store == "s3":
                self._read_kw = {"max_concurrency": 1}  # else s3fs sends a HEAD before each GET
            self.capabilities = frozenset({"multi_process", "persistent"})
        else:
            self.fs.makedirs(self.root, exist_ok=True)
            # one process-wide lock per location (other protocols have no cross-process lock)
            with _PROCESS_LOCKS_GUARD:
                self._lock = _PROCESS_LOCKS.setdefault(f"{self.protocol}://{self.root}", threading.RLock())
            self.capabilities = frozenset({"persistent"} if self.protocol != "memory" else set())
        self.snapshot_every = SNAPSHOT_EVERY
        self.retention = RETENTION
        self.tables: dict[str, _TableState] = {}
        self.path = path

    def setup(self, specs: dict[str, TableSpec]) -> None:
        self.tables = {name: _TableState(spec) for name, spec in specs.items()}

    def default_id(self) -> str:
        return f"json:{self.path}"

    def translate_error(self, exc: BaseException) -> DbError | None:
        """ConnectionFailedError when an object store cannot be reached or refuses the
        credentials; else None (a local directory has nothing to connect to)."""
        if self.store and cloud_unreachable(exc):
            return connection_failed(f"the {self.store.upper()} object store", self.path, exc)
        return None

    def describe(self) -> str:
        if self.local:
            return f"JSON files at {self.path} (local directory)"
        if self.store:
            return f"JSON files at {self.path} (fsspec {self.protocol}, conditional writes)"
        return f"JSON files at {self.path} (fsspec {self.protocol})"

    # -- paths and files ---------------------------------------------------------------------

    def _dir(self, st: _TableState) -> str:
        return f"{self.root}/{st.spec.physical}"

    def _log(self, st: _TableState, gen: int | None = None) -> str:
        return f"{self._dir(st)}/index-{st.gen if gen is None else gen}.jsonl"

    def _segment(self, st: _TableState, n: int) -> str:
        return f"{self._dir(st)}/log/{n:012d}.jsonl"

    def _snapshot(self, st: _TableState, n: int) -> str:
        return f"{self._dir(st)}/snap/{n:012d}.jsonl"

    def _record_path(self, st: _TableState, key: tuple, version: Any) -> str:
        digest = hashlib.sha1(_dumps(st.key_out(key)).encode()).hexdigest()
        return f"{self._dir(st)}/r/{digest[:2]}/{digest}.{version}.json"

    def _append(self, path: str, data: str) -> None:
        with self.fs.open(path, "ab") as f:
            f.write(data.encode("utf-8"))

    def _read_many(self, paths: list[str], cache: bool = False) -> dict[str, bytes | None]:
        """The files' contents (None for a missing one); object stores fetch them concurrently.
        `cache`: the files are record versions, which never change once written."""
        cache = cache and self._cache is not None
        out: dict[str, bytes | None] = {p: self._cache.get(p) if cache else None for p in paths}
        todo = [p for p, data in out.items() if data is None]
        if len(todo) > 1 and self.store:
            got = self.fs.cat(todo, on_error="return", **self._read_kw)
            for p in todo:
                value = got.get(p, FileNotFoundError(p))
                if isinstance(value, Exception) and not isinstance(value, FileNotFoundError):
                    raise value
                out[p] = value if isinstance(value, bytes) else None
        else:
            for p in todo:
                try:
                    out[p] = self.fs.cat_file(p, **self._read_kw)
                except FileNotFoundError:
                    out[p] = None
        if cache:
            for p in todo:
                if out[p] is not None:
                    self._cache.put(p, out[p])
        return out

    def _unlink(self, paths: list[str]) -> None:
        if len(paths) > 1 and self.store:
            try:
                self.fs.rm(paths)
                return
            except FileNotFoundError:
                pass  # one was gone already: remove the rest one by one
        for path in paths:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass

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

    def _write_scope(self):
        """A single write: under the db lock locally; on an object store the conditional
        segment write is enough, so only this handle's threads take turns."""
        return self._mutex if self.store else self.transaction()

    # -- reading the index --------------------------------------------------------------------

    def _current_gen(self, st: _TableState) -> int:
        try:
            return int(self.fs.cat_file(f"{self._dir(st)}/CURRENT").decode())
        except FileNotFoundError:
            return 0

    def _sync(self, st: _TableState) -> None:
        """Apply what other writers added since this handle last looked."""
        with self._mutex:
            if self.store:
                self._sync_segments(st)
                return
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
                moved = self._apply_data(st, data[:end])
                st.offset += end
                if moved:
                    st.gen = -1
                    continue
                return

    def _sync_segments(self, st: _TableState) -> None:
        """Probe segment pos + 1: one request when nothing changed. While segments keep
        coming, fetch as many at once as were found so far (at most PROBE_MAX)."""
        if st.pos < 0 or time.monotonic() - st.synced_at > self.retention / 2:
            # new, or idle so long that the segments after pos may have been removed
            self._load_snapshot(st)
        found = 0
        while True:
            checked = time.monotonic()
            paths = [self._segment(st, st.pos + i) for i in range(1, min(max(found, 1), PROBE_MAX) + 1)]
            got = self._read_many(paths)
            for p in paths:
                if got[p] is None:
                    st.synced_at = checked
                    return
                self._apply_data(st, got[p])
                st.pos += 1
                found += 1

    def _load_snapshot(self, st: _TableState) -> None:
        st.index, st.pos, st.lines = RowTable(st.spec), 0, 0
        for _ in range(8):
            snaps = self._numbers(st, "snap")
            if not snaps:
                return
            n = max(snaps)
            data = self._read_many([self._snapshot(st, n)])[self._snapshot(st, n)]
            if data is not None:
                self._apply_data(st, data)
                st.pos = n
                return
        raise OSError(f"no readable snapshot under {self._dir(st)}/snap")  # pragma: no cover

    def _numbers(self, st: _TableState, folder: str, detail: bool = False) -> Any:
        """The numbered files in a table's `snap` or `log` folder, in one listing request."""
        self.fs.invalidate_cache(self._dir(st))
        # with a prefix, s3fs lists once even when nothing matches
        found = self.fs.find(self._dir(st), prefix=f"{folder}/", detail=detail)
        if detail:
            return {n: (path, info) for path, info in found.items() if (n := _number(path)) is not None}
        return [n for path in found if (n := _number(path)) is not None]

    def _apply_data(self, st: _TableState, data: bytes) -> bool:
        """Apply whole index lines; True when a line says the log moved (local compaction)."""
        moved = False
        for line in data.splitlines():
            if line:
                moved = self._apply_line(st, json.loads(line)) or moved
        return moved

    def _apply_line(self, st: _TableState, item: dict) -> bool:
        if "moved" in item:
            return True
        if "w" in item:
            return False  # a segment's writer id
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

    def _commit(self, st: _TableState, plan: Callable[[], tuple]) -> Any:
        """Persist the change `plan()` computes on a fresh view of the table.

        `plan` returns (result, puts, dels): puts are (row, previous entry or None, whether
        the JSON columns changed); dels are (key, previous entry). The rows' JSON columns go
        to new record versions, then one index write names them; superseded versions are
        removed after. On an object store a lost race for the next segment re-runs the plan on
        the newer state (record files already written for the same content are reused)."""
        written: dict[tuple, Any] = {}  # (key, record text) -> version written by an attempt
        kept: set[tuple] = set()  # (key, version) of the record files the index now names
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                self._sync(st)
                try:
                    result, puts, dels = plan()
                except _Stale:
                    continue
                if not puts and not dels:
                    return result
                lines, files, used, stale = [], {}, set(), []
                for row, prev, json_changed in puts:
                    key = st.spec.key_of(row)
                    version = prev.get("_v") if prev else None
                    if st.json and (json_changed or version is None):
                        text = _dumps({"k": st.key_out(key), "j": {c: row.get(c) for c in st.json}})
                        version = written.get((key, text))
                        if version is None:
                            version = written[(key, text)] = self._new_version(prev)
                            files[self._record_path(st, key, version)] = text.encode("utf-8")
                        used.add((key, version))
                        if prev and prev.get("_v") is not None:
                            stale.append(self._record_path(st, key, prev["_v"]))
                    lines.append(st.line(key, row, version))
                for key, prev in dels:
                    lines.append(_dumps({"k": st.key_out(key), "del": 1}))
                    if st.json and prev.get("_v") is not None:
                        stale.append(self._record_path(st, key, prev["_v"]))
                self._write_files(files)
                if self._publish(st, lines):
                    kept = used
                    if self._cache is not None:  # likely read back soon
                        for path, data in files.items():
                            self._cache.put(path, data)
                    try:
                        self._unlink(stale)
                        self._maybe_compact(st)
                    except OSError:
                        if not self.store:
                            raise
                        # the write stands; a missed snapshot or removal costs only space
                    return result
                if attempt >= 2:  # several writers on this table: let them spread out
                    time.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))
            raise ConflictError(f"{st.spec.name}: gave up after {COMMIT_ATTEMPTS} concurrent writes won the race")
        finally:
            # record files of attempts that lost (or of a plan that then refused) are unreferenced
            unused = [self._record_path(st, k, v) for (k, _), v in written.items() if (k, v) not in kept]
            try:
                self._unlink(unused)
            except OSError:
                pass

    def _new_version(self, prev: dict | None) -> Any:
        if self.store:
            return secrets.token_hex(8)  # unique: racing writers never write the same file
        return ((prev or {}).get("_v") or 0) + 1

    def _write_files(self, files: dict[str, bytes]) -> None:
        if len(files) > 1 and self.store:
            self.fs.pipe(files)  # concurrently
            return
        for path, data in files.items():
            self.fs.pipe_file(path, data)

    def _publish(self, st: _TableState, lines: list[str]) -> bool:
        """Add index lines after everything this handle has seen; False when another writer
        took that place first (object stores), so the caller reloads and tries again."""
        data = "\n".join(lines) + "\n"
        if not self.store:
            self._repair_tail(st)
            self._append(self._log(st), data)
            self._sync(st)
            return True
        if time.monotonic() - st.synced_at > self.retention / 2:
            return False  # the view is old enough that segment pos + 1 may be a removed one
        # the writer's id first: a put retried by the client after a lost response is
        # recognised as our own segment instead of a lost race
        data = (_dumps({"w": secrets.token_hex(8)}) + "\n" + data).encode("utf-8")
        path = self._segment(st, st.pos + 1)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except OSError as exc:
            if not _lost_race(exc):
                raise
            theirs = self._read_many([path])[path]
            if theirs is None:
                return False  # S3's 409: a concurrent put of the segment is still under way
            self._apply_data(st, theirs)
            st.pos += 1
            return theirs == data
        self._apply_data(st, data)
        st.pos += 1
        return True

    def _maybe_compact(self, st: _TableState) -> None:
        if self.store:
            if st.pos % self.snapshot_every == 0:
                self._write_snapshot(st)
            return
        live = len(st.index.rows)
        if st.lines < max(COMPACT_MIN_LINES, COMPACT_RATIO * live):
            return
        new_gen = st.gen + 1
        lines = [st.line(st.spec.key_of(r), r, r.get("_v")) for r in st.index.rows.values()]
        path = self._log(st, new_gen)
        with self.fs.open(path, "wb") as f:
            f.write(("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        with self.fs.open(f"{self._dir(st)}/CURRENT", "wb") as f:
            f.write(str(new_gen).encode())
        old = self._log(st)
        self._append(old, _dumps({"moved": new_gen}) + "\n")
        self._unlink([old])
        st.gen, st.offset, st.lines = new_gen, self.fs.size(path), len(lines)

    def _write_snapshot(self, st: _TableState) -> None:
        """The whole index after segment pos, so a new reader starts there. Then, once a
        snapshot p is older than the retention time, the segments up to p and the snapshots
        before it go: whoever last saw segment n + 1 absent did so before any snapshot >= n + 1
        was written, so a handle that looked within the retention time never needs them."""
        n = st.pos
        lines = [st.line(st.spec.key_of(r), r, r.get("_v")) for r in st.index.rows.values()]
        self.fs.pipe_file(self._snapshot(st, n), ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        snaps = self._numbers(st, "snap", detail=True)
        if n not in snaps:
            return
        now = _mtime(snaps[n][1])  # the store's clock
        aged = [m for m, (_, info) in snaps.items() if now - _mtime(info) > self.retention]
        if not aged:
            return
        p = max(aged)
        segments = self._numbers(st, "log", detail=True)
        old = [path for m, (path, _) in segments.items() if m <= p]
        old += [path for m, (path, _) in snaps.items() if m < p]
        if old:
            self._unlink(old)

    def _full(self, st: _TableState, entries: list[dict]) -> list[dict | None]:
        """Whole rows for index entries: the JSON columns come from the record files."""
        rows = [{k: v for k, v in e.items() if k != "_v"} for e in entries]
        if not st.json:
            return rows
        paths = [self._record_path(st, st.spec.key_of(e), e["_v"]) for e in entries]
        found = self._read_many(paths, cache=True)
        out: list[dict | None] = []
        for entry, row, path in zip(entries, rows, paths):
            data = found[path]
            if data is None:
                # replaced or deleted by a concurrent writer since we synced: read the newest
                self._sync(st)
                with self._mutex:
                    fresh = st.index.rows.get(st.spec.key_of(entry))
                    fresh = dict(fresh) if fresh is not None else None
                if fresh is not None and fresh.get("_v") == entry["_v"]:
                    raise FileNotFoundError(f"record file {path} is missing")  # not a race: damage
                out.append(None if fresh is None else self._full(st, [fresh])[0])
                continue
            row.update(json.loads(data)["j"])
            out.append(row)
        return out

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
        return None if entry is None else self._full(st, [entry])[0]

    def find(self, q: Query) -> list[dict]:
        st = self._table(q.table)
        scalar_names = {c.name for c in st.scalar}
        with self._mutex:
            if q.fields is not None and set(q.fields) <= scalar_names:
                return st.index.find(q)
            entries = st.index.find(dataclasses.replace(q, fields=None))
        rows = [r for r in self._full(st, entries) if r is not None]
        if q.fields is not None:
            return [{f: r.get(f) for f in q.fields} for r in rows]
        return rows

    def count(self, table: str, where: tuple[Cond, ...]) -> int:
        st = self._table(table)
        with self._mutex:
            return st.index.count(where)

    def _entry(self, st: _TableState, key: tuple) -> dict | None:
        entry = st.index.rows.get(key)
        return dict(entry) if entry is not None else None

    def insert(self, table: str, row: dict) -> None:
        st = self.tables[table]
        key = st.spec.key_of(row)

        def plan() -> tuple:
            if key in st.index.rows:
                raise DuplicateKey(table)
            return None, [(row, None, True)], []

        with self._write_scope():
            self._commit(st, plan)

    def put_many(self, table: str, rows: list[dict], replace: bool) -> int:
        if not rows:
            return 0
        st = self.tables[table]
        unique = list({st.spec.key_of(r): r for r in rows}.values())

        def plan() -> tuple:
            puts = []
            for row in unique:
                prev = self._entry(st, st.spec.key_of(row))
                if prev is None or replace:
                    puts.append((row, prev, True))
            return len(puts), puts, []

        with self._write_scope():
            return self._commit(st, plan)

    def update(self, table: str, key: tuple, *, set: dict | None = None, incr: dict | None = None,
               where: tuple[Cond, ...] = (), returning: tuple[str, ...] = ()) -> dict | None:
        st = self.tables[table]
        json_changed = bool(st.json and set and any(c in set for c in st.json))

        def plan() -> tuple:
            entry = self._entry(st, key)
            if entry is None or not check_where(entry, where):
                return None, [], []
            current = entry  # JSON columns untouched: the record file stays as it is
            if json_changed:
                path = self._record_path(st, key, entry["_v"])
                data = self._read_many([path], cache=True)[path]
                if data is None:
                    raise _Stale  # replaced since this view was loaded
                current = {**entry, **json.loads(data)["j"]}
            new = apply_update(current, set, incr)
            return {f: new.get(f) for f in returning}, [(new, entry, json_changed)], []

        with self._write_scope():
            return self._commit(st, plan)

    def delete(self, table: str, where: tuple[Cond, ...]) -> int:
        st = self.tables[table]

        def plan() -> tuple:
            gone = st.index.find(Query(table, where, fields=None))
            return len(gone), [], [(st.spec.key_of(r), r) for r in gone]

        with self._write_scope():
            return self._commit(st, plan)

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
