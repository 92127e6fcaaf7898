"""`/knowledge`: add a file, a URL or text to a knowledge base (a durable job: 202 at once,
then `/knowledge/content/{id}/status` or `/jobs/{job_id}`), list, read and delete contents,
search. A user adds contents of their own and sees their own plus the shared ones (added by
an admin without a user); search keeps to the same. URLs on the server's own networks are
refused (see agentkeep.knowledge.fetch); uploads are limited to `AgentOS(max_upload_bytes=)`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import tempfile
import urllib.parse
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.db.models import Job, KnowledgeContent
from agentkeep.knowledge.fetch import AddressRefused, check_url, fetch
from agentkeep.knowledge.readers import reader_for
from agentkeep.os.app import as_async
from agentkeep.os.auth import Forbidden, caller_of
from agentkeep.os.jobs import Permanent, handles
from agentkeep.os.routes.common import ListPage, Owner, db_for, json_response, offset_of, page_of, the_os

router = APIRouter(tags=["knowledge"])


class FileBody(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    content_base64: str
    content_type: str | None = None


class NewContent(BaseModel):
    """Exactly one of `text`, `url` or `file` (multipart requests send the file as `file`)."""

    text: str | None = None
    url: str | None = None
    file: FileBody | None = None
    name: str | None = Field(None, max_length=1000)
    description: str | None = None
    metadata: dict = {}
    knowledge_id: str | None = None
    user_id: str | None = None


class Search(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    search_type: Literal["vector", "keyword", "hybrid"] | None = None
    limit: int = Field(5, ge=1, le=100)
    filters: dict | None = None
    knowledge_id: str | None = None
    user_id: str | None = None


def _kb(request: Request, knowledge_id: str | None) -> tuple[str, Any]:
    bases = the_os(request).knowledge
    if knowledge_id is None and len(bases) == 1:
        return next(iter(bases.items()))
    if knowledge_id not in bases:
        raise NotFoundError(f"knowledge base {knowledge_id!r} not found (served: {sorted(bases)})")
    return knowledge_id, bases[knowledge_id]


async def _new_content(request: Request) -> NewContent:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            fields = await request.json()
        except ValueError as exc:
            raise InvalidInputError(f"the body is not JSON: {exc}") from None
    else:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        upload = form.get("file")
        if isinstance(upload, UploadFile):
            data = await upload.read(the_os(request).max_upload_bytes + 1)
            fields["file"] = {"name": upload.filename or "upload", "content_type": upload.content_type,
                              "content_base64": base64.b64encode(data).decode()}
        if isinstance(fields.get("metadata"), str):
            try:
                fields["metadata"] = json.loads(fields["metadata"])
            except json.JSONDecodeError:
                raise InvalidInputError("metadata must be a JSON object") from None
    try:
        return NewContent.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InvalidInputError(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


@router.post("/knowledge/content", status_code=202)
async def add_content(request: Request) -> Any:
    """Queue a file, URL or text for ingestion: 202 with the content's id and its job's."""
    body = await _new_content(request)
    agent_os, caller = the_os(request), caller_of(request)
    knowledge_id, kb = _kb(request, body.knowledge_id)
    user_id = caller.owner(body.user_id)  # an admin without a user adds shared content
    given = [x for x in (body.text, body.url, body.file) if x is not None]
    if len(given) != 1:
        raise InvalidInputError("give exactly one of text, url or file")
    payload: dict = {"knowledge_id": knowledge_id, "description": body.description, "metadata": body.metadata}
    if body.url is not None:
        check_url(body.url, agent_os.url_networks)  # at once; the fetch checks every hop again
        payload["url"], identity, name = body.url, body.url, body.name or body.url
    elif body.file is not None:
        try:
            size = len(base64.b64decode(body.file.content_base64, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInputError("file.content_base64 is not base64") from None
        if size > agent_os.max_upload_bytes:
            raise InvalidInputError(f"the file is over the {agent_os.max_upload_bytes} byte upload limit")
        payload["file"] = body.file.model_dump()
        identity, name = f"upload:{body.file.name}", body.name or body.file.name
    else:
        if len(body.text.encode()) > agent_os.max_upload_bytes:
            raise InvalidInputError(f"the text is over the {agent_os.max_upload_bytes} byte upload limit")
        payload["text"] = body.text
        identity = body.name or hashlib.sha256(body.text.encode()).hexdigest()
        name = body.name or (body.text.strip().splitlines() or ["text"])[0][:80]
    # the same source added again by the same user is the same content: it is replaced
    content_id = hashlib.sha256("\x00".join((identity, user_id or "", kb.name or "")).encode()).hexdigest()[:32]
    payload.update(content_id=content_id, name=name, user_id=user_id)
    row = KnowledgeContent(id=content_id, name=name, description=body.description, metadata=body.metadata,
                           linked_to=kb.name, user_id=user_id, status="processing")
    await as_async(kb.contents_db).upsert_knowledge(row)
    job = await agent_os.enqueue(db_for(request), Job(kind="knowledge.add", user_id=user_id, payload=payload))
    return json_response({"id": content_id, "name": name, "status": "processing", "job_id": job.id}, status_code=202)


@handles("knowledge.add")
async def ingest(agent_os: Any, db: Any, job: Job) -> dict:
    p = job.payload
    kb = agent_os.knowledge.get(p["knowledge_id"])
    if kb is None:
        raise Permanent(f"knowledge base {p['knowledge_id']!r} is not served here")
    common = {"name": p["name"], "description": p["description"], "metadata": p["metadata"],
              "content_id": p["content_id"], "user_id": p["user_id"], "force": True}
    try:
        if "text" in p:
            row = await kb.aadd_content(text=p["text"], **common)
        else:
            if "url" in p:
                data, content_type, final = await asyncio.to_thread(
                    fetch, p["url"], max_bytes=agent_os.max_upload_bytes, allowed=agent_os.url_networks)
                file_name = urllib.parse.urlsplit(final).path.rsplit("/", 1)[-1] or "page"
            else:
                data, content_type = base64.b64decode(p["file"]["content_base64"]), p["file"]["content_type"]
                file_name = os.path.basename(p["file"]["name"]) or "upload"
            row = await asyncio.to_thread(_add_bytes, kb, data, file_name, content_type, common)
    except (AddressRefused, Permanent, InvalidInputError) as exc:
        await _failed(kb, p, str(exc))
        raise Permanent(str(exc)) from None
    except OSError as exc:  # the network: tried again, and the content fails with the last attempt
        if job.attempts >= job.max_attempts:
            await _failed(kb, p, str(exc))
        raise
    if row.status == "failed":
        raise Permanent(row.status_message or "the content could not be added")
    return {"content_id": row.id, "status": row.status, "chunks": (row.metadata.get("_ingest") or {}).get("chunks")}


def _add_bytes(kb: Any, data: bytes, file_name: str, content_type: str | None, common: dict) -> Any:
    """Add bytes as the file they are (a reader is picked by name, else by content type)."""
    reader = reader_for(file_name, content_type, kb.readers)
    with tempfile.TemporaryDirectory(prefix="agentkeep-upload-") as folder:
        path = os.path.join(folder, file_name)
        with open(path, "wb") as out:
            out.write(data)
        return kb.add_content(path=path, reader=reader, **common)


async def _failed(kb: Any, p: dict, message: str) -> None:
    row = KnowledgeContent(id=p["content_id"], name=p["name"], description=p["description"], metadata=p["metadata"],
                           linked_to=kb.name, user_id=p["user_id"], status="failed", status_message=message[:2000])
    await as_async(kb.contents_db).upsert_knowledge(row)


@router.get("/knowledge/content", response_model=ListPage[KnowledgeContent])
async def list_contents(request: Request, user_id: Owner, knowledge_id: str | None = None,
                        status: Literal["processing", "completed", "failed"] | None = None,
                        limit: int = Query(20, ge=1, le=100), page: int = Query(1, ge=1), cursor: str | None = None,
                        with_total: bool = True) -> Any:
    """A user's contents and the shared ones, most recently changed first."""
    _, kb = _kb(request, knowledge_id)
    result = await as_async(kb.contents_db).list_knowledge(
        user_id=user_id, linked_to=kb.name, status=status, limit=limit, cursor=cursor,
        offset=offset_of(page, limit, cursor), with_total=with_total)
    return page_of([c.model_dump() for c in result.items], limit, page, result.next_cursor, result.total)


async def _content(request: Request, content_id: str, user_id: str | None, knowledge_id: str | None) -> tuple:
    _, kb = _kb(request, knowledge_id)
    row = await as_async(kb.contents_db).get_knowledge(content_id, user_id=user_id)
    if row is None or row.linked_to != kb.name:
        raise NotFoundError(f"content {content_id!r} not found")
    return kb, row


@router.get("/knowledge/content/{content_id}", response_model=KnowledgeContent)
async def get_content(content_id: str, request: Request, user_id: Owner, knowledge_id: str | None = None) -> Any:
    return json_response((await _content(request, content_id, user_id, knowledge_id))[1].model_dump())


@router.get("/knowledge/content/{content_id}/status")
async def content_status(content_id: str, request: Request, user_id: Owner, knowledge_id: str | None = None) -> Any:
    _, row = await _content(request, content_id, user_id, knowledge_id)
    return {"id": row.id, "status": row.status, "status_message": row.status_message}


@router.delete("/knowledge/content/{content_id}", status_code=204)
async def delete_content(content_id: str, request: Request, user_id: Owner, knowledge_id: str | None = None) -> None:
    """Delete a content and its chunks: a user their own; shared contents only an admin."""
    kb, row = await _content(request, content_id, user_id, knowledge_id)
    if row.user_id is None and user_id is not None:
        raise Forbidden("shared contents are deleted by an admin")
    if not await kb.adelete_content(content_id, user_id=user_id):
        raise NotFoundError(f"content {content_id!r} not found")


@router.post("/knowledge/search")
async def search(body: Search, request: Request) -> Any:
    """The chunks that best answer `query`, from the caller's contents and the shared ones."""
    _, kb = _kb(request, body.knowledge_id)
    user_id = caller_of(request).owner(body.user_id)
    hits = await kb.asearch(body.query, limit=body.limit, filters=body.filters, search_type=body.search_type,
                            user_id=user_id)
    return json_response({"data": [h.model_dump(exclude={"embedding"}) for h in hits]})
