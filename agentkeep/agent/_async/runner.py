"""One agent run, from the first read to the last write.

This is the async source; `agentkeep/agent/_sync/runner.py` is generated from it by
`scripts/unasync.py` (never edit the generated file).

A run is a generator of events (`events.py`); `Agent.run` without `stream` consumes it and
returns the stored run. Writes per turn: the run appended as `running`, the run updated
with its outcome (a compare-and-set on its status, so a run cancelled or resumed elsewhere
is never overwritten), and the session state when a tool changed it."""

# unasync: aresponse -> response
# unasync: astream -> stream
# unasync: asearch -> search
# unasync: AsyncBuiltins -> Builtins

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from agentkeep.agent import events as ev
from agentkeep.agent._async.builtins import AsyncBuiltins
from agentkeep.agent._async.util import call_tool, leased, pause
from agentkeep.agent.context import history_messages, system_message
from agentkeep.agent.errors import ModelBehaviorError
from agentkeep.agent.files import user_message
from agentkeep.agent.tools import RunContext, ToolArgumentsError, reference, result_text
from agentkeep.db import models as m
from agentkeep.db.errors import ConflictError, NotFoundError
from agentkeep.models.base import ModelError, ModelResponse

STATE_RETRIES = 8
REJECTED = "The user did not approve this call ({status}). Do not try it again; tell the user."
EXPIRED_BY = "agentkeep"  # `resolved_by` of an approval expired by the runtime or a server's sweep


@dataclass
class Turn:
    run: m.Run
    session: m.Session
    state: dict
    dependencies: dict
    messages: list[dict]  # what the model reads: system, history, then this run's
    start: int  # where this run's own messages begin
    original_state: dict = field(default_factory=dict)
    references: list[dict] = field(default_factory=list)
    tool_calls: int = 0
    model_calls: int = 0
    started: float = field(default_factory=time.perf_counter)
    span: Any = None

    def context(self, db: Any) -> RunContext:
        r = self.run
        return RunContext(r.run_id, r.session_id, r.user_id, r.agent_id, self.state, self.dependencies, db)


class Runner:
    def __init__(self, agent: Any, db: Any, trace_db: Any = None) -> None:
        self.agent = agent
        self.db = db
        self.builtins = AsyncBuiltins(agent, db)
        self.tracer = agent.tracing

    # -- a new run ------------------------------------------------------------------------

    async def start(self, text: str, *, user_id: str | None, session_id: str, session_state: dict | None,
                    dependencies: dict | None, files: list, stream: bool,
                    run_id: str | None = None) -> AsyncIterator[ev.RunEvent]:
        a = self.agent
        session = await self._session(session_id, user_id, text)
        state = {**session.state, **(session_state or {})}
        run = m.Run(session_id=session.session_id, user_id=user_id, agent_id=a.id, status="running", input=text,
                    metrics=m.RunMetrics(model=a.model.id, provider=a.model.provider), lease_until=self._lease(),
                    metadata={"files": [f.describe() for f in files]} if files else {},
                    **({"run_id": run_id} if run_id is not None else {}))
        turn = Turn(run, session, state, {**a.dependencies, **(dependencies or {})}, [], 0,
                    original_state=dict(session.state))
        if session_state:
            turn.original_state = {}  # the caller's values are saved even if no tool changes them
        if self.db is not None:
            turn.run = run = await self.db.append_run(run)
        turn.span = self.tracer.run_span(a, run, session)
        async with leased(self.db, run.run_id, a.run_lease_seconds):
            try:
                if a.add_knowledge_to_context and a.knowledge is not None:
                    await self._retrieve(turn, text)
                await self._prepare(turn, session.runs or [], [user_message(text, files)])
                yield ev.RunStarted(run_id=run.run_id, session_id=run.session_id, agent_id=a.id, model=a.model.id)
                async for event in self._loop(turn, stream):
                    yield event
            except Exception as exc:
                async for event in self._fail(turn, exc):
                    yield event

    def _lease(self) -> Any:
        """The end of a new lease on a run (renewed while it runs), where a db keeps the run."""
        return m.utcnow() + dt.timedelta(seconds=self.agent.run_lease_seconds) if self.db is not None else None

    async def _session(self, session_id: str, user_id: str | None, text: str) -> m.Session:
        a = self.agent
        if self.db is None:
            return m.Session(session_id=session_id, user_id=user_id, agent_id=a.id, runs=[])
        session = await self.db.get_session(session_id, user_id=user_id, runs=a.num_history_runs)
        if session is not None:
            return session
        new = m.Session(session_id=session_id, user_id=user_id, agent_id=a.id, name=a.session_name or text[:80],
                        state=dict(a.session_state))
        try:
            session = await self.db.upsert_session(new, expected_revision=0)
        except ConflictError:  # created by a concurrent first turn
            session = await self.db.get_session(session_id, user_id=user_id)
            if session is None:
                raise
        session.runs = []
        return session

    async def _prepare(self, turn: Turn, history: list[m.Run], own: list[dict]) -> None:
        a = self.agent
        memories = None
        if a.enable_user_memories and turn.run.user_id is not None and self.db is not None:
            memories = (await self.db.list_memories(user_id=turn.run.user_id, limit=a.memory_limit)).items
        system = system_message(a, memories=memories, dependencies=turn.dependencies, state=turn.state,
                                references=turn.references)
        turn.messages = ([system] if system else []) + history_messages(history)
        turn.start = len(turn.messages)
        turn.messages.extend(own)

    async def _retrieve(self, turn: Turn, query: str) -> None:
        a = self.agent
        span = self.tracer.span("retrieval", turn.span, self.tracer.retrieval_attributes(a, query))
        try:
            hits = await a.knowledge.asearch(query, limit=a.knowledge_limit, filters=a.knowledge_filters,
                                             user_id=turn.run.user_id)
        finally:
            self.tracer.end(span)
        turn.references.extend(reference(h) for h in hits)

    # -- resuming a paused run --------------------------------------------------------------

    async def resume(self, run_id: str, *, user_id: str | None, session_id: str | None,
                     stream: bool) -> AsyncIterator[ev.RunEvent]:
        a = self.agent
        run = await self.db.get_run(run_id, user_id=user_id)
        if run is None or (session_id is not None and run.session_id != session_id):
            raise NotFoundError(f"run {run_id!r} not found")
        if run.status != "paused":
            raise ConflictError(f"run {run_id!r} is {run.status}, not paused")
        decisions = [(record, await self._decision(record)) for record in run.tools if record.get("status") == "paused"]
        run.status, run.lease_until = "running", self._lease()
        run = await self.db.update_run(run, expected_status="paused")  # exactly one resumer gets past here
        session = await self.db.get_session(run.session_id, user_id=user_id, runs=a.num_history_runs + 1)
        if session is None:
            raise NotFoundError(f"session {run.session_id!r} not found")
        history = [r for r in session.runs or [] if r.run_id != run.run_id][-a.num_history_runs or len(session.runs or []):]
        turn = Turn(run, session, dict(session.state), dict(a.dependencies), [], 0, original_state=dict(session.state))
        turn.references = list(run.metadata.get("references", []))
        turn.tool_calls = len(run.tools)
        turn.span = self.tracer.run_span(a, run, session)
        async with leased(self.db, run.run_id, a.run_lease_seconds):
            try:
                await self._prepare(turn, history, list(run.messages))
                yield ev.RunContinued(run_id=run.run_id, session_id=run.session_id, agent_id=a.id)
                for record, approval in decisions:
                    async for event in self._settle(turn, record, approval):
                        yield event
                async for event in self._loop(turn, stream):
                    yield event
            except Exception as exc:
                async for event in self._fail(turn, exc):
                    yield event

    async def _decision(self, record: dict) -> m.Approval:
        approval = await self.db.get_approval(record["approval_id"])
        if approval is None:
            raise NotFoundError(f"approval {record['approval_id']!r} not found")
        if approval.status != "pending":
            return approval
        if approval.expires_at is None or approval.expires_at > m.utcnow():
            raise ConflictError(f"approval {approval.id!r} is still pending")
        try:
            return await self.db.resolve_approval(approval.id, status="expired", resolved_by=EXPIRED_BY)
        except ConflictError:  # resolved or expired concurrently: read what won
            return await self.db.get_approval(approval.id)

    async def _settle(self, turn: Turn, record: dict, approval: m.Approval) -> AsyncIterator[ev.RunEvent]:
        record["approval_status"] = approval.status
        if approval.status == "approved":
            tool = self.agent.tools_by_name[record["tool_name"]]
            async for event in self._execute(turn, record, tool, tool.parse(json.dumps(record["tool_args"]))):
                yield event
            return
        note = (approval.resolution or {}).get("reason") or (approval.resolution or {}).get("note")
        text = REJECTED.format(status=approval.status) + (f" Reason: {note}" if note else "")
        record.update(status="rejected", result=text)
        _keep(turn.run, record)
        turn.messages.append({"role": "tool", "tool_call_id": record["tool_call_id"], "content": text})

    # -- the model and tool loop -------------------------------------------------------------

    async def _loop(self, turn: Turn, stream: bool) -> AsyncIterator[ev.RunEvent]:
        a, run = self.agent, turn.run
        while True:
            if a.is_cancelled(run.run_id):
                async for event in self._cancelled(turn):
                    yield event
                return
            limited = turn.tool_calls >= a.tool_call_limit
            offer, known = a.offered_tools(run.user_id)
            offer = None if limited else offer
            # a forced choice holds for the run's first call only (else it would loop)
            choice = a.tool_choice if offer and turn.model_calls == 0 else None
            turn.model_calls += 1
            response = None
            async for item in self._model_call(turn, offer, choice, stream):
                if isinstance(item, str):
                    yield ev.RunContent(run_id=run.run_id, session_id=run.session_id, agent_id=a.id, content=item)
                else:
                    response = item
            assistant: dict[str, Any] = {"role": "assistant", "content": response.content}
            if response.tool_calls:
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in response.tool_calls]
            turn.messages.append(assistant)
            if not response.tool_calls:
                async for event in self._complete(turn, response):
                    yield event
                return
            if limited:
                raise ModelBehaviorError(f"the model called a tool after the limit of {a.tool_call_limit} calls")
            waiting = []
            for call in response.tool_calls:
                turn.tool_calls += 1
                tool = known.get(call.name)
                if tool is None:
                    raise ModelBehaviorError(f"the model called an unknown tool {call.name!r}")
                try:
                    args = tool.parse(call.arguments)
                except ToolArgumentsError as exc:
                    raise ModelBehaviorError(str(exc)) from None
                record = {"tool_call_id": call.id, "tool_name": call.name, "tool_args": json.loads(call.arguments or "{}")}
                if tool.requires_approval:
                    waiting.append((record, tool))
                    continue
                async for event in self._execute(turn, record, tool, args):
                    yield event
            if waiting:
                async for event in self._pause(turn, waiting):
                    yield event
                return

    async def _model_call(self, turn: Turn, tools: list | None, choice: Any, stream: bool) -> AsyncIterator[Any]:
        a, run = self.agent, turn.run
        fmt = a.response_format
        for attempt in range(a.retries + 1):
            span = self.tracer.span(f"chat {a.model.id}", turn.span, self.tracer.chat_attributes(a, turn))
            began, streamed = time.perf_counter(), False
            try:
                if stream:
                    async for item in a.model.astream(turn.messages, tools=tools, tool_choice=choice, response_format=fmt):
                        if isinstance(item, str):
                            if not streamed:
                                run.metrics.time_to_first_token_ms = (time.perf_counter() - began) * 1000
                            streamed = True
                            if a.is_cancelled(run.run_id):
                                break
                            yield item
                        else:
                            response = item
                else:
                    response = await a.model.aresponse(turn.messages, tools=tools, tool_choice=choice,
                                                       response_format=fmt)
            except ModelError as exc:
                self.tracer.end(span, exc)
                if not exc.transient or streamed or attempt == a.retries:
                    raise
                await pause(a.retry_delay * 2 ** attempt)
                continue
            if streamed and a.is_cancelled(run.run_id):
                self.tracer.end(span)
                response = ModelResponse(content=None)
            else:
                _count(run, response, began)
                self.tracer.end_chat(span, response)
            yield response
            return

    async def _execute(self, turn: Turn, record: dict, tool: Any, args: dict) -> AsyncIterator[ev.RunEvent]:
        a, run = self.agent, turn.run
        ids = {"run_id": run.run_id, "session_id": run.session_id, "agent_id": a.id}
        yield ev.ToolCallStarted(**ids, tool=dict(record))
        span = self.tracer.span(f"execute_tool {tool.name}", turn.span, self.tracer.tool_attributes(tool, record))
        began = time.perf_counter()
        try:
            if tool.builtin:
                value = await self.builtins.call(tool.name, args, turn)
            else:
                with self.tracer.use(span):
                    value = await call_tool(tool.fn, {**args, **tool.injections(turn.context(self.db))})
        except Exception as exc:
            self.tracer.end(span, exc)
            if a.tool_errors == "fail":
                raise
            text = f"Error: {type(exc).__name__}: {exc}"
            record.update(status="error", error=text, duration_ms=(time.perf_counter() - began) * 1000)
            _keep(run, record)
            turn.messages.append({"role": "tool", "tool_call_id": record["tool_call_id"], "content": text})
            yield ev.ToolCallError(**ids, tool=dict(record), error=text)
            return
        text = result_text(value)
        self.tracer.end(span, attributes=self.tracer.tool_result(text))
        record.update(status="completed", result=text, duration_ms=(time.perf_counter() - began) * 1000)
        _keep(run, record)
        turn.messages.append({"role": "tool", "tool_call_id": record["tool_call_id"], "content": text})
        yield ev.ToolCallCompleted(**ids, tool=dict(record))

    # -- endings ----------------------------------------------------------------------------

    async def _pause(self, turn: Turn, waiting: list) -> AsyncIterator[ev.RunEvent]:
        run = turn.run
        ids = []
        for record, tool in waiting:
            expires_in = tool.approval_expires_in  # the tool's own expiry wins (0: none)
            if expires_in is None:
                expires_in = self.agent.approval_expires_in  # the agent's default
            expires = m.utcnow() + expires_in if expires_in else None
            approval = await self.db.create_approval(m.Approval(
                run_id=run.run_id, session_id=run.session_id, user_id=run.user_id, agent_id=run.agent_id,
                tool_name=tool.name, tool_args=record["tool_args"], expires_at=expires,
                context={"tool_call_id": record["tool_call_id"]}))
            record.update(status="paused", approval_id=approval.id)
            _keep(run, record)
            ids.append(approval.id)
        await self._finish(turn, "paused")
        yield ev.RunPaused(run_id=run.run_id, session_id=run.session_id, agent_id=run.agent_id, approvals=ids,
                           tools=[r for r, _ in waiting], run=turn.run)

    async def _complete(self, turn: Turn, response: ModelResponse) -> AsyncIterator[ev.RunEvent]:
        a = self.agent
        content: Any = response.content
        parsed = None
        if a.output_schema is not None:
            parsed = a.parse_output(content)
            content = parsed.model_dump(mode="json")
        turn.run.content = content
        try:
            await self._finish(turn, "completed")
        except ConflictError:
            if self.db is None or (await self.db.get_run(turn.run.run_id)).status != "cancelled":
                raise
            async for event in self._cancelled(turn):
                yield event
            return
        await self._save_state(turn)
        run = turn.run
        if parsed is not None:
            run = run.model_copy(update={"content": parsed})
        yield ev.RunCompleted(run_id=run.run_id, session_id=run.session_id, agent_id=a.id, content=run.content, run=run)

    async def _finish(self, turn: Turn, status: str, *, expected: str | None = "running") -> None:
        run = turn.run
        run.status, run.lease_until = status, None
        run.messages = turn.messages[turn.start:]
        run.metrics.duration_ms = (run.metrics.duration_ms or 0) + (time.perf_counter() - turn.started) * 1000
        run.metrics.total_tokens = run.metrics.input_tokens + run.metrics.output_tokens
        if turn.references:
            run.metadata["references"] = turn.references
        if self.db is not None:  # a failed write ends the run as an error, its span with it
            turn.run = await self.db.update_run(run, expected_status=expected)
        self.tracer.end_run(turn.span, turn.run)

    async def _cancelled(self, turn: Turn) -> AsyncIterator[ev.RunEvent]:
        await self._finish(turn, "cancelled", expected=None)
        self.agent.forget_cancel(turn.run.run_id)
        run = turn.run
        yield ev.RunCancelled(run_id=run.run_id, session_id=run.session_id, agent_id=run.agent_id, run=run)

    async def _fail(self, turn: Turn, exc: Exception) -> AsyncIterator[ev.RunEvent]:
        run = turn.run
        run.metadata["error"] = {"type": type(exc).__name__, "message": str(exc)}
        self.tracer.fail(turn.span, exc)
        try:
            await self._finish(turn, "error", expected=None)
        except Exception:  # the db may be what failed: the caller still hears about the run
            pass
        yield ev.RunError(run_id=run.run_id, session_id=run.session_id, agent_id=run.agent_id,
                          error=str(exc), error_type=type(exc).__name__, run=turn.run)

    async def _save_state(self, turn: Turn) -> None:
        """Save what this run changed in the session state; on a lost compare-and-set, apply
        the same change to a fresh read (never running the model or a tool again)."""
        if self.db is None or turn.state == turn.original_state:
            return
        changed = {k: v for k, v in turn.state.items() if turn.original_state.get(k, _MISSING) != v}
        removed = [k for k in turn.original_state if k not in turn.state]
        session = turn.session
        for _ in range(STATE_RETRIES):
            state = {k: v for k, v in session.state.items() if k not in removed}
            state.update(changed)
            new = session.model_copy(update={"state": state, "runs": None})
            try:
                turn.session = await self.db.upsert_session(new, expected_revision=session.revision)
                return
            except ConflictError:
                session = await self.db.get_session(session.session_id, user_id=session.user_id)
                if session is None:
                    raise
        raise ConflictError(f"session {session.session_id!r}: state not saved after {STATE_RETRIES} concurrent changes")


_MISSING = object()


def _keep(run: m.Run, record: dict) -> None:
    """Put a tool call's record on the run (in place of its paused record, once approved)."""
    for i, old in enumerate(run.tools):
        if old.get("tool_call_id") == record["tool_call_id"] and old.get("status") == "paused":
            run.tools[i] = dict(record)
            return
    run.tools.append(dict(record))


def _count(run: m.Run, response: ModelResponse, began: float) -> None:
    metrics = run.metrics
    metrics.model_calls = getattr(metrics, "model_calls", 0) + 1
    usage = response.usage
    if usage is not None:
        metrics.input_tokens += usage.input_tokens
        metrics.output_tokens += usage.output_tokens
        if usage.estimated:
            metrics.tokens_estimated = True
    metrics.model_ms = getattr(metrics, "model_ms", 0.0) + (time.perf_counter() - began) * 1000
