"""Start the demo server in the foreground: check the model, load the data, print what was
loaded and how to call it, serve until Ctrl-C (exit 0, the local model stopped)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import uvicorn

from agentkeep.os.auth import REMOTE_ENV
from agentkeep.os.demo import data
from agentkeep.os.demo.app import (
    DEFAULT_DATA_DIR,
    DEFAULT_DB_URL,
    SetupError,
    build,
    local_model_missing,
)
from agentkeep.os.target import public_without_auth

EXIT_USER_ERROR = 2


def serve_demo(*, host: str = "127.0.0.1", port: int = 7777, db_url: str = DEFAULT_DB_URL, model: str | None = None,
               data_dir: str = DEFAULT_DATA_DIR, max_tokens: int | None = None, insecure: bool = False,
               out: TextIO | None = None) -> int:
    """Serve the demo; returns the exit status (0 after Ctrl-C, 2 for an error the user can
    fix, with one line on stderr)."""
    from agentkeep.report import user_error_message

    out = out or sys.stdout
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    agent_os = None
    try:
        _check(host, port, model, insecure)
        agent_os = build(db_url=db_url, model=model, data_dir=data_dir, max_tokens=max_tokens)
        return _serve(agent_os, host, port, db_url, out)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    finally:
        if agent_os is not None and agent_os.model_server is not None:
            agent_os.model_server.stop()


def _check(host: str, port: int, model: str | None, insecure: bool) -> None:
    """Refuse early what would fail later: before any file is written or model started."""
    refused = None if insecure else public_without_auth(host)
    if refused:
        raise SetupError(refused)
    if insecure:  # something in front authenticates: the server answers remote clients
        os.environ[REMOTE_ENV] = "1"
    if model is not None:
        if not (os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")):
            raise SetupError("--model needs OPENAI_BASE_URL (an OpenAI-compatible server) and/or OPENAI_API_KEY "
                             "in the environment")
    else:
        missing = local_model_missing()
        if missing:
            raise SetupError(missing)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SetupError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from None


def _serve(agent_os: Any, host: str, port: int, db_url: str, out: TextIO) -> int:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    counts = data.table_counts(agent_os.app_db)
    added = agent_os.knowledge_added
    say(f"app data   {agent_os.app_db} ({'created' if agent_os.app_db_created else 'reused'}: "
        f"{counts['customers']} customers, {counts['plans']} plans, {counts['monthly_revenue']} monthly revenue "
        f"rows, {counts['outbox']} reports in the outbox)")
    say(f"knowledge  {len(added)} documents ({len(added.added)} loaded, {len(added.unchanged)} unchanged), "
        f"{agent_os.knowledge_store}")
    say(f"records    {db_url} (sessions, runs, approvals, traces)")
    server = agent_os.model_server
    if server is not None:
        say(f"model      {server.model_id}, local: starting llama.cpp ...")
        server.start()
        say(f"           serving at {server.base_url}")
    else:
        model = agent_os.agents["analyst"].model
        say(f"model      {model.id} at {model.base_url or 'the OpenAI API'}")

    config = uvicorn.Config(agent_os.get_app(), host=host, port=port, log_level="info", lifespan="on")
    served = _Server(config, lambda: say(banner(host, port, agent_os)))
    served.run()  # a Ctrl-C it caught is raised again once it has shut down
    if not served.started:
        print("error: the server did not start (see above)", file=sys.stderr, flush=True)
        return 1
    return 0


def banner(host: str, port: int, agent_os: Any) -> str:
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    tools = ", ".join(t.name + (" (needs approval)" if t.requires_approval else "")
                      for t in agent_os.agents["analyst"].tools_by_name.values())
    run = '{"message": "Which plan brought the most revenue in 2025-06?", "user_id": "alice", "session_id": "demo-1"}'
    streamed = ('{"message": "What is the refund policy for annual plans?", "user_id": "alice", '
                '"session_id": "demo-1", "stream": true}')
    return "\n".join([
        "",
        f"The analyst agent is served on {url}  (Ctrl-C stops it; API docs: {url}/docs)",
        f"tools: {tools}",
        "",
        "A run:",
        f"  curl -s {url}/agents/analyst/runs -H 'content-type: application/json' \\",
        f"    -d '{run}'",
        "A streamed run (server-sent events):",
        f"  curl -sN {url}/agents/analyst/runs -H 'content-type: application/json' \\",
        f"    -d '{streamed}'",
        "The sessions:",
        f"  curl -s '{url}/sessions?user_id=alice'",
        "",
        "A run that calls send_report pauses until its approval is resolved, which resumes it:",
        f"  curl -s '{url}/approvals?status=pending'",
        f"  curl -s {url}/approvals/APPROVAL_ID/resolve -H 'content-type: application/json' \\",
        """    -d '{"status": "approved"}'""",
        "",
    ])


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_started` once it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.on_started()
