"""`agentkeep serve module:attribute` runs an AgentOS with uvicorn."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import httpx

from agentkeep.models.local import free_port
from agentkeep.models.scripted import Reply, ScriptedServer

MAIN = textwrap.dedent('''
    import os
    from agentkeep.agent import Agent
    from agentkeep.db.sqlite import SqliteDb
    from agentkeep.models import OpenAIChat
    from agentkeep.os import AgentOS

    db = SqliteDb(db_file="served.db")
    agent = Agent(OpenAIChat("scripted", base_url=os.environ["MODEL_URL"]), name="Helper", db=db)
    agent_os = AgentOS(agents=[agent], db=db)
''')


def _cli(*args: str, cwd, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentkeep", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_up(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_serve_runs_the_agent_os_until_stopped(tmp_path):
    import os

    (tmp_path / "main.py").write_text(MAIN)
    port = free_port()
    with ScriptedServer([Reply("served")]) as model:
        proc = _cli("serve", "main:agent_os", "--port", str(port), cwd=tmp_path,
                    env={**os.environ, "MODEL_URL": model.base_url})
        try:
            _wait_up(proc, port)
            run = httpx.post(f"http://127.0.0.1:{port}/agents/helper/runs", json={"message": "hi"}, timeout=30).json()
            assert run["content"] == "served"
        finally:
            proc.send_signal(signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
            assert proc.wait(30) in (0, -signal.SIGTERM)
    assert (tmp_path / "served.db").exists()


def test_serve_refuses_a_public_address_without_auth_and_bad_targets(tmp_path):
    (tmp_path / "main.py").write_text("x = 1\n\nasync def app(scope, receive, send):\n    pass\n")
    refused = _cli("serve", "main:app", "--host", "0.0.0.0", cwd=tmp_path)
    assert refused.wait(60) == 2 and "without authentication" in refused.stderr.read()
    for target, message in (("main:nothing", "has no attribute"), ("nomodule:app", "cannot import"),
                            ("main", "module:attribute"), ("main:x", "neither an AgentOS")):
        bad = _cli("serve", target, cwd=tmp_path)
        assert bad.wait(60) == 2
        assert message in bad.stderr.read()


def test_serve_a_public_address_with_a_security_key(tmp_path):
    import os

    (tmp_path / "main.py").write_text(MAIN)
    port = free_port()
    with ScriptedServer([Reply("served")]) as model:
        proc = _cli("serve", "main:agent_os", "--host", "0.0.0.0", "--port", str(port), cwd=tmp_path,
                    env={**os.environ, "MODEL_URL": model.base_url, "AGENTKEEP_SECURITY_KEY": "k" * 24})
        try:
            _wait_up(proc, port)
            url = f"http://127.0.0.1:{port}/sessions"
            assert httpx.get(url, timeout=30).status_code == 401
            assert httpx.get(url, headers={"Authorization": "Bearer " + "k" * 24}, timeout=30).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) in (0, -signal.SIGTERM)


AGENTS = textwrap.dedent('''
    import os
    from agentkeep.agent import Agent
    from agentkeep.models import OpenAIChat

    agent = Agent(OpenAIChat("scripted", base_url=os.environ["MODEL_URL"]), name="Helper")
''')


def test_serve_an_agent_on_the_db_given_with_db(tmp_path):
    import os

    from agentkeep.db.sqlite import SqliteDb

    (tmp_path / "main.py").write_text(AGENTS + "agent_os = 1\nteam = [agent]\n")
    port = free_port()
    with ScriptedServer([Reply("kept")]) as model:
        proc = _cli("serve", "main:team", "--db", "sqlite:///given.db", "--port", str(port), cwd=tmp_path,
                    env={**os.environ, "MODEL_URL": model.base_url})
        try:
            _wait_up(proc, port)
            run = httpx.post(f"http://127.0.0.1:{port}/agents/helper/runs", json={"message": "hi", "session_id": "s"},
                             timeout=30).json()
            assert run["content"] == "kept"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) in (0, -signal.SIGTERM)
    db = SqliteDb(db_file=str(tmp_path / "given.db"))
    assert [r.content for r in db.list_runs("s").items] == ["kept"]  # in the db --db named
    db.close()
    refused = _cli("serve", "main:agent_os", "--db", "sqlite:///x.db", cwd=tmp_path,
                   env={**os.environ, "MODEL_URL": "http://127.0.0.1:9"})
    assert refused.wait(60) == 2 and "--db is for" in refused.stderr.read()
