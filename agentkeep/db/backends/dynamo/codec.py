"""DynamoDB's values: column values as attribute values, and order-preserving strings for
the sort keys of the GSIs."""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from typing import Any

from agentkeep.db.jsontext import dumps as _json

# -- value codecs ----------------------------------------------------------------------------

_NINES = str.maketrans("0123456789", "9876543210")
MICRO_OFFSET = 62_135_596_800_000_000  # microseconds from 0001-01-01 to the epoch
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

def _micros(value: dt.datetime) -> int:
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def _float_av(value: float) -> dict:
    # DynamoDB numbers hold 38 digits between 1e-130 and 1e126 and have no -0.0: text otherwise
    if (value == 0 and math.copysign(1.0, value) > 0) or 1e-130 <= abs(value) < 1e125:
        return {"N": repr(value)}
    return {"S": repr(value)}


def encode_value(kind: str, value: Any) -> dict:
    """A column value as a DynamoDB attribute value (never None: None is an absent attribute)."""
    if kind in ("str", "text"):
        return {"S": value}
    if kind == "time":
        return {"N": str(_micros(value))}
    if kind == "int":
        return {"N": str(value)} if len(str(abs(value))) <= 38 else {"S": str(value)}
    if kind == "float":
        return _float_av(float(value))
    if kind == "bool":
        return {"BOOL": bool(value)}
    if kind == "date":
        return {"S": value.isoformat()}
    return {"S": _json(value)}


def decode_value(kind: str, av: dict) -> Any:
    if kind in ("str", "text"):
        return av["S"]
    if kind == "time":
        return EPOCH + dt.timedelta(microseconds=int(av["N"]))
    if kind == "int":
        return int(av.get("N") or av.get("S"))
    if kind == "float":
        return float(av.get("N") or av.get("S"))
    if kind == "bool":
        return av["BOOL"]
    if kind == "date":
        return dt.date.fromisoformat(av["S"])
    return json.loads(av["S"])


def component(kind: str, value: Any, last: bool = True) -> str:
    """An order-preserving string for one key component: None sorts lowest ("0"), values
    after ("1" + body). Bodies are fixed-width or self-delimiting, so concatenations of
    components compare like tuples, and no encoded component is a prefix of another; a
    string that is not the last component ends in \\x01\\x01, with \\x00 and \\x01 escaped
    below every other character."""
    if value is None:
        return "0"
    if kind == "time":
        body = f"{_micros(value) + MICRO_OFFSET:018d}"
    elif kind == "date":
        body = value.isoformat()
    elif kind == "int":
        digits = str(abs(value))
        body = f"p{len(digits):03d}{digits}" if value >= 0 else f"n{999 - len(digits):03d}{digits.translate(_NINES)}"
    elif kind == "float":
        bits = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
        bits ^= 0xFFFFFFFFFFFFFFFF if bits >> 63 else 1 << 63
        body = f"{bits:016x}"
    elif kind == "bool":
        body = "1" if value else "0"
    else:
        text = value if isinstance(value, str) else _json(value)
        body = text.replace("\x01", "\x01\x03").replace("\x00", "\x01\x02") + ("" if last else "\x01\x01")
    return "1" + body


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _clip(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` UTF-8 bytes of `text` (cut at a character boundary), and whether it was cut."""
    if _utf8_len(text) <= limit:
        return text, False
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore"), True


def _av_size(av: dict) -> int:
    (kind, value), = av.items()
    if kind == "S":
        return _utf8_len(value)
    if kind in ("N", "B"):
        return len(value)
    if kind == "SS":
        return sum(_utf8_len(v) for v in value)
    return 1


def _item_size(item: dict) -> int:
    return sum(len(k) + _av_size(v) for k, v in item.items())
