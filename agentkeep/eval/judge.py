"""Agent as judge: a judge model checks an answer against a list of criteria ("cites the
refund policy", "does not promise a date"), each pass or fail with a reason. The score is the
fraction of criteria passed (the mean over N iterations); the answer is the agent's answer to
the input, or an output given as it is."""

from __future__ import annotations

from typing import Any, Sequence

from agentkeep.db.errors import InvalidInputError
from agentkeep.eval.base import AskModel, IteratedEval, RunAgent, Steps, check_model
from agentkeep.eval.scoring import as_text, criteria_messages, parse_verdicts


class AgentAsJudgeEval(IteratedEval):
    eval_type = "agent_as_judge"

    def __init__(self, agent: Any = None, *, judge: Any, criteria: Sequence[str], input: str | None = None,
                 output: Any = None, num_iterations: int = 1, threshold: float | None = None,
                 name: str | None = None, db: Any = None) -> None:
        """`agent` answers `input`, or `output` is the answer to grade (`input` then gives the
        judge the question, if any). `judge`: the model that grades (e.g. OpenAIChat(...)).
        `threshold`: the fraction of criteria that must pass (None: it passes once it completes)."""
        super().__init__(agent=agent, input=input, name=name, db=db, threshold=threshold,
                         num_iterations=num_iterations)
        if (agent is None) == (output is None):
            raise InvalidInputError("give an agent (with an input) or an output to grade, one of them")
        if agent is not None and input is None:
            raise InvalidInputError("input must be a non-empty string: what the agent answers")
        if isinstance(criteria, str) or not isinstance(criteria, Sequence) or not criteria:
            raise InvalidInputError("criteria must be a non-empty list of strings")
        if not all(isinstance(c, str) and c.strip() for c in criteria):
            raise InvalidInputError("every criterion must be a non-empty string")
        self.judge = check_model(judge, "judge")
        self.criteria = [c.strip() for c in criteria]
        self.output = None if output is None else as_text(output)

    def _iteration(self, user_id: str | None) -> Steps[dict]:
        record: dict[str, Any] = {}
        if self.output is None:
            run = yield RunAgent(self.agent, self.input, user_id)
            record.update(run_id=run.run_id, output=as_text(run.content))
        else:
            record["output"] = self.output
        reply = yield AskModel(self.judge, criteria_messages(self.input, record["output"], self.criteria))
        verdicts = parse_verdicts(reply, len(self.criteria))
        record["verdicts"] = [{"criterion": c, "passed": passed, "reason": reason}
                              for c, (passed, reason) in zip(self.criteria, verdicts)]
        record["score"] = sum(passed for passed, _ in verdicts) / len(verdicts)
        return record

    def _details(self) -> dict:
        return {"criteria": self.criteria, "judge_model": self.judge.id}
