"""Keyword text as every store reads it: an analyzer per language, the query syntax, BM25.

An `Analyzer` turns text into terms: words of two or more letters or digits, lowercased,
stop words dropped, reduced to their Snowball stem (PyStemmer), so "rotating", "rotated"
and "rotate" meet. English drops Lucene's 33 stop words (as Elasticsearch and `bm25s`);
other languages drop the `stop-words` package's list when it is installed, else none.

A keyword query is natural language: any of its terms may match, and the chunks are ranked
by BM25. Three marks narrow it (docs/knowledge.md, "Keyword queries"):

    +term          the term is required
    -term          chunks holding the term are left out
    "a phrase"     the words are required, next to each other and in this order

Stores whose engine cannot analyse text this way store `Analyzer.terms(content)` and query
with `Analyzer.query(query)`, so a keyword search matches the same words on every store.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentkeep.db.errors import InvalidInputError

K1, B = 1.2, 0.75  # BM25's parameters, the same wherever it is computed
_WORD = re.compile(r"(?u)\b\w\w+\b")
_QUERY = re.compile(r'([+-]?)"([^"]*)"|(\S+)')
# Lucene's English stop words (the default of Elasticsearch, OpenSearch and bm25s)
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_ISO = {"arabic": "ar", "catalan": "ca", "czech": "cs", "danish": "da", "dutch": "nl", "finnish": "fi",
        "french": "fr", "german": "de", "greek": "el", "hindi": "hi", "hungarian": "hu", "indonesian": "id",
        "italian": "it", "norwegian": "no", "persian": "fa", "polish": "pl", "portuguese": "pt",
        "romanian": "ro", "russian": "ru", "spanish": "es", "swedish": "sv", "turkish": "tr"}


def languages() -> list[str]:
    """The languages an analyzer stems (Snowball's)."""
    import Stemmer

    return sorted(Stemmer.algorithms())


def _stopwords(language: str) -> frozenset[str]:
    if language == "english":
        return ENGLISH_STOPWORDS
    try:
        from stop_words import get_stop_words
    except ImportError:
        return frozenset()
    return frozenset(get_stop_words(_ISO[language])) if language in _ISO else frozenset()


class Analyzer:
    """Text to terms in one language; `analyzer(language)` shares one per language."""

    def __init__(self, language: str = "english") -> None:
        import Stemmer

        if language not in Stemmer.algorithms():
            raise InvalidInputError(f"no stemmer for language {language!r}; one of: {', '.join(languages())}")
        self.language = language
        self.stopwords = _stopwords(language)
        # stems are cached: a corpus repeats a small vocabulary, so most words cost one lookup
        self._stem = functools.lru_cache(maxsize=200_000)(Stemmer.Stemmer(language).stemWord)

    def terms(self, text: str) -> list[str]:
        """The terms of a text, in order, repeats kept (for term frequencies and phrases)."""
        stop, stem = self.stopwords, self._stem
        return [stem(w) for w in _WORD.findall(text.lower()) if w not in stop]

    def query(self, text: str) -> KeywordQuery:
        """A keyword query (see the module docstring), its words analysed as the chunks' are."""
        words = split_query(text)
        must = [t for w in words.must for t in self.terms(w)]
        phrases, excluded = [], []
        must_not = [t for w in words.must_not for t in self.terms(w)]
        for w in words.phrases:  # a phrase of one term is that term, required
            ts = self.terms(w)
            if len(ts) > 1:
                phrases.append(tuple(ts))
            must.extend(ts)
        for w in words.excluded_phrases:  # and left out
            ts = self.terms(w)
            if len(ts) > 1:
                excluded.append(tuple(ts))
            else:
                must_not.extend(ts)
        must = list(dict.fromkeys(must))
        should = [t for w in words.should for t in self.terms(w) if t not in must]
        return KeywordQuery(should=tuple(dict.fromkeys(should)), must=tuple(must),
                            must_not=tuple(dict.fromkeys(must_not)), phrases=tuple(dict.fromkeys(phrases)),
                            excluded_phrases=tuple(dict.fromkeys(excluded)))


@dataclass(frozen=True)
class QueryWords:
    """A keyword query's words as written, by role (for engines that analyse text themselves)."""

    should: tuple[str, ...]
    must: tuple[str, ...]
    must_not: tuple[str, ...]
    phrases: tuple[str, ...]
    excluded_phrases: tuple[str, ...]


def split_query(text: str) -> QueryWords:
    """The words of a keyword query by role: plain, `+word`, `-word`, `"phrase"`, `-"phrase"`."""
    roles: dict[str, list[str]] = {"should": [], "must": [], "must_not": [], "phrases": [], "excluded_phrases": []}
    for match in _QUERY.finditer(text):
        sign, phrase, word = match.group(1), match.group(2), match.group(3)
        if phrase is not None:
            roles["excluded_phrases" if sign == "-" else "phrases"].append(phrase)
        elif word[0] in "+-" and len(word) > 1:
            roles["must" if word[0] == "+" else "must_not"].append(word[1:])
        else:
            roles["should"].append(word)
    return QueryWords(**{k: tuple(v) for k, v in roles.items()})


@functools.lru_cache(maxsize=64)
def analyzer(language: str = "english") -> Analyzer:
    return Analyzer(language)


def terms(text: str, language: str = "english") -> list[str]:
    return analyzer(language).terms(text)


@dataclass(frozen=True)
class KeywordQuery:
    """A parsed keyword query. A chunk matches when it holds every `must` term, no `must_not`
    term, each phrase in order, no excluded phrase, and, with no `must` term, any `should`
    term; it is ranked by BM25 over `ranked` (the should and must terms)."""

    should: tuple[str, ...] = ()
    must: tuple[str, ...] = ()
    must_not: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded_phrases: tuple[tuple[str, ...], ...] = ()

    @property
    def ranked(self) -> tuple[str, ...]:
        return self.must + self.should

    def __bool__(self) -> bool:
        """False when nothing can match (a query of stop words, or only exclusions)."""
        return bool(self.ranked)

    @property
    def positional(self) -> bool:
        """Whether matching needs the terms' order (a phrase), not only their presence."""
        return bool(self.phrases or self.excluded_phrases)

    def matches(self, doc_terms: Sequence[str], present: Mapping[str, int] | None = None) -> bool:
        """Whether a chunk of these terms (in order; `present` its term counts, if at hand) matches."""
        have = present if present is not None else dict.fromkeys(doc_terms, 1)
        if any(t in have for t in self.must_not) or not all(t in have for t in self.must):
            return False
        if not self.must and not any(t in have for t in self.should):
            return False
        return all(has_phrase(doc_terms, p) for p in self.phrases) and not any(
            has_phrase(doc_terms, p) for p in self.excluded_phrases)


def has_phrase(doc_terms: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    first = phrase[0]
    return any(doc_terms[i:i + n] == list(phrase) for i, t in enumerate(doc_terms) if t == first)


def idf(total: int, df: int) -> float:
    """BM25's inverse document frequency of a term in `df` of `total` documents (Lucene's, never
    negative)."""
    return math.log(1 + (total - df + 0.5) / (df + 0.5))


def bm25(tf: Mapping[str, int], length: int, avg_length: float, wanted: Iterable[str],
         idfs: Mapping[str, float] | None = None) -> float:
    """BM25 of a document of `length` terms whose term frequencies are `tf`, for the wanted
    terms; with no `idfs` (no corpus statistics) every term weighs 1."""
    norm = K1 * (1 - B + B * length / (avg_length or 1.0))
    return sum((1.0 if idfs is None else idfs[t]) * tf.get(t, 0) * (K1 + 1) / (tf.get(t, 0) + norm) for t in wanted)


def bm25_weights(tf: Mapping[str, int], length: int, avg_length: float) -> dict[str, float]:
    """A chunk's BM25 term weights without idf: its sparse vector for engines that multiply it
    by the query's idf weights (Qdrant's IDF modifier, Pinecone's sparse values)."""
    norm = K1 * (1 - B + B * length / (avg_length or 1.0))
    return {t: f * (K1 + 1) / (f + norm) for t, f in tf.items()}
