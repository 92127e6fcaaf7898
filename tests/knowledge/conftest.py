"""`vector_store`: a fresh store of each kind (in_memory, pgvector), dropped afterwards;
`contents_db`: a SqliteDb file catalog; `embedder`: a HashingEmbedder that counts its calls."""

from __future__ import annotations

import pytest

from agentkeep.knowledge.embedder import HashingEmbedder
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES


class CountingEmbedder(HashingEmbedder):
    def __init__(self, dimensions: int = 64) -> None:
        super().__init__(dimensions)
        self.calls = 0
        self.texts = 0

    def embed(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return super().embed(texts)


@pytest.fixture(params=STORES, ids=[s.name for s in STORES])
def vector_store(request):
    require(request.param)
    store, cleanup = request.param.build(search_type="hybrid")
    yield store
    cleanup()


@pytest.fixture
def contents_db(tmp_path):
    from agentkeep.db.sqlite import SqliteDb

    db = SqliteDb(db_file=str(tmp_path / "catalog.db"))
    yield db
    db.close()


@pytest.fixture
def embedder():
    return CountingEmbedder()
