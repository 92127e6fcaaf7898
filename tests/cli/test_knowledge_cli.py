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
    """Runs `agentkeep knowledge <args>` against one catalog file and one vector table."""
    runner = CliRunner(env={"AGENTKEEP_DB_URL": None, "AGENTKEEP_VECTOR_DB_URL": None})
    table = f"kb_{uuid.uuid4().hex[:10]}"
    common = ["--db", f"sqlite:///{tmp_path / 'catalog.db'}"]
    store = ["--vector-db", pg_url, "--table", table]

    def run(*args: str, vector: bool = True, embedder: bool = True):
        argv = ["knowledge", *args, *common, *(store if vector else [])]
        if embedder:
            argv += ["--embedder", "hashing:64"]
        return runner.invoke(app, argv)

    yield run
    from agentkeep.vector_db.pgvector import PgVector

    with PgVector(table, db_url=pg_url) as store_db:
        store_db.drop()


def test_add_a_folder_then_search_list_and_delete(kb, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"page{i:02}.md").write_text(f"# Page {i}\n\nRotating keys, step {i}.\n\n## Notes\n\nToken{i} expires.\n")
    (docs / "broken.json").write_text("{not json")

    first = kb("add", str(docs), "--meta", "team=support", "--meta", "year=2024", "--no-progress")
    assert first.exit_code == 1, first.output  # one file failed
    assert "12 added or updated, 0 unchanged, 1 failed" in first.output
    assert "broken.json" in first.output and "ReaderError" in first.output

    (docs / "broken.json").write_text('{"ok": "now valid"}')
    (docs / "page03.md").write_text("# Page 3\n\nChanged words entirely.\n")
    again = kb("add", str(docs), "--meta", "team=support", "--meta", "year=2024")
    assert again.exit_code == 0, again.output
    assert "2 added or updated, 11 unchanged, 0 failed" in again.output

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
