"""Evals of agents, each kept as an `EvalRun` in a db:

- `AccuracyEval`: the agent's answer against an expected output (a scoring function, a judge
  model's 0-10 grade, or a normalized match), the mean over N iterations;
- `AgentAsJudgeEval`: a judge model checks the answer against criteria, pass or fail each;
- `ReliabilityEval`: the tool calls a run made against the expected ones;
- `PerformanceEval`: latency percentiles and peak memory over N iterations after a warm-up;
- `Suite` (`load_suite`): cases from a YAML or JSONL file, run against one agent
  (`agentkeep eval FILE`).

Each has `run()` and its async twin `arun()`; both return an `EvalResult`."""

from agentkeep.eval.accuracy import AccuracyEval
from agentkeep.eval.base import Eval, EvalResult, IteratedEval
from agentkeep.eval.cases import (
    AccuracyCase,
    Case,
    JudgeCase,
    PerformanceCase,
    ReliabilityCase,
    ToolCallSpec,
    parse_case,
)
from agentkeep.eval.judge import AgentAsJudgeEval
from agentkeep.eval.performance import PerformanceEval
from agentkeep.eval.reliability import ReliabilityEval
from agentkeep.eval.scoring import JudgeError, match_score, parse_grade, parse_verdicts
from agentkeep.eval.suite import CaseResult, Suite, SuiteResult, load_suite

__all__ = [
    "AccuracyCase", "AccuracyEval", "AgentAsJudgeEval", "Case", "CaseResult", "Eval", "EvalResult", "IteratedEval",
    "JudgeCase", "JudgeError", "PerformanceCase", "PerformanceEval", "ReliabilityCase", "ReliabilityEval", "Suite",
    "SuiteResult", "ToolCallSpec", "load_suite", "match_score", "parse_case", "parse_grade", "parse_verdicts",
]
