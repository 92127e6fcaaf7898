"""`connect(url)`: build a db from a URL (the CLI's `--db`).

`BACKENDS` is the one table of URL forms: per backend, the schemes it takes, its class as
"module:Class" (imported only when a URL of it is opened, so resolving a URL imports no
other backend or driver), the function that turns a URL into the class's keyword
arguments, and its line of `URL_FORMS`. A new backend is one more entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from agentkeep.db.errors import InvalidInputError


def load_class(target: str) -> type:
    """"module:Class" -> the class (this imports its module)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Backend(NamedTuple):
    schemes: tuple[str, ...]  # lower case; "json+*" takes any scheme that starts with "json+"
    target: str  # "module:Class"
    arguments: Callable[[str, str, str], dict[str, Any]]  # (url, scheme, what follows "://") -> kwargs
    form: str  # the URL forms, for help and error messages

    def load(self) -> type:
        """The backend's class (this imports its module)."""
        return load_class(self.target)


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


def _db_url(url: str, scheme: str, rest: str) -> dict[str, Any]:
    """The whole URL goes to the driver."""
    return {"db_url": url}


def _json(url: str, scheme: str, rest: str) -> dict[str, Any]:
    """json://dir is a local folder; json+PROTOCOL://... is an fsspec location."""
    if scheme != "json":
        return {"path": f"{scheme[5:]}://{rest}"}
    if not rest:
        raise InvalidInputError(f"{url!r} names no directory")
    return {"path": rest}


def _nothing(url: str, scheme: str, rest: str) -> dict[str, Any]:
    return {}


def _postgres(url: str, scheme: str, rest: str) -> dict[str, Any]:
    url, schema = _own_param(url, "db_schema")  # the rest goes to libpq
    return {"db_url": url, **({"db_schema": schema} if schema else {})}


def _redis(url: str, scheme: str, rest: str) -> dict[str, Any]:
    url, prefix = _own_param(url, "prefix")  # the rest goes to redis-py
    return {"db_url": url, **({"prefix": prefix} if prefix else {})}


def _dynamodb(url: str, scheme: str, rest: str) -> dict[str, Any]:
    base, _, query = rest.partition("?")
    region, _, prefix = base.partition("/")
    arguments = _url_options(url, query, {"endpoint_url"})
    if region:
        arguments["region_name"] = unquote(region)
    if prefix:
        arguments["table_prefix"] = unquote(prefix)
    return arguments


def _firestore(url: str, scheme: str, rest: str) -> dict[str, Any]:
    base, _, query = rest.partition("?")
    project, _, database = base.partition("/")
    if not project:
        raise InvalidInputError(f"{url!r} names no project")
    options = _url_options(url, query, {"collection_prefix", "emulator_host"})
    return {"project_id": project, "database": database or "(default)", **options}


BACKENDS = (
    Backend(("sqlite",), "agentkeep.db.sqlite:SqliteDb", _db_url,
            "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:"),
    Backend(("json", "json+*"), "agentkeep.db.json:JsonDb", _json,
            "json://./dir, json:///absolute/dir, json+memory://name, json+s3://bucket/prefix, json+gs://bucket/prefix"),
    Backend(("memory", "inmemory"), "agentkeep.db.in_memory:InMemoryDb", _nothing, "memory://  (InMemoryDb)"),
    Backend(("postgres", "postgresql", "postgresql+psycopg"), "agentkeep.db.postgres:PostgresDb", _postgres,
            "postgresql://user@host:5432/db (also postgres://, postgresql+psycopg://; ?db_schema=name)"),
    Backend(("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"), "agentkeep.db.mysql:MysqlDb", _db_url,
            "mysql+pymysql://user@host:3306/db (also mysql://, mariadb://)"),
    Backend(("singlestoredb", "singlestore", "singlestoredb+pymysql"), "agentkeep.db.singlestore:SingleStoreDb",
            _db_url, "singlestoredb://user@host:3306/db"),
    Backend(("mongodb", "mongodb+srv"), "agentkeep.db.mongo:MongoDb", _db_url,
            "mongodb://user@host:27017/dbname (also mongodb+srv://; the path names the database, default agentkeep)"),
    Backend(("redis", "rediss"), "agentkeep.db.redis:RedisDb", _redis,
            "redis://host:6379/0 (also rediss://; ?prefix=name)"),
    Backend(("dynamodb",), "agentkeep.db.dynamo:DynamoDb", _dynamodb,
            "dynamodb://region/table_prefix (e.g. dynamodb://eu-west-1/agentkeep; ?endpoint_url=http://localhost:8000"
            "&connect_timeout=seconds)"),
    Backend(("firestore",), "agentkeep.db.firestore:FirestoreDb", _firestore,
            "firestore://project_id[/database] (?collection_prefix=name&emulator_host=host:port&connect_timeout=seconds)"),
)
SCHEMES = {scheme: backend for backend in BACKENDS for scheme in backend.schemes}
URL_FORMS = tuple(backend.form for backend in BACKENDS)


def resolve(url: str) -> tuple[Backend, dict[str, Any]]:
    """The backend a URL names and the keyword arguments the URL gives its class, without
    importing the backend. Raises InvalidInputError for an unknown or malformed URL."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"not a db URL: {url!r}; expected one of: {'; '.join(URL_FORMS)}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    backend = SCHEMES.get(scheme)
    if backend is None and "+" in scheme:
        backend = SCHEMES.get(scheme.partition("+")[0] + "+*")
    if backend is None:
        raise InvalidInputError(
            f"unknown db URL scheme {scheme!r} in {url!r}; expected one of: {'; '.join(URL_FORMS)}"
        )
    return backend, backend.arguments(url, scheme, rest)


def connect(url: str, **kwargs: Any):
    """Return the db a URL names; `kwargs` go to its class and win over what the URL says.
    Raises InvalidInputError for an unknown or malformed URL."""
    backend, arguments = resolve(url)
    return backend.load()(**{**arguments, **kwargs})
