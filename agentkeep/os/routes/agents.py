"""`/agents`: list and describe agents; start, continue and cancel runs (JSON or, for the
reference's clients, form fields; `stream=true` answers with server-sent events named as
the run's events)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from agentkeep.agent import AgentRunError, File
from agentkeep.agent.files import check_files
from agentkeep.db.errors import ConflictError, InvalidInputError, NotFoundError
from agentkeep.db.models import Job, new_id
from agentkeep.os.app import as_async
from agentkeep.os.auth import Caller, caller_of
from agentkeep.os.compat import run_json
from agentkeep.os.jobs import Permanent, handles
from agentkeep.os.routes.common import Owner, agent_of, db_for, json_response, the_os

router = APIRouter(tags=["agents"])


class FileBody(BaseModel):
    """A file in a JSON body (multipart requests send files as they are, field `files`)."""

    name: str
    content_base64: str
    content_type: str | None = None


class RunRequest(BaseModel):
    message: str
    stream: bool = False
    background: bool = False
    session_id: str | None = None
    user_id: str | None = None
    session_state: dict | None = None
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
    session_id: str | None = None
    user_id: str | None = None
    # the reference's clients decide approvals here: the paused tool calls, each with
    # `tool_call_id` and `confirmed` (and an optional `confirmation_note`)
    tools: list[dict] | None = None


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


async def _respond(events: AsyncIterator[Any], stream: bool) -> Any:
    # the first event is awaited here, so bad input or another user's session is a 4xx
    # answer, not an error inside a stream already started
    first = await anext(events)
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


async def _drain(events: AsyncIterator[Any]) -> Any:
    final = None
    async for event in events:
        final = event
    return final


async def _queue(request: Request, agent: Any, body: RunRequest, user_id: str | None, files: list[File]) -> Any:
    """A background run as a durable job: 202 with the run's id at once; any replica starts it
    (a run that has started is not started again: its tools may have acted)."""
    check_files(files)
    if body.session_id is not None:  # another user's session is refused now, not in the job
        session = await db_for(request, agent.id).get_session(body.session_id)
        if session is not None and user_id is not None and session.user_id != user_id:
            raise NotFoundError(f"session {body.session_id!r} not found")
    run_id, session_id = new_id(), body.session_id or new_id()
    payload = {"agent_id": agent.id, "message": body.message, "session_id": session_id, "run_id": run_id,
               "session_state": body.session_state,
               "files": [{"name": f.name, "content_base64": base64.b64encode(f.content).decode(),
                          "content_type": f.content_type} for f in files]}
    job = await the_os(request).enqueue(db_for(request), Job(id=f"run-{run_id}", kind="agent.run", user_id=user_id,
                                                             payload=payload))
    return JSONResponse({"run_id": run_id, "session_id": session_id, "status": "pending", "job_id": job.id},
                        status_code=202)


@handles("agent.run")
async def run_in_background(agent_os: Any, db: Any, job: Job) -> dict:
    p = job.payload
    agent = agent_os.agents.get(p["agent_id"])
    if agent is None:
        raise Permanent(f"agent {p['agent_id']!r} is not served here")
    agent = agent_os.agent_in(agent, db)  # a tenant's job: the agent in the tenant's db
    if await as_async(agent.db).get_run(p["run_id"]) is not None:
        raise Permanent(f"run {p['run_id']} started before (its process stopped): see the run")
    files = [File(f["name"], base64.b64decode(f["content_base64"]), f["content_type"]) for f in p["files"]]
    final = await _drain(agent.arun_events(p["message"], user_id=job.user_id, session_id=p["session_id"],
                                           session_state=p["session_state"], files=files, run_id=p["run_id"]))
    run = getattr(final, "run", None)
    return {"run_id": p["run_id"], "status": run.status if run is not None else "error"}


@router.post("/agents/{agent_id}/runs")
async def create_run(agent_id: str, request: Request) -> Any:
    agent = agent_of(request, agent_id)
    body = await _body(request, RunRequest)
    if body.background and body.stream:
        raise InvalidInputError("a run is either streamed or in the background, not both")
    files = body.agent_files() + getattr(request.state, "uploads", [])
    user_id = caller_of(request).owner(body.user_id)
    if body.background:
        return await _queue(request, agent, body, user_id, files)
    events = agent.arun_events(body.message, user_id=user_id, session_id=body.session_id, stream=body.stream,
                               session_state=body.session_state, files=files)
    return await _respond(events, body.stream)


@router.post("/agents/{agent_id}/runs/{run_id}/continue")
async def continue_run(agent_id: str, run_id: str, request: Request) -> Any:
    agent = agent_of(request, agent_id)
    body = await _body(request, ContinueRequest)
    caller = caller_of(request)
    user_id = caller.owner(body.user_id)
    if body.tools:
        await _decide(db_for(request, agent_id), run_id, body, user_id, caller)
    events = agent.acontinue_events(run_id, user_id=user_id, session_id=body.session_id, stream=body.stream)
    return await _respond(events, body.stream)


async def _decide(db: Any, run_id: str, body: ContinueRequest, user_id: str | None, caller: Caller) -> None:
    """Resolve the approvals of the paused calls the request confirms or rejects; one already
    resolved (from the approvals inbox, say) keeps its outcome."""
    run = await db.get_run(run_id, user_id=user_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    waiting = {t.get("tool_call_id"): t for t in run.tools if t.get("status") == "paused"}
    by = (user_id or "api") if caller.via == "none" else caller.name
    for decision in body.tools:
        record = waiting.get(decision.get("tool_call_id"))
        if record is None or decision.get("confirmed") is None:
            continue
        note = decision.get("confirmation_note")
        try:
            await db.resolve_approval(record["approval_id"], status="approved" if decision["confirmed"] else "rejected",
                                      resolved_by=by, resolution={"note": note} if note else None)
        except ConflictError:
            pass


@router.post("/agents/{agent_id}/runs/{run_id}/cancel")
async def cancel_run(agent_id: str, run_id: str, request: Request, user_id: Owner) -> dict:
    agent = agent_of(request, agent_id)
    db = db_for(request, agent_id)
    run = await db.get_run(run_id, user_id=user_id)
    if run is None:  # a background run not started yet: its job is cancelled
        job = await db_for(request).get_job(f"run-{run_id}", user_id=user_id)
        if job is not None and job.payload.get("agent_id") == agent.id:
            return {"run_id": run_id, "status": (await db_for(request).cancel_job(job.id, user_id=user_id)).status}
    if run is None or run.agent_id != agent.id:
        raise NotFoundError(f"run {run_id!r} not found")
    agent.cancel_run(run_id)
    if run.status in ("running", "paused"):
        # a run of another replica ends as cancelled at its next write (a compare-and-set)
        was, run.status = run.status, "cancelled"
        run = await db.update_run(run, expected_status=was)
    return {"run_id": run_id, "status": run.status}
