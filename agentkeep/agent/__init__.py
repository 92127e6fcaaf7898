"""The agent runtime: `Agent`, the `@tool` decorator, the run events and errors."""

from agentkeep.agent.agent import Agent
from agentkeep.agent.errors import AgentRunError, ModelBehaviorError
from agentkeep.agent.files import File
from agentkeep.agent.events import (
    RunCancelled,
    RunCompleted,
    RunContent,
    RunContinued,
    RunError,
    RunEvent,
    RunPaused,
    RunStarted,
    ToolCallCompleted,
    ToolCallError,
    ToolCallStarted,
)
from agentkeep.agent.tools import RunContext, Tool, tool

__all__ = [
    "Agent", "AgentRunError", "File", "ModelBehaviorError", "RunCancelled", "RunCompleted", "RunContent", "RunContext",
    "RunContinued", "RunError", "RunEvent", "RunPaused", "RunStarted", "Tool", "ToolCallCompleted",
    "ToolCallError", "ToolCallStarted", "tool",
]
