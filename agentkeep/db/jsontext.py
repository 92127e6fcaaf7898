"""JSON text as every backend stores it: compact, unicode kept as it is.

One encoder made once: `json.dumps` with any option builds a new `JSONEncoder` per call,
which measured at more than half the cost of encoding a typical attribute dict. Reading, the
empty object and list (most records' state and metadata) are answered without the decoder.
"""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


_DECODE = json.JSONDecoder().decode


def loads(text: str | bytes) -> Any:
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return _DECODE(text) if isinstance(text, str) else json.loads(text)
