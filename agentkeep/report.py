"""What a person reads, shared by the `agentkeep` command and `python -m agentkeep.demo`: an
error they can act on as one line, and a db's schema status as a table. Imports neither
the command line nor any backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def one_line(exc: BaseException) -> str:
    """The error's message on one line, led by its class name unless the message has it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print for an error a user can act on, or None for any other error."""
    from agentkeep.db.drivers import MissingDriverError, missing_driver
    from agentkeep.db.errors import ConnectionFailedError, DbError, InvalidInputError

    if isinstance(exc, (InvalidInputError, ConnectionFailedError)):
        return " ".join(str(exc).split())  # the message says what is wrong and where
    if isinstance(exc, DbError):
        return one_line(exc)
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


def status_rows(status: dict[str, Any]) -> list[tuple[str, Any, Any, bool]]:
    """`db.schema_status()` as (table, version, expected version, up to date), by table name."""
    rows = []
    for table in sorted(status):
        info = status[table] or {}
        rows.append((table, info.get("version"), info.get("expected"), bool(info.get("up_to_date"))))
    return rows


def render_schema_status(status: dict[str, Any], console: Console, title: str = "Tables") -> None:
    """Print `db.schema_status()` as a rich table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("table", style="bold")
    table.add_column("version", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("up to date")
    for name, version, expected, ok in status_rows(status):
        table.add_row(
            name,
            "-" if version is None else str(version),
            "-" if expected is None else str(expected),
            "[green]yes[/green]" if ok else "[yellow]no[/yellow]",
        )
    console.print(table)
