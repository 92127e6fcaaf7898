"""Redis's value encoding: each value as bytes that sort like the values, so the members of
a sorted set (the encodings of an index's fields concatenated) sort like the rows.

Encoding of one value (each ends with \\x00, which occurs nowhere else in it): None is
\\x01\\x00, so it sorts lowest; any other value is \\x02 + payload + \\x00. Strings are UTF-8
with \\x01 escaped as \\x01\\x02 and \\x00 as \\x01\\x01, so byte order is code point order and
no text can end a component early, reach another key space or act as a glob (the store
is never asked for KEYS or SCAN). Integers (and times, as microseconds since the epoch)
are a sign-and-length byte and the decimal digits (complemented when negative), floats
the 16 hex digits of their IEEE bits turned to sort as numbers, dates ISO text, bools 0/1.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from typing import Any

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.jsontext import dumps as compact_json

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)
NONE = b"\x01\x00"
HIGH = b"\xff"  # above every tag byte: closes a prefix range
JSON_NULL = b"null\x00"
MAX_DIGITS = 40
_NINES = str.maketrans("0123456789", "9876543210")
_UNESCAPE = re.compile(b"\x01([\x01\x02])")


# -- value codecs ------------------------------------------------------------------------


def _esc(b: bytes) -> bytes:
    if b"\x00" in b or b"\x01" in b:
        b = b.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return b


def _unesc(b: bytes) -> bytes:
    return _UNESCAPE.sub(lambda m: b"\x00" if m.group(1) == b"\x01" else b"\x01", b) if b"\x01" in b else b


def _enc_int(v: int) -> bytes:
    if v >= 0:
        s = str(v)
        head = 0x50 + len(s)
    else:
        s = str(-v).translate(_NINES)
        head = 0x4F - len(s)
    if len(s) > MAX_DIGITS:
        raise InvalidInputError(f"integer {v} is out of range (at most {MAX_DIGITS} digits)")
    return bytes((2, head)) + s.encode() + b"\x00"


def _dec_int(p: bytes) -> int:
    if p[0] >= 0x50:
        return int(p[1:])
    return -int(p[1:].decode().translate(_NINES))


def _enc_float(v: float) -> bytes:
    bits = struct.unpack(">Q", struct.pack(">d", float(v) + 0.0))[0]  # + 0.0: -0.0 is 0.0
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return b"\x02%016x\x00" % bits


def _dec_float(p: bytes) -> float:
    bits = int(p, 16)
    bits = bits & 0x7FFFFFFFFFFFFFFF if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


ENCODERS = {
    "str": lambda v: b"\x02" + _esc(v.encode()) + b"\x00",
    "text": lambda v: b"\x02" + _esc(v.encode()) + b"\x00",
    "int": _enc_int,
    "float": _enc_float,
    "bool": lambda v: b"\x021\x00" if v else b"\x020\x00",
    "time": lambda v: _enc_int((v - EPOCH) // MICRO),
    "date": lambda v: b"\x02" + v.isoformat().encode() + b"\x00",
}

# payload (after the tag byte, without the terminator) -> value
DECODERS = {
    "str": lambda p: _unesc(p).decode(),
    "text": lambda p: _unesc(p).decode(),
    "int": _dec_int,
    "float": _dec_float,
    "bool": lambda p: p == b"1",
    "time": lambda p: EPOCH + dt.timedelta(microseconds=_dec_int(p)),
    "date": lambda p: dt.date.fromisoformat(p.decode()),
}


def _col(dec):
    """A column decoder: the raw fields of one column (tag byte first) -> values."""
    return lambda raws: [dec(r[1:]) if r[:1] == b"\x02" else None for r in raws]


def _str_col(raws: list[bytes]) -> list:
    return [None if r[:1] != b"\x02" else r[1:].decode() if b"\x01" not in r else _unesc(r[1:]).decode() for r in raws]


def _int_col(raws: list[bytes]) -> list:
    return [None if r[:1] != b"\x02" else int(r[2:]) if r[1] >= 0x50 else _dec_int(r[1:]) for r in raws]


def _time_col(raws: list[bytes]) -> list:
    td = dt.timedelta
    return [None if r[:1] != b"\x02" else EPOCH + td(microseconds=int(r[2:]) if r[1] >= 0x50 else _dec_int(r[1:]))
            for r in raws]


def _json_col(raws: list[bytes]) -> list:
    return json.loads(b"[" + b",".join(r or b"null" for r in raws) + b"]")


COLUMN_DECODERS = {
    "str": _str_col, "text": _str_col, "int": _int_col, "time": _time_col, "json": _json_col,
    "float": _col(_dec_float), "bool": _col(lambda p: p == b"1"), "date": _col(DECODERS["date"]),
}


def dumps(value: Any) -> bytes:
    # control characters are always escaped in JSON text: it never holds \x00
    return compact_json(value).encode() + b"\x00"


def encode(kind: str, value: Any) -> bytes:
    """A value as stored in its hash field (terminated by \\x00)."""
    if kind == "json":
        return dumps(value)
    if value is None:
        return NONE
    return ENCODERS[kind](value)


def decode(kind: str, raw: bytes | None) -> Any:
    """The inverse of `encode`, given the field without its terminator; None/empty: no field."""
    if not raw:
        return None
    if kind == "json":
        return json.loads(raw)
    if raw[0] == 1:
        return None
    return DECODERS[kind](raw[1:])
