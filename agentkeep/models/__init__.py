"""Models the agent runtime talks to: `OpenAIChat` (any OpenAI-compatible server) behind the
small `Model` protocol, a scripted server for tests, and a local model that runs offline."""

from agentkeep.models.base import Model, ModelError, ModelResponse, ToolCall, Usage
from agentkeep.models.openai import OpenAIChat

__all__ = ["Model", "ModelError", "ModelResponse", "OpenAIChat", "ToolCall", "Usage"]
