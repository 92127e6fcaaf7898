"""Keyword text as every store reads it: lowercased, stopword-free, lightly stemmed terms.

Stores whose engine cannot analyse text this way store `terms(content)` and query with
`query_terms(query)`, so a keyword search matches the same words on every store; those that
rank the matches themselves use `bm25`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

K1, B = 1.2, 0.75  # BM25's parameters, the same wherever it is computed
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does doing for from had has have having he her "
    "here hers him his how i if in into is it its itself me my no nor not of off on once only or our "
    "ours out over own same she should so some such than that the their theirs them then there these "
    "they this those through to too under until up very was we were what when where which while who "
    "whom why will with would you your yours".split()
)


def stem(word: str) -> str:
    """A light English stemmer: enough that 'rotate', 'rotated' and 'rotating' meet."""
    w = word
    for suffix in ("ational", "ization", "fulness", "ousness", "iveness"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses") or (w.endswith("es") and len(w) > 4 and w[-3] in "sxz"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        w = w[:-1]
    for suffix in ("ingly", "edly", "ing", "ed", "ly", "ment", "ation", "er"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def terms(text: str) -> list[str]:
    """The keyword terms of a text, in order, repeats kept (for term frequencies)."""
    return [stem(t) for t in (m.lower() for m in _WORD.findall(text)) if t not in STOPWORDS]


def query_terms(query: str) -> tuple[list[str], list[str]]:
    """(wanted, unwanted) terms of a keyword query, each without repeats, in order: every
    wanted term must match, and a word written `-word` must not (as websearch_to_tsquery)."""
    wanted: list[str] = []
    unwanted: list[str] = []
    for word in query.split():
        if word.startswith("-") and len(word) > 1:
            unwanted.extend(terms(word[1:]))
        else:
            wanted.extend(terms(word))
    return list(dict.fromkeys(wanted)), list(dict.fromkeys(unwanted))


def idf(total: int, df: int) -> float:
    """BM25's inverse document frequency of a term in `df` of `total` documents."""
    return math.log(1 + (total - df + 0.5) / (df + 0.5))


def bm25(tf: Mapping[str, int], length: int, avg_length: float, wanted: Iterable[str],
         idfs: Mapping[str, float] | None = None) -> float:
    """BM25 of a document of `length` terms whose term frequencies are `tf`, for the wanted
    terms; with no `idfs` (no corpus statistics) every term weighs 1."""
    norm = K1 * (1 - B + B * length / avg_length)
    return sum((1.0 if idfs is None else idfs[t]) * tf.get(t, 0) * (K1 + 1) / (tf.get(t, 0) + norm) for t in wanted)
