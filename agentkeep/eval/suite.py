"""A suite: eval cases kept in a file, run against one agent, for CI gates and regressions.

A YAML file (`.yaml`, `.yml`) holds the suite's settings and its cases:

    name: support
    agent: myapp.agents:support        # module:attribute of an Agent (or --agent)
    judge: myapp.agents:judge_model    # module:attribute of a model, for judged cases
    threshold: 0.8                     # for cases that give none (else 1.0)
    cases:
      - name: capital
        type: accuracy
        input: What is the capital of France?
        expected_output: Paris

or just the list of cases. A JSONL file (`.jsonl`) holds one case per line; its agent and
judge come from the caller. A file that cannot be read, or a case that does not fit, raises
`InvalidInputError` naming the file, the case and its line."""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agentkeep.db.errors import InvalidInputError
from agentkeep.eval.base import EvalResult, is_async_db
from agentkeep.eval.cases import CaseBase, parse_case

DEFAULT_THRESHOLD = 1.0
SUITE_KEYS = {"name", "agent", "judge", "threshold", "cases"}


@dataclass
class CaseResult:
    index: int  # from 1, in the file's order
    case: CaseBase
    name: str
    result: EvalResult

    @property
    def passed(self) -> bool:
        return self.result.passed


@dataclass
class SuiteResult:
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]


@dataclass
class Suite:
    cases: list[CaseBase]
    name: str | None = None
    agent: str | None = None  # module:attribute
    judge: str | None = None
    threshold: float | None = None
    path: str = "<suite>"
    lines: list[int | None] = field(default_factory=list)  # where each case starts in the file

    def case_name(self, index: int) -> str:
        return self.cases[index - 1].name or f"case {index}"

    def evals(self, *, agent: Any = None, judge: Any = None, db: Any = None, threshold: float | None = None,
              ) -> list[tuple[int, CaseBase, Any]]:
        """(index, case, eval) for every case, all made before any runs, so a missing judge or
        a bad reference fails the suite before it starts. `agent` and `judge`: objects or
        module:attribute references, over the file's; `threshold` over the file's default."""
        from agentkeep.agent import Agent
        from agentkeep.models.base import Model

        agent = _object(agent if agent is not None else self.agent, "agent", Agent)
        if agent is None:
            raise InvalidInputError(f"{self.path}: the suite names no agent: give one (--agent module:attribute)")
        judge = _object(judge if judge is not None else self.judge, "judge", Model)
        default = threshold if threshold is not None else self.threshold
        default = default if default is not None else DEFAULT_THRESHOLD
        out = []
        for index, case in enumerate(self.cases, 1):
            scoring = getattr(case, "scoring", "match")
            scorer = resolve(scoring, "scoring function") if scoring not in ("match", "judge") else None
            if scorer is not None and not callable(scorer):
                raise InvalidInputError(f"{self.where(index)}: {scoring!r} is not a function")
            try:
                made = case.to_eval(agent, judge=judge, scorer=scorer, db=db, threshold=default,
                                    name=_joined(self.name, self.case_name(index)))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{self.where(index)}: {exc}") from None
            out.append((index, case, made))
        return out

    def run(self, *, agent: Any = None, judge: Any = None, db: Any = None, threshold: float | None = None,
            user_id: str | None = None, on_result: Callable[[CaseResult], Any] | None = None) -> SuiteResult:
        """Run every case in order (`on_result` hears of each as it ends)."""
        if db is not None and is_async_db(db):
            raise InvalidInputError(f"{type(db).__name__} is async: use arun")
        outcome = SuiteResult()
        for index, case, made in self.evals(agent=agent, judge=judge, db=db, threshold=threshold):
            done = CaseResult(index, case, self.case_name(index), made.run(user_id=user_id))
            outcome.cases.append(done)
            if on_result is not None:
                on_result(done)
        return outcome

    async def arun(self, *, agent: Any = None, judge: Any = None, db: Any = None, threshold: float | None = None,
                   user_id: str | None = None, on_result: Callable[[CaseResult], Any] | None = None) -> SuiteResult:
        outcome = SuiteResult()
        for index, case, made in self.evals(agent=agent, judge=judge, db=db, threshold=threshold):
            done = CaseResult(index, case, self.case_name(index), await made.arun(user_id=user_id))
            outcome.cases.append(done)
            if on_result is not None:
                on_result(done)
        return outcome

    def where(self, index: int) -> str:
        line = self.lines[index - 1] if index <= len(self.lines) else None
        name = self.cases[index - 1].name if index <= len(self.cases) else None
        return _where(self.path, index, name, line)


# -- reading a suite file ---------------------------------------------------------------------

def load_suite(path: str | os.PathLike) -> Suite:
    """The suite in a `.yaml`/`.yml` or `.jsonl` file."""
    shown = str(path)
    suffix = Path(shown).suffix.lower()
    if suffix not in (".yaml", ".yml", ".jsonl"):
        raise InvalidInputError(f"{shown}: a suite is a .yaml, .yml or .jsonl file")
    try:
        text = Path(shown).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{shown}: not UTF-8 text") from None
    raw, lines, settings = (_jsonl(text, shown) if suffix == ".jsonl" else _yaml(text, shown))
    if not raw:
        raise InvalidInputError(f"{shown}: the suite has no cases")
    cases = []
    for index, (item, line) in enumerate(zip(raw, lines), 1):
        name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None
        try:
            cases.append(parse_case(item))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{_where(shown, index, name, line)}: {exc}") from None
    return Suite(cases=cases, path=shown, lines=lines, **settings)


def _yaml(text: str, path: str) -> tuple[list, list, dict]:
    import yaml

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInputError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    settings: dict = {}
    if isinstance(data, dict):
        unknown = sorted(set(map(str, data)) - SUITE_KEYS)
        if unknown:
            raise InvalidInputError(f"{path}: unknown suite keys {unknown} (a suite has {sorted(SUITE_KEYS)})")
        for key in ("name", "agent", "judge"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise InvalidInputError(f"{path}: {key} must be a string")
            settings[key] = data.get(key)
        threshold = data.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0 <= threshold <= 1):
            raise InvalidInputError(f"{path}: threshold must be a number in [0, 1], got {threshold!r}")
        settings["threshold"] = threshold
        cases, node = data.get("cases"), _value_node(root, "cases")
    else:
        cases, node = data, root
    if not isinstance(cases, list):
        raise InvalidInputError(f"{path}: expected a list of cases (or a mapping with `cases:`)")
    lines = [item.start_mark.line + 1 for item in node.value] if node is not None and node.id == "sequence" \
        else [None] * len(cases)
    return cases, lines, settings


def _value_node(root: Any, key: str) -> Any:
    if root is None or root.id != "mapping":
        return None
    return next((value for name, value in root.value if name.value == key), None)


def _jsonl(text: str, path: str) -> tuple[list, list, dict]:
    cases, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(json.loads(line))
        except ValueError as exc:
            raise InvalidInputError(f"{path} line {number}: not JSON: {exc}") from None
        lines.append(number)
    return cases, lines, {}


def _where(path: str, index: int, name: str | None, line: int | None) -> str:
    label = f"case {index}" + (f" ({name!r})" if name else "")
    return f"{path}, {label}" + (f", line {line}" if line else "")


def _joined(suite: str | None, case: str) -> str:
    return f"{suite}: {case}" if suite else case


# -- module:attribute -------------------------------------------------------------------------

def resolve(reference: str, what: str) -> Any:
    """The object `module:attribute` names (the module imported from the working directory
    first, as `python -m` would)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(f"the {what} must be module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"the {what} {reference!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise InvalidInputError(f"the {what} {reference!r}: {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def _object(value: Any, what: str, kind: type) -> Any:
    if value is None:
        return None
    obj = resolve(value, what) if isinstance(value, str) else value
    if not isinstance(obj, kind):
        raise InvalidInputError(f"the {what} must be {'an Agent' if what == 'agent' else 'a model'}, "
                                f"got {type(obj).__name__}")
    return obj

