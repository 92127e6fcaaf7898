"""What every command shares: the `--db` option, the console, errors a user can act on
(one line on stderr, exit status 2) and opening the db."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from agentkeep.report import user_error_message

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

DEFAULT_DB_URL = "sqlite:///agentkeep.db"
DB_URL_ENV = "AGENTKEEP_DB_URL"
EXIT_USER_ERROR = 2
LEADING_DB_URL = "agentkeep.db_url"  # ctx.meta key: the --db given before the command


def leading_db_url(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """A command's --db: its own when given after the command, else one given before it
    (`agentkeep --db URL tables`), else $AGENTKEEP_DB_URL or the default."""
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "COMMANDLINE":
        return value
    return ctx.meta.get(LEADING_DB_URL, value)


DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=DB_URL_ENV,
        metavar="URL",
        show_envvar=True,
        callback=leading_db_url,
        help="The db to use: sqlite:///file.db, json://./dir, memory://, ...",
    ),
]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    # Created per call: tests (and callers) may swap sys.stdout between invocations.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit status 2."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        fail(message)


@contextlib.contextmanager
def open_db(url: str) -> Iterator[Any]:
    """Connect to `url` (errors become exit 2) and close the db afterwards."""
    with user_errors():
        from agentkeep.db.urls import connect

        db = connect(url)
        try:
            yield db
        finally:
            with contextlib.suppress(Exception):
                db.close()


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
