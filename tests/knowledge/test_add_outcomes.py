"""What adding reports and when it skips: unchanged content is skipped only while the store
still holds its chunks, `force=True` re-adds it, failures are listed in the result, and
errors that would fail every content (no API key, another embedder's store) raise first."""

from __future__ import annotations

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge import INGEST_KEY, AddResult, EmbedderError, HashingEmbedder, Knowledge, OpenAIEmbedder
from agentkeep.vector_db.in_memory import InMemoryVectorDb


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "keys.md").write_text("# Keys\n\nRotate API keys every 90 days.\n\n## Scopes\n\nScopes limit a key.\n")
    (root / "billing.txt").write_text("Invoices are emailed on the first day of each month.")
    return root


def test_unchanged_content_goes_back_into_a_store_that_lost_its_chunks(vector_store, contents_db, embedder, docs):
    first = Knowledge(vector_store, contents_db=contents_db, embedder=embedder).add_content(path=docs)
    assert len(first) == 2 and vector_store.count() == 3

    # the same catalog, the store emptied (a new table, a memory store in a new process)
    vector_store.drop()
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder)
    again = kb.add_content(path=docs)
    assert vector_store.count() == 3
    assert kb.search("invoices emailed", search_type="keyword")[0].content_id == first[0].id
    assert [r.id for r in again.added] == [r.id for r in first] and again.unchanged == []

    # one chunk lost: only its content is read and embedded again
    keys = first[1]
    vector_store.delete(ids=[f"{keys.id}:1"])
    texts = embedder.texts
    third = kb.add_content(path=docs)
    assert [r.id for r in third.added] == [keys.id] and [r.id for r in third.unchanged] == [first[0].id]
    assert embedder.texts == texts + 2 and vector_store.count(content_id=keys.id) == 2

    # and a store that holds everything leaves everything alone
    fourth = kb.add_content(path=docs)
    assert fourth.added == [] and len(fourth.unchanged) == 2 and embedder.texts == texts + 2


def test_force_adds_unchanged_content_again(vector_store, contents_db, embedder, docs):
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder)
    row = kb.add_content(path=docs / "billing.txt")
    texts = embedder.texts
    assert kb.add_content(path=docs / "billing.txt").updated_at == row.updated_at and embedder.texts == texts
    forced = kb.add_content(path=docs / "billing.txt", force=True)  # e.g. after a reader's fix
    assert forced.id == row.id and forced.updated_at > row.updated_at and embedder.texts == texts + 1
    assert forced.metadata[INGEST_KEY] == row.metadata[INGEST_KEY]
    folder = kb.add_content(path=docs, force=True)
    assert len(folder.added) == 2 and folder.unchanged == [] and embedder.texts == texts + 1 + 3


def test_a_folder_lists_what_was_added_skipped_and_failed(vector_store, contents_db, embedder, docs):
    (docs / "broken.json").write_text("{not json")
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder)
    result = kb.add_content(path=docs)
    assert isinstance(result, AddResult) and isinstance(result, list)
    assert [r.name for r in result] == ["docs/billing.txt", "docs/broken.json", "docs/keys.md"]
    assert [r.name for r in result.failed] == ["docs/broken.json"]
    assert result.failed[0].status == "failed" and result.failed[0].status_message.startswith("ReaderError:")
    assert [r.name for r in result.added] == ["docs/billing.txt", "docs/keys.md"] and result.unchanged == []
    assert result.summary() == (
        f"2 added, 0 unchanged, 1 failed:\n  docs/broken.json: {result.failed[0].status_message}"
    )
    again = kb.add_content(path=docs)  # a failed content is tried again, and fails again
    assert again.summary().startswith("0 added, 2 unchanged, 1 failed:")


def test_add_sources_adds_paths_and_checks_them_all_first(vector_store, contents_db, embedder, docs):
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder)
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        kb.add_sources([docs / "keys.md", docs / "missing.md"])
    assert contents_db.list_knowledge(limit=10).items == []  # nothing written
    result = kb.add_sources([str(docs / "keys.md"), docs])
    # the same file twice: added, then found unchanged (its row as it is, name and all)
    assert [r.name for r in result] == ["keys.md", "docs/billing.txt", "keys.md"]
    assert result.added == result[:2] and result.unchanged == [result[0]] and result[2].id == result[0].id


def test_without_an_api_key_adding_fails_before_writing_anything(monkeypatch, contents_db, docs):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    store = InMemoryVectorDb()
    kb = Knowledge(store, contents_db=contents_db)  # OpenAIEmbedder() by default
    for add in (lambda: kb.add_content(path=docs), lambda: kb.add_content(text="hello"),
                lambda: kb.add_sources([docs])):
        with pytest.raises(EmbedderError, match="no API key: set OPENAI_API_KEY") as caught:
            add()
        assert "HashingEmbedder()" in str(caught.value) and "SentenceTransformerEmbedder()" in str(caught.value)
    assert contents_db.list_knowledge(limit=10).items == [] and not store.exists()
    with pytest.raises(EmbedderError, match="OPENAI_API_KEY"):
        kb.search("keys")
    assert OpenAIEmbedder().missing_key and not OpenAIEmbedder(api_key="k").missing_key
    assert not OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1").missing_key  # a local server needs none


def test_a_store_made_with_another_embedder_says_to_use_that_one(vector_store, contents_db, docs):
    Knowledge(vector_store, contents_db=contents_db, embedder=HashingEmbedder(64)).add_content(path=docs)
    other = Knowledge(vector_store, contents_db=contents_db, embedder=HashingEmbedder(32))
    message = r"holds 64-dimensional vectors, not 32: use the embedder \(model and dimensions\) the store was created"
    with pytest.raises(InvalidInputError, match=message):
        other.add_content(path=docs)
    with pytest.raises(InvalidInputError, match=message):
        other.search("keys")
    assert {r.status for r in contents_db.list_knowledge(limit=10).items} == {"completed"}
