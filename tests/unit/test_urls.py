"""The URL registries of dbs (agentkeep.db.urls) and vector stores (agentkeep.vector_db.urls):
every URL form they print resolves to its class without connecting or importing it, the
URL's parts become the class's keyword arguments, and an unknown URL lists the forms."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from agentkeep.db import urls as db_urls
from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import urls as vector_urls

# a URL in a form's help text (not one inside a query parameter, such as ?endpoint_url=http://...)
URL_IN_TEXT = re.compile(r"(?<![=\w+.])[a-z][a-z0-9+]*://[^\s,;()\[]*")

# every URL that URL_FORMS shows -> the db class it opens
DB_FORMS = {
    "sqlite:///relative/path.db": "SqliteDb",
    "sqlite:////absolute/path.db": "SqliteDb",
    "sqlite:///:memory:": "SqliteDb",
    "json://./dir": "JsonDb",
    "json:///absolute/dir": "JsonDb",
    "json+memory://name": "JsonDb",
    "json+s3://bucket/prefix": "JsonDb",
    "json+gs://bucket/prefix": "JsonDb",
    "memory://": "InMemoryDb",
    "postgresql://user@host:5432/db": "PostgresDb",
    "postgres://": "PostgresDb",
    "postgresql+psycopg://": "PostgresDb",
    "mysql+pymysql://user@host:3306/db": "MysqlDb",
    "mysql://": "MysqlDb",
    "mariadb://": "MysqlDb",
    "singlestoredb://user@host:3306/db": "SingleStoreDb",
    "mongodb://user@host:27017/dbname": "MongoDb",
    "mongodb+srv://": "MongoDb",
    "redis://host:6379/0": "RedisDb",
    "rediss://": "RedisDb",
    "dynamodb://region/table_prefix": "DynamoDb",
    "dynamodb://eu-west-1/agentkeep": "DynamoDb",
    "firestore://project_id": "FirestoreDb",
}

# every URL that the vector stores' URL_FORMS shows -> the store class it opens
VECTOR_FORMS = {
    "postgresql://user@host:5432/db": "PgVector",
    "postgres://": "PgVector",
    "postgresql+psycopg://": "PgVector",
    "lancedb:///abs/dir": "LanceDb",
    "lancedb://./rel/dir": "LanceDb",
    "qdrant:///dir": "QdrantDb",
    "qdrant+http://host:6333": "QdrantDb",
    "qdrant+https://": "QdrantDb",
    "chroma:///dir": "ChromaDb",
    "chroma+http://host:8000": "ChromaDb",
    "chroma+https://": "ChromaDb",
    "milvus:///file.db": "MilvusDb",
    "milvus+http://host:19530": "MilvusDb",
    "milvus+https://": "MilvusDb",
    "chdb:///dir": "ClickHouseDb",
    "clickhouse+http://host:8123": "ClickHouseDb",
    "clickhouse+https://": "ClickHouseDb",
    "redis://host:6379/0": "RedisVectorDb",
    "rediss://": "RedisVectorDb",
    "surrealkv:///dir": "SurrealDb",
    "surrealdb+ws://host:8000": "SurrealDb",
    "surrealdb+wss://": "SurrealDb",
    "surrealdb+http://": "SurrealDb",
    "surrealdb+https://": "SurrealDb",
    "memory://": "InMemoryVectorDb",
}


def _shown(forms: tuple[str, ...]) -> list[str]:
    return [url for form in forms for url in URL_IN_TEXT.findall(form)]


def _class_name(target: str) -> str:
    return target.rpartition(":")[2]


def test_every_db_url_form_shown_resolves_to_its_class():
    assert sorted(set(_shown(db_urls.URL_FORMS))) == sorted(DB_FORMS)
    for url, name in DB_FORMS.items():
        backend, _ = db_urls.resolve(url)
        assert _class_name(backend.target) == name, url


def test_every_vector_url_form_shown_resolves_to_its_class():
    assert sorted(set(_shown(vector_urls.URL_FORMS))) == sorted(VECTOR_FORMS)
    for url, name in VECTOR_FORMS.items():
        assert _class_name(vector_urls.store_for(url).target) == name, url


@pytest.mark.parametrize("registry, entries", [(db_urls, db_urls.BACKENDS), (vector_urls, vector_urls.STORES)])
def test_each_scheme_belongs_to_one_entry(registry, entries):
    schemes = [scheme for entry in entries for scheme in entry.schemes]
    assert len(schemes) == len(set(schemes)) == len(registry.SCHEMES)
    assert all(scheme == scheme.lower() for scheme in schemes)
    assert registry.URL_FORMS == tuple(entry.form for entry in entries)


@pytest.mark.parametrize("url, arguments", [
    ("sqlite:///x.db", {"db_url": "sqlite:///x.db"}),
    ("SQLite:///x.db", {"db_url": "SQLite:///x.db"}),
    ("json://./keep", {"path": "./keep"}),
    ("json:///abs/keep", {"path": "/abs/keep"}),
    ("json+s3://bucket/prefix", {"path": "s3://bucket/prefix"}),
    ("json+memory://name", {"path": "memory://name"}),
    ("memory://", {}),
    ("inmemory://", {}),
    ("postgresql://u@h/db", {"db_url": "postgresql://u@h/db"}),
    ("postgres://u@h/db?sslmode=require&db_schema=s1&db_schema=s2",
     {"db_url": "postgres://u@h/db?sslmode=require", "db_schema": "s2"}),
    ("mariadb+pymysql://u@h/db", {"db_url": "mariadb+pymysql://u@h/db"}),
    ("singlestore://u@h/db", {"db_url": "singlestore://u@h/db"}),
    ("mongodb+srv://h/db", {"db_url": "mongodb+srv://h/db"}),
    ("redis://h:6379/0?prefix=kp&socket_timeout=3", {"db_url": "redis://h:6379/0?socket_timeout=3", "prefix": "kp"}),
    ("dynamodb://eu-west-1/ak?endpoint_url=http://localhost:8000&connect_timeout=2",
     {"region_name": "eu-west-1", "table_prefix": "ak", "endpoint_url": "http://localhost:8000",
      "connect_timeout": 2.0}),
    ("dynamodb://", {}),
    ("firestore://proj", {"project_id": "proj", "database": "(default)"}),
    ("firestore://proj/db2?collection_prefix=ak&emulator_host=127.0.0.1:8080",
     {"project_id": "proj", "database": "db2", "collection_prefix": "ak", "emulator_host": "127.0.0.1:8080"}),
])
def test_a_db_url_becomes_its_class_keyword_arguments(url, arguments):
    assert db_urls.resolve(url)[1] == arguments


@pytest.mark.parametrize("url, message", [
    ("json://", "names no directory"),
    ("firestore://", "names no project"),
    ("firestore://p?nosuch=1", r"unknown URL option\(s\) \['nosuch'\]"),
    ("dynamodb://r/p?connect_timeout=soon", "connect_timeout must be a number of seconds"),
])
def test_a_malformed_db_url_says_what_is_wrong(url, message):
    with pytest.raises(InvalidInputError, match=message):
        db_urls.resolve(url)


@pytest.mark.parametrize("url, start", [
    ("nosuch://x", "unknown db URL scheme 'nosuch' in 'nosuch://x'; expected one of: "),
    ("postgresql+nosuch://x", "unknown db URL scheme 'postgresql+nosuch' in"),
    ("just-a-path.db", "not a db URL: 'just-a-path.db'; expected one of: "),
])
def test_an_unknown_db_url_lists_every_form(url, start):
    with pytest.raises(InvalidInputError) as caught:
        db_urls.connect(url)
    assert str(caught.value).startswith(start)
    assert str(caught.value).endswith("; ".join(db_urls.URL_FORMS))


def test_connect_passes_its_keywords_over_the_urls(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(InvalidInputError, match="no such directory"):
        db_urls.connect(f"sqlite:///{missing}/x.db")
    db = db_urls.connect(f"sqlite:///{missing}/x.db", db_url="sqlite:///:memory:")
    try:
        assert type(db).__name__ == "SqliteDb" and db.schema_status()
    finally:
        db.close()


@pytest.mark.parametrize("url, arguments", [
    ("postgresql://u@h/db", {"db_url": "postgresql://u@h/db"}),
    ("lancedb://./kb", {"uri": "./kb"}),
    ("lancedb:///var/lib/k%20b", {"uri": "/var/lib/k b"}),
    ("qdrant:///q", {"path": "/q"}),
    ("qdrant+https://h:6333", {"url": "https://h:6333"}),
    ("chroma://./c", {"path": "./c"}),
    ("milvus:///m.db", {"uri": "/m.db"}),
    ("milvus+http://h:19530", {"uri": "http://h:19530"}),
    ("chdb://./c", {"path": "./c"}),
    ("clickhouse+http://h:8123", {"url": "http://h:8123"}),
    ("rediss://h:6380/0", {"db_url": "rediss://h:6380/0"}),
    ("surrealkv:///s", {"url": "surrealkv:///s"}),
    ("surrealdb+ws://h:8000", {"url": "ws://h:8000"}),
    ("memory://", {}),
])
def test_a_vector_url_becomes_its_store_keyword_arguments(url, arguments):
    assert vector_urls.store_for(url).arguments(url) == arguments


def test_an_unknown_vector_url_lists_every_scheme():
    with pytest.raises(InvalidInputError) as caught:
        vector_urls.open_vector_db("nosuch://x", "kb")
    assert str(caught.value) == (
        f"unknown vector store URL scheme 'nosuch'; known: {', '.join(sorted(vector_urls.SCHEMES))}"
    )


def test_only_in_process_stores_keep_no_data():
    assert vector_urls.IN_PROCESS_SCHEMES == {"memory"}
    assert [url for url in VECTOR_FORMS if not vector_urls.keeps_data(url)] == ["memory://"]


def resolved_in_a_fresh_interpreter(resolve: str, modules: list[str], drivers: tuple[str, ...]) -> list:
    """Run `resolve` (code that sets `entry` to a registry entry) in a fresh interpreter: the
    `modules` imported before the entry's class is loaded, the class's name, and the
    `modules` and `drivers` imported after."""
    code = (
        "import sys, json\n"
        f"{resolve}\n"
        f"before = [m for m in {modules!r} if m in sys.modules]\n"
        "name = entry.load().__name__\n"
        f"print(json.dumps([before, name, [m for m in {modules!r} if m in sys.modules],"
        f" [d for d in {drivers!r} if d in sys.modules]]))"
    )
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


STORE_DRIVERS = ("psycopg", "lancedb", "qdrant_client", "chromadb", "pymilvus", "chdb", "clickhouse_connect",
                 "redis", "surrealdb", "pyarrow")


@pytest.mark.parametrize("url", sorted({url.split("://")[0]: url for url in VECTOR_FORMS}.values()))
def test_resolving_a_vector_url_imports_only_its_own_store(url):
    store_modules = sorted({store.target.partition(":")[0] for store in vector_urls.STORES})
    before, name, modules, drivers = resolved_in_a_fresh_interpreter(
        f"from agentkeep.vector_db.urls import store_for\nentry = store_for({url!r})", store_modules, STORE_DRIVERS)
    assert before == [] and name == VECTOR_FORMS[url]
    assert modules == [vector_urls.store_for(url).target.partition(":")[0]] and drivers == []
