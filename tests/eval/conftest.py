"""Evals against a real OpenAI-protocol server over HTTP (the scripted one) for the agent and
the judge, and real dbs (SQLite and PostgreSQL), as the agent tests use them."""

from tests.agent.conftest import db, scripted, store  # noqa: F401 - fixtures shared with the agent tests
