"""The README's "Serving agents" snippet runs as written (with the agent, db and knowledge
base of the sections before it) and makes an app that asks for a token."""

from __future__ import annotations

import re
from pathlib import Path

from agentkeep.knowledge import HashingEmbedder, Knowledge
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.agent.conftest import Reply, make_agent

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_serving_snippet_runs(scripted, db, serve):
    text = README.read_text()
    section = text[text.index("## Serving agents\n"):]
    [snippet] = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ", 1)], re.S)
    kb = Knowledge(vector_db=InMemoryVectorDb("kb"), contents_db=db, embedder=HashingEmbedder(dimensions=64))
    scope = {"agent": make_agent(scripted([Reply("hi")]), db), "db": db, "kb": kb}
    exec(compile(snippet, "README.md", "exec"), scope)
    http = serve(scope["app"])
    assert http.get("/health").status_code == 200
    assert http.get("/sessions").status_code == 401
    assert scope["agent_os"].auth.mode == "jwt"
