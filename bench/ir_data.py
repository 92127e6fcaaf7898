"""Load an IR test collection for `bench.ir`: a corpus, queries and relevance judgements.

Two layouts are read, chosen by the path given:

- the SciFact release (a zip with claims_validation.csv and corpus_train.csv; from the
  SciFact project, https://github.com/allenai/scifact, or its Hugging Face copy). BEIR's
  SciFact test set is built from it exactly: the queries are the 300 distinct validation
  claims, a claim's relevant documents are its `cited_doc_ids` (339 pairs, relevance 1), the
  corpus is the 5,183 documents, each "title abstract" (the abstract's sentences joined with
  spaces).
- a BEIR dataset (a folder, or the zip the BEIR download site serves, e.g.
  https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip) holding
  corpus.jsonl, queries.jsonl and qrels/test.tsv; only the queries judged in qrels/test.tsv
  are kept, and a document is "title text".

Nothing is copied: the files are read where they are.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Iterable, Iterator

DEFAULT_PATH = "/work/shared/datasets/scifact.zip"

# one quoted Python string literal of a printed list (numpy splits the list over lines)
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)


@dataclass
class Collection:
    name: str
    corpus: dict[str, str]  # doc id -> text
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}

    @property
    def pairs(self) -> int:
        return sum(len(docs) for docs in self.qrels.values())

    def describe(self) -> str:
        return f"{self.name}: {len(self.corpus):,} docs, {len(self.queries):,} queries, {self.pairs:,} judged pairs"


def abstract_text(printed: str) -> str:
    """The sentences of a printed list of strings ("['a.'\\n 'b.']"), joined with spaces."""
    return " ".join(ast.literal_eval(s).strip() for s in _LITERAL.findall(printed)).strip()


def cited_ids(printed: str) -> list[str]:
    """ "[123 456]" -> ["123", "456"], first occurrence kept."""
    return list(dict.fromkeys(printed.strip().strip("[]").replace(",", " ").split()))


class _Source:
    """The files of a folder or a zip, by the end of their path (a BEIR zip nests a folder)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
        if self.zip is not None:
            self.names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            self.names = [os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs]

    def find(self, suffix: str) -> str | None:
        hits = [n for n in self.names if n.replace(os.sep, "/") == suffix or n.replace(os.sep, "/").endswith("/" + suffix)]
        return min(hits, key=len) if hits else None

    def text(self, name: str) -> io.TextIOBase:
        if self.zip is not None:
            return io.TextIOWrapper(self.zip.open(name), encoding="utf-8", newline="")
        return open(os.path.join(self.path, name), encoding="utf-8", newline="")


def _scifact(src: _Source, claims: str, corpus: str) -> Collection:
    with src.text(corpus) as f:
        docs = {row["doc_id"]: f"{row['title'].strip()} {abstract_text(row['abstract'])}".strip()
                for row in csv.DictReader(f)}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    with src.text(claims) as f:
        for row in csv.DictReader(f):  # a claim has a row per evidence: the same cited ids each time
            queries.setdefault(row["id"], row["claim"])
            qrels.setdefault(row["id"], {}).update({d: 1 for d in cited_ids(row["cited_doc_ids"])})
    return Collection("scifact (SciFact release, validation claims)", docs, queries, qrels)


def _jsonl(lines: Iterable[str]) -> Iterator[dict]:
    return (json.loads(line) for line in lines if line.strip())


def _beir(src: _Source, corpus: str, queries: str, qrels_file: str) -> Collection:
    qrels: dict[str, dict[str, int]] = {}
    with src.text(qrels_file) as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            if int(row[2]) > 0:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    with src.text(queries) as f:
        texts = {str(q["_id"]): q["text"] for q in _jsonl(f)}
    with src.text(corpus) as f:
        docs = {str(d["_id"]): f"{d.get('title') or ''} {d.get('text') or ''}".strip() for d in _jsonl(f)}
    missing = [q for q in qrels if q not in texts]
    if missing:
        raise ValueError(f"{src.path}: qrels/test.tsv names queries missing from queries.jsonl: {missing[:5]}")
    name = os.path.basename(os.path.dirname(src.find("corpus.jsonl") or "")) or os.path.basename(src.path)
    return Collection(f"{name} (BEIR test)", docs, {q: texts[q] for q in qrels}, qrels)


def load(path: str = DEFAULT_PATH) -> Collection:
    """The collection at `path`: the SciFact release zip or a BEIR folder or zip."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (see bench/ir_data.py for where to get a dataset)")
    src = _Source(path)
    claims, corpus = src.find("claims_validation.csv"), src.find("corpus_train.csv")
    if claims and corpus:
        return _scifact(src, claims, corpus)
    beir = [src.find(n) for n in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")]
    if all(beir):
        return _beir(src, *beir)
    raise ValueError(f"{path} holds neither the SciFact release (claims_validation.csv, corpus_train.csv) "
                     "nor a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
