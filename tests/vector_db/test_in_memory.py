"""InMemoryVectorDb takes the table name first, as every other store does."""

from __future__ import annotations

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb


def test_the_table_name_comes_first_as_for_pgvector():
    store = InMemoryVectorDb("my_kb", dimensions=2, search_type="hybrid")
    assert store.table_name == "my_kb" and store.search_type == "hybrid" and store.dimensions == 2
    store.create()
    store.upsert([Chunk(id="a", content="rotate keys", embedding=[1.0, 0.0])])
    assert [h.id for h in store.search("keys", embedding=[1.0, 0.0])] == ["a"]
    with pytest.raises(InvalidInputError, match="in-memory table my_kb holds 2-dimensional vectors, not 3"):
        store.create(3)
    assert InMemoryVectorDb(dimensions=2).table_name is None  # the keywords alone still work
    with pytest.raises(InvalidInputError, match="table_name"):
        InMemoryVectorDb("")
