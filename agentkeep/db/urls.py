"""`connect(url)`: build a db from a URL (the CLI's `--db`)."""

from __future__ import annotations

from typing import Any

from agentkeep.db.errors import InvalidInputError

URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:",
    "json://./dir, json:///absolute/dir, json+memory://name, json+s3://bucket/prefix, json+gs://bucket/prefix",
    "memory://  (InMemoryDb)",
    "postgresql://user@host:5432/db (also postgres://, postgresql+psycopg://; ?db_schema=name)",
    "mysql+pymysql://user@host:3306/db (also mysql://, mariadb://)",
    "singlestoredb://user@host:3306/db",
    "mongodb://user@host:27017/dbname (also mongodb+srv://; the path names the database, default agentkeep)",
    "redis://host:6379/0 (also rediss://; ?prefix=name)",
    "dynamodb://region/table_prefix (e.g. dynamodb://eu-west-1/agentkeep; ?endpoint_url=http://localhost:8000"
    "&connect_timeout=seconds)",
    "firestore://project_id[/database] (?collection_prefix=name&emulator_host=host:port&connect_timeout=seconds)",
)


def _own_param(url: str, name: str) -> tuple[str, str | None]:
    """Split agentkeep's own query parameter `name` off a URL whose other parameters go to
    the driver: (the URL without it, its last value or None)."""
    base, _, query = url.partition("?")
    params = [p for p in query.split("&") if p]
    values = [p.split("=", 1)[1] for p in params if p.startswith(f"{name}=")]
    rest = "&".join(p for p in params if not p.startswith(f"{name}="))
    return base + (f"?{rest}" if rest else ""), (values[-1] if values else None)


def _url_options(url: str, query: str, known: set[str]) -> dict[str, Any]:
    """The query options of a dynamodb:// or firestore:// URL: `known` ones, and
    connect_timeout (seconds)."""
    from urllib.parse import parse_qsl

    options: dict[str, Any] = dict(parse_qsl(query))
    unknown = set(options) - known - {"connect_timeout"}
    if unknown:
        raise InvalidInputError(f"unknown URL option(s) {sorted(unknown)} in {url!r}")
    if "connect_timeout" in options:
        try:
            options["connect_timeout"] = float(options["connect_timeout"])
        except ValueError:
            raise InvalidInputError(f"connect_timeout must be a number of seconds in {url!r}") from None
    return options


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

        url, schema = _own_param(url, "db_schema")  # the rest goes to libpq
        if schema:
            kwargs.setdefault("db_schema", schema)
        return PostgresDb(db_url=url, **kwargs)
    if scheme in ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"):
        from agentkeep.db.mysql import MysqlDb

        return MysqlDb(db_url=url, **kwargs)
    if scheme in ("singlestoredb", "singlestore", "singlestoredb+pymysql"):
        from agentkeep.db.singlestore import SingleStoreDb

        return SingleStoreDb(db_url=url, **kwargs)
    if scheme in ("mongodb", "mongodb+srv"):
        from agentkeep.db.mongo import MongoDb

        return MongoDb(db_url=url, **kwargs)
    if scheme in ("redis", "rediss"):
        from agentkeep.db.redis import RedisDb

        url, prefix = _own_param(url, "prefix")  # the rest goes to redis-py
        if prefix:
            kwargs.setdefault("prefix", prefix)
        return RedisDb(db_url=url, **kwargs)
    if scheme == "dynamodb":
        from urllib.parse import unquote

        from agentkeep.db.dynamo import DynamoDb

        base, _, query = rest.partition("?")
        region, _, prefix = base.partition("/")
        options = _url_options(url, query, {"endpoint_url"})
        if region:
            kwargs.setdefault("region_name", unquote(region))
        if prefix:
            kwargs.setdefault("table_prefix", unquote(prefix))
        return DynamoDb(**options, **kwargs)
    if scheme == "firestore":
        from agentkeep.db.firestore import FirestoreDb

        base, _, query = rest.partition("?")
        project, _, database = base.partition("/")
        if not project:
            raise InvalidInputError(f"{url!r} names no project")
        options = _url_options(url, query, {"collection_prefix", "emulator_host"})
        return FirestoreDb(project_id=project, database=database or "(default)", **options, **kwargs)
    if scheme in ("memory", "inmemory"):
        from agentkeep.db.in_memory import InMemoryDb

        return InMemoryDb(**kwargs)
    raise InvalidInputError(f"unknown db URL scheme {scheme!r} in {url!r}; expected one of: {'; '.join(URL_FORMS)}")
