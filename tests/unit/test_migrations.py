"""Schema management on SQLite: additive upgrades keep every row, a newer stored schema is
refused, and concurrent first boots end with one set of tables and versions."""

import sqlite3

import pytest

from agentkeep.db import Session
from agentkeep.db import tables as tables_module
from agentkeep.db.errors import SchemaError
from agentkeep.db.sqlite import SqliteDb
from tests.processes import run_together
from tests.upgrades import CURRENT, NEXT, ORIGINAL, upgraded_specs


def test_additive_upgrade_keeps_every_row(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    with SqliteDb(db_file=path) as db:
        ids = [db.upsert_session(Session(user_id=f"u{i % 3}", state={"i": i})).session_id for i in range(50)]
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    with SqliteDb(db_file=path) as db:
        plan = db.migrate(dry_run=True)
        assert "add column agentkeep_sessions.color" in plan
        assert any(step.startswith("create index ix_agentkeep_sessions_user_id_color") for step in plan)
        assert f"record sessions schema version {NEXT}" in plan
        assert db.schema_status()["sessions"] == {"version": CURRENT, "expected": NEXT, "up_to_date": False}
        assert db.migrate() == plan
        assert db.migrate(dry_run=True) == []
        assert db.schema_status()["sessions"]["up_to_date"] is True
        assert [db.get_session(i).state["i"] for i in ids] == list(range(50))
    con = sqlite3.connect(path)
    assert "color" in [r[1] for r in con.execute("PRAGMA table_info(agentkeep_sessions)")]
    assert con.execute("SELECT count(*) FROM agentkeep_sessions").fetchone()[0] == 50
    con.close()


def test_first_use_applies_pending_upgrades(tmp_path, monkeypatch):
    path = tmp_path / "auto.db"
    with SqliteDb(db_file=path) as db:
        db.upsert_session(Session(user_id="u"))
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    with SqliteDb(db_file=path) as db:
        assert db.list_sessions(user_id="u").items  # first call migrates
        assert db.schema_status()["sessions"]["version"] == NEXT


def test_a_newer_stored_schema_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "new.db"
    monkeypatch.setattr(tables_module, "default_specs", upgraded_specs)
    with SqliteDb(db_file=path) as db:
        db.create_tables()
    monkeypatch.setattr(tables_module, "default_specs", ORIGINAL)
    with SqliteDb(db_file=path) as db:
        with pytest.raises(SchemaError, match="newer"):
            db.list_sessions()
        with pytest.raises(SchemaError):
            db.migrate(dry_run=True)


def _boot(path, barrier):
    barrier.wait()
    SqliteDb(db_file=path).create_tables()


def test_concurrent_first_boot(tmp_path):
    path = str(tmp_path / "race.db")
    run_together(_boot, (path,), 4)
    con = sqlite3.connect(path)
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert len(names) == len(set(names))
    versions = con.execute("SELECT key, count(*) FROM agentkeep_meta WHERE key LIKE 'version:%' GROUP BY key").fetchall()
    con.close()
    assert len(versions) == len(tables_module.EXPORT_TABLES)
    assert all(n == 1 for _, n in versions)
