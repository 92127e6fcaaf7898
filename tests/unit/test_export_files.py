"""export_jsonl/import_jsonl take a path, a text file or a binary file, and leave a
caller's file open."""

import gc
import io

from agentkeep.db import Session
from agentkeep.db.in_memory import InMemoryDb


def test_binary_file_objects_round_trip_and_stay_open():
    src = InMemoryDb()
    sessions = [src.upsert_session(Session(user_id="u", name=f"s{i}")) for i in range(3)]
    buf = io.BytesIO()
    assert src.export_jsonl(buf, tables=["sessions"]) == 3
    gc.collect()
    assert not buf.closed
    buf.seek(0)
    dst = InMemoryDb()
    assert dst.import_jsonl(buf) == 3
    gc.collect()
    assert not buf.closed
    assert [dst.get_session(s.session_id) for s in sessions] == sessions


def test_text_file_objects_round_trip():
    src = InMemoryDb()
    s = src.upsert_session(Session(user_id="u", state={"k": "\x00é"}))
    buf = io.StringIO()
    src.export_jsonl(buf)
    buf.seek(0)
    dst = InMemoryDb()
    assert dst.import_jsonl(buf, on_conflict="error") == 1
    assert dst.get_session(s.session_id) == s
