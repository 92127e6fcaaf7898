"""Knowledge end to end: a SqliteDb catalog and each vector store (PgVector on a real
PostgreSQL with pgvector, and the in-process store)."""

from __future__ import annotations

import asyncio
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentkeep.db.errors import InvalidInputError, OwnershipError
from agentkeep.knowledge import INGEST_KEY, Knowledge, OpenAIEmbedder
from agentkeep.knowledge.readers import Reader, ReaderError, Section

GUIDE = """# Keys

Rotate API keys every 90 days from the security console.

## Errors

ERR-4471 means the disk quota is exceeded.
"""


@pytest.fixture
def kb(vector_store, contents_db, embedder):
    return Knowledge(vector_store, contents_db=contents_db, embedder=embedder, name="support-kb")


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "guide.md").write_text(GUIDE)
    (root / "notes.txt").write_text("Invoices are emailed on the first day of each month.")
    (root / "sub" / "people.csv").write_text("name,role\nAda,owner\nBob,billing admin\n")
    (root / "sub" / "faq.json").write_text(json.dumps([{"q": "refunds?", "a": "within ten days"}, {"q": "sso?", "a": "yes"}]))
    (root / "sub" / "page.html").write_text("<h1>Status</h1><p>All systems operational.</p>")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x01")
    (root / ".hidden" / "secret.md").write_text("# hidden")
    return root


def chunk_ids(store, content_id):
    return sorted(h.id for h in store.search("x", embedding=[1.0] + [0.0] * 63, search_type="vector", limit=1000)
                  if h.content_id == content_id)


def test_adding_a_folder(kb, docs, vector_store, contents_db):
    rows = kb.add_content(path=docs, metadata={"team": "support"}, progress=True)
    assert [r.name for r in rows] == ["docs/guide.md", "docs/notes.txt", "docs/sub/faq.json",
                                      "docs/sub/page.html", "docs/sub/people.csv"]
    assert [r.type for r in rows] == ["markdown", "text", "json", "html", "csv"]
    assert all(r.status == "completed" and r.status_message is None and r.linked_to == "support-kb" for r in rows)
    assert all(r.metadata["team"] == "support" and r.size > 0 for r in rows)
    for r in rows:  # the catalog says how many chunks the store holds
        assert vector_store.count(content_id=r.id) == r.metadata[INGEST_KEY]["chunks"] > 0
    assert vector_store.count() == sum(r.metadata[INGEST_KEY]["chunks"] for r in rows)
    assert kb.list_contents(limit=100).items and len(kb.list_contents(limit=100).items) == 5
    assert contents_db.get_knowledge(rows[0].id).status == "completed"

    hits = kb.search("rotate keys", filters={"team": "support"})
    assert hits[0].content_id == rows[0].id and hits[0].metadata == {"team": "support", "heading": "Keys"}
    assert hits[0].id == f"{rows[0].id}:0" and hits[0].position == 0
    assert kb.search("ERR-4471", search_type="keyword")[0].metadata["heading"] == "Keys > Errors"
    assert kb.search("rotate keys", filters={"team": "sales"}) == []
    faq = kb.search("refunds", search_type="keyword")
    assert faq[0].content_id == rows[2].id and faq[0].metadata["index"] == 0


def test_folder_include_exclude_and_recursion(kb, docs):
    assert [r.name for r in kb.add_content(path=docs, recursive=False)] == ["docs/guide.md", "docs/notes.txt"]
    rows = kb.add_content(path=docs, include=["*.bin", "sub/*.csv"], name="kb")
    assert [r.name for r in rows] == ["kb/image.bin", "kb/sub/people.csv"]
    assert rows[0].status == "failed" and "not UTF-8 text" in rows[0].status_message
    assert [r.name for r in kb.add_content(path=docs, exclude=["sub/*", "*.txt"])] == ["docs/guide.md"]


def test_adding_unchanged_content_again_does_no_work(kb, docs, embedder, vector_store):
    first = kb.add_content(path=docs / "guide.md", metadata={"team": "support"})
    calls, texts = embedder.calls, embedder.texts
    again = kb.add_content(path=docs / "guide.md", metadata={"team": "support"})
    assert again == first and again.updated_at == first.updated_at
    assert (embedder.calls, embedder.texts) == (calls, texts)
    folder = kb.add_content(path=docs)
    assert embedder.texts > texts  # the other files were new
    texts = embedder.texts
    assert [r.updated_at for r in kb.add_content(path=docs)] == [r.updated_at for r in folder]
    assert embedder.texts == texts


def test_changed_content_replaces_its_chunks(kb, docs, vector_store):
    path = docs / "guide.md"
    first = kb.add_content(path=path)
    old = chunk_ids(vector_store, first.id)
    assert len(old) == 2
    path.write_text("# Keys\n\nKeys are now rotated automatically.\n")
    second = kb.add_content(path=path)
    assert second.id == first.id and second.created_at == first.created_at and second.updated_at > first.updated_at
    assert second.metadata[INGEST_KEY]["hash"] != first.metadata[INGEST_KEY]["hash"]
    assert chunk_ids(vector_store, first.id) == [f"{first.id}:0"]
    assert kb.search("ERR-4471", search_type="keyword") == []
    assert kb.search("automatically", search_type="keyword")[0].content_id == first.id


def test_changed_metadata_reprocesses(kb, docs):
    kb.add_content(path=docs / "notes.txt", metadata={"team": "a"})
    row = kb.add_content(path=docs / "notes.txt", metadata={"team": "b"})
    assert row.metadata["team"] == "b"
    assert kb.search("invoices", search_type="keyword", filters={"team": "b"})
    assert kb.search("invoices", search_type="keyword", filters={"team": "a"}) == []


class SpyReader(Reader):
    """Checks that the catalog says "processing" while the content is read."""

    kind = "spy"

    def __init__(self, db, fail=None):
        self.db, self.fail, self.seen = db, fail, []

    def read(self, data, *, name=None):
        self.seen.extend(r.status for r in self.db.list_knowledge(limit=10).items)
        if self.fail:
            raise self.fail
        return [Section(data.decode())]


def test_status_goes_processing_then_completed(kb, contents_db):
    spy = SpyReader(contents_db)
    row = kb.add_content(text="some words", name="n1", reader=spy)
    assert spy.seen == ["processing"] and row.status == "completed"


def test_a_failing_reader_marks_the_row_failed(kb, contents_db, vector_store):
    row = kb.add_content(text="body", name="bad", reader=SpyReader(contents_db, ReaderError("page 3 is garbled")))
    assert row.status == "failed" and row.status_message == "ReaderError: page 3 is garbled"
    assert contents_db.get_knowledge(row.id).status == "failed"
    assert vector_store.count(content_id=row.id) == 0
    again = kb.add_content(text="body", name="bad")  # a failed content is tried again
    assert again.status == "completed" and vector_store.count(content_id=row.id) == 1


def test_reader_errors_reach_the_catalog(kb, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 ...")
    broken = kb.add_content(path=tmp_path / "broken.json")
    assert broken.status == "failed" and broken.status_message.startswith("ReaderError: broken.json is not valid JSON")
    pdf = kb.add_content(path=tmp_path / "scan.pdf")
    try:
        import pypdf  # noqa: F401
    except ImportError:
        assert pdf.status == "failed" and "pip install 'agentkeep[pdf]'" in pdf.status_message
    else:
        assert pdf.status == "failed" and "not a readable PDF" in pdf.status_message


def test_a_failed_update_keeps_the_previous_chunks(kb, contents_db, vector_store):
    good = kb.add_content(text="first version", name="doc")
    failed = kb.add_content(text="second version", name="doc", reader=SpyReader(contents_db, ValueError("boom")))
    assert failed.id == good.id and failed.status == "failed"
    assert [h.content for h in kb.search("version", search_type="keyword")] == ["first version"]


def test_an_embedder_failure_marks_the_row_failed(vector_store, contents_db):
    kb = Knowledge(vector_store, contents_db=contents_db,
                   embedder=OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1", dimensions=64, max_retries=0))
    row = kb.add_content(text="hello")
    assert row.status == "failed" and row.status_message.startswith("EmbedderError: cannot reach http://127.0.0.1:9/v1")


def test_delete_content(kb, docs, vector_store, contents_db):
    row = kb.add_content(path=docs / "guide.md")
    other = kb.add_content(path=docs / "notes.txt")
    assert kb.delete_content(row.id) is True
    assert contents_db.get_knowledge(row.id) is None and vector_store.count(content_id=row.id) == 0
    assert vector_store.count(content_id=other.id) == 1
    assert kb.delete_content(row.id) is False


def test_users_own_their_contents(kb, vector_store):
    mine = kb.add_content(text="same text", user_id="u1")
    theirs = kb.add_content(text="same text", user_id="u2")
    shared = kb.add_content(text="same text")
    assert len({mine.id, theirs.id, shared.id}) == 3 and mine.user_id == "u1" and shared.user_id is None
    assert kb.delete_content(theirs.id, user_id="u1") is False
    assert kb.delete_content(shared.id, user_id="u1") is False  # visible, but not theirs to delete
    assert vector_store.count(content_id=shared.id) == 1
    assert kb.delete_content(mine.id, user_id="u1") is True
    with pytest.raises(OwnershipError):
        kb.add_content(text="other", content_id=theirs.id, user_id="u1")
    with pytest.raises(OwnershipError):  # even when the content is the same
        kb.add_content(text="same text", content_id=theirs.id, user_id="u1")


def test_text_content_ids(kb):
    a = kb.add_content(text="alpha")
    assert kb.add_content(text="alpha").id == a.id  # unnamed text: identified by itself
    assert kb.add_content(text="beta").id != a.id
    named = kb.add_content(text="v1", name="notes.md")
    assert kb.add_content(text="v2", name="notes.md").id == named.id and named.type == "markdown"
    explicit = kb.add_content(text="v1", content_id="my-id", description="mine")
    assert explicit.id == "my-id" and explicit.description == "mine"


def test_urls(kb, docs):
    handler = partial(SimpleHTTPRequestHandler, directory=str(docs))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        row = kb.add_content(url=f"{base}/guide.md?v=1")
        assert row.status == "completed" and row.type == "markdown" and row.name == f"{base}/guide.md?v=1"
        html = kb.add_content(url=f"{base}/sub/page.html")
        assert html.type == "html" and kb.search("operational", search_type="keyword")[0].content_id == html.id
        missing = kb.add_content(url=f"{base}/nope.md")
        assert missing.status == "failed" and "HTTP 404" in missing.status_message
        moved = kb.add_content(url=f"{base}/sub")  # answered by a redirect to /sub/
        assert moved.status == "completed" and moved.type == "html"
        assert kb.add_content(url=f"{base}/guide.md?v=1").updated_at == row.updated_at
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"text": "a", "url": "http://x"}, "exactly one"),
    ({"path": "/no/such/place"}, "no such file"),
    ({"url": "file:///etc/passwd"}, "http"),
    ({"text": "a", "metadata": {INGEST_KEY: 1}}, "reserved"),
    ({"text": "a", "metadata": "team=x"}, "dict"),
    ({"text": b"bytes"}, "string"),
])
def test_bad_arguments(kb, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        kb.add_content(**kwargs)


def test_search_arguments(kb):
    with pytest.raises(InvalidInputError):
        kb.search("")
    with pytest.raises(InvalidInputError, match="values must be"):
        kb.search("x", filters={"team": ["a"]})


def test_async_twins(kb):
    async def main():
        row = await kb.aadd_content(text="async words here", name="a")
        hits = await kb.asearch("async words", search_type="keyword")
        return row, hits, await kb.adelete_content(row.id)

    row, hits, deleted = asyncio.run(main())
    assert row.status == "completed" and hits[0].content_id == row.id and deleted


def test_a_knowledge_without_a_catalog_db_keeps_one_in_memory(vector_store, embedder):
    kb = Knowledge(vector_store, embedder=embedder)
    row = kb.add_content(text="in memory catalog")
    assert kb.get_content(row.id).status == "completed"


@pytest.mark.server
def test_one_postgres_for_catalog_and_chunks(embedder):
    """A PostgresDb catalog and a PgVector table on the same server, sharing its pool."""
    import uuid

    from tests.vector_db.conftest import require
    from tests.vector_db.stores import STORES

    require(next(s for s in STORES if s.name == "pgvector"))
    import psycopg

    from agentkeep.db.postgres import PostgresDb
    from agentkeep.vector_db.pgvector import PgVector
    from tests.services.pgvector import server_url

    schema = f"s_{uuid.uuid4().hex[:10]}"
    db = PostgresDb(db_url=server_url(), db_schema=schema)
    try:
        kb = Knowledge(PgVector("kb_chunks", db=db, schema=schema, search_type="hybrid"), contents_db=db, embedder=embedder)
        row = kb.add_content(text="Postgres holds both the catalog and the vectors.", name="both")
        assert db.get_knowledge(row.id).status == "completed"
        assert kb.search("catalog vectors")[0].content_id == row.id

        # the new chunks and the "completed" row commit together: when the row's write fails,
        # the chunks' replacement is rolled back and the old chunks stay searchable
        upsert = db.upsert_knowledge

        def completed_fails(content):
            if content.status == "completed":
                raise RuntimeError("the catalog write failed")
            return upsert(content)

        db.upsert_knowledge = completed_fails
        failed = kb.add_content(text="Entirely different words now.", name="both")
        db.upsert_knowledge = upsert
        assert failed.status == "failed" and "the catalog write failed" in failed.status_message
        assert [c.content for c in kb.vector_db.get([f"{row.id}:0"])] == [
            "Postgres holds both the catalog and the vectors."
        ]
        assert kb.search("different", search_type="keyword") == []

        # and a delete removes both or neither
        delete = db.delete_knowledge
        db.delete_knowledge = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("the catalog delete failed"))
        with pytest.raises(RuntimeError, match="catalog delete"):
            kb.delete_content(row.id)
        db.delete_knowledge = delete
        assert kb.vector_db.count(content_id=row.id) == 1
        assert kb.delete_content(row.id) and kb.vector_db.count() == 0 and db.get_knowledge(row.id) is None
    finally:
        db.close()
        with psycopg.connect(server_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
