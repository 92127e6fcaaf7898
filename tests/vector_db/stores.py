"""The vector stores the conformance suite runs against.

Each entry builds a fresh, isolated store (not yet created) from keyword options that every
store accepts (search_type, distance, vector_weight, keyword_weight, rrf_k,
hybrid_candidates, dimensions), says why it cannot run (None when it can) and what it runs
against. Adding a store means adding an entry here; test bodies never name a store.
"""

from __future__ import annotations

import importlib
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence


@dataclass(frozen=True)
class Store:
    name: str
    build: Callable[..., Any]  # build(**options) -> (store, cleanup)
    unavailable: Callable[[], Optional[str]] = lambda: None
    target: Callable[[], str] = lambda: "this process"

    def __repr__(self) -> str:
        return self.name


def _in_memory(**options: Any):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    store = InMemoryVectorDb(**options)
    return store, store.drop


def _scratch_dir(prefix: str) -> str:
    """A temp dir for an embedded store's files, on tmpfs where there is one: local Qdrant
    commits every point to SQLite on its own, which a busy disk makes slow."""
    import os
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def _temp_dir(prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix)


_local_dirs: dict[str, str] = {}


def _local_dir(kind: str) -> str:
    """One temporary directory per in-process engine and test process (Milvus Lite and chDB
    each serve one path per process), removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    if kind not in _local_dirs:
        _local_dirs[kind] = tempfile.mkdtemp(prefix=f"agentkeep-{kind}-")
        atexit.register(shutil.rmtree, _local_dirs[kind], True)
    return _local_dirs[kind]


def drop_and_close(store: Any) -> None:
    try:
        store.drop()
    finally:
        store.close()


@contextmanager
def dropped_after(open_store: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """`make(...)` for a test's own `stores` fixture: each call opens `open_store(...)`, and
    every store made is dropped and closed when the block ends."""
    made = []

    def make(*args: Any, **options: Any) -> Any:
        store = open_store(*args, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        drop_and_close(store)


def _unique() -> str:
    """A table or collection name of its own for one test."""
    return f"t_{uuid.uuid4().hex[:12]}"


_module = importlib.import_module


def _class(path: str) -> Any:
    """`module:Name`, imported when a test first builds the store."""
    module, name = path.split(":")
    return getattr(_module(module), name)


def _service(name: str) -> Any:
    """tests.services.<name>: a server the tests start (server_url, unavailable, target)."""
    return importlib.import_module(f"tests.services.{name}")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def _store(name: str, open_store: Callable[[Optional[str], dict], Any], target: Callable[[], str], *,
           needs: Sequence[str] = (), missing: str = "", service: Optional[str] = None,
           folder: Optional[Callable[[], str]] = None) -> Store:
    """An entry whose build opens `open_store(folder or None, options)` and whose cleanup drops
    and closes it (and removes the folder); it is unavailable while a module of `needs` does not
    import ("<missing> not installed (...)") or the `service` cannot start."""

    def build(**options: Any):
        root = folder() if folder is not None else None
        store = open_store(root, options)

        def cleanup() -> None:
            try:
                drop_and_close(store)
            finally:
                if root is not None:
                    import shutil

                    shutil.rmtree(root, ignore_errors=True)

        return store, cleanup

    def unavailable() -> Optional[str]:
        for module in needs:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return f"{missing} not installed ({exc})"
        return _service(service).unavailable() if service is not None else None

    return Store(name, build, unavailable, target)


STORES = [
    Store("in_memory", _in_memory),
    _store("pgvector", lambda _, o: _class("agentkeep.vector_db.pgvector:PgVector")(
        _unique(), db_url=_service("pgvector").server_url(), pool_size=2, **o),
        lambda: _service("pgvector").target() + ", a table per test",
        needs=("psycopg", "psycopg_pool"), missing="pgvector: driver", service="pgvector"),
    _store("lancedb", lambda root, o: _class("agentkeep.vector_db.lancedb:LanceDb")("chunks", uri=root, **o),
           lambda: f"LanceDB {_module('lancedb').__version__} embedded, a temporary directory per test",
           needs=("lancedb",), missing="lancedb:", folder=lambda: _temp_dir("agentkeep-lancedb-")),
    _store("redis", lambda _, o: _class("agentkeep.vector_db.redis:RedisVectorDb")(
        _unique(), db_url=_service("redis_stack").server_url(), prefix="akt", **o),
        lambda: _service("redis_stack").target() + ", an index and key prefix per test", service="redis_stack"),
    _store("surrealdb", lambda _, o: _class("agentkeep.vector_db.surrealdb:SurrealDb")(_unique(), url="mem://", **o),
           lambda: f"SurrealDB embedded in the surrealdb {_version('surrealdb')} SDK (mem://), an instance per test",
           needs=("surrealdb",), missing="surrealdb: SDK"),
    _store("qdrant", lambda root, o: _class("agentkeep.vector_db.qdrant:QdrantDb")(_unique(), path=root, **o),
           lambda: f"qdrant-client {_version('qdrant-client')} local mode (a folder on tmpfs), a collection per test",
           needs=("qdrant_client",), missing="qdrant: qdrant-client", folder=lambda: _scratch_dir("agentkeep-qdrant-")),
    _store("chroma", lambda root, o: _class("agentkeep.vector_db.chroma:ChromaDb")(_unique(), path=root, **o),
           lambda: f"chromadb {_version('chromadb')} PersistentClient (a folder on tmpfs), a collection per test",
           needs=("chromadb",), missing="chroma: chromadb", folder=lambda: _scratch_dir("agentkeep-chroma-")),
    _store("milvus", lambda _, o: _class("agentkeep.vector_db.milvus:MilvusDb")(
        _unique(), uri=os.path.join(_local_dir("milvus"), "milvus.db"), **o),
        lambda: f"Milvus Lite {_version('milvus-lite')} in this process (pymilvus {_version('pymilvus')}), "
                "a collection per test",
        needs=("milvus_lite", "pymilvus"), missing="milvus: pymilvus / milvus-lite"),
    _store("clickhouse", lambda _, o: _class("agentkeep.vector_db.clickhouse:ClickHouseDb")(
        _unique(), path=_local_dir("chdb"), **o),
        lambda: f"chDB {_module('chdb').__version__} (ClickHouse {_module('chdb').engine_version}) in this process, "
                "a table per test",
        needs=("chdb",), missing="clickhouse: chdb"),
]
