"""A model that fails, times out or misbehaves, a tool that raises, a db that is down: the run
ends `error` with a clear message where the db is reachable, and nothing stored is lost."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa

from agentkeep.agent import AgentRunError
from agentkeep.db import ConnectionFailedError

from .conftest import Reply, make_agent, model


def boom(x: int) -> str:
    """Fail."""
    raise ValueError(f"no good: {x}")


def test_transient_model_errors_are_retried(scripted, db):
    server = scripted([Reply(status=503), Reply(status=429), Reply("fine")])
    run = make_agent(server, db, retries=2).run("hi", user_id="alice", session_id="s1")
    assert (run.status, run.content, len(server.requests)) == ("completed", "fine", 3)


@pytest.mark.parametrize("status", [400, 401])
def test_a_refused_request_is_not_retried_and_the_run_ends_in_error(scripted, db, status):
    server = scripted([Reply(status=status, error="bad key or request"), Reply("never")])
    with pytest.raises(AgentRunError, match=f"answered {status}") as info:
        make_agent(server, db).run("hi", user_id="alice", session_id="s1")
    assert len(server.requests) == 1
    stored = db.get_run(info.value.run.run_id)
    assert stored.status == "error" and "bad key or request" in stored.metadata["error"]["message"]
    assert info.value.error_type == "ModelError"


def test_a_model_that_times_out_ends_the_run_in_error(scripted, db):
    server = scripted([Reply("late", delay=1.5)], cycle=True)
    agent = make_agent(server, db, retries=1)
    agent.model = model(server, timeout=0.3)
    events = list(agent.run("hi", user_id="alice", session_id="s1", stream=True))
    assert events[-1].event == "RunError" and "unreachable or slow" in events[-1].error
    assert len(server.requests) == 2  # one retry
    assert db.get_run(events[-1].run_id).status == "error"


@pytest.mark.parametrize("call, message", [
    (("boom", "{not json"), "not valid JSON"),
    (("boom", {"x": "seven"}), "do not fit"),
    (("transfer", {}), "unknown tool 'transfer'"),
])
def test_a_misbehaving_model_ends_the_run_in_error(scripted, db, call, message):
    server = scripted([Reply(tool_calls=[call]), Reply("never")])
    agent = make_agent(server, db, tools=[boom])
    with pytest.raises(AgentRunError, match=message):
        agent.run("go", user_id="alice", session_id="s1")
    run = db.list_runs("s1").items[0]
    assert run.status == "error" and run.metadata["error"]["type"] == "ModelBehaviorError"
    assert len(server.requests) == 1


def test_a_tool_error_goes_back_to_the_model(scripted, db):
    server = scripted([Reply(tool_calls=[("boom", {"x": 7})]), Reply("Sorry, that failed.")])
    events = list(make_agent(server, db, tools=[boom]).run("go", user_id="alice", session_id="s1", stream=True))
    error = next(e for e in events if e.event == "ToolCallError")
    assert error.error == "Error: ValueError: no good: 7"
    assert server.requests[1]["messages"][-1]["content"] == "Error: ValueError: no good: 7"
    run = db.get_run(events[-1].run_id)
    assert run.status == "completed" and run.tools[0]["status"] == "error"


def test_a_tool_error_can_end_the_run(scripted, db):
    server = scripted([Reply(tool_calls=[("boom", {"x": 7})]), Reply("never")])
    with pytest.raises(AgentRunError, match="no good: 7"):
        make_agent(server, db, tools=[boom], tool_errors="fail").run("go", user_id="alice", session_id="s1")
    assert db.list_runs("s1").items[0].status == "error"


def test_the_tool_call_limit_ends_a_looping_model(scripted, db):
    server = scripted([Reply(tool_calls=[("boom", {"x": 1})])], cycle=True)
    with pytest.raises(AgentRunError, match="after the limit of 2 calls"):
        make_agent(server, db, tools=[boom], tool_call_limit=2).run("go", user_id="alice", session_id="s1")
    assert "tools" not in server.requests[-1]  # the last call offered no tools
    assert len(server.requests) == 3


def test_a_db_that_is_down_before_the_run_raises_and_calls_no_model(scripted):
    server = scripted([Reply("never")])
    from agentkeep.db.postgres import PostgresDb

    down = PostgresDb(db_url="postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=1)
    with pytest.raises(ConnectionFailedError):
        make_agent(server, down, tracing=False).run("hi", user_id="alice", session_id="s1")
    assert server.requests == []


class Proxy:
    """A TCP proxy to the PostgreSQL server that can be cut: the db goes down on the wire."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.server
def test_a_db_lost_during_the_run_loses_nothing_stored(scripted):
    from agentkeep.db.postgres import PostgresDb
    from tests.conformance.backends import BY_NAME, postgres_url
    from tests.conftest import require_backend

    require_backend(BY_NAME["postgres"])
    url = sa.make_url(postgres_url())
    proxy = Proxy(url.port or 5432)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = PostgresDb(db_url=postgres_url(), db_schema=schema)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    through_proxy = PostgresDb(db_url=proxied, db_schema=schema, connect_timeout=2)
    try:
        server = scripted([Reply("first answer"), Reply(tool_calls=[("cut", {})]), Reply("never stored")])

        def cut() -> str:
            """Lose the db."""
            proxy.cut()
            return "cut"

        make_agent(server, through_proxy, tools=[cut]).run("one", user_id="alice", session_id="s1")
        with pytest.raises(AgentRunError) as info:
            make_agent(server, through_proxy, tools=[cut], tracing=False).run("two", user_id="alice", session_id="s1")
        assert info.value.run.status == "error" and info.value.error_type == "ConnectionFailedError"
        runs = db.list_runs("s1").items
        assert (runs[0].content, runs[0].status) == ("first answer", "completed")
        assert runs[1].status == "running"  # the db was gone before the outcome could be written
        assert len(server.requests) == 3
    finally:
        proxy.cut()
        db.close()
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
