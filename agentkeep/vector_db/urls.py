"""Open a vector store from a URL, for the `agentkeep knowledge` commands and settings files.

    open_vector_db("postgresql://user:pass@host/db", "my_kb")   # PgVector, table my_kb
    open_vector_db("lancedb://./kb", "my_kb")                    # LanceDb in the folder ./kb
    open_vector_db("memory://", "my_kb")                         # InMemoryVectorDb (this process)
    keeps_data("memory://")                                      # False: gone when the process ends

`STORES` is the one table of URL forms: per store, the schemes it takes, its class as
"module:Class" (imported only when a URL of it is opened), the function that turns a URL
into the class's keyword arguments, its line of `URL_FORMS`, and whether it keeps its
chunks after the process ends. A new store is one more entry.

The table (collection, index) name is given apart from the URL because every store has one.
Options (`search_type`, `distance`, ...) are passed to the store's constructor.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.urls import load_class
from agentkeep.vector_db.base import VectorDb


class Store(NamedTuple):
    schemes: tuple[str, ...]  # lower case
    target: str  # "module:Class"; the class takes the table name first
    arguments: Callable[[str], dict[str, Any]]  # url -> keyword arguments
    form: str  # the URL forms, for help
    keeps_data: bool = True  # False: the store lives and dies with the process that opens it

    def load(self) -> type[VectorDb]:
        """The store's class (this imports its module)."""
        return load_class(self.target)


def _path(url: str) -> str:
    """`scheme:///abs/path` or `scheme://./rel/path` -> the path."""
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.netloc + parts.path)
    if not path:
        raise InvalidInputError(f"{url!r} names no path (e.g. {parts.scheme}:///var/lib/kb or {parts.scheme}://./kb)")
    return path


def _server(url: str) -> str:
    """`store+http://host` -> `http://host`."""
    return url.split("+", 1)[1]


def _local(url: str) -> bool:
    """Whether the URL names a store in a local folder or file (its scheme has no `+`)."""
    return "+" not in url.split("://", 1)[0]


def _db_url(url: str) -> dict[str, Any]:
    """The whole URL goes to the driver."""
    return {"db_url": url}


def _path_or_url(url: str) -> dict[str, Any]:
    """Qdrant's and ClickHouse's: a local path or a server URL."""
    return {"path": _path(url)} if _local(url) else {"url": _server(url)}


def _chroma(url: str) -> dict[str, Any]:
    if _local(url):
        return {"path": _path(url)}
    import chromadb

    server = urllib.parse.urlsplit(_server(url))
    return {"client": chromadb.HttpClient(host=server.hostname or "localhost", port=server.port or 8000,
                                          ssl=server.scheme == "https")}


STORES = (
    Store(("postgresql", "postgres", "postgresql+psycopg"), "agentkeep.vector_db.pgvector:PgVector", _db_url,
          "PgVector: postgresql://user@host:5432/db (also postgres://, postgresql+psycopg://)"),
    Store(("lancedb",), "agentkeep.vector_db.lancedb:LanceDb", lambda url: {"uri": _path(url)},
          "LanceDb: lancedb:///abs/dir, lancedb://./rel/dir (embedded)"),
    Store(("qdrant", "qdrant+http", "qdrant+https"), "agentkeep.vector_db.qdrant:QdrantDb", _path_or_url,
          "QdrantDb: qdrant:///dir (local mode), qdrant+http://host:6333 (a server; also qdrant+https://)"),
    Store(("chroma", "chroma+http", "chroma+https"), "agentkeep.vector_db.chroma:ChromaDb", _chroma,
          "ChromaDb: chroma:///dir (PersistentClient), chroma+http://host:8000 (a server; also chroma+https://)"),
    Store(("milvus", "milvus+http", "milvus+https"), "agentkeep.vector_db.milvus:MilvusDb",
          lambda url: {"uri": _path(url) if _local(url) else _server(url)},
          "MilvusDb: milvus:///file.db (Milvus Lite), milvus+http://host:19530 (a server; also milvus+https://)"),
    Store(("chdb", "clickhouse+http", "clickhouse+https"), "agentkeep.vector_db.clickhouse:ClickHouseDb",
          _path_or_url,
          "ClickHouseDb: chdb:///dir (in process), clickhouse+http://host:8123 (a server; also clickhouse+https://)"),
    Store(("redis", "rediss"), "agentkeep.vector_db.redis:RedisVectorDb", _db_url,
          "RedisVectorDb: redis://host:6379/0 (a server with RediSearch; also rediss://)"),
    Store(("surrealkv", "surrealdb+ws", "surrealdb+wss", "surrealdb+http", "surrealdb+https"),
          "agentkeep.vector_db.surrealdb:SurrealDb", lambda url: {"url": url if _local(url) else _server(url)},
          "SurrealDb: surrealkv:///dir (embedded), surrealdb+ws://host:8000 (a server; also surrealdb+wss://, "
          "surrealdb+http://, surrealdb+https://)"),
    Store(("memory",), "agentkeep.vector_db.in_memory:InMemoryVectorDb", lambda url: {},
          "InMemoryVectorDb: memory:// (this process only)", keeps_data=False),
)
SCHEMES = {scheme: store for store in STORES for scheme in store.schemes}
URL_FORMS = tuple(store.form for store in STORES)
IN_PROCESS_SCHEMES = frozenset(scheme for store in STORES if not store.keeps_data for scheme in store.schemes)


def _scheme(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"a vector store URL looks like scheme://..., got {url!r}")
    return url.split("://", 1)[0].lower()


def store_for(url: str) -> Store:
    """The store a URL names, without importing it. Raises InvalidInputError for an unknown
    or malformed URL."""
    scheme = _scheme(url)
    store = SCHEMES.get(scheme)
    if store is None:
        raise InvalidInputError(f"unknown vector store URL scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    return store


def keeps_data(url: str) -> bool:
    """Whether the store at `url` keeps its chunks after the process that wrote them ends
    (`memory://` does not: a later process, such as the next CLI command, finds it empty)."""
    return _scheme(url) not in IN_PROCESS_SCHEMES


def open_vector_db(url: str, table: str, **options: Any) -> VectorDb:
    """The store a URL names, with the table `table`; `options` go to its class."""
    store = store_for(url)
    return store.load()(table, **store.arguments(url), **options)
