"""`connect(url)`: build a db from a URL (the CLI's `--db`)."""

from __future__ import annotations

from typing import Any

from agentkeep.db.errors import InvalidInputError

URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:",
    "json://./dir, json:///absolute/dir, json+memory://name, json+s3://bucket/prefix",
    "memory://  (InMemoryDb)",
    "postgresql://user@host:5432/db (also postgres://, postgresql+psycopg://; ?db_schema=name)",
    "mysql+pymysql://user@host:3306/db (also mysql://, mariadb://)",
    "singlestoredb://user@host:3306/db",
)


def connect(url: str, **kwargs: Any):
    """Return the db a URL names. Raises InvalidInputError for an unknown or malformed URL."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"not a db URL: {url!r}; expected one of: {'; '.join(URL_FORMS)}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "sqlite":
        from agentkeep.db.sqlite import SqliteDb

        return SqliteDb(db_url=url, **kwargs)
    if scheme == "json":
        from agentkeep.db.json import JsonDb

        if not rest:
            raise InvalidInputError(f"{url!r} names no directory")
        return JsonDb(path=rest, **kwargs)
    if scheme.startswith("json+"):
        from agentkeep.db.json import JsonDb

        return JsonDb(path=f"{scheme[5:]}://{rest}", **kwargs)
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        from agentkeep.db.postgres import PostgresDb

        # db_schema is agentkeep's own query parameter; the rest goes to libpq
        base, _, query = url.partition("?")
        params = [p for p in query.split("&") if p]
        schema = [p.split("=", 1)[1] for p in params if p.startswith("db_schema=")]
        rest = "&".join(p for p in params if not p.startswith("db_schema="))
        if schema:
            kwargs.setdefault("db_schema", schema[-1])
        return PostgresDb(db_url=base + (f"?{rest}" if rest else ""), **kwargs)
    if scheme in ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"):
        from agentkeep.db.mysql import MysqlDb

        return MysqlDb(db_url=url, **kwargs)
    if scheme in ("singlestoredb", "singlestore", "singlestoredb+pymysql"):
        from agentkeep.db.singlestore import SingleStoreDb

        return SingleStoreDb(db_url=url, **kwargs)
    if scheme in ("memory", "inmemory"):
        from agentkeep.db.in_memory import InMemoryDb

        return InMemoryDb(**kwargs)
    raise InvalidInputError(f"unknown db URL scheme {scheme!r} in {url!r}; expected one of: {'; '.join(URL_FORMS)}")
