"""`agentkeep serve module:attribute`: run an AgentOS (or any ASGI app) with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from agentkeep.cli.common import DEFAULT_DB_URL, fail, user_errors


def serve(
    target: Annotated[str, typer.Argument(help="module:attribute of an AgentOS, an app, an Agent or a list of "
                                                "Agents, e.g. main:agent_os")],
    db_url: Annotated[Optional[str], typer.Option(
        "--db", metavar="URL", help="For an Agent or a list of Agents: the db of the AgentOS that serves them "
                                    f"(default {DEFAULT_DB_URL}; an agent with a db of its own keeps it).")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 7777,
    reload: Annotated[bool, typer.Option("--reload", help="Restart when the code changes.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Bind a non-loopback address without auth (a proxy "
                                           "in front authenticates).")] = False,
) -> None:
    """Serve an AgentOS over HTTP."""
    import uvicorn

    from agentkeep.os.auth import REMOTE_ENV
    from agentkeep.os.target import DB_ENV, TARGET_ENV, authenticates, load, public_without_auth

    if insecure:  # something in front authenticates: the server answers remote clients
        os.environ[REMOTE_ENV] = "1"
    with user_errors():
        app = load(target, db_url)
    refused = None if insecure or authenticates(app) else public_without_auth(host)
    if refused:
        fail(refused)
    if reload:
        os.environ[TARGET_ENV] = target
        if db_url is not None:
            os.environ[DB_ENV] = db_url
        uvicorn.run("agentkeep.os.target:from_env", factory=True, host=host, port=port, reload=True)
    else:
        uvicorn.run(app, host=host, port=port)
