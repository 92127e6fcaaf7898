"""The demo AgentOS: an analyst agent over a small application database (SQLite), a few policy
documents as its knowledge, and a report tool that waits for a person's approval.

    python -m agentkeep.os.demo                      # or: agentkeep demo-server
    python -m agentkeep.os.demo --model gpt-4o-mini  # with $OPENAI_API_KEY (and $OPENAI_BASE_URL)

app.py builds it (`build()`, for `agentkeep serve`), data.py creates the app database,
tools.py holds the agent's tools, run.py serves it in the foreground."""

from agentkeep.os.demo.app import (
    DEFAULT_DATA_DIR,
    DEFAULT_DB_URL,
    DemoOS,
    SetupError,
    build,
)

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_DB_URL", "DemoOS", "SetupError", "build"]
