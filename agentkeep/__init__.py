"""agentkeep: everything an AI agent persists, in one `db` object."""

__version__ = "0.1.0"
