"""open_vector_db: each URL scheme opens its store, and the store works."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.urls import keeps_data, open_vector_db


def _urls(tmp: Path) -> dict[str, str]:
    return {
        "lancedb": f"lancedb://{tmp / 'lance'}",
        "qdrant": f"qdrant://{tmp / 'qdrant'}",
        "chroma": f"chroma://{tmp / 'chroma'}",
        "milvus": f"milvus://{tmp / 'milvus.db'}",
        "clickhouse": f"chdb://{tmp / 'chdb'}",
        "surrealdb": f"surrealkv://{tmp / 'surreal'}",
        "memory": "memory://",
    }


@pytest.mark.parametrize("kind", list(_urls(Path("/x"))))
def test_each_local_url_opens_a_working_store(kind, tmp_path):
    url = _urls(tmp_path)[kind]
    store = open_vector_db(url, f"kb_{uuid.uuid4().hex[:8]}", search_type="hybrid", distance="cosine")
    try:
        store.create(3)
        store.upsert([Chunk(id="a", content="rotating api keys", embedding=[1.0, 0.0, 0.0], content_id="c"),
                      Chunk(id="b", content="lunch menu", embedding=[0.0, 1.0, 0.0], content_id="c")])
        assert store.count() == 2 and store.search_type == "hybrid"
        assert [h.id for h in store.search("rotate keys", embedding=[1.0, 0.1, 0.0], limit=1)] == ["a"]
        store.drop()
        assert not store.exists()
    finally:
        store.close()


@pytest.mark.server
def test_pgvector_url(tmp_path):
    from tests.vector_db.conftest import require
    from tests.vector_db.stores import STORES

    require(next(s for s in STORES if s.name == "pgvector"))
    from tests.services.pgvector import server_url

    store = open_vector_db(server_url().replace("postgresql://", "postgres://", 1), f"kb_{uuid.uuid4().hex[:8]}")
    try:
        store.create(3)
        assert type(store).__name__ == "PgVector" and store.count() == 0
    finally:
        store.drop()
        store.close()


@pytest.mark.parametrize("url, message", [
    ("nosuch://x", "unknown vector store URL scheme"),
    ("just-a-path", "scheme://"),
    ("lancedb://", "names no path"),
])
def test_bad_urls(url, message):
    with pytest.raises(InvalidInputError, match=message):
        open_vector_db(url, "kb")


def test_memory_urls_name_their_table_and_keep_nothing(tmp_path):
    store = open_vector_db("memory://", "my_kb", search_type="hybrid")
    assert store.table_name == "my_kb" and "my_kb" in store.describe()
    assert not keeps_data("memory://") and not keeps_data("MEMORY://x")
    assert all(keeps_data(url) for url in _urls(tmp_path).values() if not url.startswith("memory"))
    with pytest.raises(InvalidInputError, match="scheme://"):
        keeps_data("just-a-path")
