"""Accuracy: how close an agent's answer to an input comes to the expected output, over N
iterations (a model's answers vary), scored by one of

- a scoring function `score(output, expected) -> float in [0, 1]`;
- a judge model, asked for a grade from 0 to 10 (the score is the grade / 10);
- by default, a normalized match: 1.0 when the answer is the expected one, or holds it as a
  run of whole words, once case, punctuation and spacing are left out; else 0.0.

The score is the mean over the iterations."""

from __future__ import annotations

from typing import Any, Callable

from agentkeep.db.errors import InvalidInputError
from agentkeep.eval.base import AskModel, IteratedEval, RunAgent, Steps, check_model
from agentkeep.eval.scoring import as_text, check_score, grade_messages, match_score, parse_grade

Scorer = Callable[[str, str], float]


class AccuracyEval(IteratedEval):
    eval_type = "accuracy"

    def __init__(self, agent: Any, *, input: str, expected_output: Any, scorer: Scorer | None = None,
                 judge: Any = None, guidelines: str | None = None, num_iterations: int = 1,
                 threshold: float | None = None, name: str | None = None, db: Any = None) -> None:
        """`agent` (an Agent) answers `input`; `scorer` or `judge` (a model) score the answer
        against `expected_output` (at most one of them; neither: the normalized match).
        `guidelines`: what the judge should weigh besides. `threshold`: the mean score the
        eval must reach to pass (None: it passes once it completes)."""
        if agent is None:
            raise InvalidInputError("an accuracy eval needs an agent")
        super().__init__(agent=agent, input=input, name=name, db=db, threshold=threshold,
                         num_iterations=num_iterations)
        if input is None:
            raise InvalidInputError("input must be a non-empty string")
        if scorer is not None and judge is not None:
            raise InvalidInputError("give a scorer or a judge, not both")
        if scorer is not None and not callable(scorer):
            raise InvalidInputError(f"scorer must be a function (output, expected) -> float, got {scorer!r}")
        if guidelines is not None and not isinstance(guidelines, str):
            raise InvalidInputError("guidelines must be a string")
        self.expected_output = as_text(expected_output)
        self.scorer = scorer
        self.judge = check_model(judge, "judge") if judge is not None else None
        self.guidelines = guidelines

    @property
    def scoring(self) -> str:
        if self.scorer is not None:
            return f"function:{getattr(self.scorer, '__qualname__', type(self.scorer).__name__)}"
        return "judge" if self.judge is not None else "match"

    def _iteration(self, user_id: str | None) -> Steps[dict]:
        run = yield RunAgent(self.agent, self.input, user_id)
        output = as_text(run.content)
        record: dict[str, Any] = {"run_id": run.run_id, "output": output}
        if self.scorer is not None:
            record["score"] = check_score(self.scorer(output, self.expected_output), "the scoring function")
        elif self.judge is not None:
            reply = yield AskModel(self.judge, grade_messages(self.input, output, self.expected_output,
                                                              self.guidelines))
            grade, reason = parse_grade(reply)
            record.update(score=grade / 10, grade=grade, reason=reason)
        else:
            record["score"], record["match"] = match_score(output, self.expected_output)
        return record

    def _details(self) -> dict:
        details = {"expected_output": self.expected_output, "scoring": self.scoring}
        if self.judge is not None:
            details["judge_model"] = self.judge.id
        if self.guidelines:
            details["guidelines"] = self.guidelines
        return details
