"""Webhooks: what happens on the server (an approval created or resolved, a scheduled run
that failed) POSTed to `AgentOS(webhook_url=)`.

Each delivery is a durable job in the db's jobs table (kind "webhook.deliver"): it is
queued where the event happens, any replica's worker sends it, a failed attempt (a network
error, a 5xx, 408 or 429) is retried with the worker's backoff until its attempts are spent,
and a refusal (any other 4xx) fails it at once; `GET /jobs` shows attempts, status and the
last error. A body is JSON, `{"id", "type", "created_at", "data"}`, signed as Standard
Webhooks sign theirs: headers `webhook-id` (the event's id: the same on every attempt),
`webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`). The receiver checks a delivery
with `verify_webhook(secret, headers, body)`.

    await notify(agent_os, db, "schedule_run.failed", {"schedule_id": ..., ...})
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic_core import to_jsonable_python

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.models import Approval, Job, utcnow
from agentkeep.os.jobs import Permanent, handles

log = logging.getLogger("agentkeep.os.webhooks")

EVENTS = ("approval.created", "approval.resolved", "schedule_run.failed")
KIND = "webhook.deliver"
ATTEMPTS = 8  # with the worker's backoff (2, 4, 8 ... 60 s): about three minutes of tries
TIMEOUT_SECONDS = 10.0
URL_ENV, SECRET_ENV = "AGENTKEEP_WEBHOOK_URL", "AGENTKEEP_WEBHOOK_SECRET"
RETRIED = (408, 429)  # the 4xx answers worth another attempt
_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_TLS: ssl.SSLContext | None = None


class WebhookVerificationError(Exception):
    """A delivery that does not verify: a header missing, a timestamp out of tolerance, or no
    signature that matches."""


class DeliveryFailed(Exception):
    """An attempt that another attempt may get through (the worker retries it)."""


def webhook_settings(url: str | None, secret: str | None) -> tuple[str | None, str | None]:
    """`AgentOS(webhook_url=, webhook_secret=)`, else $AGENTKEEP_WEBHOOK_URL and
    $AGENTKEEP_WEBHOOK_SECRET: the URL to POST events to (None: no webhooks) and the signing
    secret (None: deliveries are not signed)."""
    url = url if url is not None else os.environ.get(URL_ENV) or None
    secret = secret if secret is not None else os.environ.get(SECRET_ENV) or None
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"webhook_url must be an http:// or https:// URL, got {url!r}")
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidInputError(f"webhook_url is not a URL: {exc}") from None
    if secret is not None:
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError("webhook_secret must be a non-empty string")
        _key(secret)  # a "whsec_" secret must be base64
    return url, secret


# -- signing and verifying ------------------------------------------------------------------


def _key(secret: str) -> bytes:
    """The HMAC key: a Standard Webhooks secret ("whsec_" and base64) decoded, any other
    string as its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError("a webhook secret starting with 'whsec_' must continue in base64") from None
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of
    `<webhook_id>.<timestamp>.<body>`."""
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str | None, webhook_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (no signature without a secret)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if secret is not None:
        headers["webhook-signature"] = sign(secret, webhook_id, timestamp, body)
    return headers


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str, tolerance_seconds: float = 300) -> dict:
    """Check a delivery on the receiving side and return its event (the parsed body).

    `headers`: the request's headers (any mapping; names in any case), `body`: the raw body
    as received, before any parsing. Raises `WebhookVerificationError` when a header is
    missing, the timestamp is more than `tolerance_seconds` from now (a replay), or no `v1`
    signature matches."""
    lower = {str(k).lower(): v for k, v in headers.items()}
    webhook_id, stamp, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (webhook_id and stamp and signatures):
        raise WebhookVerificationError("webhook-id, webhook-timestamp and webhook-signature are required")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not Unix seconds: {stamp!r}") from None
    if abs(time.time() - timestamp) > tolerance_seconds:
        raise WebhookVerificationError(f"webhook-timestamp {timestamp} is more than {tolerance_seconds} s from now")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = sign(secret, webhook_id, timestamp, raw)
    if not any(hmac.compare_digest(expected, s) for s in signatures.split() if s.startswith("v1,")):
        raise WebhookVerificationError("no signature matches")
    try:
        return json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None


# -- queueing events ------------------------------------------------------------------------


def jobs_db(agent_os: Any, db: Any) -> Any:
    """Where a delivery's job goes for an event in `db`: `db` itself when it keeps jobs (the
    OS's, a tenant's), else the OS's db (an agent with a db of its own)."""
    from agentkeep.agent._async.util import ThreadedDb
    from agentkeep.os.app import as_async

    raw = db.db if isinstance(db, ThreadedDb) else db
    if not any(raw is kept for kept in agent_os.job_dbs()) and agent_os.db is not None:
        raw = agent_os.db
    return as_async(raw)


async def notify(agent_os: Any, db: Any, event: str, data: Any, *, event_id: str | None = None,
                 created_at: dt.datetime | None = None) -> Job | None:
    """Queue the delivery of `event` (its `data`: anything JSON-able: dicts, pydantic
    models, datetimes) as a durable job in `db`'s jobs table (the OS's db when `db` keeps no
    jobs); None when the server has no webhook URL. `event_id` (the `webhook-id`, the job's
    id): a new one by default; the same id while its job is queued or running is that job."""
    url = getattr(agent_os, "webhook_url", None)
    if url is None:
        return None
    if not isinstance(event, str) or not _EVENT.match(event):
        raise InvalidInputError(f"an event type is dotted lowercase words (as 'approval.created'), got {event!r}")
    event_id = event_id or f"evt_{uuid.uuid4().hex}"
    envelope = {"id": event_id, "type": event, "created_at": (created_at or utcnow()).isoformat(),
                "data": to_jsonable_python(data)}
    job = Job(id=event_id, kind=KIND, payload={"url": url, "event": envelope}, max_attempts=ATTEMPTS)
    return await agent_os.enqueue(jobs_db(agent_os, db), job)


def approval_data(approval: Approval) -> dict:
    """An approval as an event's `data`: as `GET /approvals/{id}` answers it."""
    return {**approval.model_dump(mode="json"), "resolution_data": approval.resolution}


async def approval_created(agent_os: Any, db: Any, approval: Approval) -> bool:
    """Queue `approval.created` for an approval in `db` unless its delivery was queued before
    (event id `approval.created-<id>`); False when there is nothing to do."""
    if getattr(agent_os, "webhook_url", None) is None:
        return False
    event_id = f"approval.created-{approval.id}"
    if await jobs_db(agent_os, db).get_job(event_id) is not None:
        return False
    created = approval.model_copy(update={"status": "pending", "resolved_by": None, "resolution": None,
                                          "resolved_at": None})
    await notify(agent_os, db, "approval.created", approval_data(created), event_id=event_id,
                 created_at=approval.created_at)
    return True


async def approval_resolved(agent_os: Any, db: Any, approval: Approval) -> Job | None:
    """Queue `approval.resolved` (approved, rejected or expired) for an approval this caller
    resolved (event id `approval.resolved-<id>`)."""
    return await notify(agent_os, db, "approval.resolved", approval_data(approval),
                        event_id=f"approval.resolved-{approval.id}", created_at=approval.resolved_at)


# -- delivering -----------------------------------------------------------------------------


async def _tls() -> ssl.SSLContext:
    """One TLS context for every delivery (loading the CA bundle costs CPU: once, off the
    event loop)."""
    global _TLS
    if _TLS is None:
        import certifi

        _TLS = await asyncio.to_thread(ssl.create_default_context, cafile=certifi.where())
    return _TLS


@handles(KIND)
async def deliver(agent_os: Any, db: Any, job: Job) -> dict:
    """One attempt: POST the event, signed with this server's secret. A 2xx delivers it; a
    network error, a 5xx, 408 or 429 is retried; any other answer fails it for good."""
    url, event = job.payload["url"], job.payload["event"]
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"content-type": "application/json", "user-agent": "agentkeep-webhooks",
               **signed_headers(getattr(agent_os, "webhook_secret", None), event["id"], body)}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, verify=await _tls(), follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{event['type']} to {url}: {type(exc).__name__}: {exc}") from None
    if response.is_success:
        return {"status_code": response.status_code}
    what = f"{event['type']} to {url}: HTTP {response.status_code}"
    if response.status_code >= 500 or response.status_code in RETRIED:
        raise DeliveryFailed(what)
    raise Permanent(f"{what}, not retried")
