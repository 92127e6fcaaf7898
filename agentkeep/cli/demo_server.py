"""`agentkeep demo-server`: the demo AgentOS (agentkeep/os/demo), as `python -m agentkeep.os.demo`."""

from __future__ import annotations

from typing import Annotated

import typer

from agentkeep.cli.common import leading_db_url

DEFAULT_DB_URL = "sqlite:///agentkeep-demo-server.db"  # as agentkeep.os.demo's; kept here so --help stays fast


def demo_server(
    port: Annotated[int, typer.Option("--port")] = 7777,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    db_url: Annotated[str, typer.Option("--db", metavar="URL", callback=leading_db_url,
                                        help="Where the agent's records go.")] = DEFAULT_DB_URL,
    model: Annotated[str | None, typer.Option(
        "--model", metavar="ID",
        help="A model of the server at $OPENAI_BASE_URL (with $OPENAI_API_KEY) instead of the local SmolLM2.")] = None,
    data_dir: Annotated[str, typer.Option("--data-dir", metavar="DIR",
                                          help="The app database and the knowledge index.")] = "agentkeep-demo",
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", metavar="N",
                                                      help="The longest answer (local model: 256).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Bind a non-loopback address without auth.")] = False,
) -> None:
    """Serve the demo analyst agent (its app database, knowledge and an approval-gated tool) until Ctrl-C."""
    from agentkeep.os.demo.run import serve_demo

    code = serve_demo(host=host, port=port, db_url=db_url, model=model, data_dir=data_dir, max_tokens=max_tokens,
                      insecure=insecure)
    if code:
        raise typer.Exit(code)
