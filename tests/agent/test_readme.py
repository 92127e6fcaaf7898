"""The README's Agents example runs as written, on the local model and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.conformance.backends import BY_NAME, postgres_url
from tests.conftest import require, require_backend

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.server


def _clean(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS agentkeep CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.my_kb")


def test_the_agents_example_runs_as_written(monkeypatch, tmp_path, capsys):
    import importlib.util

    require_backend(BY_NAME["postgres"])
    require(None if importlib.util.find_spec("llama_cpp") else "local model: llama-cpp-python is not installed")
    text = README.read_text()
    section = text[text.index("## Agents\n"):]
    snippet = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ", 1)], re.S)[0]
    url = postgres_url()
    monkeypatch.setenv("AGENTKEEP_DB_URL", url)
    monkeypatch.chdir(tmp_path)
    _clean(url)
    try:
        exec(compile(snippet, "README.md", "exec"), {})
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("completed 1 ")
        assert out[1] == "" and out[2].startswith("[RunStarted]") and "[RunCompleted]" in out
        assert out[-1] == "completed [1, 2, 3]"
    finally:
        _clean(url)
