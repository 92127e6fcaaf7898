from __future__ import annotations

import re

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge.chunking import FixedSizeChunker, MarkdownChunker, split_text
from agentkeep.knowledge.readers import Section

PROSE = " ".join(
    f"Sentence number {i} talks about topic{i % 7} and keeps going for a while." for i in range(200)
)


def words(text):
    return re.findall(r"\S+", text)


@pytest.mark.parametrize("size, overlap", [(200, 0), (200, 40), (1000, 100), (57, 20)])
def test_fixed_size_pieces_fit_cover_the_text_and_overlap(size, overlap):
    pieces = split_text(PROSE, size, overlap)
    assert len(pieces) > 1 and all(0 < len(p) <= size for p in pieces)
    joined = " ".join(pieces)
    assert all(w in joined for w in words(PROSE))  # nothing lost
    starts, pos = [], 0
    for p in pieces:  # each piece is the text's own slice, later than the one before
        pos = PROSE.find(p, pos)
        assert pos >= 0
        assert pos == 0 or PROSE[pos - 1].isspace()  # at a word start
        starts.append(pos)
        pos += 1
    for (a, sa), sb in zip(zip(pieces, starts), starts[1:]):
        assert sb > sa
        if overlap:
            assert sb < sa + len(a)  # the next piece starts inside this one
        else:
            assert sb >= sa + len(a)


def test_fixed_size_prefers_paragraph_and_sentence_breaks():
    text = "First paragraph is here.\n\nSecond paragraph follows. It has two sentences."
    assert split_text(text, 40, 0) == ["First paragraph is here.", "Second paragraph follows.", "It has two sentences."]


def test_a_word_longer_than_the_size_is_cut():
    pieces = split_text("x" * 250, 100, 10)
    assert all(len(p) <= 100 for p in pieces) and "".join(pieces).count("x") >= 250


def test_small_and_empty_texts():
    assert split_text("  short  ", 100, 10) == ["short"]
    assert split_text("   \n ", 100, 10) == []
    chunks = FixedSizeChunker(100, 10).chunk([Section("a b c", {"page": 2}), Section("", {"page": 3})])
    assert [(c.text, c.metadata) for c in chunks] == [("a b c", {"page": 2})]


@pytest.mark.parametrize("kwargs", [{"chunk_size": 10}, {"chunk_size": 100, "overlap": 60}, {"overlap": -1},
                                    {"chunk_size": "100"}])
def test_bad_sizes(kwargs):
    with pytest.raises(InvalidInputError):
        FixedSizeChunker(**kwargs)


MARKDOWN = """Intro line before any heading.

# Install

General notes.

## Linux

Use the package.

```bash
# not a heading, a shell comment
apt install thing
```

## macOS
Use brew.

Setext Title
============

Under setext.

Sub setext
----------

Under sub.

# Empty

## Child of empty

Body of child.
"""


def test_markdown_sections_follow_headings():
    chunks = MarkdownChunker(chunk_size=1000).chunk([Section(MARKDOWN, {"source": "x"})])
    got = [(c.metadata.get("heading"), c.text.splitlines()[0]) for c in chunks]
    assert got == [
        (None, "Intro line before any heading."),
        ("Install", "# Install"),
        ("Install > Linux", "## Linux"),
        ("Install > macOS", "## macOS"),
        ("Setext Title", "# Setext Title"),
        ("Setext Title > Sub setext", "## Sub setext"),
        ("Empty > Child of empty", "## Child of empty"),
    ]
    linux = chunks[2].text
    assert "# not a heading, a shell comment" in linux and "apt install thing" in linux
    assert all(c.metadata["source"] == "x" for c in chunks)


def test_a_long_markdown_section_is_split_and_keeps_its_heading():
    body = "\n\n".join(f"Paragraph {i} " + "word " * 30 for i in range(20))
    chunks = MarkdownChunker(chunk_size=300, overlap=30).chunk([Section(f"# Top\n\n## Deep\n\n{body}")])
    assert len(chunks) > 5
    assert all(c.metadata["heading"] == "Top > Deep" for c in chunks)
    assert all(c.text.startswith("## Deep") for c in chunks)
    assert all(len(c.text) <= 300 + len("## Deep\n\n") for c in chunks)


def test_markdown_without_headings_is_fixed_size():
    chunks = MarkdownChunker(chunk_size=200, overlap=0).chunk([Section(PROSE)])
    assert [c.text for c in chunks] == split_text(PROSE, 200, 0)
    assert all("heading" not in c.metadata for c in chunks)


def test_max_level_keeps_deeper_headings_inside():
    chunks = MarkdownChunker(max_level=1).chunk([Section("# A\n\ntext\n\n## B\n\nmore")])
    assert len(chunks) == 1 and chunks[0].metadata["heading"] == "A" and "## B" in chunks[0].text
