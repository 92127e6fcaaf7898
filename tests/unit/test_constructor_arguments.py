"""A db's constructor checks its arguments before it opens or creates anything: a wrong type
is InvalidInputError naming the argument, an unknown keyword is refused with the closest
valid name (per-table names such as session_table= still work), and a SQLite file whose
directory does not exist is refused instead of the directories being created."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from agentkeep.db import InvalidInputError

# backend class -> (module, a driver to skip on, arguments that build it without a server)
BACKENDS = {
    "InMemoryDb": ("in_memory", None, {}),
    "SqliteDb": ("sqlite", None, {"db_file": ":memory:"}),
    "AsyncSqliteDb": ("sqlite", "aiosqlite", {"db_file": ":memory:"}),
    "JsonDb": ("json", "fsspec", {"path": "memory://constructor-arguments"}),
    "PostgresDb": ("postgres", "psycopg", {"db_url": "postgresql://u@127.0.0.1:1/db"}),
    "AsyncPostgresDb": ("postgres", "psycopg_pool", {"db_url": "postgresql://u@127.0.0.1:1/db"}),
    "MysqlDb": ("mysql", "pymysql", {"db_url": "mysql://root@127.0.0.1:1/db"}),
    "AsyncMysqlDb": ("mysql", "aiomysql", {"db_url": "mysql://root@127.0.0.1:1/db"}),
    "SingleStoreDb": ("singlestore", "pymysql", {"db_url": "singlestoredb://root@127.0.0.1:1/db"}),
    "MongoDb": ("mongo", "pymongo", {"db_url": "mongodb://127.0.0.1:1"}),
    "AsyncMongoDb": ("mongo", "pymongo", {"db_url": "mongodb://127.0.0.1:1"}),
    "RedisDb": ("redis", "redis", {"db_url": "redis://127.0.0.1:1/0"}),
    "AsyncRedisDb": ("redis", "redis", {"db_url": "redis://127.0.0.1:1/0"}),
    "DynamoDb": ("dynamo", "boto3", {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:1"}),
    "FirestoreDb": ("firestore", "google.cloud.firestore", {"project_id": "p", "emulator_host": "127.0.0.1:1"}),
}


def backend(name: str) -> tuple[type, dict]:
    module, driver, kwargs = BACKENDS[name]
    if driver:
        pytest.importorskip(driver)
    return getattr(importlib.import_module(f"agentkeep.db.{module}"), name), dict(kwargs)


def build(cls: type, **kwargs):
    """Construct, then close (async dbs on a loop of their own)."""

    async def make_async():
        db = cls(**kwargs)
        await db.close()

    if asyncio.iscoroutinefunction(cls.close):
        asyncio.run(make_async())
    else:
        cls(**kwargs).close()


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_refuses_an_unknown_keyword_with_a_suggestion(name):
    cls, kwargs = backend(name)
    build(cls, **kwargs, session_table="chat_sessions")  # table names are keywords too
    with pytest.raises(InvalidInputError, match=r"unknown argument 'sesion_table'; did you mean 'session_table'\?"):
        build(cls, **kwargs, sesion_table="chat_sessions")
    with pytest.raises(InvalidInputError, match=r"unknown argument 'idd'; did you mean 'id'\?"):
        build(cls, **kwargs, idd="x")
    with pytest.raises(InvalidInputError, match="unknown argument 'no_such_option'"):
        build(cls, **kwargs, no_such_option=1)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_checks_id_and_table_names(name):
    cls, kwargs = backend(name)
    with pytest.raises(InvalidInputError, match="id must be"):
        build(cls, **kwargs, id=3)
    with pytest.raises(InvalidInputError, match="session_table must be"):
        build(cls, **kwargs, session_table=7)


@pytest.mark.parametrize(("name", "wrong", "meant"), [
    ("SqliteDb", "db_path", "db_file"),
    ("SqliteDb", "filename", "db_file"),
    ("PostgresDb", "db_uri", "db_url"),
    ("PostgresDb", "schema", "db_schema"),
    ("MongoDb", "db_nam", "db_name"),
    ("RedisDb", "prefx", "prefix"),
    ("DynamoDb", "region", "region_name"),
    ("FirestoreDb", "project", "project_id"),
    ("JsonDb", "pth", "path"),
])
def test_the_suggestion_is_the_argument_meant(name, wrong, meant):
    cls, kwargs = backend(name)
    with pytest.raises(InvalidInputError, match=rf"unknown argument '{wrong}'; did you mean '{meant}'\?"):
        build(cls, **kwargs, **{wrong: "x"})


def test_mongo_takes_client_options_in_any_case_and_refuses_a_misspelt_one():
    cls, kwargs = backend("MongoDb")
    db = cls(**kwargs, serverSelectionTimeoutMS=1500, maxpoolsize=3)
    assert db.kernel.client.options.server_selection_timeout == 1.5
    assert db.kernel.client.options.pool_options.max_pool_size == 3
    db.close()
    with pytest.raises(InvalidInputError, match=r"unknown argument 'maxPoolSze'; did you mean 'maxpoolsize'\?"):
        cls(**kwargs, maxPoolSze=3)


@pytest.mark.parametrize(("name", "argument", "value"), [
    ("SqliteDb", "table_prefix", 1),
    ("SqliteDb", "db_file", 123),
    ("SqliteDb", "db_url", 5),
    ("AsyncSqliteDb", "pool_size", "4"),
    ("JsonDb", "path", 123),
    ("JsonDb", "storage_options", "anon"),
    ("PostgresDb", "pool_size", 0),
    ("PostgresDb", "pooler", "yes"),
    ("PostgresDb", "connect_timeout", 0),
    ("MysqlDb", "connect_timeout", "5"),
    ("MongoDb", "ttl", 1),
    ("RedisDb", "client_options", ["x"]),
    ("DynamoDb", "endpoint_url", 8000),
    ("FirestoreDb", "database", None),
])
def test_a_wrong_type_names_the_argument(name, argument, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls, kwargs = backend(name)
    if argument == "db_url":
        del kwargs["db_file"]  # SqliteDb takes one or the other
    with pytest.raises(InvalidInputError, match=rf"\b{argument} must be"):
        build(cls, **{**kwargs, argument: value})
    assert list(tmp_path.iterdir()) == []  # no file named 123, no tables named 1sessions


@pytest.mark.parametrize("name", ["SqliteDb", "AsyncSqliteDb"])
def test_sqlite_refuses_a_file_in_a_missing_directory(name, tmp_path):
    cls, _ = backend(name)
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(InvalidInputError, match=f"no such directory: {missing}"):
        build(cls, db_file=missing / "x.db")
    with pytest.raises(InvalidInputError, match=f"no such directory: {missing}"):
        build(cls, db_url=f"sqlite:///{missing}/x.db")
    assert not (tmp_path / "no").exists()


def test_sqlite_url_naming_a_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from agentkeep.db import connect

    with pytest.raises(InvalidInputError, match="sqlite:///"):
        connect("sqlite://agentkeep.db")
    assert list(tmp_path.iterdir()) == []
