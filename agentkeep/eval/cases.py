"""An eval described as data: a suite file's cases and the body of `POST /eval-runs` are these
models, and `to_eval` makes the eval they describe for an agent (and a judge model)."""

from __future__ import annotations

import abc
import re
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agentkeep.db.errors import InvalidInputError
from agentkeep.eval.accuracy import AccuracyEval
from agentkeep.eval.base import Eval
from agentkeep.eval.judge import AgentAsJudgeEval
from agentkeep.eval.performance import PerformanceEval
from agentkeep.eval.reliability import ReliabilityEval

REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module:attribute


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    arguments: Optional[dict[str, Any]] = Field(None, description="what the call's arguments must include")


class CaseBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = Field(None, max_length=500)
    input: str = Field(min_length=1, max_length=100_000, description="what the agent is asked")
    threshold: Optional[float] = Field(None, ge=0, le=1, description="the score the case must reach to pass")
    iterations: int = Field(1, ge=1, le=100)

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @abc.abstractmethod
    def to_eval(self, agent: Any, *, judge: Any = None, scorer: Callable | None = None, db: Any = None,
                threshold: float | None = None, name: str | None = None) -> Eval:
        """The eval for `agent`; `threshold` is used when the case gives none."""

    def _common(self, db: Any, threshold: float | None, name: str | None) -> dict:
        return {"db": db, "name": name or self.name,
                "threshold": self.threshold if self.threshold is not None else threshold}


def _need_judge(judge: Any, case: CaseBase) -> Any:
    if judge is None:
        raise InvalidInputError(f"case {case.name or case.input[:40]!r} needs a judge model: give one (a suite's "
                                "`judge`, --judge module:attribute)")
    return judge


class AccuracyCase(CaseBase):
    eval_type: Literal["accuracy"]
    expected_output: Union[Annotated[str, Field(max_length=100_000)], int, float] = Field(
        description="the answer expected (a number is compared as its text)")
    scoring: str = Field("match", description="match (normalized match), judge (the judge model's grade), or "
                                              "module:function (a scoring function; suite files only)")
    guidelines: Optional[str] = Field(None, max_length=10_000)

    @field_validator("scoring")
    @classmethod
    def _scoring(cls, value: str) -> str:
        if value not in ("match", "judge") and not REFERENCE.match(value):
            raise ValueError("must be 'match', 'judge' or module:function")
        return value

    def to_eval(self, agent, *, judge=None, scorer=None, db=None, threshold=None, name=None) -> Eval:
        if self.scoring not in ("match", "judge") and scorer is None:
            raise InvalidInputError(f"case {self.name!r}: the scoring function {self.scoring!r} was not given")
        return AccuracyEval(agent, input=self.input, expected_output=self.expected_output,
                            scorer=scorer if self.scoring not in ("match", "judge") else None,
                            judge=_need_judge(judge, self) if self.scoring == "judge" else None,
                            guidelines=self.guidelines, num_iterations=self.iterations,
                            **self._common(db, threshold, name))


class JudgeCase(CaseBase):
    eval_type: Literal["agent_as_judge"]
    criteria: list[Annotated[str, Field(min_length=1, max_length=2_000)]] = Field(min_length=1, max_length=50)

    def to_eval(self, agent, *, judge=None, scorer=None, db=None, threshold=None, name=None) -> Eval:
        return AgentAsJudgeEval(agent, judge=_need_judge(judge, self), criteria=self.criteria, input=self.input,
                                num_iterations=self.iterations, **self._common(db, threshold, name))


class ReliabilityCase(CaseBase):
    eval_type: Literal["reliability"]
    expected_tool_calls: list[Union[Annotated[str, Field(min_length=1, max_length=200)], ToolCallSpec]] = Field(
        max_length=100, description="tool names, or {name, arguments}: the calls the run must make")
    allow_unexpected: bool = False

    def to_eval(self, agent, *, judge=None, scorer=None, db=None, threshold=None, name=None) -> Eval:
        return ReliabilityEval(agent, input=self.input, expected_tool_calls=self.expected_tool_calls,
                               allow_unexpected=self.allow_unexpected, num_iterations=self.iterations,
                               **self._common(db, threshold, name))


class PerformanceCase(CaseBase):
    eval_type: Literal["performance"]
    iterations: int = Field(5, ge=1, le=100)
    warmup: int = Field(1, ge=0, le=100)
    measure_memory: bool = True
    max_p95_ms: Optional[float] = Field(None, gt=0)
    max_peak_memory_mib: Optional[float] = Field(None, gt=0)

    def to_eval(self, agent, *, judge=None, scorer=None, db=None, threshold=None, name=None) -> Eval:
        # its budgets are the gate: every one of them unless the case says otherwise, whatever
        # the default of the other cases
        return PerformanceEval(agent, input=self.input, num_iterations=self.iterations,
                               warmup_iterations=self.warmup, measure_memory=self.measure_memory,
                               max_p95_ms=self.max_p95_ms, max_peak_memory_mib=self.max_peak_memory_mib,
                               **self._common(db, None, name))


Case = Annotated[Union[AccuracyCase, JudgeCase, ReliabilityCase, PerformanceCase], Field(discriminator="eval_type")]
CASE = TypeAdapter(Case)


def parse_case(data: Any) -> CaseBase:
    """A case from a dict (its type as `type` or `eval_type`); InvalidInputError says which
    field is wrong and why."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"a case must be an object, got {type(data).__name__}")
    data = dict(data)
    if "type" in data:
        if "eval_type" in data:
            raise InvalidInputError("give the case's type once (type or eval_type)")
        data["eval_type"] = data.pop("type")
    try:
        return CASE.validate_python(data)
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """The first problem of a validation error: `field: reason`."""
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem["loc"] if p not in _CASE_TAGS)
    if problem["type"] == "union_tag_invalid":
        return "type: must be one of accuracy, agent_as_judge, reliability, performance"
    if problem["type"] == "union_tag_not_found":
        return "type: missing (accuracy, agent_as_judge, reliability or performance)"
    return f"{where}: {problem['msg']}" if where else problem["msg"]


_CASE_TAGS = {"accuracy", "agent_as_judge", "reliability", "performance", "str", "ToolCallSpec"}
