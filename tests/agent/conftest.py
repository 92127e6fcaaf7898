"""Agents against a real OpenAI-protocol server over HTTP (a scripted one, or the local
SmolLM2 model) and real dbs: SQLite and PostgreSQL (sync), AsyncPostgresDb (async)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest

from agentkeep.agent import Agent, tracing
from agentkeep.models import OpenAIChat
from agentkeep.models.scripted import Reply, ScriptedServer
from tests.conformance.backends import BY_NAME
from tests.conftest import pooled_store, require_backend

AGENT_BACKENDS = ("sqlite", "postgres")


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    """`scripted(replies, cycle=False)`: a started scripted model server, stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(script: Any, **options: Any) -> ScriptedServer:
        server = ScriptedServer(script, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=[BY_NAME[name] for name in AGENT_BACKENDS], ids=AGENT_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A handle on an empty db of each backend the agent tests run on (`.db`, `.opener`)."""
    backend = request.param
    require_backend(backend)
    with pooled_store(backend, tmp_path_factory) as handle:
        yield handle


@pytest.fixture
def db(store: Any) -> Any:
    return store.db


def model(server: ScriptedServer, **options: Any) -> OpenAIChat:
    return OpenAIChat("scripted", base_url=server.base_url, **options)


def make_agent(server: ScriptedServer, db: Any, **options: Any) -> Agent:
    options.setdefault("retry_delay", 0.01)
    return Agent(model(server), name="Helper", db=db, **options)


def stored_spans(db: Any, trace_id: str) -> dict[str, Any]:
    tracing.flush()
    return {s.name: s for s in db.get_spans(trace_id)}


__all__ = ["Reply", "make_agent", "model", "stored_spans", "contextlib"]
