"""The `agentkeep` command: inspect, migrate, export, import and purge a db
(db_commands.py); add to and search a knowledge base (`agentkeep knowledge ...`,
knowledge.py); serve the offline model (`agentkeep local-model`, local_model.py) and an
AgentOS (`agentkeep serve`, serve.py), and the demo one (`agentkeep demo-server`,
demo_server.py). They use the helpers in common.py; imports go one way: this package ->
commands -> common -> agentkeep.report.

Every command takes `--db URL` (default `sqlite:///agentkeep.db`, or the environment
variable `AGENTKEEP_DB_URL`), after the command or before it (`agentkeep --db URL tables`).
The db package is imported inside the commands, so `agentkeep --help` stays fast.

Errors a user can act on (a bad URL, a missing file or directory, a server that cannot be
reached, a missing driver, any `DbError`) print one line on stderr and exit with status 2;
they never print a traceback.
"""

from __future__ import annotations

from agentkeep.cli.common import DB_URL_ENV, DEFAULT_DB_URL, EXIT_USER_ERROR
from agentkeep.cli.db_commands import app
from agentkeep.cli.demo_server import demo_server
from agentkeep.cli.eval import eval_suite
from agentkeep.cli.knowledge import knowledge_app
from agentkeep.cli.local_model import local_model
from agentkeep.cli.serve import serve
from agentkeep.report import render_schema_status, user_error_message

app.add_typer(knowledge_app, name="knowledge")
app.command("local-model")(local_model)
app.command("serve")(serve)
app.command("demo-server")(demo_server)
app.command("eval")(eval_suite)

__all__ = ["DB_URL_ENV", "DEFAULT_DB_URL", "EXIT_USER_ERROR", "app", "main", "render_schema_status",
           "user_error_message"]


def main() -> None:
    """Run the `agentkeep` command on sys.argv."""
    app(prog_name="agentkeep")
