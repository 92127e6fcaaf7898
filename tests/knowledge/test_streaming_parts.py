"""Text that arrives in parts is cut as the whole text is: bytes decode to the same text (and
the same error), lines, fixed-size pieces and Markdown sections come out the same wherever
the parts are cut."""

from __future__ import annotations

import random

import pytest

from agentkeep.knowledge.chunking import FixedSizeChunker, MarkdownChunker, TextSplitter, lines, split_text
from agentkeep.knowledge.readers import MarkdownReader, ReaderError, Section, TextReader, decode, decode_stream

WORDS = ["alpha", "beta", "gamma.", "delta,", "eps\n", "\n\n", "zeta!", "# Head", "x" * 50, "  ", "\r\n", "===",
         "---", "```", "~~~", "## Sub", "- item", "\r", "Title\n===\n"]


def texts(seed, count=150):
    rnd = random.Random(seed)
    for _ in range(count):
        yield rnd, "".join(rnd.choice(WORDS) + rnd.choice([" ", "", "\n"]) for _ in range(rnd.randint(0, 300)))


def cut(rnd, value):
    """`value` in random parts (some empty)."""
    points = sorted(rnd.sample(range(len(value) + 1), min(len(value), rnd.randint(0, 10))))
    return [value[a:b] for a, b in zip([0] + points, points + [len(value)])]


@pytest.mark.parametrize("seed", range(4))
def test_pieces_lines_and_sections_do_not_depend_on_the_parts(seed):
    for rnd, text in texts(seed):
        size = rnd.choice([20, 57, 100, 300])
        overlap = rnd.choice([0, size // 4, size // 2])
        splitter = TextSplitter(size, overlap)
        fed = [p for part in cut(rnd, text) for p in splitter.feed(part)] + splitter.finish()
        assert fed == split_text(text, size, overlap)
        assert list(lines(cut(rnd, text))) == text.splitlines()
        for chunker in (MarkdownChunker(size, overlap), MarkdownChunker(size, overlap, 2), FixedSizeChunker(size, overlap)):
            whole = chunker.chunk([Section(text, {"page": 1}), Section("tail words", {"page": 2})])
            parts = [Section(t, {"page": 1}, continued=i > 0) for i, t in enumerate(cut(rnd, text) or [""])]
            streamed = list(chunker.stream(parts + [Section("tail words", {"page": 2})]))
            assert [(c.text, c.metadata) for c in streamed] == [(c.text, c.metadata) for c in whole]


def test_a_splitter_holds_about_one_piece():
    splitter = TextSplitter(100, 10)
    for _ in range(2000):
        splitter.feed("some words go here. " * 50)
        assert len(splitter._buf) - splitter._start <= 1100


@pytest.mark.parametrize("seed", range(3))
def test_bytes_decode_in_parts_as_whole(seed):
    rnd = random.Random(seed)
    for _ in range(500):
        text = "héllo wörld € 𝄞 ok\x00x" * rnd.randint(0, 3)
        data = text.encode(rnd.choice(["utf-8", "utf-8-sig", "utf-16"]))
        if data and rnd.random() < 0.4:
            i = rnd.randrange(len(data) + 1)
            data = data[:i] + rnd.choice([b"\xff", b"\xc3", b"\xe2\x82"]) + data[i:]
        try:
            want = decode(data, "f.txt")
        except ReaderError as exc:
            want = str(exc)
        try:
            got = "".join(decode_stream(cut(rnd, data), "f.txt"))
        except ReaderError as exc:
            got = str(exc)
        assert got == want


def test_the_offset_of_a_bad_byte_counts_the_bom():
    with pytest.raises(ReaderError, match=r"byte b'\\xff' at offset 6"):
        decode(b"\xef\xbb\xbfabc\xffdef")
    with pytest.raises(ReaderError, match=r"byte b'\\xff' at offset 6"):
        list(decode_stream([b"\xef\xbb", b"\xbfab", b"c\xffdef"]))


def test_text_readers_stream_one_section_in_parts():
    for reader in (TextReader(), MarkdownReader()):
        sections = list(reader.stream([b"one ", b"two\n", b"three"]))
        assert "".join(s.text for s in sections) == "one two\nthree"
        assert [s.continued for s in sections] == [False] + [True] * (len(sections) - 1)
        assert [s.text for s in reader.stream([])] == [""]
