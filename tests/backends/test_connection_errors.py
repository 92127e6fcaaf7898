"""A server that cannot be reached, a refused login or a missing database raise
ConnectionFailedError on every server backend, sync and async: the driver's own error
chained, the location shown without its password. Each backend also sets a default connect
timeout, checked here as a setting (nothing here measures time).

The closed-port cases need no server: a port on loopback that was bound and released has
nothing listening. The login and database cases run against the PostgreSQL, MariaDB and
Redis servers of tests/services."""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

import pytest

from agentkeep.db import ConnectionFailedError
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from tests.conftest import require
from tests.services.process import free_port

SECRET = "s3cret"


closed_port = free_port  # nothing listens on it


def backend_class(module: str, name: str, driver: str) -> type:
    pytest.importorskip(driver)
    return getattr(importlib.import_module(f"agentkeep.db.{module}"), name)


def first_call_error(cls: type, **kwargs: Any) -> BaseException:
    """What the first call of a fresh db raises (an async db is built and used on one loop)."""
    if not asyncio.iscoroutinefunction(cls.list_sessions):
        db = cls(**kwargs)
        try:
            db.list_sessions()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            return exc
        finally:
            db.close()
        pytest.fail("the first call succeeded")

    async def first_call() -> BaseException | None:
        db = cls(**kwargs)
        try:
            await db.list_sessions()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            return exc
        finally:
            await db.close()
        return None

    error = asyncio.run(first_call())
    if error is None:
        pytest.fail("the first call succeeded")
    return error


def chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def assert_connection_failed(error: BaseException, driver: str) -> ConnectionFailedError:
    assert isinstance(error, ConnectionFailedError), repr(error)
    packages = [type(e).__module__.split(".")[0] for e in chain(error)[1:]]
    assert driver.split(".")[0] in packages, f"the driver's error is not chained: {packages}"
    assert SECRET not in str(error), str(error)
    assert "\n" not in str(error)
    return error


# -- a closed port on loopback ---------------------------------------------------------------

CLOSED_PORT = {
    # id: (module, class, the driver package whose error is chained, kwargs for the port)
    "postgres": ("postgres", "PostgresDb", "psycopg",
                 lambda p: {"db_url": f"postgresql://u:{SECRET}@127.0.0.1:{p}/db"}),
    "postgres_async": ("postgres", "AsyncPostgresDb", "psycopg",
                       lambda p: {"db_url": f"postgresql://u:{SECRET}@127.0.0.1:{p}/db"}),
    "mysql": ("mysql", "MysqlDb", "pymysql", lambda p: {"db_url": f"mysql+pymysql://root:{SECRET}@127.0.0.1:{p}/db"}),
    "mysql_async": ("mysql", "AsyncMysqlDb", "pymysql",
                    lambda p: {"db_url": f"mysql+pymysql://root:{SECRET}@127.0.0.1:{p}/db"}),
    "singlestore": ("singlestore", "SingleStoreDb", "pymysql",
                    lambda p: {"db_url": f"singlestoredb://root:{SECRET}@127.0.0.1:{p}/db"}),
    "singlestore_async": ("singlestore", "AsyncSingleStoreDb", "pymysql",
                          lambda p: {"db_url": f"singlestoredb://root:{SECRET}@127.0.0.1:{p}/db"}),
    # a shorter connect_timeout than the default only to keep the suite quick
    "mongo": ("mongo", "MongoDb", "pymongo",
              lambda p: {"db_url": f"mongodb://u:{SECRET}@127.0.0.1:{p}/db", "connect_timeout": 1}),
    "mongo_async": ("mongo", "AsyncMongoDb", "pymongo",
                    lambda p: {"db_url": f"mongodb://u:{SECRET}@127.0.0.1:{p}/db", "connect_timeout": 1}),
    "redis": ("redis", "RedisDb", "redis", lambda p: {"db_url": f"redis://:{SECRET}@127.0.0.1:{p}/0"}),
    "redis_async": ("redis", "AsyncRedisDb", "redis", lambda p: {"db_url": f"redis://:{SECRET}@127.0.0.1:{p}/0"}),
    "dynamodb": ("dynamo", "DynamoDb", "botocore",
                 lambda p: {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{p}",
                            "aws_access_key_id": "test", "aws_secret_access_key": SECRET}),
    "firestore": ("firestore", "FirestoreDb", "google",
                  lambda p: {"project_id": "p", "emulator_host": f"127.0.0.1:{p}", "connect_timeout": 1}),
    "json_s3": ("json", "JsonDb", "botocore",
                lambda p: {"path": "s3://bucket/prefix", "storage_options": {
                    "endpoint_url": f"http://127.0.0.1:{p}", "key": "test", "secret": SECRET,
                    "config_kwargs": {"retries": {"max_attempts": 1}}}}),
}


@pytest.mark.parametrize("case", list(CLOSED_PORT))
def test_a_closed_port_raises_connection_failed(case):
    module, name, driver, kwargs = CLOSED_PORT[case]
    if case == "json_s3":
        pytest.importorskip("s3fs")
    cls = backend_class(module, name, "google.cloud.firestore" if driver == "google" else driver)
    port = closed_port()
    error = assert_connection_failed(first_call_error(cls, **kwargs(port)), driver)
    assert str(port) in str(error)  # it says where


def test_schema_status_and_migrate_raise_it_too():
    """Methods that do not make the schema ready first go through the same translation."""
    from agentkeep.db.redis import RedisDb

    db = RedisDb(db_url=f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0")
    try:
        for call in (db.schema_status, db.migrate, db.create_tables):
            with pytest.raises(ConnectionFailedError) as info:
                call()
            assert_connection_failed(info.value, "redis")
    finally:
        db.close()


# -- refused logins and missing databases on the real servers ---------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> str:
    pytest.importorskip("psycopg")
    from tests.conformance.backends import _postgres_check, postgres_url

    require(_postgres_check())
    return postgres_url()


@pytest.fixture(scope="module")
def mysql_url() -> str:
    pytest.importorskip("pymysql")
    from tests.services import mysql

    url = mysql.server_url()
    require(mysql.reachable(url))
    return url


@pytest.mark.parametrize("name", ["PostgresDb", "AsyncPostgresDb"])
@pytest.mark.parametrize("what", ["role", "database"])
def test_postgres_refuses_an_unknown_role_or_database(postgres_url, name, what):
    import sqlalchemy as sa

    from agentkeep.db import postgres

    url = sa.make_url(postgres_url).set(password=SECRET)
    url = url.set(username="agentkeep_no_such_role") if what == "role" else url.set(database="agentkeep_no_such_db")
    cls = getattr(postgres, name)
    error = assert_connection_failed(first_call_error(cls, db_url=url.render_as_string(hide_password=False)), "psycopg")
    assert ("agentkeep_no_such_role" if what == "role" else "agentkeep_no_such_db") in str(error)


@pytest.mark.parametrize("name", ["MysqlDb", "AsyncMysqlDb", "SingleStoreDb", "AsyncSingleStoreDb"])
@pytest.mark.parametrize("what", ["login", "database"])
def test_mysql_refuses_an_unknown_database_or_login(mysql_url, name, what):
    from urllib.parse import urlsplit

    from tests.services import mysql

    module = "singlestore" if "SingleStore" in name else "mysql"
    cls = getattr(importlib.import_module(f"agentkeep.db.{module}"), name)
    if what == "database":
        url = mysql.with_database(mysql_url, "agentkeep_no_such_db")
    else:
        u = urlsplit(mysql_url)
        url = u._replace(netloc=f"agentkeep_no_such_user:{SECRET}@{u.hostname}:{u.port or 3306}").geturl()
    error = assert_connection_failed(first_call_error(cls, db_url=url), "pymysql")
    assert ("agentkeep_no_such_db" if what == "database" else "agentkeep_no_such_user") in str(error)


@pytest.mark.server
@pytest.mark.parametrize("name", ["RedisDb", "AsyncRedisDb"])
def test_redis_refuses_a_database_number_it_does_not_have(name):
    pytest.importorskip("redis")
    from agentkeep.db import redis as module
    from tests.services import redis

    require(redis.check())
    url = redis.server_url().rsplit("/", 1)[0] + "/100000"
    assert_connection_failed(first_call_error(getattr(module, name), db_url=url), "redis")


def test_dynamodb_without_credentials(monkeypatch, tmp_path):
    pytest.importorskip("boto3")
    from agentkeep.db.dynamo import DynamoDb

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    error = first_call_error(DynamoDb, region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port()}")
    assert_connection_failed(error, "botocore")
    assert type(chain(error)[1]).__name__ == "NoCredentialsError"


# -- default connect timeouts (settings, read back from the clients) ---------------------------


def test_default_connect_timeouts_of_the_clients_that_need_no_server():
    pytest.importorskip("pymongo")
    pytest.importorskip("redis")
    pytest.importorskip("boto3")
    pytest.importorskip("google.cloud.firestore")
    from agentkeep.db.dynamo import DynamoDb
    from agentkeep.db.firestore import FirestoreDb
    from agentkeep.db.mongo import MongoDb
    from agentkeep.db.redis import RedisDb

    port = closed_port()
    mongo = MongoDb(db_url=f"mongodb://127.0.0.1:{port}")
    assert mongo.kernel.client.options.server_selection_timeout == CONNECT_TIMEOUT_S
    assert mongo.kernel.client.options.pool_options.connect_timeout == CONNECT_TIMEOUT_S
    mongo.close()
    mongo = MongoDb(db_url=f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=700", connect_timeout=2)
    assert mongo.kernel.client.options.server_selection_timeout == 0.7  # the URL's own wins
    assert mongo.kernel.client.options.pool_options.connect_timeout == 2
    mongo.close()

    redis = RedisDb(db_url=f"redis://127.0.0.1:{port}/0")
    assert redis.kernel.r.connection_pool.connection_kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT_S
    redis.close()
    redis = RedisDb(db_url=f"redis://127.0.0.1:{port}/0?socket_connect_timeout=2")
    assert redis.kernel.r.connection_pool.connection_kwargs["socket_connect_timeout"] == 2
    redis.close()

    dynamo = DynamoDb(region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=3)
    assert dynamo.kernel.client.meta.config.connect_timeout == 3
    dynamo.close()

    firestore = FirestoreDb(project_id="p", emulator_host=f"127.0.0.1:{port}")
    assert firestore.kernel.connect_timeout == CONNECT_TIMEOUT_S
    firestore.close()


def test_default_connect_timeouts_of_postgres(postgres_url):
    from agentkeep.db.postgres import AsyncPostgresDb, PostgresDb

    for url, expected in ((postgres_url, str(int(CONNECT_TIMEOUT_S))), (f"{postgres_url}?connect_timeout=9", "9")):
        db = PostgresDb(db_url=url)
        raw = db.kernel.engine.raw_connection()
        try:
            assert raw.driver_connection.info.get_parameters()["connect_timeout"] == expected
        finally:
            raw.close()
            db.close()
    assert AsyncPostgresDb(db_url=postgres_url).kernel.connect_kwargs["connect_timeout"] == int(CONNECT_TIMEOUT_S)


def test_default_connect_timeouts_of_mysql(mysql_url):
    from agentkeep.db.mysql import AsyncMysqlDb, MysqlDb

    separator = "&" if "?" in mysql_url else "?"
    for url, expected in ((mysql_url, CONNECT_TIMEOUT_S), (f"{mysql_url}{separator}connect_timeout=9", 9)):
        db = MysqlDb(db_url=url)
        raw = db.kernel.engine.raw_connection()
        try:
            assert raw.driver_connection.connect_timeout == expected
        finally:
            raw.close()
            db.close()
    assert AsyncMysqlDb(db_url=mysql_url).kernel.timeout == CONNECT_TIMEOUT_S
