"""OTLP/HTTP trace export requests (protobuf or JSON, gzip or not) as the db's Span records.

`opentelemetry-proto` decodes the request. OTLP/JSON writes trace and span ids as hex, where
protobuf's JSON parser reads bytes as base64: they are converted before parsing. A span that
cannot be stored (an empty or malformed id) is rejected and counted in the answer's
`partial_success`, as the protocol asks, while the others are kept."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zlib
from typing import Any

from agentkeep.db import models as m
from agentkeep.db.errors import InvalidInputError

PROTOBUF = "application/x-protobuf"
KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_UTC = dt.timezone.utc


class TooLarge(Exception):
    """The request body, once decompressed, is over the limit."""


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its gzip (or deflate) encoding, refusing more than `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInputError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"the body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise TooLarge(limit)
    return out


def parse(body: bytes, content_type: str) -> Any:
    """The ExportTraceServiceRequest in the body."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    if content_type.startswith(PROTOBUF):
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidInputError(f"the body is not an OTLP protobuf trace request: {exc}") from None
        return request
    if not content_type.startswith("application/json"):
        raise InvalidInputError(f"Content-Type must be {PROTOBUF} or application/json, not {content_type!r}")
    try:
        document = json.loads(body)
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as exc:
        raise InvalidInputError(f"the body is not an OTLP/JSON trace request: {exc}") from None
    return request


def _hex_ids_to_base64(document: Any) -> None:
    for resource_spans in document.get("resourceSpans") or ():
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                for holder in (span, *(span.get("links") or ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        value = holder.get(key)
                        if isinstance(value, str) and value:
                            try:
                                holder[key] = base64.b64encode(bytes.fromhex(value)).decode()
                            except ValueError:
                                raise InvalidInputError(f"{key} {value!r} is not hex") from None


def spans_of(request: Any) -> tuple[list[m.Span], int]:
    """(the storable spans, how many were rejected)."""
    spans, rejected = [], 0
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                try:
                    spans.append(_span(span, resource, scope))
                except (InvalidInputError, ValueError, OverflowError):
                    rejected += 1
    return spans, rejected


def _span(span: Any, resource: dict, scope: str) -> m.Span:
    if len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8):
        raise InvalidInputError("a span needs a 16-byte trace id and 8-byte span ids")
    attributes = {**{k: v for k, v in resource.items()}, **_attributes(span.attributes)}
    if scope:
        attributes.setdefault("otel.scope.name", scope)
    start, end = _time(span.start_time_unix_nano), _time(span.end_time_unix_nano)
    return m.Span(
        span_id=span.span_id.hex(), trace_id=span.trace_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None, name=span.name, kind=KINDS.get(span.kind, "INTERNAL"),
        status_code=STATUS.get(span.status.code, "UNSET"), status_message=span.status.message or None,
        start_time=start, end_time=end,
        duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 if end else None,
        attributes=attributes,
        events=[{"name": e.name, "time": _time(e.time_unix_nano).isoformat(), "attributes": _attributes(e.attributes)}
                for e in span.events],
    )


def _time(ns: int) -> dt.datetime | None:
    if not ns:
        return None
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, _UTC) + dt.timedelta(microseconds=ns % 1_000_000_000 // 1000)


def _attributes(pairs: Any) -> dict:
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


def answer(rejected: int, content_type: str) -> tuple[bytes, str]:
    """The ExportTraceServiceResponse, in the request's encoding."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = "spans without a valid trace id or span id were not stored"
    if content_type.startswith(PROTOBUF):
        return response.SerializeToString(), PROTOBUF
    return json.dumps(json_format.MessageToDict(response)).encode(), "application/json"

