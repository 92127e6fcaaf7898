"""Chunking strategies: split a content's sections into pieces small enough to embed.

- `FixedSizeChunker(chunk_size=1000, overlap=100)`: pieces of at most `chunk_size`
  characters, cut at the last paragraph, line, sentence or word break past half the
  size, the next piece starting `overlap` characters earlier (at a word start).
- `MarkdownChunker(chunk_size=1000, overlap=100, max_level=6)`: one piece per heading
  section (headings inside fenced code are not headings; `===`/`---` underlines are), each
  carrying its heading path in metadata (`"heading": "Install > Linux"`); a section longer
  than `chunk_size` is split as above, and its continuation pieces repeat the heading line.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge.readers import Section

_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")
_SPACE = re.compile(r"\s")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_OR_QUOTE = re.compile(r"^ {0,3}([-*+>]|\d+[.)])\s")


@dataclass
class TextChunk:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def split_text(text: str, size: int, overlap: int) -> list[str]:
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    pieces: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            window = text[start:end]
            for sep in _BREAKS:
                i = window.rfind(sep, size // 2)
                if i != -1:
                    end = start + i + len(sep)
                    break
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= n:
            break
        nxt = end - overlap
        if overlap and nxt > start:
            m = _SPACE.search(text, nxt, end)
            nxt = m.end() if m else nxt
            start = nxt if start < nxt < end else end
        else:
            start = end
    return pieces


class Chunker(abc.ABC):
    @abc.abstractmethod
    def chunk(self, sections: list[Section]) -> list[TextChunk]: ...

    @property
    def id(self) -> str:
        return type(self).__name__


def _check_sizes(chunk_size: Any, overlap: Any) -> tuple[int, int]:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 20:
        raise InvalidInputError(f"chunk_size must be an integer >= 20, got {chunk_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= chunk_size // 2:
        raise InvalidInputError(f"overlap must be an integer in 0..chunk_size/2, got {overlap!r}")
    return chunk_size, overlap


class FixedSizeChunker(Chunker):
    def __init__(self, chunk_size: int = 1000, overlap: int = 100) -> None:
        self.chunk_size, self.overlap = _check_sizes(chunk_size, overlap)

    @property
    def id(self) -> str:
        return f"fixed:{self.chunk_size}:{self.overlap}"

    def chunk(self, sections: list[Section]) -> list[TextChunk]:
        return [
            TextChunk(piece, dict(s.metadata))
            for s in sections
            for piece in split_text(s.text, self.chunk_size, self.overlap)
        ]


class MarkdownChunker(Chunker):
    def __init__(self, chunk_size: int = 1000, overlap: int = 100, max_level: int = 6) -> None:
        self.chunk_size, self.overlap = _check_sizes(chunk_size, overlap)
        if isinstance(max_level, bool) or not isinstance(max_level, int) or not 1 <= max_level <= 6:
            raise InvalidInputError(f"max_level must be an integer in 1..6, got {max_level!r}")
        self.max_level = max_level

    @property
    def id(self) -> str:
        return f"markdown:{self.chunk_size}:{self.overlap}:{self.max_level}"

    def sections(self, text: str) -> list[tuple[list[str], str, str]]:
        """(heading path, heading line, section text) for each heading section, in order."""
        out: list[tuple[list[str], str, str]] = []
        path: list[tuple[int, str]] = []
        heading_line = ""
        buf: list[str] = []
        fence: str | None = None
        paragraph = False  # the previous line is paragraph text (a setext underline may follow)

        def flush() -> None:
            body = "\n".join(buf).strip()
            if body and body != heading_line.strip():
                out.append(([t for _, t in path], heading_line, body))

        for line in text.splitlines():
            if fence is not None:
                buf.append(line)
                if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                    fence = None
                paragraph = False
                continue
            m = _FENCE.match(line)
            if m:
                fence = m.group(1)
                buf.append(line)
                paragraph = False
                continue
            level, title = 0, ""
            atx = _ATX.match(line)
            setext = _SETEXT.match(line)
            if atx:
                level, title = len(atx.group(1)), (atx.group(2) or "").strip()
            elif setext and paragraph and buf:
                level, title = (1 if setext.group(1)[0] == "=" else 2), buf[-1].strip()
            if level and level <= self.max_level and title:
                if atx:
                    flush()
                    buf = [line]
                else:  # the title line already sits in buf: it starts the new section
                    buf.pop()
                    flush()
                    buf = [f"{'#' * level} {title}"]
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, title))
                heading_line = buf[0]
                paragraph = False
                continue
            buf.append(line)
            paragraph = bool(line.strip()) and not atx and not _LIST_OR_QUOTE.match(line)
        flush()
        return out

    def chunk(self, sections: list[Section]) -> list[TextChunk]:
        chunks: list[TextChunk] = []
        for s in sections:
            for path, heading, body in self.sections(s.text):
                meta = dict(s.metadata)
                if path:
                    meta["heading"] = " > ".join(path)
                pieces = split_text(body, self.chunk_size, self.overlap)
                for i, piece in enumerate(pieces):
                    if i and heading:  # a continuation keeps its heading for context
                        piece = f"{heading.strip()}\n\n{piece}"
                    chunks.append(TextChunk(piece, dict(meta)))
        return chunks
