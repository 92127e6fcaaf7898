"""`agentkeep eval FILE`: run an eval suite (a YAML or JSONL file, agentkeep/eval/suite.py)
against an agent, record each case as an `EvalRun` in `--db`, print a table of the outcomes,
and exit 0 when every case passed, 1 when one fell short of its threshold (or failed), 2 on an
error the user can fix (a bad file, a reference that cannot be imported, a db out of reach):
a CI gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agentkeep.cli.common import DEFAULT_DB_URL, DbUrl, console, open_db, user_errors

EXIT_BELOW_THRESHOLD = 1


def eval_suite(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The suite: a .yaml/.yml or .jsonl file of cases.")],
    agent: Annotated[Optional[str], typer.Option(
        "--agent", metavar="MODULE:ATTRIBUTE", help="The Agent to evaluate (over the suite's `agent`).")] = None,
    judge: Annotated[Optional[str], typer.Option(
        "--judge", metavar="MODULE:ATTRIBUTE", help="The model that grades judged cases (over the suite's).")] = None,
    db_url: DbUrl = DEFAULT_DB_URL,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", min=0.0, max=1.0, help="The pass mark of cases that give none (over the suite's; "
                                              "default 1.0).")] = None,
    user_id: Annotated[Optional[str], typer.Option("--user", metavar="USER_ID",
                                                   help="Whose eval runs (and agent runs) these are.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar on stderr.")] = True,
) -> None:
    """Run an eval suite; exit 0 when every case passes, 1 when one does not."""
    from agentkeep.eval.suite import load_suite

    with user_errors():
        suite = load_suite(file)
    rows: list[Any] = []
    with open_db(db_url) as db, user_errors():
        evals = suite.evals(agent=agent, judge=judge, db=db, threshold=threshold)
        with _progress(progress, len(evals)) as advance:
            for index, case, made in evals:
                name = suite.case_name(index)
                advance(name, done=False)
                rows.append((index, case, name, made.run(user_id=user_id)))
                advance(name, done=True)
    _report(suite.name or file.name, rows)
    if not all(result.passed for *_, result in rows):
        raise typer.Exit(EXIT_BELOW_THRESHOLD)


class _progress:
    """A rich progress bar on stderr (or nothing): `advance(case, done)`."""

    def __init__(self, on: bool, total: int) -> None:
        self.on, self.total = on, total

    def __enter__(self) -> Any:
        if not self.on:
            return lambda name, done: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console(stderr=True))
        self.bar.__enter__()
        self.task = self.bar.add_task("eval", total=self.total)

        def advance(name: str, done: bool) -> None:
            self.bar.update(self.task, description=name, advance=1 if done else 0)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.on:
            self.bar.update(self.task, description="done")
            self.bar.__exit__(*exc)


def _report(title: str, rows: list) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    table = Table(title=f"{title}: {len(rows)} case(s)", title_justify="left")
    for column, justify in (("case", "left"), ("type", "left"), ("score", "right"), ("threshold", "right"),
                            ("result", "left"), ("ms", "right")):
        table.add_column(column, justify=justify)
    for index, case, name, result in rows:
        verdict = "pass" if result.passed else ("error" if result.status == "failed" else "fail")
        table.add_row(escape(name), case.eval_type, _number(result.score), _number(result.threshold),
                      f"[{'green' if result.passed else 'red'}]{verdict}[/]", f"{result.duration_ms or 0:.0f}")
    out.print(table)
    for index, case, name, result in rows:
        if result.error:
            out.print(f"{escape(name)}: {escape(result.error)}", markup=True)
    passed = sum(1 for *_, result in rows if result.passed)
    out.print(f"{passed} of {len(rows)} case(s) passed")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
