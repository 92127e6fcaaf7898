"""Open a vector store from a URL, for the `agentkeep knowledge` commands and settings files.

    open_vector_db("postgresql://user:pass@host/db", "my_kb")   # PgVector, table my_kb
    open_vector_db("memory://", "my_kb")                         # InMemoryVectorDb (this process)

The table (collection, index) name is given apart from the URL because every store has one.
Options (`search_type`, `distance`, ...) are passed to the store's constructor.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import VectorDb


def _pgvector(url: str, table: str, options: dict) -> VectorDb:
    from agentkeep.vector_db.pgvector import PgVector

    return PgVector(table, db_url=url, **options)


def _in_memory(url: str, table: str, options: dict) -> VectorDb:
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    return InMemoryVectorDb(**options)


def _path(url: str) -> str:
    """`scheme:///abs/path` or `scheme://./rel/path` -> the path."""
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.netloc + parts.path)
    if not path:
        raise InvalidInputError(f"{url!r} names no path (e.g. {parts.scheme}:///var/lib/kb or {parts.scheme}://./kb)")
    return path


OPENERS: dict[str, Callable[[str, str, dict], VectorDb]] = {
    "postgresql": _pgvector,
    "postgres": _pgvector,
    "postgresql+psycopg": _pgvector,
    "memory": _in_memory,
}


def open_vector_db(url: str, table: str, **options: Any) -> VectorDb:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"a vector store URL looks like scheme://..., got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    opener = OPENERS.get(scheme)
    if opener is None:
        raise InvalidInputError(
            f"unknown vector store URL scheme {scheme!r}; known: {', '.join(sorted(OPENERS))}"
        )
    return opener(url, table, options)
