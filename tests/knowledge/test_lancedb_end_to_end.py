"""Knowledge end to end on disk: a SqliteDb catalog file and a LanceDb table in a local
directory, with the HashingEmbedder (no network, no model)."""

from __future__ import annotations

import pytest

from agentkeep.knowledge import INGEST_KEY, Knowledge
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES

pytest.importorskip("lancedb")
from agentkeep.vector_db.lancedb import LanceDb  # noqa: E402

FILES = {
    "keys.md": "# API keys\n\nRotate API keys every 90 days from the security console.\n\n"
               "## Scopes\n\nEach key has scopes that limit what the token may do.\n",
    "disk.md": "# Disk\n\nError ERR-4471 means the disk quota is exceeded on the volume.\n\n"
               "## Resize\n\nResize a storage volume from the console without downtime.\n",
    "billing.md": "# Billing\n\nInvoices are emailed on the first day of each month.\n",
}


@pytest.fixture
def folder(tmp_path):
    require(next(s for s in STORES if s.name == "lancedb"))
    root = tmp_path / "handbook"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def lance_dir(tmp_path):
    return tmp_path / "lance"


@pytest.fixture
def kb(lance_dir, contents_db, embedder):
    return Knowledge(LanceDb("handbook", uri=lance_dir, search_type="hybrid"), contents_db=contents_db,
                     embedder=embedder, name="handbook")


def ids_of(hits):
    return [h.id for h in hits]


def test_a_folder_of_markdown_end_to_end(kb, folder, lance_dir, contents_db, embedder, tmp_path):
    store: LanceDb = kb.vector_db
    rows = kb.add_content(path=folder, metadata={"team": "support", "public": True})
    assert [r.name for r in rows] == ["handbook/billing.md", "handbook/disk.md", "handbook/keys.md"]
    assert all(r.status == "completed" and r.type == "markdown" for r in rows)
    billing, disk, keys = rows
    for r in rows:  # the catalog's chunk count is what the table holds
        assert store.count(content_id=r.id) == r.metadata[INGEST_KEY]["chunks"]
    assert store.count() == 5 and store.dimensions == embedder.dimensions

    # search: hybrid by default, keyword and vector on request, filters on the metadata
    hits = kb.search("rotate api keys", filters={"team": "support"})
    assert hits[0].content_id == keys.id
    assert hits[0].metadata == {"team": "support", "public": True, "heading": "API keys"}
    assert [h.content_id for h in kb.search("ERR-4471", search_type="keyword")] == [disk.id]
    assert kb.search("resize volume", search_type="vector")[0].metadata["heading"] == "Disk > Resize"
    assert kb.search("rotate api keys", filters={"team": "sales"}) == []
    assert kb.search("invoices", filters={"public": 1}) == []  # a boolean is not a number
    assert ids_of(kb.search("invoices", search_type="keyword", filters={"public": True})) == [f"{billing.id}:0"]
    assert ids_of(kb.search("console", search_type="keyword", filters={"heading": "Disk > Resize"})) == [f"{disk.id}:1"]

    # adding the unchanged folder again does no work: no embedding, no new table version
    version, texts = store._ready().version, embedder.texts
    again = kb.add_content(path=folder, metadata={"team": "support", "public": True})
    assert [r.updated_at for r in again] == [r.updated_at for r in rows]
    assert embedder.texts == texts and store._ready().version == version

    # a changed file replaces its chunks: the old ones are gone, the others untouched
    (folder / "disk.md").write_text("# Disk\n\nDisks now grow automatically.\n")
    billing_again, changed, keys_again = kb.add_content(path=folder, metadata={"team": "support", "public": True})
    assert changed.id == disk.id and changed.updated_at > disk.updated_at
    assert (billing_again.updated_at, keys_again.updated_at) == (billing.updated_at, keys.updated_at)
    assert embedder.texts == texts + 1  # only the changed file was embedded
    assert store.count(content_id=disk.id) == changed.metadata[INGEST_KEY]["chunks"] == 1
    assert [c.id for c in store.get([f"{disk.id}:0", f"{disk.id}:1"])] == [f"{disk.id}:0"]
    assert "Disks now grow" in store.get([f"{disk.id}:0"])[0].content
    assert kb.search("ERR-4471", search_type="keyword") == []
    assert [h.content_id for h in kb.search("grow automatically", search_type="keyword")] == [disk.id]
    assert store.count(content_id=keys.id) == 2

    # deleting a content removes its catalog row and its chunks
    assert kb.delete_content(keys.id) is True
    assert contents_db.get_knowledge(keys.id) is None and store.count(content_id=keys.id) == 0
    assert kb.search("rotate api keys", search_type="keyword") == []
    assert store.count() == 2 and kb.delete_content(keys.id) is False

    # everything is on disk: a fresh Knowledge over the same files finds it
    from agentkeep.db.sqlite import SqliteDb

    store.close()
    db = SqliteDb(db_file=str(tmp_path / "catalog.db"))
    try:
        reopened = Knowledge(LanceDb("handbook", uri=lance_dir, search_type="hybrid"), contents_db=db,
                             embedder=embedder, name="handbook")
        assert sorted(r.name for r in reopened.list_contents(limit=10).items) == ["handbook/billing.md",
                                                                                 "handbook/disk.md"]
        assert reopened.search("invoices emailed")[0].content_id == billing.id
        assert reopened.vector_db.count() == 2
    finally:
        db.close()
