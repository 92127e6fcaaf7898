"""OpenAIChat: chat completions on the official `openai` SDK, for OpenAI and every server that
speaks its protocol (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter: pass `base_url`)."""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import weakref
from typing import Any, AsyncIterator, Iterator, Sequence

from agentkeep.db.errors import InvalidInputError
from agentkeep.models.base import ModelError, ModelResponse, StreamItem, ToolCall, Usage, estimate_tokens

# llama.cpp's server refuses a streamed request that lets the model choose a tool: with an
# error, or (its chatml-function-calling format) by ending the stream after its first chunk
_NO_STREAMED_TOOLS = "streaming tool choice is not supported"


class OpenAIChat:
    """`id` is the model name the server knows. Retries are the agent's (`Agent(retries=)`),
    so the SDK's own are off by default (`max_retries`)."""

    provider = "openai"

    def __init__(self, id: str = "gpt-4o-mini", *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 60.0, max_retries: int = 0, temperature: float | None = None,
                 max_tokens: int | None = None, request_params: dict[str, Any] | None = None) -> None:
        if not isinstance(id, str) or not id:
            raise InvalidInputError("id must be a non-empty model name")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.id = id
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        # a local server needs no key, but the SDK insists on one
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or ("unused" if self.base_url else None)
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.params = {k: val for k, val in (("temperature", temperature), ("max_tokens", max_tokens)) if val is not None}
        self.params.update(request_params or {})
        self.streams_tool_choice = True  # set False once a server refuses it
        self._client = None
        self._aclients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"OpenAIChat(id={self.id!r}, base_url={self.base_url!r})"

    def prepare(self) -> None:
        """Import the SDK and its response types and load the TLS certificates (about a
        second of CPU, once per process), so a server's first run does not stall its event
        loop doing it."""
        import openai
        from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: F401

        openai.DefaultAsyncHttpx2Client(verify=_tls())  # imports its transport, made on first use

    # -- clients, made on first use ------------------------------------------------------

    def _options(self) -> dict:
        return {"api_key": self.api_key, "base_url": self.base_url, "timeout": self.timeout,
                "max_retries": self.max_retries}

    @property
    def client(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._options(), http_client=openai.DefaultHttpx2Client(verify=_tls()))
        return self._client

    @property
    def aclient(self):
        """The async client of the running event loop (its connections belong to that loop:
        a script that calls `asyncio.run` twice gets a client for each)."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            import openai

            client = openai.AsyncOpenAI(**self._options(), http_client=openai.DefaultAsyncHttpx2Client(verify=_tls()))
            self._aclients[loop] = client
        return client

    # -- calls -----------------------------------------------------------------------------

    def response(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                 tool_choice: Any = None, response_format: Any = None) -> ModelResponse:
        request = self._request(messages, tools, tool_choice, response_format, stream=False)
        try:
            return _parsed(self._post(request))
        except Exception as exc:
            raise _model_error(exc) from exc

    async def aresponse(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                        tool_choice: Any = None, response_format: Any = None) -> ModelResponse:
        request = self._request(messages, tools, tool_choice, response_format, stream=False)
        try:
            return _parsed(await self._apost(request))
        except Exception as exc:
            raise _model_error(exc) from exc

    def stream(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
               tool_choice: Any = None, response_format: Any = None) -> Iterator[StreamItem]:
        if tools and not self.streams_tool_choice:
            yield from _whole(self.response(messages, tools=tools, tool_choice=tool_choice,
                                            response_format=response_format))
            return
        request = self._request(messages, tools, tool_choice, response_format, stream=True)
        acc = _Accumulator(messages)
        try:
            for chunk in self._post(request):
                delta = acc.add(chunk)
                if delta:
                    yield delta
        except Exception as exc:
            if not acc.refused(tools, exc):
                raise _model_error(exc) from exc
        if acc.refused(tools):
            self.streams_tool_choice = False
            self._client.close()  # the server cut the stream: its pooled connection is dead
            self._client = None
            yield from self.stream(messages, tools=tools, tool_choice=tool_choice, response_format=response_format)
            return
        yield acc.result()

    async def astream(self, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                      tool_choice: Any = None, response_format: Any = None) -> AsyncIterator[StreamItem]:
        if tools and not self.streams_tool_choice:
            for item in _whole(await self.aresponse(messages, tools=tools, tool_choice=tool_choice,
                                                    response_format=response_format)):
                yield item
            return
        request = self._request(messages, tools, tool_choice, response_format, stream=True)
        acc = _Accumulator(messages)
        try:
            async for chunk in await self._apost(request):
                delta = acc.add(chunk)
                if delta:
                    yield delta
        except Exception as exc:
            if not acc.refused(tools, exc):
                raise _model_error(exc) from exc
        if acc.refused(tools):
            self.streams_tool_choice = False
            await self._aclients.pop(asyncio.get_running_loop()).close()  # the server cut the stream
            async for item in self.astream(messages, tools=tools, tool_choice=tool_choice,
                                           response_format=response_format):
                yield item
            return
        yield acc.result()

    # The SDK's `chat.completions.create` first walks the whole request against its typed
    # params (4-7 ms a call with 40 messages of history), and builds a typed object from every
    # streamed chunk (about 0.3 ms each): the messages are plain JSON already, so the request
    # goes through the client's own `post` and the answer comes back as the server's JSON
    # (`object`): the same HTTP, retries, errors and streaming, without those walks.
    def _post(self, request: dict) -> Any:
        from openai import Stream

        return self.client.post("/chat/completions", body=request, cast_to=object,
                                stream=bool(request.get("stream")), stream_cls=Stream[object])

    async def _apost(self, request: dict) -> Any:
        from openai import AsyncStream

        return await self.aclient.post("/chat/completions", body=request, cast_to=object,
                                       stream=bool(request.get("stream")), stream_cls=AsyncStream[object])

    def _request(self, messages, tools, tool_choice, response_format, *, stream: bool) -> dict:
        request: dict[str, Any] = {"model": self.id, "messages": [_outgoing(m) for m in messages], **self.params}
        if tools:
            request["tools"] = list(tools)
            if tool_choice is not None:
                request["tool_choice"] = tool_choice
        if response_format is not None:
            request["response_format"] = response_format
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return request


@functools.lru_cache(maxsize=None)
def _tls() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one loads the CA bundle
    (about 0.3 s), which each new client (one per event loop) would do again."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _outgoing(message: dict) -> dict:
    # llama.cpp's server refuses an assistant message whose content is null
    if message.get("role") == "assistant" and message.get("content") is None:
        return {**message, "content": ""}
    return message


def _parsed(completion: Any) -> ModelResponse:
    if not isinstance(completion, dict) or not completion.get("choices"):
        raise ModelError("the model returned no choices", transient=True)
    choice = completion["choices"][0]
    msg = choice.get("message") or {}
    calls = [ToolCall(id=c.get("id") or f"call_{i}", name=c["function"].get("name") or "",
                      arguments=c["function"].get("arguments") or "{}")
             for i, c in enumerate(msg.get("tool_calls") or []) if c.get("function")]
    usage = completion.get("usage")
    return ModelResponse(
        content=msg.get("content"), tool_calls=calls, finish_reason=choice.get("finish_reason"),
        model=completion.get("model"), usage=_usage(usage) if usage else None,
    )


def _usage(usage: dict) -> Usage:
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def _whole(response: ModelResponse) -> Iterator[StreamItem]:
    if response.content:
        yield response.content
    yield response


class _Accumulator:
    """Folds a chat-completion stream into the whole response."""

    def __init__(self, messages: Sequence[dict]) -> None:
        self.messages = messages
        self.parts: list[str] = []
        self.calls: dict[int, dict] = {}
        self.usage: Usage | None = None
        self.finish_reason = self.model = None
        self.started = False

    def add(self, chunk: dict) -> str | None:
        self.started = True
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        if not chunk.get("choices"):
            return None
        choice = chunk["choices"][0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for c in delta.get("tool_calls") or ():
            call = self.calls.setdefault(c.get("index", 0), {"id": None, "name": "", "arguments": ""})
            call["id"] = c.get("id") or call["id"]
            function = c.get("function")
            if function:
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
        content = delta.get("content")
        if content:
            self.parts.append(content)
            return content
        return None

    def refused(self, tools: Any, exc: Exception | None = None) -> bool:
        """Whether the server refused to stream with tools (then the call is made again,
        unstreamed, and later calls with tools are not streamed)."""
        if not tools or self.parts or self.calls:
            return False
        if exc is not None:
            return _NO_STREAMED_TOOLS in str(exc).lower()
        return self.finish_reason is None

    def result(self) -> ModelResponse:
        if self.finish_reason is None and not self.parts and not self.calls:
            raise ModelError("the model's stream ended before its answer began", transient=True)
        content = "".join(self.parts) or None
        calls = [ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
                 for i, c in sorted(self.calls.items())]
        usage = self.usage
        if usage is None:  # the server sent none (llama.cpp ignores stream_options)
            prompt = "".join(str(m.get("content") or "") for m in self.messages)
            produced = (content or "") + "".join(c.name + c.arguments for c in calls)
            usage = Usage(estimate_tokens(prompt), estimate_tokens(produced), estimated=True)
        return ModelResponse(content=content, tool_calls=calls, usage=usage, finish_reason=self.finish_reason,
                             model=self.model)


def _model_error(exc: Exception) -> Exception:
    if isinstance(exc, ModelError):
        return exc
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return ModelError(f"model server unreachable or slow: {exc}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        transient = status in (408, 409, 429) or status >= 500
        return ModelError(f"model server answered {status}: {exc.message}", transient=transient, status=status)
    if isinstance(exc, openai.OpenAIError):
        return ModelError(f"model call failed: {exc}")
    return exc
