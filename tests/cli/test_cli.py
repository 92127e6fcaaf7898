"""The `agentkeep` command and the demo, against SQLite (and JsonDb) files in tmp dirs."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeep.cli import app
from agentkeep.db import Run, Session, UserMemory, connect, new_id
from agentkeep.demo import TABLES, count_rows, fill

UTC = dt.timezone.utc


@pytest.fixture
def runner() -> CliRunner:
    # No AGENTKEEP_DB_URL from the caller's environment leaks into these tests.
    return CliRunner(env={"AGENTKEEP_DB_URL": None})


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # path is absolute, so this is sqlite:////abs/path


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "keep.db")


@pytest.fixture
def filled_url(db_url: str) -> str:
    db = connect(db_url)
    try:
        fill(db)
    finally:
        db.close()
    return db_url


def rows(url: str) -> dict[str, int]:
    db = connect(url)
    try:
        return count_rows(db)
    finally:
        db.close()


def invoke(runner: CliRunner, *args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def _all(list_fn, *args, **kwargs):
    items, cursor = [], None
    while True:
        page = list_fn(*args, limit=1000, cursor=cursor, **kwargs)
        items.extend(page.items)
        cursor = page.next_cursor
        if not cursor or not page.items:
            return items


def snapshot(url: str) -> dict[str, list[dict]]:
    """Every record the db holds, through the public API, in a backend-neutral order."""
    db = connect(url)
    try:
        sessions = _all(db.list_sessions)
        traces = _all(db.list_traces)
        schedules = _all(db.list_schedules)

        def dump(items, key):
            return sorted((i.model_dump(mode="json") for i in items), key=lambda d: json.dumps([d[k] for k in key]))

        return {
            "sessions": dump(sessions, ["session_id"]),
            "runs": dump([r for s in sessions for r in _all(db.list_runs, s.session_id)], ["run_id"]),
            "memories": dump(_all(db.list_memories), ["memory_id"]),
            "knowledge": dump(_all(db.list_knowledge), ["id"]),
            "traces": dump(traces, ["trace_id"]),
            "spans": dump([sp for t in traces for sp in db.get_spans(t.trace_id)], ["span_id"]),
            "approvals": dump(_all(db.list_approvals), ["id"]),
            "schedules": dump(schedules, ["id"]),
            "schedule_runs": dump([r for s in schedules for r in _all(db.list_schedule_runs, s.id)], ["id"]),
            "metrics": dump(
                db.get_metrics() + [r for u in {s.user_id for s in sessions if s.user_id} for r in db.get_metrics(user_id=u)],
                ["date", "user_id"],
            ),
            "eval_runs": dump(_all(db.list_eval_runs), ["id"]),
        }
    finally:
        db.close()


# --------------------------------------------------------------------------- help and startup


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("tables", "migrate", "export", "import", "purge-expired", "demo"):
        assert command in result.output


def test_importing_the_cli_imports_no_backend() -> None:
    code = (
        "import sys, agentkeep.cli\n"
        "loaded = [m for m in ('sqlalchemy', 'fsspec', 'agentkeep.db.sqlite', 'agentkeep.db.json',"
        " 'agentkeep.db.in_memory') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- tables and migrate


def test_tables_lists_every_table_with_its_version(runner: CliRunner, filled_url: str) -> None:
    db = connect(filled_url)
    status = db.schema_status()
    db.close()
    for table in TABLES:
        assert table in status, f"schema_status() has no {table!r}: {sorted(status)}"

    result = invoke(runner, "tables", "--db", filled_url)
    assert result.exit_code == 0, result.output
    for table, info in status.items():
        assert table in result.output
        assert info["up_to_date"] is True
    assert "yes" in result.output and "not up to date" not in result.output

    as_json = invoke(runner, "tables", "--db", filled_url, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == json.loads(json.dumps(status, default=str))


def test_migrate_dry_run_changes_nothing_then_migrate_is_idempotent(runner: CliRunner, db_url: str) -> None:
    db = connect(db_url)
    before = db.schema_status()
    planned = db.migrate(dry_run=True)
    db.close()
    if all(info["version"] is None for info in before.values()):
        assert "No tables yet" in invoke(runner, "tables", "--db", db_url).output

    result = invoke(runner, "migrate", "--db", db_url, "--dry-run")
    assert result.exit_code == 0, result.output
    if planned:
        assert "would run:" in result.output
        for step in planned:
            assert step in result.output
    else:
        assert "up to date" in result.output
    db = connect(db_url)
    assert db.schema_status() == before, "migrate --dry-run changed the schema"
    db.close()

    result = invoke(runner, "migrate", "--db", db_url)
    assert result.exit_code == 0, result.output
    db = connect(db_url)
    status = db.schema_status()
    db.close()
    assert status and all(info["up_to_date"] for info in status.values()), status

    again = invoke(runner, "migrate", "--db", db_url)
    assert again.exit_code == 0
    assert again.output.strip() == "up to date"


def test_db_url_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "from-env.db"
    runner = CliRunner(env={"AGENTKEEP_DB_URL": sqlite_url(path)})
    result = runner.invoke(app, ["migrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert path.exists()
    db = connect(sqlite_url(path))
    assert all(info["up_to_date"] for info in db.schema_status().values())
    db.close()


# --------------------------------------------------------------------------- export and import


@pytest.mark.parametrize("target", ["sqlite", "json"])
def test_export_then_import_gives_identical_records(
    runner: CliRunner, filled_url: str, tmp_path: Path, target: str
) -> None:
    dump = tmp_path / "dump.jsonl"
    result = invoke(runner, "export", str(dump), "--db", filled_url)
    assert result.exit_code == 0, result.output
    exported = int(result.output.split()[1])
    assert exported > 0
    lines = [line for line in dump.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert len(lines) >= exported

    other = sqlite_url(tmp_path / "other.db") if target == "sqlite" else f"json://{tmp_path / 'other-json'}"
    result = invoke(runner, "import", str(dump), "--db", other)
    assert result.exit_code == 0, result.output
    assert f"imported {exported} record(s)" in result.output

    source, copy = snapshot(filled_url), snapshot(other)
    for table in TABLES:
        assert len(source[table]) > 0, table
        assert len(copy[table]) == len(source[table]), table
        assert copy[table] == source[table], f"{table} differs after export/import"


def test_export_selected_tables_to_stdout(runner: CliRunner, filled_url: str, tmp_path: Path) -> None:
    result = invoke(runner, "export", "-", "--db", filled_url, "--tables", "memories, knowledge")
    assert result.exit_code == 0, result.output
    count = int(result.stderr.split()[1])
    counts = rows(filled_url)
    assert count == counts["memories"] + counts["knowledge"]
    # stdout is only the dump (a header line, then one record per line); the summary is on stderr.
    dumped = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    records = [d for d in dumped if "table" in d]
    assert len(records) == count
    assert {d["table"] for d in records} == {"memories", "knowledge"}

    # The dump from stdout imports (from stdin) into another db: just those two tables.
    other = sqlite_url(tmp_path / "partial.db")
    result = invoke(runner, "import", "-", "--db", other, input=result.stdout)
    assert result.exit_code == 0, result.output
    assert f"imported {count} record(s)" in result.output
    copied = rows(other)
    assert copied["memories"] == counts["memories"] and copied["knowledge"] == counts["knowledge"]
    assert copied["sessions"] == copied["runs"] == copied["eval_runs"] == 0


def test_import_on_conflict(runner: CliRunner, filled_url: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    assert invoke(runner, "export", str(dump), "--db", filled_url).exit_code == 0
    before = rows(filled_url)

    # Importing a db's own dump back: skip and replace leave the same rows, error refuses.
    assert invoke(runner, "import", str(dump), "--db", filled_url, "--on-conflict", "skip").exit_code == 0
    assert rows(filled_url) == before
    assert invoke(runner, "import", str(dump), "--db", filled_url, "--on-conflict", "replace").exit_code == 0
    assert rows(filled_url) == before

    result = invoke(runner, "import", str(dump), "--db", filled_url, "--on-conflict", "error")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert rows(filled_url) == before

    bogus = invoke(runner, "import", str(dump), "--db", filled_url, "--on-conflict", "merge")
    assert bogus.exit_code == 2
    assert "merge" in bogus.output


# --------------------------------------------------------------------------- purge-expired


def test_purge_expired_deletes_only_what_expired(runner: CliRunner, db_url: str) -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    future = dt.datetime.now(UTC) + dt.timedelta(days=1)
    db = connect(db_url)
    gone = db.upsert_session(Session(user_id="u1", name="old", expires_at=past))
    db.append_run(Run(session_id=gone.session_id, user_id="u1", input="hi"))
    db.append_run(Run(session_id=gone.session_id, user_id="u1", input="again"))
    kept = db.upsert_session(Session(user_id="u1", name="fresh", expires_at=future))
    old_memory = db.upsert_memory(UserMemory(user_id="u1", memory="stale", expires_at=past))
    new_memory = db.upsert_memory(UserMemory(user_id="u1", memory="current"))
    db.close()

    result = invoke(runner, "purge-expired", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts.get("sessions") == 1
    assert counts.get("runs") == 2  # cascaded rows are counted under their own table
    assert counts.get("memories") == 1

    db = connect(db_url)
    assert db.get_session(gone.session_id) is None
    assert db.get_session(kept.session_id) is not None
    assert db.get_memory(old_memory.memory_id) is None
    assert db.get_memory(new_memory.memory_id) is not None
    db.close()

    again = invoke(runner, "purge-expired", "--db", db_url)
    assert again.exit_code == 0
    assert "nothing expired" in again.output


def test_purge_expired_prints_a_table(runner: CliRunner, db_url: str) -> None:
    db = connect(db_url)
    db.upsert_memory(UserMemory(user_id="u1", memory="stale", expires_at=dt.datetime.now(UTC) - dt.timedelta(seconds=5)))
    db.close()
    result = invoke(runner, "purge-expired", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "memories" in result.output and "1 row(s) deleted" in result.output


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("command", [["tables"], ["migrate"], ["purge-expired"], ["export", "out.jsonl"]])
@pytest.mark.parametrize("url", ["not-a-url", "nosuchscheme://x"])
def test_bad_url_is_one_line_and_exit_2(runner: CliRunner, command: list[str], url: str, tmp_path: Path) -> None:
    result = invoke(runner, *command, "--db", url)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and url in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_import_file_is_exit_2(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = invoke(runner, "import", str(missing), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: no such file: {missing}"
    assert "Traceback" not in result.output


def test_export_into_missing_directory_is_exit_2(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    result = invoke(runner, "export", str(tmp_path / "no" / "dir" / "dump.jsonl"), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no such directory")


def test_db_error_is_exit_2(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n", encoding="utf-8")
    result = invoke(runner, "import", str(bad), "--db", db_url)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- demo


def test_demo_fills_every_table_and_reruns(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "demo.db")
    result = invoke(runner, "demo", "--db", url)
    assert result.exit_code == 0, result.output
    for table in TABLES:
        assert table in result.output
    assert "Schema status" in result.output

    db = connect(url)
    first = count_rows(db)
    status = db.schema_status()
    db.close()
    empty = [table for table in TABLES if first[table] <= 0]
    assert not empty, f"the demo left these tables empty: {empty}"
    assert all(info["up_to_date"] for info in status.values())

    again = invoke(runner, "demo", "--db", url)
    assert again.exit_code == 0, again.output
    db = connect(url)
    second = count_rows(db)
    db.close()
    for table in TABLES:
        if table == "metrics":  # one row per (day, user): a rerun on the same day updates them
            assert second[table] >= first[table]
        else:
            assert second[table] > first[table], table


def test_demo_runs_on_json_and_in_memory() -> None:
    for url in (f"json+memory://demo-{new_id()}", "memory://"):
        db = connect(url)
        try:
            fill(db)
            counts = count_rows(db)
        finally:
            db.close()
        assert all(counts[t] > 0 for t in TABLES), (url, counts)


def test_python_m_agentkeep_demo(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentkeep.demo", "--db", sqlite_url(tmp_path / "m.db")],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Schema status" in proc.stdout
    assert (tmp_path / "m.db").exists()


def test_demo_default_location(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentkeep.demo"], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "agentkeep-demo.db").exists()
    assert not (tmp_path / "agentkeep.db").exists()
