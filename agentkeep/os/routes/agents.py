"""`/agents`: list and describe agents; start, continue and cancel runs (JSON or, for the
reference's clients, form fields; `stream=true` answers with server-sent events named as
the run's events)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from agentkeep.agent import AgentRunError, File
from agentkeep.db.errors import ConflictError, InvalidInputError, NotFoundError
from agentkeep.os.compat import run_json
from agentkeep.os.routes.common import agent_of, db_for, json_response, the_os

router = APIRouter(tags=["agents"])


class FileBody(BaseModel):
    """A file in a JSON body (multipart requests send files as they are, field `files`)."""

    name: str
    content_base64: str
    content_type: Optional[str] = None


class RunRequest(BaseModel):
    message: str
    stream: bool = False
    background: bool = False
    session_id: Optional[str] = None
    user_id: Optional[str] = None
    session_state: Optional[dict] = None
    files: list[FileBody] = []

    def agent_files(self) -> list[File]:
        out = []
        for f in self.files:
            try:
                content = base64.b64decode(f.content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError(f"file {f.name!r}: content_base64 is not base64") from None
            out.append(File(f.name, content, f.content_type))
        return out


class ContinueRequest(BaseModel):
    stream: bool = False
    session_id: Optional[str] = None
    user_id: Optional[str] = None
    # the reference's clients decide approvals here: the paused tool calls, each with
    # `tool_call_id` and `confirmed` (and an optional `confirmation_note`)
    tools: Optional[list[dict]] = None


def describe(agent: Any) -> dict:
    return {
        "id": agent.id, "name": agent.name,
        "model": {"id": agent.model.id, "provider": agent.model.provider},
        "tools": [{"name": t.name, "description": t.description, "requires_approval": t.requires_approval}
                  for t in agent.tools_by_name.values()],
        "instructions": agent.instructions,
    }


@router.get("/agents")
async def list_agents(request: Request) -> list[dict]:
    return [describe(a) for a in the_os(request).agents.values()]


@router.get("/agents/{agent_id}")
async def get_agent(agent_id: str, request: Request) -> dict:
    return describe(agent_of(request, agent_id))


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The request's fields, from a JSON body or form fields (uploaded files as `uploads`)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            fields = await request.json()
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InvalidInputError(f"the body is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise InvalidInputError("the body must be a JSON object")
    else:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
        request.state.uploads = [File(u.filename or "file", await u.read(), u.content_type) for u in uploads]
        for key in ("session_state", "tools"):
            if isinstance(fields.get(key), str):
                try:
                    fields[key] = json.loads(fields[key])
                except json.JSONDecodeError:
                    raise InvalidInputError(f"{key} must be JSON") from None
    try:
        return model.model_validate({k: v for k, v in fields.items() if v not in ("", None)})
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InvalidInputError(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


async def _sse(first: Any, events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield _frame(first)
    async for event in events:
        yield _frame(event)


def _frame(event: Any) -> bytes:
    return f"event: {event.event}\ndata: {event.model_dump_json()}\n\n".encode()


async def _respond(events: AsyncIterator[Any], stream: bool, background: Any = None) -> Any:
    # the first event is awaited here, so bad input or another user's session is a 4xx
    # answer, not an error inside a stream already started
    first = await anext(events)
    if background is not None:  # the run goes on in this process; poll it by its id
        background(_drain(events))
        return JSONResponse({"run_id": first.run_id, "session_id": first.session_id, "status": "running"},
                            status_code=202)
    if stream:
        return StreamingResponse(_sse(first, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    final = first
    async for event in events:
        final = event
    run = getattr(final, "run", None)
    if run is None:
        raise AgentRunError(getattr(final, "error", "the run ended without a result"))
    return json_response(run_json(run))


async def _drain(events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


@router.post("/agents/{agent_id}/runs")
async def create_run(agent_id: str, request: Request) -> Any:
    agent = agent_of(request, agent_id)
    body = await _body(request, RunRequest)
    if body.background and body.stream:
        raise InvalidInputError("a run is either streamed or in the background, not both")
    files = body.agent_files() + getattr(request.state, "uploads", [])
    events = agent.arun_events(body.message, user_id=body.user_id, session_id=body.session_id, stream=body.stream,
                               session_state=body.session_state, files=files)
    return await _respond(events, body.stream, the_os(request).in_background if body.background else None)


@router.post("/agents/{agent_id}/runs/{run_id}/continue")
async def continue_run(agent_id: str, run_id: str, request: Request) -> Any:
    agent = agent_of(request, agent_id)
    body = await _body(request, ContinueRequest)
    if body.tools:
        await _decide(db_for(request, agent_id), run_id, body)
    events = agent.acontinue_events(run_id, user_id=body.user_id, session_id=body.session_id, stream=body.stream)
    return await _respond(events, body.stream)


async def _decide(db: Any, run_id: str, body: ContinueRequest) -> None:
    """Resolve the approvals of the paused calls the request confirms or rejects; one already
    resolved (from the approvals inbox, say) keeps its outcome."""
    run = await db.get_run(run_id, user_id=body.user_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    waiting = {t.get("tool_call_id"): t for t in run.tools if t.get("status") == "paused"}
    for decision in body.tools:
        record = waiting.get(decision.get("tool_call_id"))
        if record is None or decision.get("confirmed") is None:
            continue
        note = decision.get("confirmation_note")
        try:
            await db.resolve_approval(record["approval_id"], status="approved" if decision["confirmed"] else "rejected",
                                      resolved_by=body.user_id or "api", resolution={"note": note} if note else None)
        except ConflictError:
            pass


@router.post("/agents/{agent_id}/runs/{run_id}/cancel")
async def cancel_run(agent_id: str, run_id: str, request: Request, user_id: Optional[str] = None) -> dict:
    agent = agent_of(request, agent_id)
    db = db_for(request, agent_id)
    run = await db.get_run(run_id, user_id=user_id)
    if run is None or run.agent_id != agent.id:
        raise NotFoundError(f"run {run_id!r} not found")
    agent.cancel_run(run_id)
    if run.status in ("running", "paused"):
        # a run of another replica ends as cancelled at its next write (a compare-and-set)
        was, run.status = run.status, "cancelled"
        run = await db.update_run(run, expected_status=was)
    return {"run_id": run_id, "status": run.status}
