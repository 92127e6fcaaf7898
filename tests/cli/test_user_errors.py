"""The command line on a newcomer's first hour: every error a user can act on is one line on
stderr and exit status 2 (a malformed URL, a server that is not there, an unknown role or
database, a missing directory), `--version`, `--db` before the command, `import` counting
what it skipped, and the demo saying whether it created its db or appended to one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeep.cli import app
from tests.conftest import require
from tests.services.process import free_port

SECRET = "s3cret"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"AGENTKEEP_DB_URL": None})


closed_port = free_port  # nothing listens on it


def one_line_error(result) -> str:
    """The single stderr line of a run that failed as a user error should."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and SECRET not in result.output
    return lines[0]


def test_sqlite_url_with_two_slashes(runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_line_error(runner.invoke(app, ["tables", "--db", "sqlite://agentkeep.db"]))
    assert "sqlite:///" in line  # it shows the form that works
    assert list(tmp_path.iterdir()) == []


SERVERS = {
    "postgres": ("psycopg", "postgresql://u:{s}@127.0.0.1:{p}/db"),
    "mysql": ("pymysql", "mysql+pymysql://root:{s}@127.0.0.1:{p}/db"),
    "singlestore": ("pymysql", "singlestoredb://root:{s}@127.0.0.1:{p}/db"),
    "mongo": ("pymongo", "mongodb://u:{s}@127.0.0.1:{p}/db?serverSelectionTimeoutMS=500"),
    "redis": ("redis", "redis://:{s}@127.0.0.1:{p}/0"),
    "dynamodb": ("boto3", "dynamodb://us-east-1/ak?endpoint_url=http://127.0.0.1:{p}&connect_timeout=1"),
    "firestore": ("google.cloud.firestore", "firestore://p?emulator_host=127.0.0.1:{p}&connect_timeout=1"),
}


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("command", [["tables"], ["migrate"]])
def test_a_server_that_is_not_there(runner: CliRunner, server: str, command: list[str]) -> None:
    driver, url = SERVERS[server]
    pytest.importorskip(driver)
    port = closed_port()
    line = one_line_error(runner.invoke(app, [*command, "--db", url.format(s=SECRET, p=port)]))
    assert line.startswith("error: cannot connect to") and str(port) in line


@pytest.mark.server
def test_postgres_unknown_role_and_database(runner: CliRunner) -> None:
    pytest.importorskip("psycopg")
    import sqlalchemy as sa

    from tests.conformance.backends import _postgres_check, postgres_url

    require(_postgres_check())
    base = sa.make_url(postgres_url()).set(password=SECRET)
    for url, name in ((base.set(username="agentkeep_no_such_role"), "agentkeep_no_such_role"),
                      (base.set(database="agentkeep_no_such_db"), "agentkeep_no_such_db")):
        result = runner.invoke(app, ["tables", "--db", url.render_as_string(hide_password=False)])
        assert name in one_line_error(result)


@pytest.mark.server
def test_mariadb_unknown_database(runner: CliRunner) -> None:
    pytest.importorskip("pymysql")
    from tests.services import mysql

    require(mysql.reachable(mysql.server_url()))
    url = mysql.with_database(mysql.server_url(), "agentkeep_no_such_db")
    assert "agentkeep_no_such_db" in one_line_error(runner.invoke(app, ["migrate", "--db", url]))


def test_a_missing_directory_is_refused_alike_by_migrate_and_export(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "dir"
    migrate = one_line_error(runner.invoke(app, ["migrate", "--db", f"sqlite:///{missing}/x.db"]))
    export = one_line_error(runner.invoke(app, ["export", str(missing / "dump.jsonl"), "--db",
                                                f"sqlite:///{tmp_path}/keep.db"]))
    assert migrate == export == f"error: no such directory: {missing}"
    assert not (tmp_path / "no").exists()


def test_version(runner: CliRunner) -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"agentkeep {version('agentkeep')}"


def test_db_before_the_command(tmp_path: Path) -> None:
    before, after, env = (tmp_path / name for name in ("before.db", "after.db", "env.db"))
    runner = CliRunner(env={"AGENTKEEP_DB_URL": f"sqlite:///{env}"})
    assert runner.invoke(app, ["--db", f"sqlite:///{before}", "migrate"]).exit_code == 0
    assert before.exists() and not env.exists()  # before the command beats the environment
    result = runner.invoke(app, ["--db", f"sqlite:///{before}", "migrate", "--db", f"sqlite:///{after}"])
    assert result.exit_code == 0 and after.exists()  # the command's own --db beats both
    result = runner.invoke(app, ["--db", f"sqlite:///{before}", "tables", "--json"])
    assert result.exit_code == 0 and all(v["up_to_date"] for v in json.loads(result.stdout).values())
    assert not env.exists()


def test_import_reports_what_it_skipped(runner: CliRunner, tmp_path: Path) -> None:
    from agentkeep.db import UserMemory, connect

    url, dump = f"sqlite:///{tmp_path}/keep.db", tmp_path / "dump.jsonl"
    db = connect(url)
    db.upsert_memories([UserMemory(user_id="u", memory=f"m{i}") for i in range(3)])
    db.close()
    assert runner.invoke(app, ["export", str(dump), "--db", url]).exit_code == 0
    other = f"sqlite:///{tmp_path}/other.db"
    first = runner.invoke(app, ["import", str(dump), "--db", other])
    assert first.exit_code == 0 and "imported 3 record(s)" in first.stdout and "skipped 0" in first.stdout
    again = runner.invoke(app, ["import", str(dump), "--db", other])
    assert again.exit_code == 0 and "imported 0 record(s)" in again.stdout and "skipped 3" in again.stdout


def test_demo_says_whether_it_created_or_appended(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    first = runner.invoke(app, ["demo", "--db", url])
    assert first.exit_code == 0 and "created" in first.stdout and "appended" not in first.stdout
    again = runner.invoke(app, ["demo", "--db", url])
    assert again.exit_code == 0 and "appended" in again.stdout and "created" not in again.stdout
