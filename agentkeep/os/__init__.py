"""AgentOS: the FastAPI server for agentkeep agents and their records."""

from agentkeep.os.app import AgentOS, BootError

__all__ = ["AgentOS", "BootError"]
