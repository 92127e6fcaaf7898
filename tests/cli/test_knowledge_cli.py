"""`agentkeep knowledge ...`: a SQLite catalog and a PgVector table on the test server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeep.cli import app


@pytest.fixture
def pg_url():
    from tests.vector_db.conftest import require
    from tests.vector_db.stores import STORES

    require(next(s for s in STORES if s.name == "pgvector"))
    from tests.services.pgvector import server_url

    return server_url()


@pytest.fixture
def kb(tmp_path: Path, pg_url: str):
    """Runs `agentkeep knowledge <args>` against one catalog file and one vector table
    (`table=` names another, dropped afterwards too), with no OpenAI settings."""
    runner = CliRunner(env={"AGENTKEEP_DB_URL": None, "AGENTKEEP_VECTOR_DB_URL": None,
                            "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    tables = [f"kb_{uuid.uuid4().hex[:10]}"]
    common = ["--db", f"sqlite:///{tmp_path / 'catalog.db'}"]

    def run(*args: str, vector: bool = True, embedder: bool = True, table: str | None = None):
        if table is not None and table not in tables:
            tables.append(table)
        argv = ["knowledge", *args, *common]
        if vector:
            argv += ["--vector-db", pg_url, "--table", table or tables[0]]
        if embedder:
            argv += ["--embedder", "hashing:64"]
        return runner.invoke(app, argv)

    yield run
    from agentkeep.vector_db.pgvector import PgVector

    for table in tables:
        with PgVector(table, db_url=pg_url) as store_db:
            store_db.drop()


def test_add_a_folder_then_search_list_and_delete(kb, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"page{i:02}.md").write_text(f"# Page {i}\n\nRotating keys, step {i}.\n\n## Notes\n\nToken{i} expires.\n")
    (docs / "broken.json").write_text("{not json")

    first = kb("add", str(docs), "--meta", "team=support", "--meta", "year=2024", "--no-progress")
    assert first.exit_code == 2, first.output  # one file failed
    assert "12 added, 0 unchanged, 1 failed:\n  docs/broken.json: ReaderError: broken.json is not valid JSON" \
        in first.output

    (docs / "broken.json").write_text('{"ok": "now valid"}')
    (docs / "page03.md").write_text("# Page 3\n\nChanged words entirely.\n")
    again = kb("add", str(docs), "--meta", "team=support", "--meta", "year=2024")
    assert again.exit_code == 0, again.output
    assert again.output.strip().endswith("2 added, 11 unchanged, 0 failed")

    found = kb("search", "token7", "--search-type", "keyword", "--filter", "team=support",
               "--filter", "year=2024", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)
    assert len(hits) == 1 and "Token7" in hits[0]["content"] and hits[0]["metadata"]["year"] == 2024
    assert json.loads(kb("search", "token7", "--search-type", "keyword", "--filter", "year=2023",
                         "--json").output) == []

    listed = kb("list", "--json", vector=False, embedder=False)
    rows = json.loads(listed.output)
    assert len(rows) == 13 and {r["status"] for r in rows} == {"completed"}
    page7 = next(r for r in rows if r["name"].endswith("page07.md"))
    table = kb("list", vector=False, embedder=False).output
    assert "13 content(s)" in table and "completed" in table

    deleted = kb("delete", page7["id"], "no-such-id", embedder=False)
    assert deleted.exit_code == 0 and "deleted 1 of 2" in deleted.output
    assert json.loads(kb("search", "token7", "--search-type", "keyword", "--json").output) == []
    assert len(json.loads(kb("list", "--json", vector=False, embedder=False).output)) == 12


def test_bad_options_are_one_line_errors(kb, tmp_path: Path):
    (tmp_path / "a.md").write_text("# A\n")
    bad_meta = kb("add", str(tmp_path / "a.md"), "--meta", "novalue")
    assert bad_meta.exit_code == 2 and "key=value" in bad_meta.output
    bad_embedder = kb("add", str(tmp_path / "a.md"), "--embedder", "word2vec", embedder=False)
    assert bad_embedder.exit_code == 2 and "--embedder" in bad_embedder.output
    missing = kb("add", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    runner = CliRunner(env={"AGENTKEEP_DB_URL": None, "AGENTKEEP_VECTOR_DB_URL": None})
    bad_store = runner.invoke(app, ["knowledge", "search", "x", "--vector-db", "nosuch://x",
                                    "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert bad_store.exit_code == 2 and "unknown vector store URL scheme" in bad_store.output


@pytest.fixture
def two_docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.md").write_text("# Keys\n\nRotate API keys every 90 days.\n")
    (docs / "billing.txt").write_text("Invoices are emailed monthly.")
    return docs


def test_a_new_store_under_the_same_catalog_gets_the_chunks(kb, two_docs: Path):
    assert kb("add", str(two_docs), "--no-progress").exit_code == 0
    other = f"kb_{uuid.uuid4().hex[:10]}"
    moved = kb("add", str(two_docs), "--no-progress", table=other)
    hits = json.loads(kb("search", "invoices", "--search-type", "keyword", "--json", table=other).output)
    assert [h["content"] for h in hits] == ["Invoices are emailed monthly."]
    assert moved.exit_code == 0 and moved.output.strip() == "2 added, 0 unchanged, 0 failed"
    assert kb("add", str(two_docs), "--no-progress").output.strip() == "0 added, 2 unchanged, 0 failed"


def test_force_adds_unchanged_contents_again(kb, two_docs: Path):
    kb("add", str(two_docs))
    forced = kb("add", str(two_docs), "--force", "--no-progress")
    assert forced.exit_code == 0 and forced.output.strip() == "2 added, 0 unchanged, 0 failed"


def test_a_store_that_keeps_nothing_between_commands_is_refused(tmp_path: Path, two_docs: Path):
    runner = CliRunner(env={"AGENTKEEP_DB_URL": None, "AGENTKEEP_VECTOR_DB_URL": None})
    catalog = ["--db", f"sqlite:///{tmp_path / 'c.db'}", "--embedder", "hashing:64"]
    for argv in (["add", str(two_docs)], ["search", "keys"], ["delete", "some-id"]):
        argv = ["knowledge", *argv, "--vector-db", "memory://", *catalog]
        if argv[1] == "delete":
            argv = argv[:-2]  # delete takes no --embedder
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and result.stdout == ""
        assert "memory:// keeps the chunks in one command's memory" in result.stderr
        assert "lancedb://" in result.stderr
    assert not (tmp_path / "c.db").exists()  # refused before the catalog was opened


def test_without_an_api_key_nothing_is_added(kb, two_docs: Path):
    added = kb("add", str(two_docs), "--embedder", "openai", embedder=False)
    assert added.exit_code == 2 and added.stdout == ""
    assert added.stderr.startswith("error: --embedder openai needs an API key: set OPENAI_API_KEY")
    assert "--embedder local" in added.stderr and "--embedder hashing" in added.stderr
    assert json.loads(kb("list", "--json", vector=False, embedder=False).output) == []
    searched = kb("search", "keys", embedder=False)
    assert searched.exit_code == 2 and "needs an API key" in searched.stderr


def test_another_embedder_than_the_stores_is_refused(kb, two_docs: Path):
    kb("add", str(two_docs))
    other = kb("add", str(two_docs), "--embedder", "hashing:32", embedder=False)
    assert other.exit_code == 2, other.output
    assert "holds 64-dimensional vectors, not 32: use the embedder (model and dimensions)" in other.stderr
