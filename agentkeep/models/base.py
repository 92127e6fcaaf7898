"""What the agent runtime needs of a model: one chat call, streamed or not, in OpenAI's
message format. A provider plugs in by implementing `Model` (see openai.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Protocol, Sequence, Union, runtime_checkable


@dataclass
class ToolCall:
    """A tool call as the model sent it; `arguments` is the raw JSON text (parsed, and
    checked, by the runtime: a model may send malformed JSON)."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # counted by the runtime: the server reported no usage


@dataclass
class ModelResponse:
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None


# A stream yields content deltas (str) and ends with the whole ModelResponse.
StreamItem = Union[str, ModelResponse]


class ModelError(Exception):
    """A model call failed. `transient` errors (timeouts, connection errors, 429, 5xx) are
    worth retrying; the others (a bad request, a wrong key) are not."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


@runtime_checkable
class Model(Protocol):
    """What an agent calls. A model may also have `prepare()`: work done once before the
    first call (imports, clients), which a server runs at boot, off its event loop."""

    id: str
    provider: str

    def response(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                 tool_choice: Any = None, response_format: Any = None) -> ModelResponse: ...

    async def aresponse(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                        tool_choice: Any = None, response_format: Any = None) -> ModelResponse: ...

    def stream(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
               tool_choice: Any = None, response_format: Any = None) -> Iterator[StreamItem]: ...

    def astream(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                tool_choice: Any = None, response_format: Any = None) -> AsyncIterator[StreamItem]: ...


def estimate_tokens(text: str) -> int:
    """About four characters a token for English text: used only when a server reports no
    usage (llama.cpp's server on streamed replies), and marked `estimated` on the run."""
    return max(1, (len(text) + 3) // 4) if text else 0
