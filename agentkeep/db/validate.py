"""Input checks and cursors, shared by the sync and async domain layers (pure, no I/O)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import sys
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.messages import shorten

MAX_ID_LENGTH = 255
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 256
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000  # an offset costs O(offset) on every store: page deep with cursors
INT64 = (-(2**63), 2**63 - 1)  # integer fields and arguments: what every store's integers hold
# Python refuses to print an int of more digits (sys.set_int_max_str_digits), so JSON cannot
# hold one; a bit length under this bound always has fewer digits
_INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 4300)() or 0
_INT_BITS = int(_INT_DIGITS * 3.3219280948873626) if _INT_DIGITS else 0
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters
UTC = dt.timezone.utc


def shown(value: Any, limit: int = 80) -> str:
    """A caller's value for an error message: its repr, clipped (and an int too long to
    print described instead)."""
    try:
        return shorten(repr(value), limit)
    except ValueError:
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__} holding an integer too long to print"


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise InvalidInputError(f"{what} must be 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise InvalidInputError(f"{what} must not contain control characters: {shown(value)}")
    check_unicode(value, what)
    return value


def check_unicode(value: str, what: str) -> str:
    """Refuse a string no store can encode: one holding a lone surrogate."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{what} holds a lone surrogate, which is not valid unicode") from None
    return value


def check_text(value: Any, what: str, max_chars: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidInputError(f"{what} is longer than {max_chars} characters")
    if _str_size(value, what) > MAX_RECORD_BYTES:
        raise InvalidInputError(f"{what} is larger than the {MAX_RECORD_BYTES // 2**20} MiB record limit")
    return value


def check_int(value: Any, what: str, low: int = INT64[0], high: int = INT64[1]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInputError(f"{what} must be in {low}..{high}, got {shown(value)}")
    return value


def check_opt_id(value: Any, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def check_ids(values: Any, what: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidInputError(f"{what} must be a list of ids")
    return list(dict.fromkeys(check_id(v, what) for v in values))


def check_time(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidInputError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{what} must be timezone-aware (naive datetimes are ambiguous): {shown(value)}")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(f"{what} is outside the years 1..9999 in UTC: {shown(value)}") from None


def check_date(value: Any, what: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise InvalidInputError(f"{what} must be a date, got {type(value).__name__}")
    return value


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be an integer in 1..{MAX_LIMIT}, got {shown(limit)}")
    return limit


def check_offset(offset: Any) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInputError(f"offset must be an integer in 0..{MAX_OFFSET}, got {shown(offset)}")
    return offset


def check_bool(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be a bool, got {type(value).__name__}")
    return value


def check_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    return value


def check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InvalidInputError(f"unknown {what} {shown(value)}; expected one of {list(choices)}")
    return value


def coerce(model: type[BaseModel], value: Any, what: str) -> BaseModel:
    """Accept a model instance or a dict; re-validate so in-place edits are checked too."""
    if isinstance(value, BaseModel) and not isinstance(value, model):
        raise InvalidInputError(f"{what} must be a {model.__name__}, got {type(value).__name__}")
    if not isinstance(value, (dict, BaseModel)):
        raise InvalidInputError(f"{what} must be a {model.__name__} or a dict, got {type(value).__name__}")
    try:
        data = value if isinstance(value, dict) else value.__dict__  # its fields (extras are forbidden)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid {model.__name__}: {exc}") from None


def _str_size(value: str, what: str) -> int:
    if value.isascii():
        return len(value) + 2
    try:
        return len(value.encode("utf-8")) + 2
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} holds a lone surrogate, which is not valid unicode") from None


def check_payload(row: dict, what: str, short: Sequence[str] = (), times: Sequence[str] = ()) -> None:
    """Check a record holds only JSON values, nests at most MAX_DEPTH levels, fits the size
    limit, and that its `short` (indexed) string columns fit MAX_ID_LENGTH. One iterative
    walk over containers (no recursion limit to hit); strings and scalars are sized where
    they are met, only containers go on the stack."""
    for name in short:
        value = row.get(name)
        if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
            raise InvalidInputError(f"{what}.{name} is longer than {MAX_ID_LENGTH} characters")
    size = 0
    stack: list[tuple[Any, int]] = []
    # ASCII strings and None, by far the most common values, are sized inline
    for name, value in row.items():
        cls = value.__class__
        if cls is str and value.isascii():
            size += len(value) + 2
        elif value is None:
            size += 8
        elif cls is dict or cls is list:
            stack.append((value, 1))
        elif cls in _TIMES and name in times:
            size += 8  # a time column; anywhere else only JSON types are allowed
        elif isinstance(value, (dict, list)):  # a subclass (OrderedDict, ...)
            stack.append((value, 1))
        else:
            size += _scalar_size(value, what)
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"{what} nests deeper than {MAX_DEPTH} levels")
        size += 2
        if isinstance(container, dict):
            for k, value in container.items():
                if k.__class__ is not str:
                    raise InvalidInputError(f"{what} has a non-string key {shown(k)}; JSON keys are strings")
                size += len(k) + 4 if k.isascii() else _str_size(k, what) + 2
                cls = value.__class__
                if cls is str and value.isascii():
                    size += len(value) + 2
                elif cls is dict or cls is list or isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                else:
                    size += _scalar_size(value, what)
        else:
            for value in container:
                cls = value.__class__
                if cls is str and value.isascii():
                    size += len(value) + 2
                elif cls is dict or cls is list or isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                else:
                    size += _scalar_size(value, what)
        if size > MAX_RECORD_BYTES:
            break
    if size > MAX_RECORD_BYTES:
        raise InvalidInputError(f"{what} is larger than the {MAX_RECORD_BYTES // 2**20} MiB record limit")


def _scalar_size(value: Any, what: str) -> int:
    cls = value.__class__
    if cls is str:
        return _str_size(value, what)
    if value is None or cls is bool:
        return 8
    if cls is int:
        if _INT_BITS and value.bit_length() > _INT_BITS - 4:
            _check_digits(value, what)
        return 8
    if cls is float:
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} holds {shown(value)}, which JSON cannot represent")
        return 24
    if isinstance(value, str):  # a str subclass (an enum member, ...) is stored as its text
        return _str_size(value, what)
    raise InvalidInputError(f"{what} holds a {type(value).__name__}, which is not a JSON value")


def _check_digits(value: int, what: str) -> None:
    try:
        str(value)
    except ValueError:
        raise InvalidInputError(f"{what} holds an integer of more than {_INT_DIGITS} digits, which JSON text cannot hold") from None


_TIMES = frozenset({dt.datetime, dt.date})


# -- keyset cursors ----------------------------------------------------------------------


def _enc(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            parsed = dt.datetime.fromisoformat(value["t"])
            if parsed.tzinfo is None:
                raise ValueError("naive time in cursor")
            return parsed
        return dt.date.fromisoformat(value["d"])
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and INT64[0] <= value <= INT64[1]:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        return value
    raise ValueError("bad cursor value")


def encode_cursor(order: str, values: Sequence[Any]) -> str:
    raw = json.dumps([order, [_enc(v) for v in values]], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: Any, order: str, width: int) -> tuple | None:
    if cursor is None:
        return None
    try:
        if not isinstance(cursor, str):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, values = json.loads(raw)
        if made_for != order or not isinstance(values, list) or len(values) != width:
            raise ValueError
        return tuple(_dec(v) for v in values)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidInputError(
            f"invalid cursor {shown(cursor, 40)}: pass next_cursor from a previous page of the same order"
        ) from None
