"""The `agentkeep` app and its db commands: tables, migrate, export, import, purge-expired
and demo."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentkeep.cli.common import (
    DEFAULT_DB_URL,
    LEADING_DB_URL,
    DbUrl,
    console,
    fail,
    leading_db_url,
    open_db,
    print_json,
    user_errors,
)
from agentkeep.report import render_schema_status, status_rows

app = typer.Typer(
    name="agentkeep",
    help="Inspect and manage an agentkeep db (sessions, runs, memories, traces, ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OnConflict(str, enum.Enum):
    skip = "skip"
    replace = "replace"
    error = "error"


def _print_version(value: bool) -> None:
    if value:
        from agentkeep import __version__

        typer.echo(f"agentkeep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option("--db", metavar="URL", help="The db for the command (the same as the command's own --db)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    if db_url is not None:
        ctx.meta[LEADING_DB_URL] = db_url


@app.command()
def tables(
    db_url: DbUrl = DEFAULT_DB_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the tables, their schema versions and whether they are up to date."""
    with open_db(db_url) as db:
        status = db.schema_status()
    if as_json:
        print_json(status)
        return
    out = console()
    render_schema_status(status, out, title=f"Tables in {db_url}")
    rows = status_rows(status)
    stale = [name for name, _, _, ok in rows if not ok]
    if rows and all(version is None for _, version, _, _ in rows):
        out.print("No tables yet: they are created on first use, or now with `agentkeep migrate`.")
    elif stale:
        out.print(f"{len(stale)} table(s) not up to date: run `agentkeep migrate`.")


@app.command()
def migrate(
    db_url: DbUrl = DEFAULT_DB_URL,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the steps without running them.")] = False,
) -> None:
    """Bring the tables up to date (additive steps, run under a lock)."""
    with open_db(db_url) as db:
        steps = db.migrate(dry_run=dry_run)
    if not steps:
        typer.echo("up to date")
        return
    typer.echo("would run:" if dry_run else "ran:")
    for step in steps:
        typer.echo(f"  {step}")
    typer.echo(f"{len(steps)} step(s){' (dry run, nothing changed)' if dry_run else ''}")


@app.command("export")
def export_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Where to write the JSONL dump; '-' for stdout.")],
    db_url: DbUrl = DEFAULT_DB_URL,
    tables_: Annotated[
        str | None,
        typer.Option("--tables", metavar="A,B", help="Only these tables (comma-separated)."),
    ] = None,
) -> None:
    """Write a versioned, backend-neutral JSONL dump of the db."""
    selected = None
    if tables_ is not None:
        selected = [name.strip() for name in tables_.split(",") if name.strip()]
        if not selected:
            fail("--tables names no table")
    to_stdout = file == "-"
    if not to_stdout:
        with user_errors():
            from agentkeep.db.options import parent_directory

            parent_directory(file)  # refused as SqliteDb refuses a file in a missing directory
    with open_db(db_url) as db:
        if to_stdout:
            count = db.export_jsonl(sys.stdout, tables=selected)
            sys.stdout.flush()
        else:
            count = db.export_jsonl(file, tables=selected)
    # With '-', stdout carries the dump, so the summary goes to stderr.
    typer.echo(f"exported {count} record(s) to {'stdout' if to_stdout else file}", err=to_stdout)


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A JSONL dump made by `export`; '-' for stdin.")],
    db_url: DbUrl = DEFAULT_DB_URL,
    on_conflict: Annotated[
        OnConflict,
        typer.Option("--on-conflict", case_sensitive=False, help="What to do with a record that already exists."),
    ] = OnConflict.skip,
) -> None:
    """Load a JSONL dump (from any backend) into the db."""
    from_stdin = file == "-"
    if not from_stdin:
        path = Path(file)
        if not path.exists():
            fail(f"no such file: {file}")
        if path.is_dir():
            fail(f"{file} is a directory, not a dump file")
    with open_db(db_url) as db:
        count = db.import_jsonl(sys.stdin if from_stdin else file, on_conflict=on_conflict.value)
    skipped = getattr(count, "skipped", None)  # records that existed already (--on-conflict skip)
    typer.echo(f"imported {int(count)} record(s) from {'stdin' if from_stdin else file}"
               + (f", skipped {skipped} that already existed" if skipped is not None else ""))


@app.command("purge-expired")
def purge_expired(
    db_url: DbUrl = DEFAULT_DB_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Delete every record whose expires_at has passed; print what went, per table."""
    with open_db(db_url) as db:
        counts = db.purge_expired()
    if as_json:
        print_json(counts)
        return
    total = sum(counts.values())
    if not total:
        typer.echo("nothing expired")
        return
    from rich.table import Table

    table = Table(title="Purged", title_justify="left")
    table.add_column("table", style="bold")
    table.add_column("rows deleted", justify="right")
    for name in sorted(counts):
        if counts[name]:
            table.add_row(name, str(counts[name]))
    out = console()
    out.print(table)
    out.print(f"{total} row(s) deleted")


@app.command()
def demo(
    db_url: Annotated[
        str,
        typer.Option("--db", metavar="URL", callback=leading_db_url,
                     help="Where to put the demo data (kept apart from your real db)."),
    ] = "sqlite:///agentkeep-demo.db",
) -> None:
    """Fill every table of a demo db with a little of everything, then show it."""
    with user_errors():
        from agentkeep.demo import run_demo

        run_demo(db_url, console=console())
