"""Readers turn a file's bytes into text sections (a page, a JSON record, a run of CSV rows),
each with metadata that its chunks inherit.

Plain text, Markdown, CSV/TSV, JSON/JSON Lines and HTML need nothing beyond the standard
library; PDF needs pypdf (`pip install 'agentkeep[pdf]'`). `reader_for(name, content_type)`
picks a reader by file extension, then by content type.
"""

from __future__ import annotations

import abc
import codecs
import csv
import io
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Iterable, Iterator

from agentkeep.db.drivers import install_hint


class ReaderError(Exception):
    """The content could not be read (bad encoding, malformed file, missing parser)."""


@dataclass
class Section:
    """Text and the metadata its chunks inherit. A section with `continued` set goes on with
    the text of the one before (a streamed content arrives in parts: see `Reader.stream`)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    continued: bool = False


def decode(data: bytes, name: str | None = None) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16; NUL characters are dropped."""
    try:
        text = data.decode(_encoding(data))
    except UnicodeDecodeError as exc:
        raise _not_text(exc, len(data), name) from None
    return text.replace("\x00", "")


def decode_stream(parts: Iterable[bytes], name: str | None = None) -> Iterator[str]:
    """`decode` over bytes that arrive in parts: the text in parts, the same text in the end
    (a character cut between two parts comes whole in the next)."""
    parts = iter(parts)
    head = b""
    for data in parts:  # enough bytes to see the BOM
        head += data
        if len(head) >= 3:
            break
    decoder = codecs.getincrementaldecoder(_encoding(head))()
    offset = 0  # bytes given to the decoder so far
    for data, final in itertools.chain(((head, False),), ((d, False) for d in parts), ((b"", True),)):
        try:
            text = decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise _not_text(exc, offset + len(data), name) from None
        offset += len(data)
        if text:
            yield text.replace("\x00", "")


def _encoding(head: bytes) -> str:
    return "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"


def _not_text(exc: UnicodeDecodeError, end: int, name: str | None) -> ReaderError:
    """The error for undecodable bytes; `end` is the offset of the end of the bytes the decoder
    saw (it may have dropped a BOM from their front: the offset counts it)."""
    at = end - len(exc.object) + exc.start
    return ReaderError(f"{name or 'content'} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                       f"at offset {at})")


class Reader(abc.ABC):
    """`read(data, name=...)` returns the sections of one content."""

    kind: str = "text"  # the catalog's `type`
    extensions: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()

    @abc.abstractmethod
    def read(self, data: bytes, *, name: str | None = None) -> list[Section]: ...

    def stream(self, parts: Iterable[bytes], *, name: str | None = None) -> Iterator[Section]:
        """The sections of a content whose bytes arrive in parts (a large file read piece by
        piece). This default joins the bytes and reads them whole; plain text and Markdown
        yield their text as it is decoded, one section in `continued` parts."""
        yield from self.read(b"".join(parts), name=name)

    @property
    def id(self) -> str:
        return type(self).__name__


class TextReader(Reader):
    kind = "text"
    extensions = (".txt", ".text", ".log", ".rst", ".adoc")
    content_types = ("text/plain",)

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        return [Section(decode(data, name))]

    def stream(self, parts: Iterable[bytes], *, name: str | None = None) -> Iterator[Section]:
        return _text_sections(parts, name)


class MarkdownReader(Reader):
    kind = "markdown"
    extensions = (".md", ".markdown", ".mdx")
    content_types = ("text/markdown", "text/x-markdown")

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        return [Section(decode(data, name))]

    def stream(self, parts: Iterable[bytes], *, name: str | None = None) -> Iterator[Section]:
        return _text_sections(parts, name)


class CsvReader(Reader):
    """Rows as `column: value` lines, `rows_per_section` rows per section (each section
    carries `row_start`/`row_end`, 1-based data rows)."""

    kind = "csv"
    extensions = (".csv", ".tsv")
    content_types = ("text/csv", "text/tab-separated-values")

    def __init__(self, *, rows_per_section: int = 50, delimiter: str | None = None) -> None:
        self.rows_per_section = rows_per_section
        self.delimiter = delimiter

    @property
    def id(self) -> str:
        return f"CsvReader:{self.rows_per_section}:{self.delimiter}"

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        text = decode(data, name)
        delimiter = self.delimiter or ("\t" if (name or "").lower().endswith(".tsv") else None)
        if delimiter is None:
            try:
                delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            raise ReaderError(f"{name or 'content'} is not valid CSV: {exc}") from None
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if not rows:
            return []
        header, body = rows[0], rows[1:]
        sections = []
        for start in range(0, len(body), self.rows_per_section):
            lines = []
            for row in body[start:start + self.rows_per_section]:
                cells = [
                    f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {value}"
                    for i, value in enumerate(row) if value.strip()
                ]
                lines.append("; ".join(cells))
            end = min(start + self.rows_per_section, len(body))
            sections.append(Section("\n".join(lines), {"row_start": start + 1, "row_end": end}))
        return sections


class JsonReader(Reader):
    """A JSON array: one section per element (`index`); an object or scalar: one section;
    JSON Lines (`.jsonl`, `.ndjson`): one section per line (`line`)."""

    kind = "json"
    extensions = (".json", ".jsonl", ".ndjson")
    content_types = ("application/json", "application/x-ndjson", "application/jsonl")

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        text = decode(data, name)
        what = name or "content"
        if (name or "").lower().endswith((".jsonl", ".ndjson")):
            sections = []
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        sections.append(Section(_render(json.loads(line)), {"line": i}))
                    except ValueError as exc:
                        raise ReaderError(f"{what} line {i} is not valid JSON: {exc}") from None
            return sections
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ReaderError(f"{what} is not valid JSON: {exc}") from None
        if isinstance(value, list):
            return [Section(_render(item), {"index": i}) for i, item in enumerate(value)]
        return [Section(_render(value))]


def _text_sections(parts: Iterable[bytes], name: str | None) -> Iterator[Section]:
    first = True
    for text in decode_stream(parts, name):
        yield Section(text, continued=not first)
        first = False
    if first:  # no text at all: still the one (empty) section `read` gives
        yield Section("")


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2)


_SPACES = re.compile(r"\s+")


class _HtmlText(HTMLParser):
    """Visible text, headings as Markdown `#` lines so the Markdown chunker can use them."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "br", "hr", "tr",
             "table", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", "figure", "figcaption", "form"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.title: list[str] = []
        self.in_title = False
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in self.SKIP:
            self.skip += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" | ")
        elif tag in self.BLOCK:
            self.out.append("\n\n" if tag != "br" else "\n")
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in self.BLOCK:
            self.out.append("\n\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        if self.skip:
            return
        self.out.append(data if self.pre else _SPACES.sub(" ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self.out).splitlines()]
        text, blank = [], 0
        for line in lines:
            blank = blank + 1 if not line else 0
            if blank <= 1:
                text.append(line)
        return "\n".join(text).strip()


class HtmlReader(Reader):
    kind = "html"
    extensions = (".html", ".htm", ".xhtml")
    content_types = ("text/html", "application/xhtml+xml")

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        parser = _HtmlText()
        parser.feed(decode(data, name))
        parser.close()
        title = " ".join("".join(parser.title).split())
        return [Section(parser.text(), {"title": title} if title else {})]


class PdfReader(Reader):
    """One section per page (`page`, 1-based), text extracted by pypdf."""

    kind = "pdf"
    extensions = (".pdf",)
    content_types = ("application/pdf",)

    def read(self, data: bytes, *, name: str | None = None) -> list[Section]:
        try:
            import pypdf
        except ImportError:
            raise ImportError(f"reading PDF needs pypdf: {install_hint('pdf')}") from None
        try:
            pdf = pypdf.PdfReader(io.BytesIO(data))
            pages = [page.extract_text() or "" for page in pdf.pages]
        except Exception as exc:  # pypdf raises many kinds for malformed files
            raise ReaderError(f"{name or 'content'} is not a readable PDF: {exc}") from None
        return [Section(text.replace("\x00", ""), {"page": i}) for i, text in enumerate(pages, 1) if text.strip()]


READERS: tuple[Reader, ...] = (MarkdownReader(), TextReader(), CsvReader(), JsonReader(), HtmlReader(), PdfReader())


def reader_for(name: str | None = None, content_type: str | None = None, readers=READERS) -> Reader | None:
    """The reader for a file name's extension, else for a MIME content type; None when unknown."""
    ext = os.path.splitext(name or "")[1].lower()
    for r in readers:
        if ext and ext in r.extensions:
            return r
    mime = (content_type or "").split(";")[0].strip().lower()
    for r in readers:
        if mime and mime in r.content_types:
            return r
    return None
