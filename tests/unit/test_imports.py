"""Importing one backend imports no other backend's driver."""

import json
import subprocess
import sys

import pytest

CASES = {
    "agentkeep.db": ["sqlalchemy", "fsspec", "filelock"],
    "agentkeep.db.in_memory": ["sqlalchemy", "fsspec"],
    "agentkeep.db.sqlite": ["fsspec", "filelock"],
    "agentkeep.db.json": ["sqlalchemy"],
    # the agent runtime loads its model's client and OpenTelemetry when first used, and no db
    "agentkeep.agent": ["sqlalchemy", "fsspec", "psycopg", "openai", "opentelemetry.sdk", "agentkeep.knowledge",
                        "agentkeep.vector_db"],
    "agentkeep.models": ["openai", "sqlalchemy"],
}


@pytest.mark.parametrize("module", list(CASES))
def test_backend_imports_only_its_driver(module):
    code = f"import sys, {module}; print(' '.join(m for m in {CASES[module]!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} also imported: {out}"


# every backend class from agentkeep.db: (its module, the modules it may also load, its drivers)
BACKEND_CLASSES = {
    "InMemoryDb": ("backends.in_memory.db", (), ()),
    "SqliteDb": ("backends.sql.sqlite", (), ()),
    "AsyncSqliteDb": ("backends.sql.sqlite", (), ()),
    "JsonDb": ("backends.json.db", (), ("fsspec", "filelock")),
    "GcsJsonDb": ("backends.json.gcs", ("backends.json.db",), ("fsspec", "filelock")),
    "PostgresDb": ("backends.sql.postgres", (), ()),
    "AsyncPostgresDb": ("backends.sql.postgres", (), ()),
    "MysqlDb": ("backends.sql.mysql", (), ()),
    "AsyncMysqlDb": ("backends.sql.mysql", (), ()),
    "SingleStoreDb": ("backends.sql.singlestore", ("backends.sql.mysql",), ()),
    "AsyncSingleStoreDb": ("backends.sql.singlestore", ("backends.sql.mysql",), ()),
    "MongoDb": ("backends.mongo.db", (), ("pymongo",)),
    "AsyncMongoDb": ("backends.mongo.db", (), ("pymongo",)),
    "RedisDb": ("backends.redis.db", (), ()),
    "AsyncRedisDb": ("backends.redis.db", (), ()),
    "DynamoDb": ("backends.dynamo.db", (), ()),
    "FirestoreDb": ("backends.firestore.db", (), ("google.cloud.firestore",)),
}
DRIVERS = ("fsspec", "filelock", "psycopg", "pymysql", "aiomysql", "aiosqlite", "pymongo", "redis", "boto3",
           "google.cloud.firestore", "s3fs", "gcsfs")
BACKEND_MODULES = sorted({module for module, _, _ in BACKEND_CLASSES.values()})
# a driver the backend module needs to be imported at all
DRIVER_OF = {"backends.json.db": "fsspec", "backends.json.gcs": "fsspec", "backends.mongo.db": "pymongo",
             "backends.firestore.db": "google.cloud.firestore"}


@pytest.mark.parametrize("name", list(BACKEND_CLASSES))
def test_every_backend_class_from_agentkeep_db_imports_only_its_backend(name):
    module, also, drivers = BACKEND_CLASSES[name]
    pytest.importorskip(DRIVER_OF.get(module, "sqlalchemy"))
    code = (
        "import sys, json\n"
        f"from agentkeep.db import {name}\n"
        f"import agentkeep.db.{module} as own\n"
        f"assert {name} is own.{name}\n"
        f"print(json.dumps([[m for m in {BACKEND_MODULES!r} if 'agentkeep.db.' + m in sys.modules],"
        f" [d for d in {DRIVERS!r} if d in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules, drivers_loaded = json.loads(out)
    assert sorted(modules) == sorted({module, *also})
    assert set(drivers_loaded) <= set(drivers), f"{name} also imported {drivers_loaded}"


def test_agentkeep_db_lists_the_backend_classes_without_importing_them():
    code = (
        "import sys, agentkeep.db as db\n"
        f"names = {sorted(BACKEND_CLASSES)!r}\n"
        "assert set(names) <= set(dir(db)), sorted(set(names) - set(dir(db)))\n"
        f"print([m for m in {BACKEND_MODULES!r} if 'agentkeep.db.' + m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# a URL of each backend -> its class, as agentkeep.db.connect resolves it
BACKEND_URLS = {
    "sqlite:///:memory:": "SqliteDb",
    "json://./keep": "JsonDb",
    "json+gs://bucket/keep": "JsonDb",
    "memory://": "InMemoryDb",
    "postgresql://u@h/db?db_schema=s": "PostgresDb",
    "mysql://u@h/db": "MysqlDb",
    "singlestoredb://u@h/db": "SingleStoreDb",
    "mongodb://h/db": "MongoDb",
    "redis://h:6379/0": "RedisDb",
    "dynamodb://eu-west-1/ak": "DynamoDb",
    "firestore://project": "FirestoreDb",
}


@pytest.mark.parametrize("url", list(BACKEND_URLS))
def test_resolving_a_url_imports_only_its_backend(url):
    from tests.unit.test_urls import resolved_in_a_fresh_interpreter

    name = BACKEND_URLS[url]
    module, also, drivers = BACKEND_CLASSES[name]
    pytest.importorskip(DRIVER_OF.get(module, "sqlalchemy"))
    before, loaded, modules, drivers_loaded = resolved_in_a_fresh_interpreter(
        f"from agentkeep.db.urls import resolve\nentry, _ = resolve({url!r})",
        [f"agentkeep.db.{m}" for m in BACKEND_MODULES], DRIVERS)
    assert before == [] and loaded == name
    assert sorted(modules) == sorted(f"agentkeep.db.{m}" for m in {module, *also})
    assert set(drivers_loaded) <= set(drivers), f"{url} also imported {drivers_loaded}"
