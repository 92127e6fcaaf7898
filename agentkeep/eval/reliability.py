"""Reliability: did the agent call the tools it should have? The expected calls (a tool's
name, and optionally arguments the call must include) are matched one to one with the calls
the run made (`Run.tools`), as many as can be; an expected call left over is missing, a call
made and not expected is unexpected.

    score = matched / (expected + unexpected)    (1.0 when none were expected and none made)

With `allow_unexpected=True` extra calls are listed but do not lower the score. Arguments
match as a subset: every key given must be in the call with the same value (nested objects
likewise), other keys may be there too."""

from __future__ import annotations

from typing import Any, Sequence

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.models import Run
from agentkeep.eval.base import IteratedEval, RunAgent, Steps


def expected_calls(calls: Any) -> list[dict]:
    """Expected calls as `{"name", "arguments"}` (arguments None: any), from tool names or
    dicts with a `name` and optional `arguments`."""
    if isinstance(calls, (str, dict)) or not isinstance(calls, Sequence):
        raise InvalidInputError("expected_tool_calls must be a list of tool names or {name, arguments} objects")
    out = []
    for i, call in enumerate(calls):
        if hasattr(call, "model_dump"):
            call = call.model_dump()
        if isinstance(call, str) and call:
            out.append({"name": call, "arguments": None})
        elif isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"] \
                and set(call) <= {"name", "arguments"} and isinstance(call.get("arguments"), (dict, type(None))):
            out.append({"name": call["name"], "arguments": call.get("arguments")})
        else:
            raise InvalidInputError(f"expected_tool_calls[{i}] must be a tool name or {{name, arguments}} (arguments "
                                    f"an object), got {call!r}")
    return out


def made_calls(run: Run) -> list[dict]:
    """The tool calls a run made, as `{"name", "arguments", "status"}`."""
    return [{"name": t.get("tool_name"), "arguments": t.get("tool_args") or {}, "status": t.get("status")}
            for t in run.tools]


def includes(actual: Any, expected: Any) -> bool:
    """Whether `actual` has everything `expected` has (objects as subsets, the rest equal)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and includes(actual[k], x) for k, x in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            includes(a, x) for a, x in zip(actual, expected))
    return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)


def match_calls(expected: list[dict], made: list[dict]) -> dict[int, int]:
    """The most expected calls matched one to one with calls made (expected index -> made
    index): augmenting paths, so a loose expectation never takes the one call a stricter
    expectation needed."""
    fits = [[j for j, m in enumerate(made) if m["name"] == e["name"]
             and (e["arguments"] is None or includes(m["arguments"], e["arguments"]))] for e in expected]
    owner: dict[int, int] = {}  # made index -> expected index

    def assign(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or assign(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(expected)):
        assign(i, set())
    return {i: j for j, i in owner.items()}


def reliability_score(expected: list[dict], made: list[dict], allow_unexpected: bool = False) -> dict:
    """The score, the calls matched, missing and unexpected (see the module's docstring)."""
    matched = match_calls(expected, made)
    missing = [e for i, e in enumerate(expected) if i not in matched]
    taken = set(matched.values())
    unexpected = [m for j, m in enumerate(made) if j not in taken]
    total = len(expected) + (0 if allow_unexpected else len(unexpected))
    return {"score": len(matched) / total if total else 1.0, "matched": len(matched), "missing": missing,
            "unexpected": unexpected, "tool_calls": made}


class ReliabilityEval(IteratedEval):
    eval_type = "reliability"

    def __init__(self, agent: Any = None, *, expected_tool_calls: Sequence[Any], input: str | None = None,
                 run: Run | None = None, allow_unexpected: bool = False, num_iterations: int = 1,
                 threshold: float | None = None, name: str | None = None, db: Any = None) -> None:
        """`agent` runs on `input` (`num_iterations` times), or `run` is a run already made.
        `threshold`: the score the eval must reach to pass (None: it passes once it completes)."""
        super().__init__(agent=agent, input=input if run is None else input or _text(run.input), name=name,
                         db=db, threshold=threshold, num_iterations=num_iterations)
        if (agent is None) == (run is None):
            raise InvalidInputError("give an agent (with an input) or a run to check, one of them")
        if run is not None and not isinstance(run, Run):
            raise InvalidInputError(f"run must be a Run, got {type(run).__name__}")
        if run is not None and num_iterations != 1:
            raise InvalidInputError("a run already made is checked once: num_iterations must be 1")
        if agent is not None and input is None:
            raise InvalidInputError("input must be a non-empty string: what the agent answers")
        if not isinstance(allow_unexpected, bool):
            raise InvalidInputError("allow_unexpected must be a bool")
        self.expected = expected_calls(expected_tool_calls)
        self.given_run = run
        if run is not None:
            self.agent_id = run.agent_id
        self.allow_unexpected = allow_unexpected

    def _iteration(self, user_id: str | None) -> Steps[dict]:
        run = self.given_run
        if run is None:
            run = yield RunAgent(self.agent, self.input, user_id)
        return {"run_id": run.run_id, **reliability_score(self.expected, made_calls(run), self.allow_unexpected)}

    def _details(self) -> dict:
        return {"expected_tool_calls": self.expected, "allow_unexpected": self.allow_unexpected}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
