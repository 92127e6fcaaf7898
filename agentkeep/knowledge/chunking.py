"""Chunking strategies: split a content's sections into pieces small enough to embed.

- `FixedSizeChunker(chunk_size=1000, overlap=100)`: pieces of at most `chunk_size`
  characters, cut at the last paragraph, line, sentence or word break past half the
  size, the next piece starting `overlap` characters earlier (at a word start).
- `MarkdownChunker(chunk_size=1000, overlap=100, max_level=6)`: one piece per heading
  section (headings inside fenced code are not headings; `===`/`---` underlines are), each
  carrying its heading path in metadata (`"heading": "Install > Linux"`); a section longer
  than `chunk_size` is split as above, and its continuation pieces repeat the heading line.

Both also cut text that arrives in parts (`Chunker.stream`, for a streamed file): the chunks
are those of the whole text, and only about one chunk (a Markdown section's current line run)
is held at a time.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

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
    """Pieces of at most `size` characters of `text`, stripped (see the module docstring)."""
    splitter = TextSplitter(size, overlap)
    return splitter.feed(text) + splitter.finish()


class TextSplitter:
    """`split_text` over a text that arrives in parts: `feed(part)` returns the pieces that
    are complete, `finish()` the rest. The pieces are those of `split_text` on the whole text,
    and only about `size` characters are held between calls, so a text of any length can be
    split with bounded memory."""

    def __init__(self, size: int, overlap: int) -> None:
        self.size, self.overlap = size, overlap
        self._buf = ""  # the text from the start of the next piece on (or a bit before it)
        self._start = 0  # the next piece's offset in _buf
        self._begun = False  # leading whitespace is behind us

    def feed(self, text: str) -> list[str]:
        if not self._begun:
            text = text.lstrip()
            if not text:
                return []
            self._begun = True
        self._buf = self._buf[self._start:] + text
        self._start = 0
        return self._cut(final=False)

    def finish(self) -> list[str]:
        self._buf = self._buf.rstrip()
        pieces = self._cut(final=True)
        self._buf, self._start, self._begun = "", 0, False
        return pieces

    def _cut(self, final: bool) -> list[str]:
        text, size, overlap = self._buf, self.size, self.overlap
        n = len(text)
        # before the end, a cut is only safe where the stripped whole text surely goes on past it
        known = n if final else len(text.rstrip())
        pieces: list[str] = []
        start = self._start
        while start < n and (final or start + size < known):
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
                start = n
                break
            nxt = end - overlap
            if overlap and nxt > start:
                m = _SPACE.search(text, nxt, end)
                nxt = m.end() if m else nxt
                start = nxt if start < nxt < end else end
            else:
                start = end
        self._start = start
        return pieces


_TERMINATORS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _unterminated(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(_TERMINATORS) else line


def lines(parts: Iterable[str]) -> Iterator[str]:
    """The lines of the text made of `parts`, as `str.splitlines()` cuts the whole text."""
    rest = ""
    for text in parts:
        if not text:
            continue
        found = (rest + text).splitlines(keepends=True)
        rest = found.pop()
        if rest.endswith(_TERMINATORS) and not rest.endswith("\r"):  # a "\r" may be half of "\r\n"
            found.append(rest)
            rest = ""
        for line in found:
            yield _unterminated(line)
    if rest:
        yield _unterminated(rest)


def logical_sections(sections: Iterable[Section]) -> Iterator[tuple[dict[str, Any], Iterator[str]]]:
    """(metadata, text parts) per section, a section's `continued` followers joined to it."""
    it = iter(sections)
    head = next(it, None)
    while head is not None:
        following: list[Section] = []

        def parts(first: Section = head) -> Iterator[str]:
            yield first.text
            for s in it:
                if not s.continued:
                    following.append(s)
                    return
                yield s.text

        texts = parts()
        yield head.metadata, texts
        for _ in texts:  # what the caller left unread
            pass
        head = following[0] if following else None


class Chunker(abc.ABC):
    @abc.abstractmethod
    def chunk(self, sections: list[Section]) -> list[TextChunk]: ...

    def stream(self, sections: Iterable[Section]) -> Iterator[TextChunk]:
        """The chunks of sections that arrive one by one (a section marked `continued` goes on
        with the text of the one before). This default joins each section's parts and chunks it
        whole; the chunkers here cut as the text comes, holding about one chunk at a time."""
        for metadata, parts in logical_sections(sections):
            yield from self.chunk([Section("".join(parts), dict(metadata))])

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
        return list(self.stream(sections))

    def stream(self, sections: Iterable[Section]) -> Iterator[TextChunk]:
        for metadata, parts in logical_sections(sections):
            splitter = TextSplitter(self.chunk_size, self.overlap)
            for text in parts:
                yield from (TextChunk(piece, dict(metadata)) for piece in splitter.feed(text))
            yield from (TextChunk(piece, dict(metadata)) for piece in splitter.finish())


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
        for path, heading, body in self._sections(text.splitlines()):
            text = "\n".join(body).strip()
            if text and text != heading.strip():
                out.append((path, heading, text))
        return out

    def _sections(self, text_lines: Iterable[str]) -> Iterator[tuple[list[str], str, Iterator[str]]]:
        """(heading path, heading line, the section's lines from its heading line on) per
        section, lazily: a section's lines are read as the caller reads them."""
        events = self._events(text_lines)
        section = ([], "")
        while section is not None:
            following: list[tuple[list[str], str]] = []

            def body() -> Iterator[str]:
                for kind, value in events:
                    if kind == "start":
                        following.append(value)
                        return
                    yield value

            text = body()
            yield section[0], section[1], text
            for _ in text:  # what the caller left unread
                pass
            section = following[0] if following else None

    def _events(self, text_lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """("start", (heading path, heading line)) where a heading section starts, ("line", line)
        for every line of a section (its heading line first). A line is held back until the
        next one is seen: a setext underline turns it into the next section's heading."""
        path: list[tuple[int, str]] = []
        held: str | None = None  # the previous line, still unsent
        fence: str | None = None
        paragraph = False  # the previous line is paragraph text (a setext underline may follow)

        for line in text_lines:
            if fence is not None or _FENCE.match(line):
                if fence is None:
                    fence = _FENCE.match(line).group(1)
                elif line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                    fence = None
                if held is not None:
                    yield "line", held
                held, paragraph = line, False
                continue
            level, title = 0, ""
            atx = _ATX.match(line)
            setext = _SETEXT.match(line)
            if atx:
                level, title = len(atx.group(1)), (atx.group(2) or "").strip()
            elif setext and paragraph and held is not None:
                level, title = (1 if setext.group(1)[0] == "=" else 2), held.strip()
            if level and level <= self.max_level and title:
                if atx:
                    if held is not None:
                        yield "line", held
                    heading = line
                else:  # the title line was held back: it starts the new section
                    heading = f"{'#' * level} {title}"
                held = None
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, title))
                yield "start", ([t for _, t in path], heading)
                yield "line", heading
                paragraph = False
                continue
            if held is not None:
                yield "line", held
            held = line
            paragraph = bool(line.strip()) and not atx and not _LIST_OR_QUOTE.match(line)
        if held is not None:
            yield "line", held

    def chunk(self, sections: list[Section]) -> list[TextChunk]:
        return list(self.stream(sections))

    def stream(self, sections: Iterable[Section]) -> Iterator[TextChunk]:
        for metadata, parts in logical_sections(sections):
            for path, heading, body in self._sections(lines(parts)):
                meta = dict(metadata)
                if path:
                    meta["heading"] = " > ".join(path)
                yield from self._pieces(meta, heading, body)

    def _pieces(self, meta: dict[str, Any], heading: str, body: Iterator[str]) -> Iterator[TextChunk]:
        """The chunks of one section, its lines fed to a splitter in runs of about 64 kB; none
        when the section is its heading line alone."""
        splitter = TextSplitter(self.chunk_size, self.overlap)
        held: list[str] = []  # pieces cut before the section was seen to hold more than its heading
        run: list[str] = []
        size, first, bodied, count = 0, True, not heading, 0

        def emit(pieces: list[str]) -> Iterator[TextChunk]:
            nonlocal count
            for piece in pieces:
                if count and heading:  # a continuation keeps its heading for context
                    piece = f"{heading.strip()}\n\n{piece}"
                count += 1
                yield TextChunk(piece, dict(meta))

        for i, line in enumerate(body):
            if i and not bodied and line.strip():
                bodied = True
            run.append(line if first else "\n" + line)
            size += len(line) + 1
            first = False
            if size >= 65536:
                held += splitter.feed("".join(run))
                run, size = [], 0
                if bodied:
                    yield from emit(held)
                    held = []
        held += splitter.feed("".join(run)) + splitter.finish()
        if bodied:
            yield from emit(held)
