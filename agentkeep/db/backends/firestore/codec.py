"""Firestore's document ids and values."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

# -- document ids ------------------------------------------------------------------------------

UTC = dt.timezone.utc
MAX_ID_BYTES = 1500


def doc_id(key: tuple) -> str:
    """An injective, valid Firestore document id for a record key: '%' and '/' are
    percent-escaped, the parts of a composite key are joined by '%00' (never produced by
    escaping, and ids hold no NUL), and the reserved ids '.', '..' and '__x__' get their
    first character escaped. Everything else (unicode, case, spaces) is kept as it is. An
    agentkeep id (255 characters at most) always fits Firestore's 1,500 bytes; a longer key
    becomes a SHA-256 digest."""
    parts = []
    for v in key:
        s = v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v)
        parts.append(s.replace("%", "%25").replace("/", "%2F"))
    out = "%00".join(parts)
    if out in (".", "..") or (len(out) >= 4 and out.startswith("__") and out.endswith("__")):
        out = f"%{ord(out[0]):02X}{out[1:]}"
    if len(out.encode("utf-8")) > MAX_ID_BYTES:  # '%H' is never made by escaping
        out = "%H" + hashlib.sha256(out.encode("utf-8")).hexdigest()
    return out


def _token() -> str:
    return uuid.uuid4().hex


# -- values --------------------------------------------------------------------------------------


def _enc(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "date":
        return value.isoformat()
    if kind == "float":
        return float(value)
    return value


def _dec(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return dt.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                           value.microsecond, tzinfo=UTC)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "float":
        return float(value)
    return value


def _size(value: Any) -> int:
    """Firestore's size of a stored value (close enough to refuse what cannot fit)."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    if isinstance(value, dict):
        return sum(len(k) + 1 + _size(v) for k, v in value.items())
    return 8
