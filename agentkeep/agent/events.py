"""The events a streamed run yields, named as agent clients of this field parse them
(`event` is the name). Every event carries the run, session and agent it belongs to."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from agentkeep.db.models import Run, utcnow


class RunEvent(BaseModel):
    event: str
    run_id: str
    session_id: str
    agent_id: Optional[str] = None
    created_at: Any = Field(default_factory=utcnow)


class RunStarted(RunEvent):
    event: Literal["RunStarted"] = "RunStarted"
    model: Optional[str] = None


class RunContinued(RunEvent):
    event: Literal["RunContinued"] = "RunContinued"


class RunContent(RunEvent):
    """A piece of the answer as the model produces it."""

    event: Literal["RunContent"] = "RunContent"
    content: str


class ToolCallStarted(RunEvent):
    event: Literal["ToolCallStarted"] = "ToolCallStarted"
    tool: dict


class ToolCallCompleted(RunEvent):
    event: Literal["ToolCallCompleted"] = "ToolCallCompleted"
    tool: dict


class ToolCallError(RunEvent):
    event: Literal["ToolCallError"] = "ToolCallError"
    tool: dict
    error: str


class RunPaused(RunEvent):
    """The run waits for approvals (`approvals`: their ids); `agent.continue_run` resumes it."""

    event: Literal["RunPaused"] = "RunPaused"
    approvals: list[str]
    tools: list[dict]
    run: Run


class RunCompleted(RunEvent):
    event: Literal["RunCompleted"] = "RunCompleted"
    content: Any = None
    run: Run


class RunCancelled(RunEvent):
    event: Literal["RunCancelled"] = "RunCancelled"
    run: Run


class RunError(RunEvent):
    event: Literal["RunError"] = "RunError"
    error: str
    error_type: str
    run: Optional[Run] = None


FINAL = (RunPaused, RunCompleted, RunCancelled, RunError)
