"""What every eval shares: its record (`EvalRun`), iterations, the pass mark, and one body for
the sync and the async API.

An eval is written once, as a generator of steps (run the agent, ask a model, save the record,
call a function); `run` performs each step in the calling thread and `arun` awaits it, so the
two cannot drift, as the agent's run loop and the db's twins cannot. A step that raises is
thrown back into the generator at the point it was yielded from.

The record is saved as `running` when the eval starts and as `completed` (with its score and
result) or `failed` (with its error) when it ends. An error while the eval runs (the agent's run
failed, the judge's reply holds no grade, a scoring function raised) fails the eval and is
recorded; bad arguments raise `InvalidInputError` before anything is written."""

from __future__ import annotations

import abc
import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generator, TypeVar

from agentkeep.agent._async.util import ThreadedDb
from agentkeep.db import validate as v
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.models import EvalRun, new_id

T = TypeVar("T")


# -- the steps an eval yields -----------------------------------------------------------------

@dataclass
class RunAgent:
    """Run `agent` on `input` as `user_id` (a new session each time): gives the stored Run."""

    agent: Any
    input: str
    user_id: str | None


@dataclass
class AskModel:
    """One chat call to `model`: gives the reply's text."""

    model: Any
    messages: list[dict]


@dataclass
class SaveEvalRun:
    """Write the record to the eval's db: gives the stored record."""

    eval_run: EvalRun


@dataclass
class Call:
    """Call `fn()` (awaited when it is async): gives what it returns."""

    fn: Callable[[], Any]


Steps = Generator[Any, Any, T]


def drive(steps: Steps[T], db: Any) -> T:
    """Perform the steps in this thread."""
    value, error = None, None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = _perform(step, db)
        except Exception as exc:  # thrown back into the eval, which records it or lets it out
            error = exc


async def adrive(steps: Steps[T], db: Any) -> T:
    """Perform the steps on the running event loop (`db` is an awaitable db)."""
    value, error = None, None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = await _aperform(step, db)
        except Exception as exc:
            error = exc


def _perform(step: Any, db: Any) -> Any:
    if isinstance(step, RunAgent):
        return step.agent.run(step.input, user_id=step.user_id)
    if isinstance(step, AskModel):
        return step.model.response(step.messages).content or ""
    if isinstance(step, SaveEvalRun):
        return db.save_eval_run(step.eval_run)
    value = step.fn()
    if inspect.isawaitable(value):
        if hasattr(value, "close"):
            value.close()  # never awaited: no "coroutine was never awaited" warning
        raise InvalidInputError("the function is async: use arun")
    return value


async def _aperform(step: Any, db: Any) -> Any:
    if isinstance(step, RunAgent):
        return await step.agent.arun(step.input, user_id=step.user_id)
    if isinstance(step, AskModel):
        return (await step.model.aresponse(step.messages)).content or ""
    if isinstance(step, SaveEvalRun):
        return await db.save_eval_run(step.eval_run)
    value = step.fn()
    return await value if inspect.isawaitable(value) else value


def is_async_db(db: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(db, "save_eval_run", None))


# -- results ----------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """An eval's outcome: its record (as stored, when the eval has a db) and whether it passed."""

    eval_run: EvalRun

    @property
    def score(self) -> float | None:
        return self.eval_run.score

    @property
    def status(self) -> str:
        return self.eval_run.status

    @property
    def error(self) -> str | None:
        return self.eval_run.error

    @property
    def result(self) -> dict:
        return self.eval_run.result

    @property
    def threshold(self) -> float | None:
        return self.eval_run.result.get("threshold")

    @property
    def passed(self) -> bool:
        return bool(self.eval_run.result.get("passed"))

    @property
    def duration_ms(self) -> float | None:
        return self.eval_run.result.get("duration_ms")


def passes(status: str, score: float | None, threshold: float | None) -> bool:
    """Completed, and at or above the threshold when there is one (and a score to hold to it)."""
    if status != "completed":
        return False
    return threshold is None or score is None or score >= threshold - 1e-9


# -- the base class ---------------------------------------------------------------------------

class Eval(abc.ABC):
    """An eval of one kind. Subclasses give `_measure` (or, as `IteratedEval`s, `_iteration`)
    and `_details` (what the result records besides)."""

    eval_type: ClassVar[str]
    default_threshold: ClassVar[float | None] = None

    def __init__(self, *, agent: Any = None, input: str | None = None, name: str | None = None, db: Any = None,
                 threshold: float | None = None, num_iterations: int = 1) -> None:
        from agentkeep.agent import Agent

        if agent is not None and not isinstance(agent, Agent):
            raise InvalidInputError(f"agent must be an agentkeep Agent, got {type(agent).__name__}")
        if input is not None and (not isinstance(input, str) or not input.strip()):
            raise InvalidInputError("input must be a non-empty string")
        if db is not None and not hasattr(db, "save_eval_run"):
            raise InvalidInputError(f"db must be an agentkeep db, got {type(db).__name__}")
        self.agent, self.input, self.db = agent, input, db
        self.agent_id, self.model_id = getattr(agent, "id", None), _model_id(agent)  # what the record names
        self.name = v.check_str(name, "name")
        self.threshold = check_threshold(threshold if threshold is not None else self.default_threshold)
        self.num_iterations = v.check_int(num_iterations, "num_iterations", 1, 1000)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, agent={getattr(self.agent, 'id', None)!r})"

    # -- the API ----------------------------------------------------------------------------

    def run(self, *, user_id: str | None = None, eval_run_id: str | None = None) -> EvalResult:
        """Run the eval and record it in the db (when it has one). `user_id`: whose eval run it
        is (and whose agent runs); `eval_run_id`: the record to write (a queued one), else new."""
        if self.db is not None and is_async_db(self.db):
            raise InvalidInputError(f"{type(self.db).__name__} is async: use arun")
        if self.agent is not None and self.agent.db is not None and inspect.iscoroutinefunction(
                getattr(self.agent.db, "append_run", None)):
            raise InvalidInputError(f"the agent's db ({type(self.agent.db).__name__}) is async: use arun")
        return drive(self._steps(user_id, eval_run_id), self.db)

    async def arun(self, *, user_id: str | None = None, eval_run_id: str | None = None) -> EvalResult:
        """`run`, awaited: the agent runs with `arun`, the judge with `aresponse`; a sync db is
        called in worker threads."""
        db = self.db if self.db is None or is_async_db(self.db) else ThreadedDb(self.db)
        return await adrive(self._steps(user_id, eval_run_id), db)

    # -- the body ---------------------------------------------------------------------------

    def _steps(self, user_id: str | None, eval_run_id: str | None) -> Steps[EvalResult]:
        row = EvalRun(id=v.check_id(eval_run_id, "eval_run_id") if eval_run_id is not None else new_id(),
                      name=self.name, eval_type=self.eval_type, status="running",
                      agent_id=self.agent_id, model=self.model_id, input=self.input,
                      user_id=v.check_opt_id(user_id, "user_id"))
        if self.db is not None:
            row = yield SaveEvalRun(row)
        began = time.perf_counter()
        done: list[dict] = []
        try:
            score, result = yield from self._measure(row.user_id, done)
        except Exception as exc:
            row.status, row.error, row.score = "failed", f"{type(exc).__name__}: {exc}"[:4000], None
            result = {"iterations": done, **self._details()}
        else:
            row.status, row.error, row.score = "completed", None, score
        result.update(threshold=self.threshold, duration_ms=round((time.perf_counter() - began) * 1000, 3),
                      passed=passes(row.status, row.score, self.threshold))
        row.result = result
        if self.db is not None:
            row = yield SaveEvalRun(row)
        return EvalResult(row)

    @abc.abstractmethod
    def _measure(self, user_id: str | None, done: list[dict]) -> Steps[tuple[float | None, dict]]:
        """The score and the result, made of the steps it yields (`done`: the iterations so far,
        kept in the result if a step fails)."""

    def _details(self) -> dict:
        return {}


class IteratedEval(Eval):
    """An eval scored per iteration (`_iteration`: a dict with its "score"): the mean."""

    def _measure(self, user_id: str | None, done: list[dict]) -> Steps[tuple[float | None, dict]]:
        for index in range(self.num_iterations):
            began = time.perf_counter()
            record = yield from self._iteration(user_id)
            done.append({"iteration": index + 1, **record, "ms": round((time.perf_counter() - began) * 1000, 3)})
        score = sum(r["score"] for r in done) / len(done)
        return score, {"iterations": done, **self._details()}

    @abc.abstractmethod
    def _iteration(self, user_id: str | None) -> Steps[dict]:
        """One measurement."""


def check_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def check_model(model: Any, what: str) -> Any:
    from agentkeep.models.base import Model

    if not isinstance(model, Model):
        raise InvalidInputError(f"{what} must be an agentkeep model (e.g. OpenAIChat), got {type(model).__name__}")
    return model


def _model_id(agent: Any) -> str | None:
    model = getattr(agent, "model", None)
    return getattr(model, "id", None)
