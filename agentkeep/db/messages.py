"""Error text: one line, and never cut in the middle of a word."""

from __future__ import annotations

ELLIPSIS = "…"


def shorten(text: object, limit: int = 200) -> str:
    """`text` on one line, at most `limit` characters: a longer text is cut at the last word
    boundary that fits (mid-token only when one token alone is longer than half the limit),
    with an ellipsis."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - len(ELLIPSIS) + 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    else:
        cut = cut[:-1]
    return cut.rstrip(" ,;:.") + ELLIPSIS
