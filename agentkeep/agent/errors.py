"""What an agent run raises. A run that fails after it was stored ends with status `error`
and raises `AgentRunError` (or yields a `RunError` event when streamed)."""

from __future__ import annotations

from typing import Any


class ModelBehaviorError(Exception):
    """The model asked for something the runtime cannot do: an unknown tool, arguments that
    are not JSON or do not fit, an answer that does not fit `output_schema`."""


class AgentRunError(Exception):
    """The run failed; `run` is the run as stored (status `error`), `error_type` the name of
    the underlying error."""

    def __init__(self, message: str, *, run: Any = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.run = run
        self.error_type = error_type
