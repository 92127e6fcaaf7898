"""Open a vector store from a URL, for the `agentkeep knowledge` commands and settings files.

    open_vector_db("postgresql://user:pass@host/db", "my_kb")   # PgVector, table my_kb
    open_vector_db("lancedb://./kb", "my_kb")                    # LanceDB in the folder ./kb
    open_vector_db("memory://", "my_kb")                         # InMemoryVectorDb (this process)
    keeps_data("memory://")                                      # False: gone when the process ends

| URL | store |
| --- | --- |
| `postgresql://`, `postgres://`, `postgresql+psycopg://` | PgVector |
| `lancedb:///abs/dir`, `lancedb://./rel/dir` | LanceDb (embedded) |
| `qdrant:///dir` (local mode), `qdrant+http(s)://host:6333` (server) | QdrantDb |
| `chroma:///dir` (PersistentClient), `chroma+http(s)://host:8000` (server) | ChromaDb |
| `milvus:///file.db` (Milvus Lite), `milvus+http(s)://host:19530` (server) | MilvusDb |
| `chdb:///dir` (in process), `clickhouse+http(s)://host:8123` (server) | ClickHouseDb |
| `redis://`, `rediss://` (a server with RediSearch) | RedisVectorDb |
| `surrealkv:///dir`, `surrealdb+ws(s)://host:8000` | SurrealDb |
| `memory://` | InMemoryVectorDb |

The table (collection, index) name is given apart from the URL because every store has one.
Options (`search_type`, `distance`, ...) are passed to the store's constructor.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import VectorDb


def _pgvector(url, table, options):
    from agentkeep.vector_db.pgvector import PgVector

    return PgVector(table, db_url=url, **options)


def _in_memory(url, table, options):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    return InMemoryVectorDb(table, **options)


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


def _lancedb(url, table, options):
    from agentkeep.vector_db.lancedb import LanceDb

    return LanceDb(table, _path(url), **options)


def _qdrant(url, table, options):
    from agentkeep.vector_db.qdrant import QdrantDb

    where = {"path": _path(url)} if url.startswith("qdrant://") else {"url": _server(url)}
    return QdrantDb(table, **where, **options)


def _chroma(url, table, options):
    from agentkeep.vector_db.chroma import ChromaDb

    if url.startswith("chroma://"):
        return ChromaDb(table, path=_path(url), **options)
    import chromadb

    server = urllib.parse.urlsplit(_server(url))
    client = chromadb.HttpClient(host=server.hostname or "localhost", port=server.port or 8000,
                                 ssl=server.scheme == "https")
    return ChromaDb(table, client=client, **options)


def _milvus(url, table, options):
    from agentkeep.vector_db.milvus import MilvusDb

    return MilvusDb(table, _path(url) if url.startswith("milvus://") else _server(url), **options)


def _clickhouse(url, table, options):
    from agentkeep.vector_db.clickhouse import ClickHouseDb

    where = {"path": _path(url)} if url.startswith("chdb://") else {"url": _server(url)}
    return ClickHouseDb(table, **where, **options)


def _redis(url, table, options):
    from agentkeep.vector_db.redis import RedisVectorDb

    return RedisVectorDb(table, url, **options)


def _surrealdb(url, table, options):
    from agentkeep.vector_db.surrealdb import SurrealDb

    return SurrealDb(table, url if url.startswith("surrealkv://") else _server(url), **options)


OPENERS: dict[str, Callable[[str, str, dict], VectorDb]] = {
    "postgresql": _pgvector,
    "postgres": _pgvector,
    "postgresql+psycopg": _pgvector,
    "lancedb": _lancedb,
    "qdrant": _qdrant,
    "qdrant+http": _qdrant,
    "qdrant+https": _qdrant,
    "chroma": _chroma,
    "chroma+http": _chroma,
    "chroma+https": _chroma,
    "milvus": _milvus,
    "milvus+http": _milvus,
    "milvus+https": _milvus,
    "chdb": _clickhouse,
    "clickhouse+http": _clickhouse,
    "clickhouse+https": _clickhouse,
    "redis": _redis,
    "rediss": _redis,
    "surrealkv": _surrealdb,
    "surrealdb+ws": _surrealdb,
    "surrealdb+wss": _surrealdb,
    "surrealdb+http": _surrealdb,
    "surrealdb+https": _surrealdb,
    "memory": _in_memory,
}
IN_PROCESS_SCHEMES = frozenset({"memory"})  # stores that live and die with the process that opens them


def _scheme(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"a vector store URL looks like scheme://..., got {url!r}")
    return url.split("://", 1)[0].lower()


def keeps_data(url: str) -> bool:
    """Whether the store at `url` keeps its chunks after the process that wrote them ends
    (`memory://` does not: a later process, such as the next CLI command, finds it empty)."""
    return _scheme(url) not in IN_PROCESS_SCHEMES


def open_vector_db(url: str, table: str, **options: Any) -> VectorDb:
    scheme = _scheme(url)
    opener = OPENERS.get(scheme)
    if opener is None:
        raise InvalidInputError(
            f"unknown vector store URL scheme {scheme!r}; known: {', '.join(sorted(OPENERS))}"
        )
    return opener(url, table, options)
