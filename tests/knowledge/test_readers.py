from __future__ import annotations

import codecs
import importlib.util
import json

import pytest

from agentkeep.knowledge.readers import (
    CsvReader,
    HtmlReader,
    JsonReader,
    MarkdownReader,
    PdfReader,
    ReaderError,
    TextReader,
    reader_for,
)


def test_text_encodings():
    r = TextReader()
    assert r.read("héllo".encode())[0].text == "héllo"
    assert r.read(codecs.BOM_UTF8 + "bom".encode())[0].text == "bom"
    assert r.read("utf16 ü".encode("utf-16"))[0].text == "utf16 ü"
    assert r.read(b"nul\x00byte")[0].text == "nulbyte"
    with pytest.raises(ReaderError, match=r"not UTF-8 text \(byte b'\\xff' at offset 2\)"):
        r.read(b"ab\xff\xfe", name="x.txt")


def test_markdown_is_kept_as_written():
    assert MarkdownReader().read(b"# T\n\nbody")[0].text == "# T\n\nbody"


def test_csv_rows_become_column_value_lines():
    data = "name,team,notes\nAda,core,\"likes, commas\"\nBob,ops,\n\n".encode()
    [section] = CsvReader().read(data, name="people.csv")
    assert section.text == "name: Ada; team: core; notes: likes, commas\nname: Bob; team: ops"
    assert section.metadata == {"row_start": 1, "row_end": 2}
    rows = "a\tb\n" + "".join(f"{i}\tx{i}\n" for i in range(120))
    sections = CsvReader(rows_per_section=50).read(rows.encode(), name="t.tsv")
    assert [s.metadata for s in sections] == [
        {"row_start": 1, "row_end": 50}, {"row_start": 51, "row_end": 100}, {"row_start": 101, "row_end": 120}]
    assert sections[0].text.splitlines()[0] == "a: 0; b: x0"
    assert CsvReader().read(b"") == []


def test_json_arrays_objects_and_lines():
    sections = JsonReader().read(json.dumps([{"q": "a"}, "plain", 3]).encode(), name="x.json")
    assert [s.metadata for s in sections] == [{"index": 0}, {"index": 1}, {"index": 2}]
    assert json.loads(sections[0].text) == {"q": "a"} and sections[1].text == "plain"
    [one] = JsonReader().read(b'{"k": "\\u00fc"}', name="x.json")
    assert json.loads(one.text) == {"k": "ü"} and "ü" in one.text
    lines = JsonReader().read(b'{"a": 1}\n\n{"a": 2}\n', name="x.jsonl")
    assert [s.metadata for s in lines] == [{"line": 1}, {"line": 3}]
    with pytest.raises(ReaderError, match="x.json is not valid JSON"):
        JsonReader().read(b"{nope", name="x.json")
    with pytest.raises(ReaderError, match="line 2"):
        JsonReader().read(b'{"a": 1}\n{bad\n', name="x.jsonl")


def test_html_keeps_visible_text_and_headings():
    html = b"""<html><head><title>The  Page</title><style>p{}</style></head><body>
    <script>var x = "hidden";</script><h1>Main</h1><p>First <b>bold</b>
    paragraph.</p><h2>Sub</h2><ul><li>one</li><li>two &amp; more</li></ul><pre>keep   spacing</pre></body></html>"""
    [section] = HtmlReader().read(html)
    assert section.metadata == {"title": "The Page"}
    assert "hidden" not in section.text and "p{}" not in section.text
    assert "# Main" in section.text and "## Sub" in section.text
    assert "First bold paragraph." in section.text and "- two & more" in section.text
    assert "keep   spacing" in section.text


@pytest.mark.skipif(importlib.util.find_spec("pypdf") is not None, reason="pypdf is installed")
def test_pdf_without_pypdf_names_the_extra():
    with pytest.raises(ImportError, match=r"agentkeep\[pdf\]"):
        PdfReader().read(b"%PDF-1.4")


def text_pdf(pages: list[str]) -> bytes:
    """A minimal PDF with one line of Helvetica text per page (offsets computed, so any
    conforming reader parses it)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_pages_become_sections():
    pytest.importorskip("pypdf", reason="needs agentkeep[pdf]")
    sections = PdfReader().read(text_pdf(["Rotate API keys every 90 days.", "", "Refunds take ten days."]))
    assert [(s.text.strip(), s.metadata) for s in sections] == [
        ("Rotate API keys every 90 days.", {"page": 1}), ("Refunds take ten days.", {"page": 3}),
    ]  # the empty page 2 gives no section
    with pytest.raises(ReaderError, match="not a readable PDF"):
        PdfReader().read(b"%PDF-1.4 truncated", name="x.pdf")


def test_reader_for_extension_then_content_type():
    assert isinstance(reader_for("a/b/README.MD"), MarkdownReader)
    assert isinstance(reader_for("x.tsv"), CsvReader)
    assert isinstance(reader_for("x.ndjson"), JsonReader)
    assert isinstance(reader_for("x.pdf"), PdfReader)
    assert isinstance(reader_for(None, "text/html; charset=utf-8"), HtmlReader)
    assert isinstance(reader_for("page", "application/json"), JsonReader)
    assert reader_for("x.bin") is None and reader_for("x.bin", "application/octet-stream") is None
