"""The `agentkeep` command: inspect, migrate, export, import and purge a db; add to and
search a knowledge base (`agentkeep knowledge ...`, in cli_knowledge.py).

Every command takes `--db URL` (default `sqlite:///agentkeep.db`, or the environment
variable `AGENTKEEP_DB_URL`), after the command or before it (`agentkeep --db URL tables`).
The db package is imported inside the commands, so `agentkeep --help` stays fast.

Errors a user can act on (a bad URL, a missing file or directory, a server that cannot be
reached, a missing driver, any `DbError`) print one line on stderr and exit with status 2;
they never print a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, NoReturn, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

DEFAULT_DB_URL = "sqlite:///agentkeep.db"
DB_URL_ENV = "AGENTKEEP_DB_URL"
EXIT_USER_ERROR = 2
_LEADING_DB_URL = "agentkeep.db_url"  # ctx.meta key: the --db given before the command

app = typer.Typer(
    name="agentkeep",
    help="Inspect and manage an agentkeep db (sessions, runs, memories, traces, ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _leading_db_url(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """A command's --db: its own when given after the command, else one given before it
    (`agentkeep --db URL tables`), else $AGENTKEEP_DB_URL or the default."""
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "COMMANDLINE":
        return value
    return ctx.meta.get(_LEADING_DB_URL, value)


DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=DB_URL_ENV,
        metavar="URL",
        show_envvar=True,
        callback=_leading_db_url,
        help="The db to use: sqlite:///file.db, json://./dir, memory://, ...",
    ),
]


class OnConflict(str, enum.Enum):
    skip = "skip"
    replace = "replace"
    error = "error"


# --------------------------------------------------------------------------- helpers


def _console(stderr: bool = False) -> "Console":
    from rich.console import Console

    # Created per call: tests (and callers) may swap sys.stdout between invocations.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print for an error a user can act on, or None for any other error
    (shared with `python -m agentkeep.demo`)."""
    from agentkeep.db.drivers import MissingDriverError, missing_driver
    from agentkeep.db.errors import ConnectionFailedError, DbError, InvalidInputError

    if isinstance(exc, (InvalidInputError, ConnectionFailedError)):
        return " ".join(str(exc).split())  # the message says what is wrong and where
    if isinstance(exc, DbError):
        return _one_line(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] != "agentkeep":
        error = missing_driver(exc)  # a backend's driver: name the extra that installs it
        if isinstance(error, MissingDriverError):
            return str(error)
        return f"this db needs the Python package {exc.name!r}, which is not installed"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename or exc}"
    if isinstance(exc, (IsADirectoryError, PermissionError)):
        return f"cannot open {exc.filename or ''}: {exc.strerror or exc}".strip()
    return None


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit status 2."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        _fail(message)


@contextlib.contextmanager
def _open_db(url: str) -> Iterator[Any]:
    """Connect to `url` (errors become exit 2) and close the db afterwards."""
    with _user_errors():
        from agentkeep.db.urls import connect

        db = connect(url)
        try:
            yield db
        finally:
            with contextlib.suppress(Exception):
                db.close()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _status_rows(status: dict[str, Any]) -> list[tuple[str, Any, Any, bool]]:
    rows = []
    for table in sorted(status):
        info = status[table] or {}
        rows.append((table, info.get("version"), info.get("expected"), bool(info.get("up_to_date"))))
    return rows


def render_schema_status(status: dict[str, Any], console: "Console", title: str = "Tables") -> None:
    """Print `db.schema_status()` as a rich table (shared with the demo)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("table", style="bold")
    table.add_column("version", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("up to date")
    for name, version, expected, ok in _status_rows(status):
        table.add_row(
            name,
            "-" if version is None else str(version),
            "-" if expected is None else str(expected),
            "[green]yes[/green]" if ok else "[yellow]no[/yellow]",
        )
    console.print(table)


# --------------------------------------------------------------------------- commands


def _print_version(value: bool) -> None:
    if value:
        from agentkeep import __version__

        typer.echo(f"agentkeep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    db_url: Annotated[
        Optional[str],
        typer.Option("--db", metavar="URL", help="The db for the command (the same as the command's own --db)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    if db_url is not None:
        ctx.meta[_LEADING_DB_URL] = db_url


@app.command()
def tables(
    db_url: DbUrl = DEFAULT_DB_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the tables, their schema versions and whether they are up to date."""
    with _open_db(db_url) as db:
        status = db.schema_status()
    if as_json:
        _print_json(status)
        return
    console = _console()
    render_schema_status(status, console, title=f"Tables in {db_url}")
    rows = _status_rows(status)
    stale = [name for name, _, _, ok in rows if not ok]
    if rows and all(version is None for _, version, _, _ in rows):
        console.print("No tables yet: they are created on first use, or now with `agentkeep migrate`.")
    elif stale:
        console.print(f"{len(stale)} table(s) not up to date: run `agentkeep migrate`.")


@app.command()
def migrate(
    db_url: DbUrl = DEFAULT_DB_URL,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the steps without running them.")] = False,
) -> None:
    """Bring the tables up to date (additive steps, run under a lock)."""
    with _open_db(db_url) as db:
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
        Optional[str],
        typer.Option("--tables", metavar="A,B", help="Only these tables (comma-separated)."),
    ] = None,
) -> None:
    """Write a versioned, backend-neutral JSONL dump of the db."""
    selected = None
    if tables_ is not None:
        selected = [name.strip() for name in tables_.split(",") if name.strip()]
        if not selected:
            _fail("--tables names no table")
    to_stdout = file == "-"
    if not to_stdout:
        with _user_errors():
            from agentkeep.db.options import parent_directory

            parent_directory(file)  # refused as SqliteDb refuses a file in a missing directory
    with _open_db(db_url) as db:
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
            _fail(f"no such file: {file}")
        if path.is_dir():
            _fail(f"{file} is a directory, not a dump file")
    with _open_db(db_url) as db:
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
    with _open_db(db_url) as db:
        counts = db.purge_expired()
    if as_json:
        _print_json(counts)
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
    console = _console()
    console.print(table)
    console.print(f"{total} row(s) deleted")


@app.command()
def demo(
    db_url: Annotated[
        str,
        typer.Option("--db", metavar="URL", callback=_leading_db_url,
                     help="Where to put the demo data (kept apart from your real db)."),
    ] = "sqlite:///agentkeep-demo.db",
) -> None:
    """Fill every table of a demo db with a little of everything, then show it."""
    with _user_errors():
        from agentkeep.demo import run_demo

        run_demo(db_url, console=_console())


from agentkeep.cli_knowledge import knowledge_app  # noqa: E402  (it uses the helpers above)

app.add_typer(knowledge_app, name="knowledge")

if __name__ == "__main__":  # pragma: no cover
    app(prog_name="agentkeep")
