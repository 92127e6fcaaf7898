"""A local server that speaks the OpenAI chat-completions protocol over HTTP and answers from
a script: for tests and benchmarks of agents, so they run the real client code path (the
`openai` SDK, HTTP, streaming) with replies known in advance.

    with ScriptedServer([Reply(tool_calls=[("add", {"a": 1, "b": 2})]), Reply("3")]) as server:
        agent = Agent(model=OpenAIChat("scripted", base_url=server.base_url), tools=[add])

The script is a list of replies given in order (`cycle=True` repeats it), or a function of
the request body that returns the reply. `server.requests` keeps every request body."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Sequence, Union


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of a server's model calls would
    # overflow it, and the model client would see dropped connections
    request_queue_size = 1024


@dataclass
class Reply:
    """One answer. A tool call is `(name, arguments)`: a dict is sent as JSON, a str as it is
    (to send malformed JSON). `status` other than 200 answers with an OpenAI-style error;
    `delay` waits first (to provoke timeouts); `chunk_delay` waits between streamed pieces
    (a slow stream)."""

    content: str | None = None
    tool_calls: Sequence[tuple[str, Union[dict, str]]] = ()
    usage: tuple[int, int] | None = (12, 5)
    status: int = 200
    error: str = "scripted failure"
    delay: float = 0.0
    chunk_chars: int = 8  # the size of each streamed content delta
    chunk_delay: float = 0.0


Script = Union[Sequence[Reply], Callable[[dict], Reply]]


class ScriptedServer:
    def __init__(self, script: Script, *, cycle: bool = False, host: str = "127.0.0.1", port: int = 0) -> None:
        if callable(script):
            self._next: Callable[[dict], Reply] = script
        else:
            replies = itertools.cycle(list(script)) if cycle else iter(list(script))
            lock = threading.Lock()

            def next_reply(_: dict) -> Reply:
                with lock:
                    reply = next(replies, None)
                return reply or Reply(status=500, error="the script has no more replies")

            self._next = next_reply
        self.requests: list[dict] = []
        self.call_ids = itertools.count()
        self._httpd = _Server((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def answer(self, body: dict) -> Reply:
        self.requests.append(body)
        return self._next(body)


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection
        disable_nagle_algorithm = True  # else headers and body, sent apart, wait 40 ms for an ACK

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            reply = server.answer(body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.status != 200:
                self._json(reply.status, {"error": {"message": reply.error, "type": "scripted"}})
            elif body.get("stream"):
                self._stream(reply, body)
            else:
                self._json(200, _completion(reply, body.get("model", "scripted"), server.call_ids))

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply, body: dict) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            usage = (body.get("stream_options") or {}).get("include_usage")
            for i, chunk in enumerate(_chunks(reply, body.get("model", "scripted"), bool(usage), server.call_ids)):
                if i > 1 and reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    return Handler


def _calls(reply: Reply, ids: Iterator[int]) -> list[dict]:
    # ids unique across the server's replies, as real servers give them
    return [{"id": f"call_{next(ids)}", "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for name, args in reply.tool_calls]


def _usage(reply: Reply) -> dict | None:
    if reply.usage is None:
        return None
    prompt, completion = reply.usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(reply: Reply, model: str, ids: Iterator[int]) -> dict:
    calls = _calls(reply, ids)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": _usage(reply),
    }


def _chunks(reply: Reply, model: str, usage: bool, ids: Iterator[int]) -> list[dict]:
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    text = reply.content or ""
    out += [chunk({"content": text[i:i + reply.chunk_chars]}) for i in range(0, len(text), reply.chunk_chars)]
    calls = _calls(reply, ids)
    for i, call in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": i, **call}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    if usage and reply.usage is not None:
        out.append({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [], "usage": _usage(reply)})
    return out
