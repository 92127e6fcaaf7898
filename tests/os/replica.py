"""An AgentOS replica in a process of its own, for tests that kill one mid-run:

    python -m tests.os.replica DB_URL MODEL_BASE_URL PORT

Short run leases and a fast sweep, so a dead replica's runs are failed within seconds."""

from __future__ import annotations

import sys

import uvicorn

from agentkeep.agent import Agent
from agentkeep.db import connect
from agentkeep.models import OpenAIChat
from agentkeep.os import AgentOS

LEASE_SECONDS = 4.0


def main() -> None:
    db_url, model_url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = connect(db_url)
    agent = Agent(OpenAIChat("scripted", base_url=model_url), name="analyst", db=db, run_lease_seconds=LEASE_SECONDS)
    app = AgentOS(agents=[agent], db=db, sweep_seconds=0.5).get_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
