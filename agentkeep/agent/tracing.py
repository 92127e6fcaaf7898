"""OpenTelemetry spans for agent runs, following the GenAI semantic conventions
(`invoke_agent`, `chat`, `execute_tool`, `retrieval`), stored in a db's traces and spans.

The spans go through a `BatchSpanProcessor` (off the request path; flushed at exit) that is
ADDED to the application's SDK TracerProvider when it has one, so agentkeep stores its spans
beside Logfire, Langfuse or Sentry. Without one, agentkeep uses a private provider and sets
no global provider (a later set-up of the application's own still works). By default only
agentkeep's own spans are stored; `store_all_spans=True` stores every span the provider sees.
Message content is recorded only with `capture_content=True`."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import json
import logging
import threading
from typing import Any, Sequence

from agentkeep.db import models as m

SCOPE = "agentkeep"
log = logging.getLogger("agentkeep.tracing")
_UTC = dt.timezone.utc


class NoTracing:
    """What an agent without tracing calls: nothing happens."""

    enabled = False

    def run_span(self, agent: Any, run: m.Run, session: m.Session) -> None:
        return None

    def span(self, name: str, parent: Any, attributes: dict | None = None) -> None:
        return None

    def end(self, span: Any, error: BaseException | None = None, attributes: dict | None = None) -> None:
        pass

    def end_chat(self, span: Any, response: Any) -> None:
        pass

    def end_run(self, span: Any, run: m.Run) -> None:
        pass

    def fail(self, span: Any, error: BaseException) -> None:
        pass

    def use(self, span: Any) -> Any:
        return contextlib.nullcontext()

    def chat_attributes(self, agent: Any, turn: Any) -> dict:
        return {}

    def tool_attributes(self, tool: Any, record: dict) -> dict:
        return {}

    def tool_result(self, text: str) -> dict:
        return {}

    def retrieval_attributes(self, agent: Any, query: str) -> dict:
        return {}


class Tracing(NoTracing):
    enabled = True

    def __init__(self, tracer: Any, exporter: "DbSpanExporter", db: Any, *, capture_content: bool = False) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer
        self.exporter = exporter
        self.db = db
        self.capture_content = capture_content

    def run_span(self, agent: Any, run: m.Run, session: m.Session) -> Any:
        attributes = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent.name or agent.id,
            "gen_ai.agent.id": agent.id, "gen_ai.conversation.id": run.session_id,
            "gen_ai.request.model": agent.model.id, "gen_ai.provider.name": agent.model.provider,
            "agentkeep.run_id": run.run_id,
        }
        if run.user_id is not None:
            attributes["user.id"] = run.user_id
        if self.capture_content and isinstance(run.input, str):
            attributes["gen_ai.input.messages"] = json.dumps([{"role": "user", "content": run.input}])
        span = self.tracer.start_span(f"invoke_agent {agent.name or agent.id}", attributes=attributes)
        self.exporter.route(span.context.trace_id, self.db)  # the run's spans go to this agent's db
        return span

    def span(self, name: str, parent: Any, attributes: dict | None = None) -> Any:
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        kind = self._trace.SpanKind.CLIENT if name.startswith("chat") else self._trace.SpanKind.INTERNAL
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def end(self, span: Any, error: BaseException | None = None, attributes: dict | None = None) -> None:
        if span is None:
            return
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            self.fail(span, error)
        span.end()

    def end_chat(self, span: Any, response: Any) -> None:
        attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": [response.finish_reason or "unknown"]}
        if response.model:
            attributes["gen_ai.response.model"] = response.model
        if response.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = response.usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = response.usage.output_tokens
        if self.capture_content:
            out: dict[str, Any] = {"role": "assistant", "content": response.content}
            if response.tool_calls:
                out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls]
            attributes["gen_ai.output.messages"] = json.dumps([out])
        self.end(span, attributes=attributes)

    def end_run(self, span: Any, run: m.Run) -> None:
        if span is None:
            return
        span.set_attributes({
            "gen_ai.usage.input_tokens": run.metrics.input_tokens,
            "gen_ai.usage.output_tokens": run.metrics.output_tokens,
            "agentkeep.run.status": run.status,
        })
        if self.capture_content and isinstance(run.content, str):
            span.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": run.content}]))
        if run.status != "error":
            span.set_status(self._trace.StatusCode.OK)
        span.end()

    def fail(self, span: Any, error: BaseException) -> None:
        if span is None:
            return
        span.set_status(self._trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        span.set_attribute("error.type", type(error).__name__)
        span.record_exception(error)

    def use(self, span: Any) -> Any:
        return self._trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)

    def chat_attributes(self, agent: Any, turn: Any) -> dict:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": agent.model.id,
                      "gen_ai.provider.name": agent.model.provider, "gen_ai.agent.id": agent.id,
                      "gen_ai.conversation.id": turn.run.session_id}
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps(turn.messages, default=str)
        return attributes

    def tool_attributes(self, tool: Any, record: dict) -> dict:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name,
                      "gen_ai.tool.type": "function", "gen_ai.tool.call.id": record["tool_call_id"]}
        if tool.description:
            attributes["gen_ai.tool.description"] = tool.description
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = json.dumps(record["tool_args"], default=str)
        return attributes

    def tool_result(self, text: str) -> dict:
        return {"gen_ai.tool.call.result": text} if self.capture_content else {}

    def retrieval_attributes(self, agent: Any, query: str) -> dict:
        attributes = {"gen_ai.operation.name": "retrieval", "gen_ai.agent.id": agent.id,
                      "gen_ai.data_source.id": getattr(agent.knowledge, "name", None) or "knowledge"}
        if self.capture_content:
            attributes["gen_ai.retrieval.query.text"] = query
        return attributes


# -- storing spans ----------------------------------------------------------------------------


def span_record(span: Any) -> m.Span:
    """An SDK ReadableSpan as the db's Span record."""
    ctx = span.context
    parent = span.parent
    status = span.status
    return m.Span(
        span_id=f"{ctx.span_id:016x}", trace_id=f"{ctx.trace_id:032x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name, kind=span.kind.name, status_code=status.status_code.name,
        status_message=status.description, start_time=_time(span.start_time), end_time=_time(span.end_time),
        duration_ms=(span.end_time - span.start_time) / 1e6 if span.end_time else None,
        attributes={k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
        events=[{"name": e.name, "time": _time(e.timestamp).isoformat(),
                 "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (e.attributes or {}).items()}}
                for e in span.events],
    )


def _time(ns: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ns / 1e9, _UTC) if ns is not None else None


class DbSpanExporter:
    """Writes finished spans into the db of the run they belong to (one exporter per
    TracerProvider, behind its batch processor, so it runs in that processor's thread).
    A run's trace is routed to its agent's db when the run starts; the route goes once the
    trace's root span is written. A sync db is called in this thread; an async db's call is
    handed to the event loop the run ran on."""

    def __init__(self) -> None:
        self.routes: dict[int, tuple[Any, Any, int]] = {}  # trace id -> (db, event loop or None, runs)
        self.catch_all: tuple[Any, Any] | None = None  # where store_all_spans sends other spans
        self.failures = 0
        self.last_error: str | None = None

    def route(self, trace_id: int, db: Any) -> None:
        loop = asyncio.get_running_loop() if asyncio.iscoroutinefunction(getattr(db, "write_spans", None)) else None
        with _lock:
            _, _, runs = self.routes.get(trace_id, (None, None, 0))
            self.routes[trace_id] = (db, loop, runs + 1)

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        batches: dict[int, tuple[tuple[Any, Any], list]] = {}
        for span in spans:
            trace_id = span.context.trace_id
            ours = span.instrumentation_scope is not None and span.instrumentation_scope.name == SCOPE
            route = self.routes.get(trace_id)
            if route is not None and (ours or self.catch_all is not None):
                sink = route[:2]
            elif self.catch_all is not None:
                sink = self.catch_all
            else:
                continue
            batches.setdefault(id(sink[0]), (sink, []))[1].append(span_record(span))
            if ours and route is not None and span.name.startswith("invoke_agent"):
                self._run_done(trace_id)
        result = SpanExportResult.SUCCESS
        for (db, loop), records in batches.values():
            try:
                if loop is not None:
                    if loop.is_closed():
                        raise RuntimeError("the event loop of the run's async db is closed")
                    asyncio.run_coroutine_threadsafe(db.write_spans(records), loop).result(timeout=30)
                else:
                    db.write_spans(records)
            except Exception as exc:  # a tracing failure must never break the application
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("agentkeep: %d spans not stored in %r: %s", len(records), db, self.last_error)
                result = SpanExportResult.FAILURE
        return result

    def _run_done(self, trace_id: int) -> None:
        with _lock:
            db, loop, runs = self.routes[trace_id]
            if runs <= 1:
                del self.routes[trace_id]
            else:
                self.routes[trace_id] = (db, loop, runs - 1)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_lock = threading.Lock()
_private_provider: Any = None
_processors: dict[int, tuple[Any, DbSpanExporter, Any]] = {}  # id(provider) -> (provider, exporter, processor)


def tracing_for(db: Any, *, store_all: bool = False, capture_content: bool = False, provider: Any = None) -> "Tracing":
    """The tracing of an agent whose spans go to `db`: agentkeep's exporter is added once to
    the application's SDK TracerProvider (or to a private one when it has none)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    global _private_provider
    with _lock:
        if provider is None:
            provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # the application has none of its own
            if _private_provider is None:
                _private_provider = TracerProvider()
                atexit.register(_private_provider.shutdown)
            provider = _private_provider
        if id(provider) not in _processors:
            exporter = DbSpanExporter()
            processor = BatchSpanProcessor(exporter, schedule_delay_millis=1000)
            provider.add_span_processor(processor)
            _processors[id(provider)] = (provider, exporter, processor)
        _, exporter, _ = _processors[id(provider)]
        if store_all and exporter.catch_all is None:
            exporter.catch_all = (db, None)
    return Tracing(provider.get_tracer(SCOPE), exporter, db, capture_content=capture_content)


def flush(timeout_millis: int = 30000) -> bool:
    """Write every finished span now (tests, shutdown hooks, short scripts)."""
    with _lock:
        processors = [p for _, _, p in _processors.values()]
    return all(p.force_flush(timeout_millis) for p in processors)
