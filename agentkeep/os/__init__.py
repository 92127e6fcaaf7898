"""AgentOS: the FastAPI server for agentkeep agents and their records."""

from agentkeep.os.app import AgentOS, BootError
from agentkeep.os.auth import Caller, Forbidden, JWTAuth, Unauthorized

__all__ = ["AgentOS", "BootError", "Caller", "Forbidden", "JWTAuth", "Unauthorized"]
