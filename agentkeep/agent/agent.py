"""`Agent`: a model, tools, instructions and a db. `run` / `arun` take a message and return
the stored run; with `stream=True` they yield the run's events instead (events.py). The run
loop itself is written once (`_async/runner.py`; the sync twin is generated)."""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
from typing import Any, AsyncIterator, Iterator, Literal, Sequence

from pydantic import BaseModel, ValidationError

from agentkeep.agent import events as ev
from agentkeep.agent._async.runner import Runner as AsyncRunner
from agentkeep.agent._async.util import ThreadedDb
from agentkeep.agent._sync.runner import Runner
from agentkeep.agent.builtin_tools import MEMORY_TOOLS, knowledge_tools, memory_tools
from agentkeep.agent.errors import AgentRunError, ModelBehaviorError
from agentkeep.agent.files import File, check_files
from agentkeep.agent.tools import Tool, as_tool
from agentkeep.agent.tracing import NoTracing, tracing_for
from agentkeep.db import validate as v
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.models import Run, new_id
from agentkeep.models.base import Model

_SLUG = re.compile(r"[^a-z0-9]+")
APPROVAL_EXPIRES_IN = dt.timedelta(hours=24)  # an approval's life unless its tool or agent says otherwise


class Agent:
    def __init__(
        self,
        model: Model,
        *,
        name: str | None = None,
        id: str | None = None,
        instructions: str | Sequence[str] | None = None,
        tools: Sequence[Any] = (),
        db: Any = None,
        trace_db: Any = None,
        knowledge: Any = None,
        search_knowledge: bool = True,
        add_knowledge_to_context: bool = False,
        knowledge_filters: dict | None = None,
        knowledge_limit: int = 5,
        dependencies: dict | None = None,
        add_dependencies_to_context: bool = False,
        session_state: dict | None = None,
        add_session_state_to_context: bool = False,
        session_name: str | None = None,
        num_history_runs: int = 3,
        enable_user_memories: bool = False,
        memory_limit: int = 20,
        output_schema: type[BaseModel] | None = None,
        tool_choice: Any = None,
        tool_call_limit: int = 10,
        tool_errors: Literal["to_model", "fail"] = "to_model",
        retries: int = 2,
        retry_delay: float = 0.5,
        run_lease_seconds: float = 60,
        approval_expires_in: dt.timedelta | float | None = APPROVAL_EXPIRES_IN,
        tracing: bool = True,
        capture_content: bool = False,
        store_all_spans: bool = False,
    ) -> None:
        if not isinstance(model, Model):
            raise InvalidInputError(f"model must implement agentkeep.models.Model, got {type(model).__name__}")
        self.model = model
        self.name = v.check_str(name, "name")
        self.id = v.check_id(id, "id") if id is not None else _SLUG.sub("-", (name or "agent").lower()).strip("-") or "agent"
        self.instructions = instructions
        self.db = db
        self.trace_db = trace_db
        self.knowledge = knowledge
        self.add_knowledge_to_context = v.check_bool(add_knowledge_to_context, "add_knowledge_to_context")
        self.knowledge_filters = _dict(knowledge_filters, "knowledge_filters")
        self.knowledge_limit = v.check_int(knowledge_limit, "knowledge_limit", 1, 100)
        self.dependencies = _dict(dependencies, "dependencies") or {}
        self.add_dependencies_to_context = v.check_bool(add_dependencies_to_context, "add_dependencies_to_context")
        self.session_state = _dict(session_state, "session_state") or {}
        self.add_session_state_to_context = v.check_bool(add_session_state_to_context, "add_session_state_to_context")
        self.session_name = v.check_str(session_name, "session_name")
        self.num_history_runs = v.check_int(num_history_runs, "num_history_runs", 0, 1000)
        self.enable_user_memories = v.check_bool(enable_user_memories, "enable_user_memories")
        self.memory_limit = v.check_int(memory_limit, "memory_limit", 1, 1000)
        if output_schema is not None and not (isinstance(output_schema, type) and issubclass(output_schema, BaseModel)):
            raise InvalidInputError("output_schema must be a pydantic model class")
        self.output_schema = output_schema
        self.tool_choice = _tool_choice(tool_choice)
        self.tool_call_limit = v.check_int(tool_call_limit, "tool_call_limit", 0, 1000)
        self.tool_errors = v.check_choice(tool_errors, ("to_model", "fail"), "tool_errors")
        self.retries = v.check_int(retries, "retries", 0, 20)
        if not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise InvalidInputError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        self.retry_delay = float(retry_delay)
        if isinstance(run_lease_seconds, bool) or not isinstance(run_lease_seconds, (int, float)) \
                or not 1 <= run_lease_seconds <= 86400:
            raise InvalidInputError(f"run_lease_seconds must be a number of seconds in [1, 86400], "
                                    f"got {run_lease_seconds!r}")
        self.run_lease_seconds = float(run_lease_seconds)
        self.approval_expires_in = _expiry(approval_expires_in)
        if db is not None and not hasattr(db, "append_run"):
            raise InvalidInputError(f"db must be an agentkeep db, got {type(db).__name__}")
        if self.enable_user_memories and db is None:
            raise InvalidInputError("enable_user_memories needs a db to keep the memories in")

        own = [as_tool(t) for t in tools]
        if any(t.requires_approval for t in own) and db is None:
            raise InvalidInputError("a tool that requires approval needs a db to keep the approval in")
        if self.enable_user_memories:
            own += memory_tools()
        if knowledge is not None and search_knowledge:
            own += knowledge_tools()
        self.tools_by_name: dict[str, Tool] = {}
        for t in own:
            if t.name in self.tools_by_name:
                raise InvalidInputError(f"two tools are named {t.name!r}")
            self.tools_by_name[t.name] = t
        self.tool_definitions = [t.definition for t in own] or None
        # a run without a user is offered no memory tools (memories are kept per user)
        userless = [t for t in own if t.name not in MEMORY_TOOLS]
        self._userless = ([t.definition for t in userless] or None, {t.name: t for t in userless})
        self.response_format = None
        if output_schema is not None:
            self.response_format = {"type": "json_schema", "json_schema": {
                "name": output_schema.__name__, "schema": output_schema.model_json_schema()}}

        self._tracing_options = (tracing, capture_content, store_all_spans)
        self._tracing: Any = None
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Agent(id={self.id!r}, model={self.model!r})"

    # -- running ----------------------------------------------------------------------------

    def run(self, input: str, *, user_id: str | None = None, session_id: str | None = None, stream: bool = False,
            session_state: dict | None = None, dependencies: dict | None = None,
            files: Sequence[File] | None = None) -> Any:
        """The stored run (`stream=False`), or an iterator of its events. `files`: text files
        and images sent to the model with the message (files.py)."""
        args = self._start_args(input, user_id, session_id, session_state, dependencies, files)
        db = self._sync_db()
        events = Runner(self, db).start(args.pop("input"), **args, stream=stream)
        return events if stream else _outcome(events)

    def arun(self, input: str, *, user_id: str | None = None, session_id: str | None = None, stream: bool = False,
             session_state: dict | None = None, dependencies: dict | None = None,
             files: Sequence[File] | None = None) -> Any:
        """`await agent.arun(...)` gives the stored run; `async for e in agent.arun(..., stream=True)`
        its events."""
        args = self._start_args(input, user_id, session_id, session_state, dependencies, files)
        events = self._astart(args, stream)
        return events if stream else _aoutcome(events)

    def arun_events(self, input: str, *, user_id: str | None = None, session_id: str | None = None,
                    stream: bool = False, session_state: dict | None = None, dependencies: dict | None = None,
                    files: Sequence[File] | None = None, run_id: str | None = None) -> AsyncIterator[ev.RunEvent]:
        """The run's events, whether the model's answer is streamed (`stream`) or comes
        whole (one `RunContent`-free call, cheaper): what a server answers either way from.
        `run_id`: the new run's id, when the caller promised one (a queued background run)."""
        args = self._start_args(input, user_id, session_id, session_state, dependencies, files)
        if run_id is not None:
            args["run_id"] = v.check_id(run_id, "run_id")
        return self._astart(args, stream)

    async def _astart(self, args: dict, stream: bool) -> AsyncIterator[ev.RunEvent]:
        runner = AsyncRunner(self, self._async_db())
        async for event in runner.start(args.pop("input"), **args, stream=stream):
            yield event

    def continue_run(self, run_id: str, *, user_id: str | None = None, session_id: str | None = None,
                     stream: bool = False) -> Any:
        """Resume a paused run once its approvals are resolved (or expired): approved tools
        run, the model hears about rejected ones. Of two callers, exactly one resumes it; the
        other gets a ConflictError."""
        self._check_resume(run_id, user_id, session_id)
        events = Runner(self, self._sync_db()).resume(run_id, user_id=user_id, session_id=session_id, stream=stream)
        return events if stream else _outcome(events)

    def acontinue_run(self, run_id: str, *, user_id: str | None = None, session_id: str | None = None,
                      stream: bool = False) -> Any:
        self._check_resume(run_id, user_id, session_id)
        events = self._aresume(run_id, user_id, session_id, stream)
        return events if stream else _aoutcome(events)

    def acontinue_events(self, run_id: str, *, user_id: str | None = None, session_id: str | None = None,
                         stream: bool = False) -> AsyncIterator[ev.RunEvent]:
        """`acontinue_run`'s events, the model's answers streamed or not (as `arun_events`)."""
        self._check_resume(run_id, user_id, session_id)
        return self._aresume(run_id, user_id, session_id, stream)

    async def _aresume(self, run_id, user_id, session_id, stream) -> AsyncIterator[ev.RunEvent]:
        runner = AsyncRunner(self, self._async_db())
        async for event in runner.resume(run_id, user_id=user_id, session_id=session_id, stream=stream):
            yield event

    def cancel_run(self, run_id: str) -> None:
        """Stop a run of this agent at its next step (between model calls, or between streamed
        pieces); it ends with status `cancelled`."""
        v.check_id(run_id, "run_id")
        with self._lock:
            self._cancelled.add(run_id)

    def offered_tools(self, user_id: str | None) -> tuple[list[dict] | None, dict[str, Tool]]:
        """The tool definitions a run's model call offers, and the tools it may call."""
        if user_id is None:
            return self._userless
        return self.tool_definitions, self.tools_by_name

    def is_cancelled(self, run_id: str) -> bool:
        return run_id in self._cancelled

    def forget_cancel(self, run_id: str) -> None:
        with self._lock:
            self._cancelled.discard(run_id)

    # -- helpers ----------------------------------------------------------------------------

    def bound_to(self, db: Any, trace_db: Any = None) -> "Agent":
        """This agent keeping its records in `db` (spans in `trace_db`, else `db`): a shallow
        copy that shares the model, tools and cancellations (a tenant's db on a server)."""
        twin = copy.copy(self)
        twin.db, twin.trace_db, twin._tracing = db, trace_db, None
        return twin

    def keep_in(self, *, db: Any = None, trace_db: Any = None) -> None:
        """Give the agent a db and a trace db where it has none of its own (a server's)."""
        if self.db is None and db is not None:
            self.db = db
            self._tracing = None  # where spans go follows
        if self.trace_db is None and trace_db is not None:
            self.trace_db = trace_db
            self._tracing = None

    @property
    def tracing(self) -> Any:
        if self._tracing is None:
            on, capture, store_all = self._tracing_options
            target = self.trace_db if self.trace_db is not None else self.db
            if on and target is not None and hasattr(target, "write_spans"):
                self._tracing = tracing_for(target, store_all=store_all, capture_content=capture)
            else:
                self._tracing = NoTracing()
        return self._tracing

    def parse_output(self, content: str | None) -> BaseModel:
        try:
            return self.output_schema.model_validate_json(content or "")
        except ValidationError as exc:
            raise ModelBehaviorError(f"the answer does not fit {self.output_schema.__name__}: "
                                     f"{exc.errors()[0]['msg']}") from None

    def _start_args(self, input, user_id, session_id, session_state, dependencies, files) -> dict:
        if not isinstance(input, str) or not input.strip():
            raise InvalidInputError("input must be a non-empty string")
        return {"input": input, "user_id": v.check_opt_id(user_id, "user_id"),
                "session_id": v.check_id(session_id, "session_id") if session_id is not None else new_id(),
                "session_state": _dict(session_state, "session_state"),
                "dependencies": _dict(dependencies, "dependencies"), "files": check_files(files)}

    def _check_resume(self, run_id: str, user_id: str | None, session_id: str | None) -> None:
        v.check_id(run_id, "run_id")
        v.check_opt_id(user_id, "user_id")
        v.check_opt_id(session_id, "session_id")
        if self.db is None:
            raise InvalidInputError("continue_run needs the agent's db (where the paused run is)")

    def _sync_db(self) -> Any:
        if self.db is not None and _is_async(self.db):
            raise InvalidInputError(f"{type(self.db).__name__} is async: use arun / acontinue_run")
        return self.db

    def _async_db(self) -> Any:
        if self.db is None or _is_async(self.db):
            return self.db
        return ThreadedDb(self.db)


def _tool_choice(choice: Any) -> Any:
    """None (the server's default), "auto", "none", "required", or a tool's name (forced on
    the run's first model call)."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, str) and choice:
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, dict):
        return choice
    raise InvalidInputError(f"tool_choice must be 'auto', 'none', 'required' or a tool name, got {choice!r}")


def _is_async(db: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(getattr(db, "append_run", None))


def _dict(value: Any, what: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a dict, got {type(value).__name__}")
    return value


def _expiry(value: Any) -> dt.timedelta | None:
    """`approval_expires_in`: a timedelta or seconds > 0, or None (approvals never expire)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dt.timedelta(seconds=value)
    if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
        raise InvalidInputError(f"approval_expires_in must be a timedelta or seconds > 0, or None, got {value!r}")
    return value


def _outcome(events: Iterator[ev.RunEvent]) -> Run:
    final = None
    for event in events:
        if isinstance(event, ev.FINAL):
            final = event
    return _result(final)


async def _aoutcome(events: AsyncIterator[ev.RunEvent]) -> Run:
    final = None
    async for event in events:
        if isinstance(event, ev.FINAL):
            final = event
    return _result(final)


def _result(final: Any) -> Run:
    if isinstance(final, ev.RunError):
        raise AgentRunError(final.error, run=final.run, error_type=final.error_type)
    return final.run
