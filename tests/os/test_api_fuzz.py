"""Property-based API tests (schemathesis) against AgentOS's own OpenAPI document, over real
HTTP: for every operation, a bounded number of generated requests, without auth and as a
user with JWT auth on; no answer may be a 5xx, and every answer must be documented (its
status, its content type, its schema)."""

from __future__ import annotations

import time
from typing import Iterator

import jwt
import pytest
from hypothesis import HealthCheck, settings

from agentkeep.agent import Agent, tool
from agentkeep.db.sqlite import SqliteDb
from agentkeep.models import OpenAIChat
from agentkeep.models.scripted import Reply, ScriptedServer
from agentkeep.os import AgentOS, JWTAuth
from tests.os.conftest import Served

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (the test extra)")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12  # per operation: bounded, so the suite's time is too
SECRET = "a-shared-secret-of-at-least-32-bytes!"


@tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    model = ScriptedServer([Reply("fine"), Reply(tool_calls=[("refund", {"order": "A1"})])], cycle=True).start()
    db = SqliteDb(db_file=str(tmp_path_factory.mktemp("fuzz") / "api.db"))
    agent = Agent(OpenAIChat("scripted", base_url=model.base_url), name="helper", db=db, tools=[refund])
    served = Served(AgentOS(agents=[agent], db=db).get_app()).start()
    agent.run("hello", user_id="alice", session_id="s1")  # something to find
    yield schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    served.stop()
    model.stop()


@pytest.fixture(scope="module")
def api_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The same, with JWT auth on: the requests come from a user (not an admin)."""
    model = ScriptedServer([Reply("fine"), Reply(tool_calls=[("refund", {"order": "A1"})])], cycle=True).start()
    db = SqliteDb(db_file=str(tmp_path_factory.mktemp("fuzz") / "api.db"))
    agent = Agent(OpenAIChat("scripted", base_url=model.base_url), name="helper", db=db, tools=[refund])
    served = Served(AgentOS(agents=[agent], db=db, jwt=JWTAuth(secret=SECRET)).get_app()).start()
    agent.run("hello", user_id="alice", session_id="s1")
    agent.run("hello", user_id="bob", session_id="s2")  # another user's, to be refused
    yield schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    served.stop()
    model.stop()


schema = schemathesis.pytest.from_fixture("api")
schema_with_auth = schemathesis.pytest.from_fixture("api_with_auth")


@pytest.mark.server
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: object) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.server
@schema_with_auth.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_with_auth(case: object) -> None:
    user = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {user}"})
