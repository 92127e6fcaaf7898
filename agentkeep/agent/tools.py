"""Tools: Python functions (sync or async) the model may call. The JSON schema the model sees
comes from the signature and the docstring (through pydantic); parameters named
`dependencies`, `session_state` or `run_context` are filled in by the runtime and never shown
to the model."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentkeep.db.errors import InvalidInputError

INJECTED = ("dependencies", "session_state", "run_context")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what OpenAI accepts as a function name


@dataclass
class RunContext:
    """What a tool may ask for by naming a parameter `run_context`."""

    run_id: str
    session_id: str
    user_id: Optional[str]
    agent_id: Optional[str]
    session_state: dict
    dependencies: dict
    db: Any = None


class ToolArgumentsError(Exception):
    """The model's arguments are not JSON or do not fit the tool's parameters."""


@dataclass
class Tool:
    fn: Callable
    name: str
    description: str
    requires_approval: bool = False
    approval_expires_in: Optional[dt.timedelta] = None
    builtin: bool = False  # a memory or knowledge tool, run by the runtime itself
    arguments: type[BaseModel] = field(init=False)
    injected: tuple[str, ...] = field(init=False)
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInputError(f"tool name must be 1-64 letters, digits, '_' or '-', got {self.name!r}")
        self.arguments, self.injected = _arguments_model(self.fn, self.name)
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.definition = {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": _schema(self.arguments)}}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def parse(self, raw: str) -> dict:
        """The model's JSON arguments, checked against the signature."""
        try:
            parsed = json.loads(raw or "{}") if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(f"arguments for {self.name} are not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ToolArgumentsError(f"arguments for {self.name} must be a JSON object")
        try:
            values = self.arguments.model_validate(parsed)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            raise ToolArgumentsError(f"arguments for {self.name} do not fit: {problems}") from None
        return {name: getattr(values, name) for name in type(values).model_fields}

    def injections(self, context: RunContext) -> dict:
        return {name: getattr(context, name) if name != "run_context" else context for name in self.injected}


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
         requires_approval: bool = False, approval_expires_in: dt.timedelta | float | None = None) -> Any:
    """Mark a function as a tool: `@tool` or `@tool(requires_approval=True)`.
    A tool that requires approval pauses the run before it executes; `approval_expires_in`
    (a timedelta or seconds) sets the approval's `expires_at`."""
    if fn is None:
        return lambda f: tool(f, name=name, description=description, requires_approval=requires_approval,
                              approval_expires_in=approval_expires_in)
    if isinstance(approval_expires_in, (int, float)):
        approval_expires_in = dt.timedelta(seconds=approval_expires_in)
    return Tool(fn, name or fn.__name__, description if description is not None else _summary(fn),
                requires_approval, approval_expires_in)


def as_tool(obj: Any) -> Tool:
    if isinstance(obj, Tool):
        return obj
    if callable(obj) and hasattr(obj, "__name__"):
        return tool(obj)
    raise InvalidInputError(f"a tool must be a function or a @tool, got {type(obj).__name__}")


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def reference(hit: Any) -> dict:
    """A retrieved chunk as recorded on the run and shown to the model."""
    return {"id": hit.id, "content_id": hit.content_id, "position": hit.position, "score": hit.score,
            "content": hit.content, "metadata": hit.metadata}


def _summary(fn: Callable) -> str:
    doc = inspect.getdoc(fn) or ""
    return re.split(r"\n\s*(?:Args|Arguments|Parameters|Returns|Raises):", doc)[0].strip()


def _param_docs(fn: Callable) -> dict[str, str]:
    """Per-parameter descriptions from a Google-style `Args:` section."""
    doc = inspect.getdoc(fn) or ""
    section = re.search(r"\n\s*(?:Args|Arguments|Parameters):\n(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    if not section:
        return {}
    found = re.findall(r"^\s*(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", section.group(1), re.M)
    return dict(found)


def _arguments_model(fn: Callable, name: str) -> tuple[type[BaseModel], tuple[str, ...]]:
    try:
        sig = inspect.signature(fn)
        hints = inspect.get_annotations(fn, eval_str=True) if inspect.isfunction(fn) or inspect.ismethod(fn) else {}
    except (TypeError, ValueError, NameError) as exc:
        raise InvalidInputError(f"tool {name}: cannot read its signature: {exc}") from None
    docs = _param_docs(fn)
    fields: dict[str, Any] = {}
    injected = []
    for p in sig.parameters.values():
        if p.name in INJECTED:
            injected.append(p.name)
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, _field(default, docs.get(p.name)))
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{name}_arguments", __config__=config, **fields), tuple(injected)


def _field(default: Any, description: str | None) -> Any:
    from pydantic import Field

    return Field(default, description=description) if description else default


def _schema(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema
