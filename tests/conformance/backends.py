"""The one list of backends the conformance suite runs against.

Every entry says how to build a fresh, isolated db under a per-test directory, how a
child process opens the same db (a URL for `agentkeep.db.connect`, or a picklable
zero-argument opener) and what the backend runs against (for the end-of-run summary).

Adding a backend means adding an entry to `BACKENDS`; test bodies never name a backend.
An async db is added through `SyncAdapter`, which runs each coroutine on a private
background event loop, so the very same sync tests drive it, e.g.::

    Backend(
        name="sqlite_async",
        target=_sqlite_target,
        build=lambda d: Handle(
            db=SyncAdapter(lambda: AsyncSqliteDb(db_file=str(d / "t.db"))),
            url=f"sqlite:///{(d / 't.db').resolve()}",
        ),
    )

A backend whose driver is missing or whose server is unreachable reports why through
`Backend.unavailable()`; the fixtures skip it then (or fail, with AGENTKEEP_REQUIRE_ALL=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


def open_url(url: str) -> Any:
    """Open a db from its URL (module level so that `functools.partial` of it pickles)."""
    from agentkeep.db import connect

    return connect(url)


@dataclass
class Handle:
    """One built db plus what another process needs to open the same data."""

    db: Any
    url: Optional[str] = None
    opener: Optional[Callable[[], Any]] = None  # picklable; opens the same db
    cleanup: Optional[Callable[[], None]] = None  # removes what the db left behind

    def __post_init__(self) -> None:
        if self.opener is None and self.url is not None:
            self.opener = functools.partial(open_url, self.url)

    @property
    def reusable(self) -> bool:
        """Whether another db object can open this data (it does not live in the object)."""
        return isinstance(self.db, SyncAdapter) or self.opener is not None

    def reopen(self) -> Any:
        """A new db object of the same class over the same data."""
        if isinstance(self.db, SyncAdapter):
            return SyncAdapter(self.db.factory)
        return self.opener()

    def wipe(self) -> None:
        """Delete every record, through the kernel, leaving the tables and their schema
        versions: the store is then as a new one is after its first call. One transaction
        where the store has them (one commit, not one per table)."""
        from agentkeep.db.query import Cond

        db = self.db
        db.list_sessions(limit=1)  # the tables exist (a test may have made none)
        kernel = db.kernel
        deletes = [(table, ()) for table in db.specs if table != "meta"]
        # of meta, keep the version rows and drop the rest (the metrics watermark)
        deletes += [("meta", (Cond("key", "lt", "version:"),)), ("meta", (Cond("key", "gte", "version;"),))]
        atomic = "transactions" in kernel.capabilities
        if isinstance(db, SyncAdapter):

            async def wipe_async() -> None:
                async with kernel.transaction() if atomic else contextlib.nullcontext():
                    for table, where in deletes:
                        await kernel.delete(table, where)

            db._run(wipe_async())
            return
        with kernel.transaction() if atomic else contextlib.nullcontext():
            for table, where in deletes:
                kernel.delete(table, where)


@dataclass(frozen=True)
class Backend:
    name: str
    target: Callable[[], str]  # what it runs against, e.g. "SQLite 3.40.1 file"
    build: Callable[[Path], Handle]  # a fresh, isolated db inside the given (empty) dir
    requires: tuple[str, ...] = ()  # importable driver modules
    check: Optional[Callable[[], Optional[str]]] = None  # reason when server unreachable
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    # a store emptied after a test serves the next one (tests/conftest.py); not JsonDb's,
    # whose index log keeps every deletion, so a reused store gets slower to open each time
    reuse: bool = True

    @property
    def server(self) -> bool:
        """Whether it runs against a server or an emulator (not in the test process)."""
        return self.check is not None

    def unavailable(self) -> Optional[str]:
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return f"{self.name}: driver {module!r} is not installed ({exc})"
        if self.check is not None:
            return self.check()
        return None

    def __repr__(self) -> str:  # pytest ids and messages
        return self.name


class SyncAdapter:
    """Drive an async db from sync code: every coroutine runs on a background loop.

    `factory` is called on the loop's thread (async drivers often bind to the loop they
    were created on).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agentkeep-sync-adapter", daemon=True
        )
        self._thread.start()

        async def make() -> Any:
            return factory()

        self._db = self._run(make())
        self._closed = False

    def _run(self, awaitable: Any) -> Any:
        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._db, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.iscoroutinefunction(attr):
                return self._run(attr(*args, **kwargs))
            result = attr(*args, **kwargs)
            return self._run(result) if inspect.isawaitable(result) else result

        return call

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            result = self._db.close()
            if inspect.isawaitable(result):
                self._run(result)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    def __enter__(self) -> "SyncAdapter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the backends -----------------------------------------------------------------------


def _inmemory(directory: Path) -> Handle:
    from agentkeep.db.in_memory import InMemoryDb

    return Handle(db=InMemoryDb())


def _sqlite_target() -> str:
    return f"SQLite {sqlite3.sqlite_version} file"


def _sqlite(directory: Path) -> Handle:
    from agentkeep.db.sqlite import SqliteDb

    db_file = (directory / "t.db").resolve()
    return Handle(db=SqliteDb(db_file=str(db_file)), url=f"sqlite:///{db_file}")


def _json_dir(directory: Path) -> Handle:
    from agentkeep.db.json import JsonDb

    path = (directory / "keep").resolve()
    return Handle(db=JsonDb(path=str(path)), url=f"json://{path}")


def _json_memory(directory: Path) -> Handle:
    from agentkeep.db.json import JsonDb

    name = f"agentkeep-test-{uuid.uuid4().hex}"

    def cleanup() -> None:
        import fsspec

        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)

    # fsspec's memory filesystem lives in this process only: no URL for children.
    return Handle(db=JsonDb(path=f"memory://{name}"), cleanup=cleanup)


@functools.lru_cache(maxsize=None)
def postgres_url() -> str:
    """The local server, or an embedded one started for this process (tests/services)."""
    from tests.services.postgres import server_url

    return server_url()


def _postgres_check() -> Optional[str]:
    from tests.services.postgres import reachable

    try:
        url = postgres_url()
    except Exception as exc:  # no server and the embedded one could not start: say why
        return f"postgres: no server on 5432 and embedded PostgreSQL did not start ({exc!r:.200})"
    reason = reachable(url)
    return f"postgres: server at {url} is not reachable ({reason})" if reason else None


def _postgres_target() -> str:
    import psycopg

    with psycopg.connect(postgres_url()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return f"PostgreSQL {version.split()[0]} at {postgres_url().split('@')[-1]}, a schema per test"


def _postgres(directory: Path) -> Handle:
    from agentkeep.db.postgres import PostgresDb

    schema = f"t_{uuid.uuid4().hex[:12]}"

    def cleanup() -> None:
        import psycopg

        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return Handle(
        db=PostgresDb(db_url=postgres_url(), db_schema=schema),
        opener=functools.partial(PostgresDb, db_url=postgres_url(), db_schema=schema),
        cleanup=cleanup,
    )


def _sqlite_async(directory: Path) -> Handle:
    from agentkeep.db.sqlite import AsyncSqliteDb

    db_file = (directory / "t.db").resolve()
    return Handle(db=SyncAdapter(lambda: AsyncSqliteDb(db_file=str(db_file))), url=f"sqlite:///{db_file}")


def _postgres_async(directory: Path) -> Handle:
    from agentkeep.db.postgres import AsyncPostgresDb

    handle = _postgres(directory)
    handle.db.close()
    schema = handle.opener.keywords["db_schema"]
    handle.db = SyncAdapter(lambda: AsyncPostgresDb(db_url=postgres_url(), db_schema=schema))
    return handle


def _mysql_check() -> Optional[str]:
    from tests.services.mysql import reachable, server_url

    reason = reachable(server_url())
    return f"mysql: server at {server_url()} is not reachable ({reason})" if reason else None


def _mysql_target() -> str:
    from tests.services.mysql import server_description

    return server_description()


def _mysql_database(open_db: Callable[[str], Any], directory: Path, scheme: str = "mysql+pymysql") -> Handle:
    from tests.services.mysql import new_database

    url, drop = new_database()
    url = scheme + url[url.index("://") :]  # child processes open the same kind of db
    return Handle(db=open_db(url), url=url, cleanup=drop)


def _mysql(directory: Path) -> Handle:
    from agentkeep.db.mysql import MysqlDb

    return _mysql_database(lambda url: MysqlDb(db_url=url), directory)


def _mysql_async(directory: Path) -> Handle:
    from agentkeep.db.mysql import AsyncMysqlDb

    return _mysql_database(lambda url: SyncAdapter(lambda: AsyncMysqlDb(db_url=url)), directory)


def _singlestore(directory: Path) -> Handle:
    from agentkeep.db.singlestore import SingleStoreDb

    return _mysql_database(lambda url: SingleStoreDb(db_url=url), directory, scheme="singlestoredb")


def _singlestore_async(directory: Path) -> Handle:
    from agentkeep.db.singlestore import AsyncSingleStoreDb

    return _mysql_database(lambda url: SyncAdapter(lambda: AsyncSingleStoreDb(db_url=url)), directory,
                           scheme="singlestoredb")


def _singlestore_target() -> str:
    return f"SingleStore statements on {_mysql_target()}"


def _fsspec_target(kind: str) -> Callable[[], str]:
    def target() -> str:
        try:
            import fsspec

            return f"{kind} (fsspec {fsspec.__version__})"
        except ImportError:  # pragma: no cover - reported as unavailable anyway
            return kind

    return target


BACKENDS: list[Backend] = [
    Backend(name="inmemory", target=lambda: "in-process memory", build=_inmemory),
    Backend(name="sqlite", target=_sqlite_target, build=_sqlite, requires=("sqlalchemy",)),
    Backend(
        name="json",
        target=_fsspec_target("local directory"),
        build=_json_dir,
        requires=("fsspec", "filelock"),
        reuse=False,
    ),
    Backend(
        name="json_memory",
        target=_fsspec_target("fsspec memory://"),
        build=_json_memory,
        requires=("fsspec",),
    ),
    Backend(
        name="postgres",
        target=_postgres_target,
        build=_postgres,
        requires=("sqlalchemy", "psycopg"),
        check=_postgres_check,
    ),
    Backend(name="sqlite_async", target=_sqlite_target, build=_sqlite_async, requires=("aiosqlite",)),
    Backend(
        name="postgres_async",
        target=_postgres_target,
        build=_postgres_async,
        requires=("psycopg", "psycopg_pool"),
        check=_postgres_check,
    ),
    Backend(name="mysql", target=_mysql_target, build=_mysql, requires=("pymysql",), check=_mysql_check),
    Backend(
        name="mysql_async", target=_mysql_target, build=_mysql_async, requires=("aiomysql",), check=_mysql_check
    ),
    Backend(
        name="singlestore", target=_singlestore_target, build=_singlestore, requires=("pymysql",), check=_mysql_check
    ),
    Backend(
        name="singlestore_async",
        target=_singlestore_target,
        build=_singlestore_async,
        requires=("aiomysql",),
        check=_mysql_check,
    ),
]

# Backends whose servers or emulators the suite starts itself: each family's module in
# tests/services/ lists its own entries (and starts its server on first use).
for _family in ("mongo", "redis", "dynamodb", "firestore", "object_storage"):
    BACKENDS += importlib.import_module(f"tests.services.{_family}").backends()

BY_NAME: dict[str, Backend] = {b.name: b for b in BACKENDS}
